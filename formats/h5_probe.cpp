// The probe: a separate process reads the file's structure with libhdf5 first, so a file that
// crashes, hangs or exhausts the library is refused here (see probe_in_child).
#include "formats/detail/h5_internal.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "tensor/io.h"

extern char** environ;

namespace tb {
namespace h5detail {

// HDF5 1.10.8 trusts much of what it reads: H5HG_read indexes a global heap collection with the
// object index of a variable-length string without checking it, H5T__conv_vlen allocates whatever
// length such a string claims (docs/FUZZING.md, findings 5 and 6), and other damaged metadata
// crash it in ways no check of ours can foresee without re-implementing the format. So every file
// is first read by a forked copy of this process, under an address-space limit, which makes every
// HDF5 call the load makes (metadata, attributes, strings, chunked and compact data up to
// kProbeMaxTensor each; not the bytes of contiguous datasets, one checked range of the file):
// - it crashes, dies or hangs: the file is refused here;
// - it refuses the file (a tb::Error, an allocation past the limit included): that error is
//   passed back through a pipe and thrown here, without this process touching the file again;
// - it loads: this process repeats the same calls on the same bytes.
// Costs one fork (copying this process's page tables) and the metadata read twice.
extern "C" void __sanitizer_set_death_callback(void (*)(void)) __attribute__((weak));
constexpr int kProbeLoaded = 0, kProbeRefused = 90;  // the probe's own exit codes
constexpr int kProbeReportFd = 3, kProbeDataFd = 4;  // the helper's report pipe and in-memory file
constexpr const char* kProbeHelperName = "tensorbridge-h5probe";

/** The probe's refusal: kind letter + message. */
std::string probe_report(const std::exception& e) {
  char kind = 'F';
  if (dynamic_cast<const UnsafeError*>(&e))
    kind = 'S';
  else if (dynamic_cast<const UnsupportedError*>(&e))
    kind = 'U';
  else if (dynamic_cast<const KeyError*>(&e))
    kind = 'K';
  else if (dynamic_cast<const IoError*>(&e))
    kind = 'I';
  else if (dynamic_cast<const InternalError*>(&e))
    kind = 'X';
  else if (dynamic_cast<const std::bad_alloc*>(&e))
    kind = 'M';
  std::string msg = e.what();
  if (msg.size() > 8000) msg.resize(8000);
  return kind + msg;
}

[[noreturn]] void rethrow_probe_report(const std::string& r, const std::string& label) {
  std::string msg = r.size() > 1 ? r.substr(1) : std::string("no message");
  switch (r.empty() ? 'F' : r[0]) {
    case 'S': throw UnsafeError(msg);
    case 'U': throw UnsupportedError(msg);
    case 'K': throw KeyError(msg);
    case 'I': throw IoError(msg);
    case 'X': throw InternalError(msg);
    case 'M':
      throw UnsafeError(str("[h5] '", label, "': reading this file's structure needs more than ", kProbeMemory >> 20,
                            " MiB + twice the file size of memory (", msg, "); refusing a possible memory bomb"));
    default: throw FormatError(msg);
  }
}

uint64_t address_space_in_use() {
  std::ifstream statm("/proc/self/statm");
  uint64_t pages = 0;
  statm >> pages;
  return pages * uint64_t(::sysconf(_SC_PAGESIZE));
}

/** Threads of this process (entries of /proc/self/task); 1 when that cannot be read. */
size_t process_thread_count() {
  std::error_code ec;
  size_t n = 0;
  for (std::filesystem::directory_iterator it("/proc/self/task", ec), end; !ec && it != end; it.increment(ec)) ++n;
  return ec || n == 0 ? 1 : n;
}

/** The probe helper executable: $TB_H5PROBE (alone when set: a missing file there means no helper),
 *  else beside the running executable, else the build tree's, else the installed one. "" if none. */
std::string find_probe_helper() {
  auto usable = [](const std::string& p) { return !p.empty() && ::access(p.c_str(), X_OK) == 0; };
  if (const char* env = std::getenv("TB_H5PROBE"); env && *env) return usable(env) ? std::string(env) : std::string();
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    std::string beside = (exe.parent_path() / kProbeHelperName).string();
    if (usable(beside)) return beside;
  }
  for (const char* p : {TB_H5PROBE_BUILD_PATH, TB_H5PROBE_INSTALL_PATH})
    if (usable(p)) return p;
  return "";
}

/** Writes all of `bytes` to fd; false on an error. */
bool write_all(int fd, const std::vector<uint8_t>& bytes) {
  for (size_t off = 0; off < bytes.size();) {
    ssize_t w = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    off += size_t(w);
  }
  return true;
}

/** Starts the probe as the helper executable (posix_spawn: nothing of this process's locks is
 *  copied), reporting to report_fd; -1 when it could not be started. */
pid_t spawn_probe(const std::string& helper, const Source& src, const FileCtx& ctx, uint64_t sig, int report_fd) {
  // The file: by its path when load_hdf5 opens it by path, else its bytes in a memfd.
  std::error_code ec;
  const bool by_path = !src.path.empty() && std::filesystem::is_regular_file(src.path, ec) &&
                       std::filesystem::file_size(src.path, ec) == ctx.file_size;
  int data_fd = -1;
  if (!by_path) {
    data_fd = ::memfd_create("tensorbridge-h5probe", MFD_CLOEXEC);
    if (data_fd < 0) return -1;
    if (!write_all(data_fd, src.reader->read_bytes(0, size_t(ctx.file_size)))) {
      ::close(data_fd);
      return -1;
    }
  }
  // Copies above the descriptors the child gets, so that dup2 there always clears close-on-exec.
  const int rep = ::fcntl(report_fd, F_DUPFD_CLOEXEC, 10);
  const int dat = data_fd < 0 ? -1 : ::fcntl(data_fd, F_DUPFD_CLOEXEC, 10);
  if (data_fd >= 0) ::close(data_fd);
  pid_t pid = -1;
  if (rep >= 0 && (data_fd < 0 || dat >= 0)) {
    const LoadLimits& lim = ctx.budget->limits();
    std::vector<std::string> args = {helper,
                                     ctx.label,
                                     by_path ? src.path.string() : std::string(),
                                     by_path ? "-1" : std::to_string(kProbeDataFd),
                                     std::to_string(sig),
                                     ctx.mappable ? "1" : "0",
                                     std::to_string(kProbeMemory + 2 * ctx.file_size),
                                     std::to_string(lim.max_bytes),
                                     std::to_string(lim.max_objects),
                                     std::to_string(lim.max_depth),
                                     str(lim.max_seconds)};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, rep, kProbeReportFd);
    if (dat >= 0) posix_spawn_file_actions_adddup2(&fa, dat, kProbeDataFd);
    if (::posix_spawn(&pid, helper.c_str(), &fa, nullptr, argv.data(), environ) != 0) pid = -1;
    posix_spawn_file_actions_destroy(&fa);
  }
  if (rep >= 0) ::close(rep);
  if (dat >= 0) ::close(dat);
  return pid;
}

