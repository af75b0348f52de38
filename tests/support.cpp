#include "tests/support.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <zlib.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <random>
#include <sstream>

#include "tensor/io.h"

namespace tbtest {

fs::path fixture(const std::string& rel) {
  fs::path p = fs::path(TB_FIXTURES_DIR) / rel;
  if (!fs::exists(p)) FAIL("fixture missing: " << p << " (run fixtures/generate.py, see fixtures/README.md)");
  return p;
}

fs::path shared_fixture(const std::string& rel) {
  fs::path p = fs::path(TB_SHARED_FIXTURES_DIR) / rel;
  if (!fs::exists(p)) {
    const char* req = std::getenv("TB_REQUIRE_PEERS");
    if (req && std::string(req) == "1") FAIL("shared fixture missing: " << p);
    skip("shared fixture " + p.string() + " not present (it lives in ../shared beside the clone)");
  }
  return p;
}

TempDir::TempDir() {
  std::random_device rd;
  path_ = fs::temp_directory_path() / ("tbtest-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
  fs::create_directories(path_);
}
TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

double children_cpu_seconds() {
  struct rusage ru {};
  ::getrusage(RUSAGE_CHILDREN, &ru);
  auto sec = [](const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) / 1e6; };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

RunResult run(const std::vector<std::string>& argv) {
  int pipefd[2];
  REQUIRE(::pipe(pipefd) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(pipefd[1], 1);
    ::dup2(pipefd[1], 2);
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::fprintf(stderr, "exec %s failed\n", args[0]);
    ::_exit(127);
  }
  ::close(pipefd[1]);
  std::string out;
  std::array<char, 4096> buf;
  ssize_t n;
  while ((n = ::read(pipefd[0], buf.data(), buf.size())) > 0) out.append(buf.data(), size_t(n));
  ::close(pipefd[0]);
  int status = 0;
  struct rusage ru {};
  ::wait4(pid, &status, 0, &ru);
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return {code, out, ru.ru_maxrss};
}

RunResult run_cli(const std::vector<std::string>& args) {
  std::vector<std::string> argv{TB_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

void skip(const std::string& why) {
  std::cout << "SKIPPED: " << why << std::endl;
  std::cerr << "SKIPPED: " << why << std::endl;
  std::_Exit(77);
}

RunResult python(Peer peer, const std::string& code, const std::vector<std::string>& argv) {
  std::string interp = peer == Peer::Torch ? TB_TORCH_PYTHON : TB_PEERS_PYTHON;
  const char* req = std::getenv("TB_REQUIRE_PEERS");
  bool required = req && std::string(req) == "1";
  if (!fs::exists(interp)) {
    if (required) FAIL("peer interpreter missing: " << interp << " (run scripts/setup.sh)");
    skip("peer interpreter " + interp + " not found (run scripts/setup.sh)");
  }
  std::vector<std::string> full{interp, "-c", code};
  full.insert(full.end(), argv.begin(), argv.end());
  RunResult r = run(full);
  if (r.exit_code != 0 && r.output.find("ModuleNotFoundError") != std::string::npos) {
    if (required) FAIL("peer module missing:\n" << r.output);
    skip("peer module missing: " + r.output.substr(r.output.find("ModuleNotFoundError")));
  }
  return r;
}

std::map<std::string, std::vector<std::string>> python_lines_by_file(Peer peer, const std::string& code,
                                                                     const std::vector<std::string>& files) {
  RunResult r = python(peer, code, files);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  std::map<std::string, std::vector<std::string>> out;
  std::istringstream is(r.output);
  std::string line, cur;
  while (std::getline(is, line)) {
    if (line.rfind("FILE ", 0) == 0)
      cur = line.substr(5);
    else if (!cur.empty() && !line.empty())
      out[cur].push_back(line);
  }
  return out;
}

uint32_t crc32(const uint8_t* p, size_t n) { return uint32_t(::crc32(0L, p, uInt(n))); }

std::string py_shape(const tb::Shape& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

tb::Tensor read_npy_minimal(const fs::path& p) {
  std::string s = tb::read_text_file(p);
  REQUIRE(s.compare(0, 6, "\x93NUMPY") == 0);
  size_t hlen = uint8_t(s[8]) | (size_t(uint8_t(s[9])) << 8);
  std::string h = s.substr(10, hlen);
  tb::DType dt = h.find("'<f8'") != std::string::npos ? tb::DType::F64 : tb::DType::F32;
  REQUIRE((h.find("'<f4'") != std::string::npos || dt == tb::DType::F64));
  REQUIRE(h.find("'fortran_order': False") != std::string::npos);
  auto a = h.find('('), b = h.find(')');
  tb::Shape shape;
  std::string dims = h.substr(a + 1, b - a - 1);
  for (size_t i = 0; i < dims.size();) {
    size_t j = dims.find(',', i);
    std::string d = dims.substr(i, j == std::string::npos ? std::string::npos : j - i);
    if (d.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(d));
    if (j == std::string::npos) break;
    i = j + 1;
  }
  size_t off = 10 + hlen;
  return tb::Tensor::from_bytes(dt, shape, s.data() + off, s.size() - off);
}

tb::Tensor load_npy_tensor(const fs::path& path) {
  tb::Checkpoint c = tb::load(path);
  tb::StateDict sd = c.state_dict();
  REQUIRE(sd.size() == 1);
  return sd.entries().front().second;
}

std::string error_text(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

pid_t spawn_cli(const std::vector<std::string>& args, const fs::path& err_path) {
  std::vector<std::string> argv{TB_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    int devnull = ::open("/dev/null", O_WRONLY);
    int err = err_path.empty() ? devnull : ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(devnull, 1);
    ::dup2(err, 2);
    std::vector<char*> v;
    for (auto& a : argv) v.push_back(a.data());
    v.push_back(nullptr);
    ::execv(v[0], v.data());
    ::_exit(127);
  }
  return pid;
}

int wait_status(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  return status;
}

bool same_state_dicts(const tb::StateDict& a, const tb::StateDict& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, t] : a) {
    const tb::Tensor* u = b.find(name);
    if (!u || !tb::equal(t, *u)) return false;
  }
  return true;
}

const char* const kPyDescribeLine = R"(
def fnv(b):
    h = 1469598103934665603
    for c in b:
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h
def line(k, dtype, shape, b):
    print('%s|%s|[%s]|%d' % (k, dtype, ', '.join(str(d) for d in shape), fnv(b)))
)";

std::string describe_tensors(const tb::StateDict& sd) {
  std::ostringstream os;
  for (const auto& [k, t] : sd) {
    std::vector<uint8_t> b(t.nbytes());
    if (!b.empty()) t.copy_to(b.data());
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    for (uint8_t c : b) {
      h ^= c;
      h *= 1099511628211ull;
    }
    os << k << "|" << tb::dtype_name(t.dtype()) << "|" << tb::shape_str(t.shape()) << "|" << h << "\n";
  }
  return os.str();
}

}  // namespace tbtest
