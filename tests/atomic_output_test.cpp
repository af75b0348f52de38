// Atomic outputs beyond the single file (crash_safety_test.cpp): multi-file outputs (sharded
// safetensors, ONNX + external data, OneFlow folders) are killed with SIGKILL at every rename and
// every unlinkat (strace syscall injection) and must then load as exactly the old or exactly the new
// weights, the next successful run leaving no temporaries or orphaned parts; injected I/O errors leave
// exactly the old output. Also: concurrent writers without --force (exactly one wins), targets that are
// not regular files, SIGTERM/SIGINT clean-up, the replaced file's mode, and very long file names.
#include "tests/support.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "tensor/atomic_output.h"

using namespace tb;
namespace fs = std::filesystem;
using tbtest::spawn_cli;
using tbtest::wait_status;

namespace {

/** n tensors of 64x64 float32 (16 KiB each) whose values start at base. */
StateDict weights(int n, float base) {
  StateDict sd;
  for (int k = 0; k < n; ++k) {
    Tensor t = Tensor::zeros(DType::F32, Shape{64, 64});
    auto* p = t.data_as<float>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = base + float(k) * 1000.f + float(i);
    sd.insert("layer" + std::to_string(k) + ".weight", std::move(t));
  }
  return sd;
}

std::string strace_path() {
  for (const char* p : {"/usr/bin/strace", "/bin/strace", "/usr/local/bin/strace"})
    if (fs::exists(p)) return p;
  return {};
}

/** strace, or a visible skip when it is missing or cannot trace here (no ptrace in a sandbox). */
std::string require_strace() {
  std::string s = strace_path();
  if (s.empty()) tbtest::skip("strace not installed (scripts/setup.sh installs it)");
  if (tbtest::run({s, "-f", "-qq", "-o", "/dev/null", "/bin/true"}).exit_code != 0)
    tbtest::skip("strace cannot trace processes here (ptrace not permitted)");
  return s;
}

/** tensorbridge args under strace, with `inject` (e.g. "renameat2:signal=KILL:when=3"). */
tbtest::RunResult run_injected(const std::string& strace, const std::string& inject,
                               const std::vector<std::string>& args) {
  std::vector<std::string> argv{strace, "-f", "-qq", "-o", "/dev/null", "-e", "inject=" + inject, TB_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return tbtest::run(argv);
}

std::set<std::string> entries(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

std::string listing(const fs::path& dir) {
  std::string s;
  for (const auto& n : entries(dir)) s += " " + n;
  return s;
}

/** One multi-file output kind: how to write it and what a clean folder holds afterwards. */
struct Kind {
  std::string name;
  std::string target;             // relative to the output folder
  std::vector<std::string> opts;  // extra convert arguments
  /** The files the output folder must hold after a successful run (nothing else). */
  std::set<std::string> (*expected)(const fs::path& out_dir);
};

std::set<std::string> sharded_files(const fs::path& out) {
  std::ifstream f(out / "model.safetensors.index.json");
  auto j = nlohmann::json::parse(f);
  std::set<std::string> s{"model.safetensors.index.json"};
  for (const auto& it : j["weight_map"].items()) s.insert(it.value().get<std::string>());
  return s;
}

std::set<std::string> onnx_files(const fs::path& out) {
  // The model and one data file of its naming ("m.onnx.data" or "m.onnx.tb<8 hex>.data"); that the
  // model reads it is checked by loading.
  std::set<std::string> s{"m.onnx"};
  for (const auto& n : entries(out))
    if (n != "m.onnx") s.insert(n);
  CHECK(s.size() == 2);
  for (const auto& n : s) CHECK(n.rfind("m.onnx", 0) == 0);
  return s;
}

std::set<std::string> oneflow_files(const fs::path&) { return {"of"}; }

const Kind kKinds[] = {
    {"sharded safetensors", "", {"--to", "safetensors", "--shard-size", "40KB"}, sharded_files},
    {"onnx + external data", "m.onnx", {"--option", "external_data=always"}, onnx_files},
    {"oneflow folder", "of", {"--to", "oneflow"}, oneflow_files},
};

struct Setup {
  tbtest::TempDir dir;
  fs::path src_old, src_new, out_dir, target;
  StateDict old_sd, new_sd;
  explicit Setup(const Kind& k, int tensors) {
    old_sd = weights(tensors, 0.f);
    new_sd = weights(tensors, 0.5f);
    fs::create_directory(dir / "src");
    src_old = dir / "src" / "old.safetensors";
    src_new = dir / "src" / "new.safetensors";
    save(Checkpoint::from_state_dict(old_sd), src_old);
    save(Checkpoint::from_state_dict(new_sd), src_new);
    out_dir = dir / "out";
    fs::create_directory(out_dir);
    target = k.target.empty() ? out_dir : out_dir / k.target;
  }
  std::vector<std::string> args(const Kind& k, const fs::path& src, bool force) const {
    std::vector<std::string> a{"convert", src.string(), target.string(), "-q"};
    a.insert(a.end(), k.opts.begin(), k.opts.end());
    if (force) a.push_back("--force");
    return a;
  }
  /** A successful run writing `src`; then the folder holds exactly the output's files. */
  void write_clean(const Kind& k, const fs::path& src) const {
    auto r = tbtest::run_cli(args(k, src, true));
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    INFO("output folder:" << listing(out_dir));
    CHECK(entries(out_dir) == k.expected(out_dir));
  }
  /** What the target loads as now: 0 the old weights, 1 the new ones; anything else fails. */
  int loads_as() const {
    StateDict got;
    try {
      got = load(target).state_dict();
    } catch (const Error& e) {
      FAIL("the output does not load: " << e.what() << "\nfolder:" << listing(out_dir));
    }
    if (tbtest::same_state_dicts(got, old_sd)) return 0;
    INFO("folder:" << listing(out_dir));
    REQUIRE(tbtest::same_state_dicts(got, new_sd));
    return 1;
  }
};

/** Kills `old -> new` at the N-th call of syscall for N = 1, 2, ... until a run completes. */
void kill_at_every(const Kind& k, const std::string& syscall, int tensors) {
  const std::string strace = require_strace();
  Setup s(k, tensors);
  int kills = 0;
  for (int n = 1; n < 200; ++n) {
    INFO(k.name << ": SIGKILL at " << syscall << " #" << n);
    s.write_clean(k, s.src_old);  // also: the run after a kill removes what the killed one left
    REQUIRE(s.loads_as() == 0);
    auto r = run_injected(strace, syscall + ":signal=KILL:when=" + std::to_string(n), s.args(k, s.src_new, true));
    if (r.exit_code == 0) {  // fewer than n such calls: the run completed
      CHECK(s.loads_as() == 1);
      CHECK(entries(s.out_dir) == k.expected(s.out_dir));
      break;
    }
    INFO(r.output);
    REQUIRE(r.exit_code == 128 + SIGKILL);
    (void)s.loads_as();  // exactly the old or exactly the new weights
    ++kills;
  }
  CHECK(kills > 0);
  s.write_clean(k, s.src_new);
  CHECK(s.loads_as() == 1);
}

/** Fails `old -> new` with EIO at the N-th call of syscall: exit 1, and exactly the old output remains. */
void fail_at_every(const Kind& k, const std::string& syscall, int tensors) {
  const std::string strace = require_strace();
  Setup s(k, tensors);
  s.write_clean(k, s.src_old);
  const std::set<std::string> before = entries(s.out_dir);
  int failures = 0;
  for (int n = 1; n < 200; ++n) {
    INFO(k.name << ": EIO at " << syscall << " #" << n);
    auto r = run_injected(strace, syscall + ":error=EIO:when=" + std::to_string(n), s.args(k, s.src_new, true));
    if (r.exit_code == 0) break;
    INFO(r.output);
    REQUIRE(r.exit_code == 1);
    CHECK(r.output.find("Input/output error") != std::string::npos);
    CHECK(s.loads_as() == 0);
    INFO("folder:" << listing(s.out_dir));
    CHECK(entries(s.out_dir) == before);  // nothing left behind: no temporaries, no new parts
    ++failures;
  }
  CHECK(failures > 0);
}

bool has_temp(const fs::path& dir) {
  for (const auto& n : entries(dir))
    if (is_temp_name(n)) return true;
  return false;
}

}  // namespace

TEST_CASE("sharded safetensors: SIGKILL at every rename and unlink leaves the old or the new set", "[atomic]") {
  kill_at_every(kKinds[0], "renameat2", 6);
  kill_at_every(kKinds[0], "unlinkat", 6);
}

TEST_CASE("onnx + external data: SIGKILL at every rename and unlink leaves the old or the new pair",
          "[atomic][needs_onnx]") {
  kill_at_every(kKinds[1], "renameat2", 4);
  kill_at_every(kKinds[1], "unlinkat", 4);
}

TEST_CASE("oneflow folder: SIGKILL at every rename and unlink leaves the old or the new folder", "[atomic]") {
  kill_at_every(kKinds[2], "renameat2", 3);
  kill_at_every(kKinds[2], "unlinkat", 3);
}

TEST_CASE("a failed multi-file convert leaves exactly the previous output", "[atomic][needs_onnx]") {
  for (const auto& k : kKinds) fail_at_every(k, "renameat2", 3);
  // A write failing on the disk: shards, data file and temporary folder are all removed.
  const std::string strace = require_strace();
  for (const auto& k : kKinds) {
    Setup s(k, 3);
    s.write_clean(k, s.src_old);
    const auto before = entries(s.out_dir);
    auto r = run_injected(strace, "write:error=ENOSPC:when=2", s.args(k, s.src_new, true));
    INFO(k.name << ": " << r.output);
    CHECK(r.exit_code == 1);
    CHECK(r.output.find("No space left on device") != std::string::npos);
    CHECK(entries(s.out_dir) == before);
    CHECK(s.loads_as() == 0);
  }
}

TEST_CASE("outputs written with generation names load in the reference libraries", "[atomic][needs_onnx]") {
  Setup s(kKinds[1], 3);
  s.write_clean(kKinds[1], s.src_old);
  s.write_clean(kKinds[1], s.src_new);  // the second write uses "m.onnx.tb<8 hex>.data"
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import sys, onnx
from onnx import numpy_helper
onnx.checker.check_model(sys.argv[1])
refs = onnx.load(sys.argv[1], load_external_data=False)
locs = {e.value for t in refs.graph.initializer for e in t.external_data if e.key == 'location'}
assert len(locs) == 1 and '.tb' in next(iter(locs)), locs
m = onnx.load(sys.argv[1])
print(float(numpy_helper.to_array(m.graph.initializer[0])[0, 1]))
)",
                          {s.target.string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("1.5") != std::string::npos);

  Setup t(kKinds[0], 6);
  t.write_clean(kKinds[0], t.src_old);
  t.write_clean(kKinds[0], t.src_new);  // "model-tb<8 hex>-0000N-of-0000M.safetensors"
  r = tbtest::python(tbtest::Peer::Peers, R"(
import sys, os, json
from safetensors.numpy import load_file
d = sys.argv[1]
wm = json.load(open(os.path.join(d, 'model.safetensors.index.json')))['weight_map']
assert all('-tb' in f for f in wm.values()), wm
vals = {k: load_file(os.path.join(d, f))[k] for k, f in wm.items()}
print(len(vals), float(vals['layer0.weight'][0, 1]))
)",
                     {t.out_dir.string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("6 1.5") != std::string::npos);
}

TEST_CASE("8 parallel converts without --force: exactly one succeeds", "[atomic][needs_onnx]") {
  tbtest::TempDir dir;
  fs::path src = dir / "src.safetensors";
  save(Checkpoint::from_state_dict(weights(4, 0.f)), src);
  fs::create_directory(dir / "shards");
  const std::vector<std::pair<std::string, std::vector<std::string>>> targets = {
      {"race.pt", {}},
      {"race.onnx", {"--option", "external_data=always"}},
      {"race_of", {"--to", "oneflow"}},
      {"shards", {"--to", "safetensors", "--shard-size", "20KB"}},
  };
  for (const auto& [name, opts] : targets) {
    INFO(name);
    std::vector<pid_t> pids;
    for (int i = 0; i < 8; ++i) {
      std::vector<std::string> a{"convert", src.string(), (dir / name).string()};
      a.insert(a.end(), opts.begin(), opts.end());
      pids.push_back(spawn_cli(a, dir / ("err" + std::to_string(i))));
    }
    int ok = 0;
    for (size_t i = 0; i < pids.size(); ++i) {
      int st = wait_status(pids[i]);
      REQUIRE(WIFEXITED(st));
      if (WEXITSTATUS(st) == 0) {
        ++ok;
        continue;
      }
      CHECK(WEXITSTATUS(st) == 1);
      std::ifstream f(dir / ("err" + std::to_string(i)));
      std::string err((std::istreambuf_iterator<char>(f)), {});
      INFO(err);
      CHECK(err.find("already exists") != std::string::npos);
    }
    CHECK(ok == 1);
    CHECK(tbtest::same_state_dicts(load(dir / name).state_dict(), weights(4, 0.f)));
    CHECK_FALSE(has_temp(dir.path()));
  }
  // The losers removed their shards and data files.
  CHECK(entries(dir / "shards") == sharded_files(dir / "shards"));
  std::set<std::string> onnx;
  for (const auto& n : entries(dir.path()))
    if (n.rfind("race.onnx", 0) == 0) onnx.insert(n);
  CHECK(onnx.size() == 2);
}

TEST_CASE("targets that are not regular files are refused even with --force, symlinks are kept", "[atomic]") {
  tbtest::TempDir dir;
  fs::path src = dir / "src.safetensors";
  save(Checkpoint::from_state_dict(weights(1, 0.f)), src);
  auto refused = [&](const fs::path& target, const std::string& why, std::vector<std::string> extra = {}) {
    std::vector<std::string> a{"convert", src.string(), target.string(), "--force"};
    a.insert(a.end(), extra.begin(), extra.end());
    auto r = tbtest::run_cli(a);
    INFO(r.output);
    CHECK(r.exit_code == 1);
    CHECK(r.output.find(why) != std::string::npos);
  };
  REQUIRE(::mkfifo((dir / "fifo.pt").c_str(), 0644) == 0);
  refused(dir / "fifo.pt", "is a FIFO (named pipe), not a regular file; refusing to write over it");
  CHECK(fs::is_fifo(dir / "fifo.pt"));
  // A device node (root in a container may create one; /dev/null itself is never put at risk).
  if (::mknod((dir / "null.pt").c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0) {
    refused(dir / "null.pt", "is a character device, not a regular file");
    CHECK(fs::is_character_file(dir / "null.pt"));
  }
  fs::create_directory(dir / "folder.pt");
  refused(dir / "folder.pt", "is a folder, not a regular file");
  CHECK(fs::is_directory(dir / "folder.pt"));
  // A symlink is neither followed nor replaced: the file it points to and the link stay as they were.
  fs::copy_file(src, dir / "real.safetensors");
  fs::create_symlink("real.safetensors", dir / "link.safetensors");
  refused(dir / "link.safetensors", "is a symbolic link; refusing to replace it");
  CHECK(fs::is_symlink(dir / "link.safetensors"));
  fs::create_symlink("real.safetensors", dir / "of_link");
  refused(dir / "of_link", "is a symbolic link; refusing to replace it", {"--to", "oneflow"});
  CHECK(fs::is_symlink(dir / "of_link"));
  CHECK_FALSE(has_temp(dir.path()));
}

TEST_CASE("SIGTERM or SIGINT mid-convert removes the temporary file or folder", "[atomic]") {
  tbtest::TempDir dir;
  {
    StateDict sd;  // 200 MB: the conversion runs long enough to be interrupted while writing
    for (int k = 0; k < 50; ++k) {
      Tensor t = Tensor::zeros(DType::F32, Shape{1024, 1024});
      auto* p = t.data_as<float>();
      for (int64_t i = 0; i < t.numel(); ++i) p[i] = float(k + i % 977);
      sd.insert("w" + std::to_string(k), std::move(t));
    }
    save(Checkpoint::from_state_dict(sd), dir / "big.safetensors");
  }
  const std::vector<std::tuple<std::string, int, std::vector<std::string>>> cases = {
      {"out.pt", SIGTERM, {}}, {"out.npz", SIGINT, {}}, {"out_of", SIGTERM, {"--to", "oneflow"}}};
  for (const auto& [name, sig, opts] : cases) {
    INFO(name << " signal " << sig);
    std::vector<std::string> a{"convert", (dir / "big.safetensors").string(), (dir / name).string(), "-q"};
    a.insert(a.end(), opts.begin(), opts.end());
    pid_t pid = spawn_cli(a, dir / "err");
    auto start = std::chrono::steady_clock::now();
    while (!has_temp(dir.path()) && std::chrono::steady_clock::now() - start < std::chrono::seconds(20))
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    REQUIRE(has_temp(dir.path()));
    std::this_thread::sleep_for(std::chrono::milliseconds(30));  // well into writing
    ::kill(pid, sig);
    int st = wait_status(pid);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
      WARN("the conversion finished before the signal arrived; nothing to check");
      fs::remove_all(dir / name);
      continue;
    }
    REQUIRE(WIFSIGNALED(st));
    CHECK(WTERMSIG(st) == sig);  // terminated by the signal, as without the handler
    INFO("folder:" << listing(dir.path()));
    CHECK_FALSE(has_temp(dir.path()));
    CHECK_FALSE(fs::exists(dir / name));
  }
}

TEST_CASE("a file replaced with --force keeps its mode, new files follow the umask", "[atomic]") {
  tbtest::TempDir dir;
  Checkpoint ck = Checkpoint::from_state_dict(weights(1, 0.f));
  SaveOptions force;
  force.overwrite = true;
  fs::path p = dir / "private.safetensors";
  save(ck, p);
  fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write);
  save(ck, p, {}, force);
  CHECK(fs::status(p).permissions() == (fs::perms::owner_read | fs::perms::owner_write));
  const mode_t old = ::umask(027);
  save(ck, dir / "new.pt");
  save(ck, dir / "new_of", "oneflow");
  ::umask(old);
  CHECK((fs::status(dir / "new.pt").permissions() & fs::perms::all) == fs::perms(0640));
  CHECK((fs::status(dir / "new_of").permissions() & fs::perms::all) == fs::perms(0750));
  // Replacing a OneFlow folder keeps the folder's mode too.
  fs::permissions(dir / "new_of", fs::perms(0700));
  save(ck, dir / "new_of", "oneflow", force);
  CHECK((fs::status(dir / "new_of").permissions() & fs::perms::all) == fs::perms(0700));
}