/** In the probe process: no core file and an address space bounded to what it uses now + `extra`. */
void limit_probe_process(uint64_t extra) {
  struct rlimit no_core {
    0, 0
  };
  ::setrlimit(RLIMIT_CORE, &no_core);
  const uint64_t as_limit = address_space_in_use() + extra;
  struct rlimit as {};
  if (::getrlimit(RLIMIT_AS, &as) == 0 && (as.rlim_cur == RLIM_INFINITY || as.rlim_cur > as_limit)) {
    as.rlim_cur = as_limit;
    ::setrlimit(RLIMIT_AS, &as);
  }
}

/** In the probe process: runs the load's HDF5 calls, writes a refusal's report to `report_fd` and
 *  returns the exit code (kProbeLoaded or kProbeRefused). */
int run_probe(const Source& src, const FileCtx& parent_ctx, uint64_t sig, int report_fd) {
  int code = kProbeLoaded;
  std::string report;
  try {
    FileCtx ctx = parent_ctx;
    ctx.probe = true;
    ctx.mmap = false;
    load_hdf5(src, ctx, sig);
  } catch (const std::exception& e) {
    code = kProbeRefused;
    report = probe_report(e);
  } catch (...) {
    code = kProbeRefused;
    report = "Fan exception that is not a std::exception";
  }
  for (size_t off = 0; off < report.size();) {
    ssize_t w = ::write(report_fd, report.data() + off, report.size() - off);
    if (w <= 0) break;
    off += size_t(w);
  }
  return code;
}

/** Starts the probe as a forked copy of this process writing to fds[1]; -1 when fork failed. */
pid_t fork_probe(const Source& src, const FileCtx& parent_ctx, uint64_t sig, const int fds[2]) {
  const uint64_t extra = kProbeMemory + 2 * parent_ctx.file_size;
  const pid_t pid = ::fork();
  if (pid == 0) {
    // The child: no core file, a bounded address space, and no sanitizer death callback (a
    // fuzzer's would record the input as a crash of its own; the parent reports the refusal).
    ::close(fds[0]);
    limit_probe_process(extra);
    if (&__sanitizer_set_death_callback) __sanitizer_set_death_callback(nullptr);
    // A crash must end the child quietly: handlers inherited from the parent (a test framework's,
    // which would print a failure of its own) are not run.
    for (int s : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) ::signal(s, SIG_DFL);
    ::_exit(run_probe(src, parent_ctx, sig, fds[1]));  // no atexit handlers, no flushing of stdio buffers
  }
  return pid;
}

