// Shared test helpers: fixture paths, temporary folders, running the CLI and the two Python
// interpreters (Debian torch / PyPI peers), and honest skips.
#pragma once

#include <catch2/catch.hpp>

#include <sys/types.h>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "formats/registry.h"

namespace tbtest {

namespace fs = std::filesystem;

/** fixtures/<rel> in the source tree; fails the test when missing (fixtures are committed). */
fs::path fixture(const std::string& rel);
/** ../shared/fixtures/<rel>; skips when the shared folder is absent (a user's clone), fails in CI. */
fs::path shared_fixture(const std::string& rel);

/** Whether part occurs in s (for checking messages). */
inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

/** A fresh empty folder removed when the object dies. */
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

struct RunResult {
  int exit_code;
  std::string output;   // stdout and stderr together
  long max_rss_kb = 0;  // the child's peak resident memory (wait4): at least this process's own at the fork
};
/** Runs argv (no shell) and captures its output. */
RunResult run(const std::vector<std::string>& argv);
/** Runs the built tensorbridge binary. */
RunResult run_cli(const std::vector<std::string>& args);
/** CPU seconds (user + system) used so far by the children this process has waited for, theirs
 *  included: the difference around a run() times it without counting waits for a busy machine's cores. */
double children_cpu_seconds();

/** Prints "SKIPPED: why" and ends the test process with code 77 (CTest: skipped). */
[[noreturn]] void skip(const std::string& why);

enum class Peer { Torch, Peers };
/** Runs a Python snippet with the interpreter of that side; skips when it (or a module it needs)
 *  is missing, unless TB_REQUIRE_PEERS=1, where that fails the test. argv becomes sys.argv[1:]. */
RunResult python(Peer peer, const std::string& code, const std::vector<std::string>& argv = {});

/** Runs a Python judge that prints "FILE <path>" before the lines of each file; returns each file's
 *  non-empty lines in order. Fails the test when the judge fails. */
std::map<std::string, std::vector<std::string>> python_lines_by_file(Peer peer, const std::string& code,
                                                                     const std::vector<std::string>& files);

/** CRC-32 (zlib's polynomial) of bytes, to compare tensors with what Python prints (zlib.crc32). */
uint32_t crc32(const uint8_t* p, size_t n);
/** A shape as Python prints a tuple: "(3,)", "(2, 3)", "()". */
std::string py_shape(const tb::Shape& s);

/** The message of the E that f throws; fails the test when f throws nothing. */
template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  FAIL("expected an exception");
  return {};
}

/** The message of any std::exception fn throws, or "(no error)". */
std::string error_text(const std::function<void()>& fn);

/** Starts the built CLI with args in the background: stdout to /dev/null, stderr to err_path (or
 *  /dev/null), SIGINT and SIGTERM at their defaults. Returns the pid. */
pid_t spawn_cli(const std::vector<std::string>& args, const fs::path& err_path = {});
/** waitpid that retries on EINTR; returns the raw wait status. */
int wait_status(pid_t pid);

/** Equal names, dtypes, shapes and element bytes (tb::equal on every entry). */
bool same_state_dicts(const tb::StateDict& a, const tb::StateDict& b);

/** Minimal .npy reader for little-endian C-order f4/f8 arrays, independent of the npy adapter. */
tb::Tensor read_npy_minimal(const fs::path& p);
/** Reads a .npy with float32/float64 data through our own loader (for expected outputs). */
tb::Tensor load_npy_tensor(const fs::path& path);

/** "name|dtype|[shape]|fnv1a-64 of the bytes" per tensor, one line each in dict order: what the torch
 *  judges of pt_test and torchscript_test print for the same tensors. */
std::string describe_tensors(const tb::StateDict& sd);
/** Python defining fnv(b), the FNV-1a 64 of describe_tensors, and line(k, dtype, shape, b), which prints
 *  one describe_tensors line: the start of every torch judge. */
extern const char* const kPyDescribeLine;

}  // namespace tbtest