TEST_CASE("a 250-character file name works for single- and multi-file outputs", "[atomic][needs_onnx]") {
  tbtest::TempDir dir;
  Checkpoint ck = Checkpoint::from_state_dict(weights(6, 0.f));
  SaveOptions force;
  force.overwrite = true;
  const std::string stem(247, 'n');
  fs::path pt = dir / (stem + ".pt");
  save(ck, pt);
  save(ck, pt, {}, force);
  CHECK(tbtest::same_state_dicts(load(pt).state_dict(), ck.state_dict()));

  SaveOptions ext = force;
  ext.options["external_data"] = "always";
  fs::path onnx = dir / (std::string(245, 'o') + ".onnx");
  save(ck, onnx, "onnx", ext);
  save(ck, onnx, "onnx", ext);  // the data file's generation name is shortened to fit
  CHECK(tbtest::same_state_dicts(load(onnx).state_dict(), ck.state_dict()));

  SaveOptions shards = force;
  shards.options["shard_size"] = "40KB";
  fs::create_directory(dir / "sharded");
  fs::path st = dir / "sharded" / (std::string(238, 's') + ".safetensors");
  save(ck, st, "safetensors", shards);
  save(ck, st, "safetensors", shards);
  CHECK(tbtest::same_state_dicts(load(dir / "sharded").state_dict(), ck.state_dict()));
  for (const auto& n : entries(dir / "sharded")) CHECK(n.size() <= 255);
  CHECK_FALSE(has_temp(dir.path()));
}
