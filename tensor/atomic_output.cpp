#include "tensor/atomic_output.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "tensor/error.h"

namespace tb {

namespace fs = std::filesystem;

namespace {

std::string errno_text(int e = errno) { return std::strerror(e); }

constexpr unsigned kRenameNoReplace = 1, kRenameExchange = 2;

int renameat2_raw(int dfd, const char* from, const char* to, unsigned flags) {
#ifdef SYS_renameat2
  return int(::syscall(SYS_renameat2, dfd, from, dfd, to, flags));
#else
  if (flags != 0) {
    errno = ENOSYS;
    return -1;
  }
  return ::renameat(dfd, from, dfd, to);
#endif
}

uint64_t random64() {
  uint64_t v = 0;
  if (::getrandom(&v, sizeof v, 0) != ssize_t(sizeof v)) {
    static std::atomic<uint64_t> counter{0};
    v = uint64_t(::getpid()) * 0x9E3779B97F4A7C15ull ^ uint64_t(::time(nullptr)) ^ (++counter << 32);
  }
  return v;
}

bool is_hex(std::string_view s) {
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

bool same_file(const struct stat& a, const struct stat& b) { return a.st_dev == b.st_dev && a.st_ino == b.st_ino; }

/** After creating `name` with O_EXCL and locking fd: true when `name` is still that file (a cleaner that
 *  raced between the create and the lock may have removed it). */
bool still_ours(int dir_fd, const std::string& name, int fd) {
  struct stat a {
  }, b{};
  return ::fstat(fd, &a) == 0 && ::fstatat(dir_fd, name.c_str(), &b, AT_SYMLINK_NOFOLLOW) == 0 && same_file(a, b);
}

constexpr size_t kNameMax = 255;

}  // namespace

// ---------------------------------------------------------------------------------------------
DirHandle::DirHandle(const fs::path& dir, const fs::path& for_target)
    : path_(dir.empty() ? fs::path(".") : dir), given_(dir) {
  fd_ = ::open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  TB_CHECK(fd_ >= 0, IoError, "cannot write '", for_target.string(), "': folder '", path_.string(), "' ",
           errno == ENOENT || errno == ENOTDIR ? "does not exist" : "cannot be opened: " + errno_text());
}

DirHandle::~DirHandle() {
  if (fd_ >= 0) ::close(fd_);
}

std::string DirHandle::display(const std::string& name) const {
  return given_.empty() || given_ == "." ? name : (given_ / name).string();
}

void DirHandle::sync() const { (void)::fsync(fd_); }

fs::path folder_of(const fs::path& target) {
  return target.parent_path().empty() ? fs::path(".") : target.parent_path();
}

std::string generation_token() {
  char buf[16];
  std::snprintf(buf, sizeof buf, "tb%08x", unsigned(random64()));
  return buf;
}

bool is_generation_token(std::string_view s) { return s.size() == 10 && s.substr(0, 2) == "tb" && is_hex(s.substr(2)); }

std::string fit_name_stem(const std::string& stem, size_t reserve) {
  if (stem.size() + reserve <= kNameMax) return stem;
  uint32_t h = 2166136261u;  // FNV-1a
  for (unsigned char c : stem) h = (h ^ c) * 16777619u;
  char tail[16];
  std::snprintf(tail, sizeof tail, "-%08x", h);
  size_t keep = kNameMax > reserve + 9 ? kNameMax - reserve - 9 : 0;
  // Cut at a UTF-8 character boundary.
  while (keep > 0 && keep < stem.size() && (static_cast<unsigned char>(stem[keep]) & 0xC0) == 0x80) --keep;
  return stem.substr(0, keep) + tail;
}

std::string temp_name(bool folder) {
  char buf[48];
  std::snprintf(buf, sizeof buf, ".tb-%016llx.%s", static_cast<unsigned long long>(random64()),
                folder ? "tmpdir" : "tmp");
  return buf;
}

bool is_temp_name(std::string_view n) {
  if (n.size() < 20 || n.substr(0, 4) != ".tb-" || !is_hex(n.substr(4, 16))) return false;
  std::string_view rest = n.substr(20);
  return rest == ".tmp" || rest == ".tmpdir";
}

bool stat_entry(const DirHandle& dir, const std::string& name, struct stat& st) {
  if (::fstatat(dir.fd(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return true;
  TB_CHECK(errno == ENOENT, IoError, "cannot look at '", dir.display(name), "': ", errno_text());
  return false;
}

TargetInfo check_file_target(const DirHandle& dir, const std::string& name, bool overwrite) {
  TargetInfo info;
  struct stat st {};
  if (!stat_entry(dir, name, st)) return info;
  const std::string label = dir.display(name);
  TB_CHECK(!S_ISLNK(st.st_mode), IoError, "'", label,
           "' is a symbolic link; refusing to replace it (write to the file it points to, or remove the link)");
  const char* kind = S_ISDIR(st.st_mode)    ? "a folder"
                     : S_ISCHR(st.st_mode)  ? "a character device"
                     : S_ISBLK(st.st_mode)  ? "a block device"
                     : S_ISFIFO(st.st_mode) ? "a FIFO (named pipe)"
                     : S_ISSOCK(st.st_mode) ? "a socket"
                                            : nullptr;
  TB_CHECK(S_ISREG(st.st_mode), IoError, "'", label, "' is ", kind ? kind : "not a regular file",
           ", not a regular file; refusing to write over it");
  TB_CHECK(overwrite, IoError, "'", label, "' already exists; pass --force to overwrite it");
  info.exists = true;
  info.mode = st.st_mode & 0777;
  info.uid = st.st_uid;
  info.gid = st.st_gid;
  return info;
}

void rename_no_replace(const DirHandle& dir, const std::string& from, const std::string& to) {
  const int fd = dir.fd();
  if (renameat2_raw(fd, from.c_str(), to.c_str(), kRenameNoReplace) == 0) return;
  int e = errno;
  if (e == ENOSYS || e == EINVAL) {  // no renameat2 here: a hard link cannot replace either
    if (::linkat(fd, from.c_str(), fd, to.c_str(), 0) == 0) {
      ::unlinkat(fd, from.c_str(), 0);
      return;
    }
    e = errno;
    if (e == EPERM || e == ENOTSUP || e == EMLINK || e == EISDIR) {  // no hard links (or a folder): check, then rename
      struct stat st {};
      if (::fstatat(fd, to.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT &&
          ::renameat(fd, from.c_str(), fd, to.c_str()) == 0)
        return;
      e = errno == ENOENT ? EEXIST : errno;
    }
  }
  TB_CHECK(e != EEXIST && e != ENOTEMPTY, IoError, "'", dir.display(to),
           "' already exists (another process wrote it meanwhile); pass --force to overwrite it");
  throw IoError(str("cannot rename '", dir.display(from), "' to '", dir.display(to), "': ", errno_text(e)));
}

void rename_replace(const DirHandle& dir, const std::string& from, const std::string& to) {
  int r = renameat2_raw(dir.fd(), from.c_str(), to.c_str(), 0);
  if (r != 0 && errno == ENOSYS) r = ::renameat(dir.fd(), from.c_str(), dir.fd(), to.c_str());
  TB_CHECK(r == 0, IoError, "cannot rename '", dir.display(from), "' to '", dir.display(to), "': ", errno_text());
}

bool rename_exchange(const DirHandle& dir, const std::string& a, const std::string& b) {
  if (renameat2_raw(dir.fd(), a.c_str(), b.c_str(), kRenameExchange) == 0) return true;
  if (errno == ENOSYS || errno == EINVAL) return false;
  throw IoError(str("cannot exchange '", dir.display(a), "' and '", dir.display(b), "': ", errno_text()));
}

namespace {
/** Removes name when it is a regular file (or, with folder, a folder) whose lock nobody holds. */
void remove_if_unlocked(const DirHandle& dir, const std::string& name, bool folder) {
  struct stat st {};
  if (::fstatat(dir.fd(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return;
  if (!(S_ISREG(st.st_mode) || (folder && S_ISDIR(st.st_mode)))) return;
  int fd = ::openat(dir.fd(), name.c_str(),
                    O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0));
  if (fd < 0) return;
  if (::flock(fd, LOCK_EX | LOCK_NB) == 0 && still_ours(dir.fd(), name, fd)) {
    if (S_ISDIR(st.st_mode))
      remove_tree_at(dir.fd(), name.c_str());
    else
      ::unlinkat(dir.fd(), name.c_str(), 0);
  }
  ::close(fd);
}

std::vector<std::string> list_names(const DirHandle& dir, const std::function<bool(const std::string&)>& match) {
  std::vector<std::string> names;
  int fd = ::dup(dir.fd());
  if (fd < 0) return names;
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    return names;
  }
  ::rewinddir(d);
  while (const dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != ".." && match(n)) names.push_back(std::move(n));
  }
  ::closedir(d);
  return names;
}
}  // namespace

void remove_stale_temps(const DirHandle& dir) {
  try {
    for (const auto& n : list_names(dir, [](const std::string& n) { return is_temp_name(n); }))
      remove_if_unlocked(dir, n, true);
  } catch (...) {}
}

void remove_unlocked_files(const DirHandle& dir, const std::function<bool(const std::string&)>& match) {
  try {
    for (const auto& n : list_names(dir, match)) remove_if_unlocked(dir, n, false);
  } catch (...) {}
}

void remove_tree(const DirHandle& dir, const std::string& name) { remove_tree_at(dir.fd(), name.c_str()); }

// ---------------------------------------------------------------------------------------------
FolderLock::FolderLock(const DirHandle& dir) {
  fd_ = ::openat(dir.fd(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd_ < 0) return;  // best effort: without it only concurrent writers of one output can race
  while (::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {}
}

FolderLock::~FolderLock() {
  if (fd_ >= 0) ::close(fd_);
}

// ---------------------------------------------------------------------------------------------
NewFileWriter::NewFileWriter(const DirHandle& dir, const std::string& name) : dir_(dir), name_(name) {
  TB_CHECK(name.size() <= kNameMax, IoError, "cannot create '", dir.display(name), "': the name is longer than ",
           kNameMax, " bytes");
  for (int attempt = 0; attempt < 8; ++attempt) {
    int fd = ::openat(dir.fd(), name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno == EEXIST) return;
    TB_CHECK(fd >= 0, IoError, "cannot create '", dir.display(name), "': ", errno_text());
    while (::flock(fd, LOCK_EX) != 0 && errno == EINTR) {}
    if (still_ours(dir.fd(), name, fd)) {
      fd_ = fd;
      break;
    }
    ::close(fd);  // a cleaner removed it before the lock was taken: create it again
  }
  TB_CHECK(fd_ >= 0, IoError, "cannot create '", dir.display(name), "': it keeps disappearing");
  reg_ = TempRegistration(dir.fd(), name, false);
  buf_.reserve(1u << 20);
}

NewFileWriter::~NewFileWriter() {
  if (fd_ < 0) return;
  if (!kept_) {
    reg_.release();
    ::unlinkat(dir_.fd(), name_.c_str(), 0);
  }
  ::close(fd_);
}

void WritebackPacer::wrote(int fd, uint64_t n) {
  // Without this the page cache holds the whole output until the fsync before the rename, which then
  // waits for all of it: 224 MiB took 0.17 s copied-then-synced, 0.12 s with writeback started behind
  // the copy (docs/PERFORMANCE.md). Advisory: a file system without it only loses the overlap.
  // The whole file (0, 0): the kernel skips pages already clean or under writeback.
  pending_ += n;
  if (pending_ < (uint64_t(16) << 20)) return;
  (void)::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
  pending_ = 0;
}

void NewFileWriter::write_all(const uint8_t* p, size_t n) {
  const size_t total = n;
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    TB_CHECK(w > 0, IoError, "write to '", dir_.display(name_), "' failed: ", errno_text());
    p += w;
    n -= size_t(w);
  }
  writeback_.wrote(fd_, total);
}

void NewFileWriter::write(const void* data, size_t n) {
  TB_ASSERT(fd_ >= 0 && !kept_, "write to a closed or kept file");
  const auto* p = static_cast<const uint8_t*>(data);
  written_ += n;
  report_write_progress(n);
  if (buf_.size() + n <= buf_.capacity()) {
    buf_.insert(buf_.end(), p, p + n);
    return;
  }
  write_all(buf_.data(), buf_.size());
  buf_.clear();
  if (n >= buf_.capacity())
    write_all(p, n);  // large block: write straight through
  else
    buf_.insert(buf_.end(), p, p + n);
}

size_t NewFileWriter::copy_from_file(int fd, uint64_t offset, size_t n) {
  write_all(buf_.data(), buf_.size());  // what came before goes first
  buf_.clear();
  size_t done = 0;
  while (done < n) {
    loff_t in = loff_t(offset + done);
    ssize_t r = ::copy_file_range(fd, &in, fd_, nullptr, n - done, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;  // EXDEV, EINVAL, ENOSYS, ...: the caller writes the rest from memory
    done += size_t(r);
  }
  written_ += done;
  writeback_.wrote(fd_, done);
  report_write_progress(done);
  return done;
}

void NewFileWriter::keep_mode(mode_t mode, uid_t uid, gid_t gid) {
  struct stat st {};
  if (::fstat(fd_, &st) == 0 && (st.st_uid != uid || st.st_gid != gid)) (void)::fchown(fd_, uid, gid);
  TB_CHECK(::fchmod(fd_, mode & 0777) == 0, IoError, "cannot set the mode of '", dir_.display(name_),
           "': ", errno_text());
}

void NewFileWriter::finish(bool sync) {
  write_all(buf_.data(), buf_.size());
  std::vector<uint8_t>().swap(buf_);  // parts of a multi-file output wait for the commit: free the buffer
  TB_CHECK(!sync || ::fsync(fd_) == 0, IoError, "fsync of '", dir_.display(name_), "' failed: ", errno_text());
}

void NewFileWriter::keep() {
  kept_ = true;
  reg_.release();
}

// ---------------------------------------------------------------------------------------------
TempFolder::TempFolder(const fs::path& target) : target_(target), parent_(folder_of(target), target) {
  remove_stale_temps(parent_);
  for (int attempt = 0; attempt < 16 && fd_ < 0; ++attempt) {
    std::string name = temp_name(true);
    if (::mkdirat(parent_.fd(), name.c_str(), 0777) != 0) {
      TB_CHECK(errno == EEXIST, IoError, "cannot create a temporary folder beside '", target.string(),
               "': ", errno_text());
      continue;
    }
    int fd = ::openat(parent_.fd(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) continue;
    while (::flock(fd, LOCK_EX) != 0 && errno == EINTR) {}
    if (!still_ours(parent_.fd(), name, fd)) {
      ::close(fd);
      continue;
    }
    fd_ = fd;
    name_ = name;
  }
  TB_CHECK(fd_ >= 0, IoError, "cannot create a temporary folder beside '", target.string(), "'");
  reg_ = TempRegistration(parent_.fd(), name_, true);
  path_ = parent_.path() / name_;
}

TempFolder::~TempFolder() {
  if (!done_) {
    reg_.release();
    remove_tree(parent_, name_);
  }
  if (fd_ >= 0) ::close(fd_);
}

void TempFolder::commit(bool overwrite, const std::function<void(const fs::path&)>& check_existing) {
  TB_ASSERT(!done_, "double commit");
  // One sync pass makes every file and folder written inside durable (their writers skip fsync):
  // syncfs flushes the file system holding the folder, instead of one fsync per file.
  TB_CHECK(::syncfs(fd_) == 0, IoError, "syncing '", path_.string(), "' failed: ", errno_text());
  const std::string tname = target_.filename().string();
  std::string old_name;  // where the previous target ends up
  TempRegistration old_reg;
  {
    FolderLock lock(parent_);
    struct stat st {};
    if (!stat_entry(parent_, tname, st)) {
      SignalBlock block;
      rename_no_replace(parent_, name_, tname);
      reg_.release();
      done_ = true;
    } else {
      const std::string label = parent_.display(tname);
      TB_CHECK(overwrite, IoError, "'", label, "' already exists; pass --force to overwrite it");
      TB_CHECK(!S_ISLNK(st.st_mode), IoError, "'", label,
               "' is a symbolic link; refusing to replace it (write to the folder it points to, or remove the link)");
      TB_CHECK(S_ISDIR(st.st_mode) || S_ISREG(st.st_mode), IoError, "'", label,
               "' is neither a folder nor a regular file; refusing to replace it");
      if (check_existing) check_existing(target_);
      if (S_ISDIR(st.st_mode)) (void)::fchmod(fd_, st.st_mode & 0777);
      SignalBlock block;
      if (rename_exchange(parent_, name_, tname)) {
        old_name = name_;  // the registration now covers the previous target
        old_reg = std::move(reg_);
      } else {  // no exchange on this file system: move the old one aside, then the new one in
        old_name = temp_name(true);
        rename_replace(parent_, tname, old_name);
        old_reg = TempRegistration(parent_.fd(), old_name, true);
        try {
          rename_no_replace(parent_, name_, tname);
        } catch (...) {
          old_reg.release();
          (void)renameat2_raw(parent_.fd(), old_name.c_str(), tname.c_str(), 0);
          throw;
        }
        reg_.release();
      }
      done_ = true;
    }
    parent_.sync();
  }
  if (!old_name.empty()) {
    old_reg.release();
    remove_tree(parent_, old_name);
  }
}

}  // namespace tb