void probe_in_child(const Source& src, const FileCtx& parent_ctx, uint64_t sig) {
  using clock = std::chrono::steady_clock;
  // Metadata of a normal file reads in well under a second; chunked data adds its decompression.
  const auto limit = std::chrono::seconds(60) + std::chrono::milliseconds(parent_ctx.file_size / (16u << 10));
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return;  // no probe possible: load in this process, as before
  // fork() copies only the calling thread: with other threads alive, the child could wait forever
  // on a lock one of them held (malloc's, a sanitizer's). Then a fresh helper process probes.
  pid_t pid = -1;
  const std::string helper = process_thread_count() > 1 ? find_probe_helper() : std::string();
  if (!helper.empty()) pid = spawn_probe(helper, src, parent_ctx, sig, fds[1]);
  if (pid < 0) pid = fork_probe(src, parent_ctx, sig, fds);
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return;
  }
  ::close(fds[1]);
  ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
  std::string report;
  auto drain = [&] {  // what the child wrote so far (never blocks)
    char buf[4096];
    for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) != 0;) {
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) break;  // EAGAIN: nothing more now
      report.append(buf, size_t(n));
    }
  };
  // The pipe wakes this process when the child writes or exits (its end closes); the 50 ms cap
  // covers a write end that a process forked meanwhile by another thread still holds.
  const auto start = clock::now();
  int status = 0;
  while (true) {
    struct pollfd pfd {
      fds[0], POLLIN, 0
    };
    ::poll(&pfd, 1, 50);
    drain();
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {  // reaped elsewhere (SIGCHLD ignored): nothing learnt, load as without the probe
      ::close(fds[0]);
      return;
    }
    if (clock::now() - start > limit) {
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
      ::close(fds[0]);
      throw UnsafeError(str("[h5] '", parent_ctx.label,
                            "': the HDF5 library did not finish reading the file's structure in ",
                            std::chrono::duration_cast<std::chrono::seconds>(limit).count(),
                            " s (a probe process was stopped); refusing it as damaged or hostile"));
    }
  }
  drain();  // the child has exited: everything it wrote is in the pipe
  ::close(fds[0]);
  if (WIFEXITED(status) && WEXITSTATUS(status) == kProbeLoaded) return;
  if (WIFEXITED(status) && WEXITSTATUS(status) == kProbeRefused) rethrow_probe_report(report, parent_ctx.label);
  if (WIFEXITED(status)) {
    // Anything else is a sanitizer's report (ASan exits with 1 after a SEGV it caught) or an exit
    // from inside the library.
    throw FormatError(str("[h5] '", parent_ctx.label, "': the HDF5 library failed (exit status ", WEXITSTATUS(status),
                          ") reading this file's structure in a probe process; refusing a damaged or hostile file"));
  }
  const int sig_no = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  const char* name = sig_no ? ::strsignal(sig_no) : nullptr;
  throw FormatError(str("[h5] '", parent_ctx.label, "': the HDF5 library crashed (signal ", sig_no, ", ",
                        name ? name : "?",
                        ") reading this file's structure in a probe process; refusing a damaged "
                        "or hostile file"));
}

Checkpoint load_impl(const Source& src, const LoadOptions& opts) {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  h5_init();
  TB_CHECK(src.reader, FormatError, "[h5] '", src.label(), "' is a folder, not an HDF5 file");
  FileCtx ctx;
  ctx.label = src.label();
  ctx.reader = src.reader;
  ctx.file_size = src.reader->size();
  ctx.mmap = opts.mmap;
  LoadBudget budget(opts.limits, ctx.label, ctx.file_size);
  ctx.budget = &budget;
  uint64_t sig = hdf5_signature_offset(*src.reader);
  TB_CHECK(sig != UINT64_MAX, FormatError, "[h5] '", ctx.label,
           "': no HDF5 signature (\\x89HDF\\r\\n\\x1a\\n) at offset 0, 512, 1024, ...");
  ctx.mappable = sig == 0;
  check_global_heaps(*src.reader, sig, ctx.label);
  probe_in_child(src, ctx, sig);
  return load_hdf5(src, ctx, sig);
}

int probe_main(int argc, char** argv) {
  if (argc != 11) {
    std::fprintf(stderr, "%s: the HDF5 probe helper of tensorbridge; started by the library, not by hand\n", argv[0]);
    return 2;
  }
  const std::string label = argv[1], path = argv[2];
  const int data_fd = std::atoi(argv[3]);
  const uint64_t sig = std::strtoull(argv[4], nullptr, 10);
  limit_probe_process(std::strtoull(argv[6], nullptr, 10));
  LoadLimits lim;
  lim.max_bytes = std::strtoull(argv[7], nullptr, 10);
  lim.max_objects = std::strtoull(argv[8], nullptr, 10);
  lim.max_depth = std::strtoull(argv[9], nullptr, 10);
  lim.max_seconds = std::strtod(argv[10], nullptr);
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  h5_init();
  Source src;
  try {
    src.path = path;
    src.reader = path.empty() ? open_fd(data_fd, label, false) : open_file(path, false);
  } catch (const std::exception& e) {
    std::string report = probe_report(e);
    return write_all(kProbeReportFd, std::vector<uint8_t>(report.begin(), report.end())), kProbeRefused;
  }
  FileCtx ctx;
  ctx.label = label;
  ctx.reader = src.reader;
  ctx.file_size = src.reader->size();
  ctx.mappable = argv[5][0] == '1';
  LoadBudget budget(lim, label, ctx.file_size);
  ctx.budget = &budget;
  return run_probe(src, ctx, sig, kProbeReportFd);
}

}  // namespace h5detail
}  // namespace tb
