// HDF5 plain layout: reading h5py files, writing files h5py reads bit-exact, round trips, safety.
#include "tests/support.h"

#include <algorithm>
#include <atomic>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "formats/h5.h"
#include "tensor/io.h"

using namespace tb;
using namespace tbtest;

namespace {

/** "key|dtype|shape|crc32 of the row-major bytes" per tensor, sorted. */
std::set<std::string> listing(const StateDict& sd) {
  std::set<std::string> out;
  for (const auto& [k, t] : sd) {
    Tensor c = t.contiguous();
    out.insert(str(k, "|", dtype_name(t.dtype()), "|", py_shape(t.shape()), "|", crc32(c.data(), c.nbytes())));
  }
  return out;
}

// The same listing computed by h5py (Debian h5py 3.7) from every numeric dataset of each file.
const char* kH5pyListing = R"PY(
import sys, zlib, h5py, numpy as np
for fn in sys.argv[1:]:
    lines = []
    def visit(name, obj):
        if not isinstance(obj, h5py.Dataset) or obj.dtype.kind in 'SUO':
            return
        x = np.ascontiguousarray(obj[()])
        dt = obj.attrs.get('dtype')
        dt = dt.decode() if isinstance(dt, bytes) else dt
        dname = dt if dt in ('bfloat16', 'float8_e4m3fn', 'float8_e5m2') else x.dtype.name
        lines.append('%s|%s|%s|%d' % (name, dname, tuple(obj.shape), zlib.crc32(x.tobytes())))
    with h5py.File(fn, 'r') as f:
        f.visititems(visit)
    print('FILE ' + fn)
    for l in sorted(lines):
        print(l)
)PY";

/** file -> listing lines, from h5py. */
std::map<std::string, std::set<std::string>> h5py_listing(const std::vector<std::string>& files) {
  std::map<std::string, std::set<std::string>> out;
  for (const auto& [file, lines] : python_lines_by_file(Peer::Torch, kH5pyListing, files))
    out[file].insert(lines.begin(), lines.end());
  return out;
}

std::string info_of(const Checkpoint& c, const std::string& k) {
  for (const auto& [a, b] : c.info)
    if (a == k) return b;
  return {};
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

Checkpoint load_file(const fs::path& p, bool mmap = true) {
  LoadOptions o;
  o.mmap = mmap;
  return load_h5(Source::from_path(p, mmap), o);
}

void copy_prefix(const fs::path& from, const fs::path& to, size_t n) {
  std::ifstream in(from, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream out(to, std::ios::binary);
  out.write(bytes.data(), std::streamsize(std::min(n, bytes.size())));
}

}  // namespace

TEST_CASE("plain h5py file: datasets at root and in groups, chunked gzip+shuffle, attributes", "[h5]") {
  fs::path p = fixture("h5/plain.h5");
  Checkpoint c = load_file(p);
  CHECK(c.format == "h5");
  CHECK(info_of(c, "layout") == "plain");
  StateDict sd = c.state_dict();
  std::vector<std::string> keys = sd.keys();
  std::sort(keys.begin(), keys.end());
  CHECK(keys == std::vector<std::string>{"compressed", "extra/table", "hidden.bias", "hidden.weight", "out.bias",
                                         "out.weight"});
  CHECK(sd.at("hidden.weight").shape() == Shape{256, 20});
  CHECK(sd.at("extra/table").dtype() == DType::I32);
  CHECK(sd.at("extra/table").to_vector<int32_t>()[14] == 14);
  CHECK(c.metadata.at("framework") == "tensorbridge-fixture");
  CHECK(c.metadata.at("fixed_string") == "fixed-len");
  CHECK(c.metadata.at("format_version") == "1");
  CHECK(c.metadata.at("extra/note") == "group attribute");
  // Contiguous datasets are views of the mapped file; chunked ones are decoded copies.
  CHECK(sd.at("hidden.weight").storage()->kind() == Storage::Kind::Mapped);
  CHECK(sd.at("compressed").storage()->kind() == Storage::Kind::Heap);
  // Values: exactly what h5py reads.
  auto ref = h5py_listing({p.string()});
  CHECK(listing(sd) == ref[p.string()]);
  // Without mmap, and from memory (no path: opened as a file image), the same values.
  CHECK(listing(load_file(p, false).state_dict()) == ref[p.string()]);
  std::ifstream in(p, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Source mem;
  mem.reader = memory_reader(bytes, "plain-in-memory.h5");
  CHECK(listing(load_h5(mem).state_dict()) == ref[p.string()]);
}

TEST_CASE("plain write: every dtype, dots kept, slashes make groups, h5py reads it bit-exact, round trip", "[h5]") {
  StateDict sd;
  auto iota = [](DType dt, Shape shape) {
    Tensor f = Tensor::zeros(DType::F64, shape);
    for (int64_t i = 0; i < f.numel(); ++i) f.data_as<double>()[i] = double(i % 7) - 2.5 + double(i) / 16;
    return f.to(dt);
  };
  for (DType dt : {DType::F32, DType::F64, DType::F16, DType::BF16, DType::I8, DType::I16, DType::I32, DType::I64,
                   DType::U8, DType::U16, DType::U32, DType::U64, DType::Bool, DType::C64, DType::C128})
    sd.insert(str("dtypes.", dtype_name(dt)), iota(dt, {3, 4}));
  sd.insert("hidden.weight", iota(DType::F32, {4, 3}).transpose(0, 1));  // non-contiguous view
  sd.insert("extra/table", iota(DType::I32, {5, 3}));
  sd.insert("extra/deeper/scalar", iota(DType::F64, {}));
  sd.insert("empty_0x3", Tensor::zeros(DType::F32, {0, 3}));
  sd.metadata["framework"] = "tensorbridge";
  sd.metadata["extra/note"] = "on the group";

  TempDir dir;
  fs::path out = dir / "all.h5";
  save(Checkpoint::from_state_dict(sd), out, "h5");
  auto ref = h5py_listing({out.string()});
  CHECK(listing(sd) == ref[out.string()]);

  RunResult r = python(Peer::Torch, R"PY(
import sys, h5py
with h5py.File(sys.argv[1], 'r') as f:
    assert f.attrs['framework'] == 'tensorbridge', f.attrs['framework']
    assert f['extra'].attrs['note'] == 'on the group'
    assert isinstance(f['extra'], h5py.Group) and 'hidden.weight' in f
    assert f['dtypes.bool'].dtype == bool and f['dtypes.complex64'].dtype == 'complex64'
    assert f['dtypes.float16'].dtype == 'float16'
print('ok')
)PY",
                       {out.string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);

  Checkpoint back = load_file(out);
  StateDict bsd = back.state_dict();
  REQUIRE(bsd.size() == sd.size());
  for (const auto& [k, t] : sd) {
    INFO(k);
    CHECK(equal(bsd.at(k), t));
  }
  CHECK(back.metadata.at("framework") == "tensorbridge");
  CHECK(back.metadata.at("extra/note") == "on the group");

  // Refuses to overwrite unless asked.
  CHECK_THROWS_AS(save(Checkpoint::from_state_dict(sd), out, "h5"), IoError);
  SaveOptions force;
  force.overwrite = true;
  CHECK_NOTHROW(save(Checkpoint::from_state_dict(sd), out, "h5", force));
}

TEST_CASE("round trip h5py file -> our h5 -> same tensors and attributes", "[h5]") {
  Checkpoint a = load_file(fixture("h5/plain.h5"));
  TempDir dir;
  save(a, dir / "copy.h5", "h5");
  Checkpoint b = load_file(dir / "copy.h5");
  CHECK(listing(a.state_dict()) == listing(b.state_dict()));
  CHECK(a.metadata == b.metadata);
}

TEST_CASE("a tensor that is also a group is refused, other names are escaped and come back", "[h5]") {
  TempDir dir;
  StateDict sd;
  sd.insert("a", Tensor::zeros(DType::F32, {1}));
  sd.insert("a/b", Tensor::zeros(DType::F32, {1}));
  std::string msg = error_of([&] { save(Checkpoint::from_state_dict(sd), dir / "x.h5", "h5"); });
  CHECK(msg.find("'a' is also a group") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "x.h5"));
  CHECK(fs::is_empty(dir.path()));
  // Empty components and "." / ".." follow the naming rule (formats/naming.h) instead of failing.
  StateDict odd;
  for (const char* n : {"x//y", "/lead", "trail/", "..", "p/./q"}) odd.insert(n, Tensor::zeros(DType::F32, {1}));
  save(Checkpoint::from_state_dict(odd), dir / "y.h5", "h5");
  CHECK(load_file(dir / "y.h5").state_dict().keys() ==
        std::vector<std::string>{"..", "/lead", "p/./q", "trail/", "x//y"});
}

TEST_CASE("hostile files: links out of the file, virtual and external storage, size bomb, truncation", "[h5]") {
  auto msg = [](const std::string& f) { return error_of([&] { load_file(fixture("h5_extra/" + f)); }); };
  CHECK_THROWS_AS(load_file(fixture("h5_extra/hostile_external_link.h5")), UnsafeError);
  CHECK(msg("hostile_external_link.h5").find("'/leak' is an external link") != std::string::npos);
  CHECK_THROWS_AS(load_file(fixture("h5_extra/hostile_soft_link.h5")), UnsafeError);
  CHECK(msg("hostile_soft_link.h5").find("soft link '/dangling' does not resolve") != std::string::npos);
  CHECK_THROWS_AS(load_file(fixture("h5_extra/hostile_virtual.h5")), UnsafeError);
  CHECK(msg("hostile_virtual.h5").find("'virtual' is a virtual dataset") != std::string::npos);
  CHECK_THROWS_AS(load_file(fixture("h5_extra/hostile_external_storage.h5")), UnsafeError);
  CHECK(msg("hostile_external_storage.h5").find("external raw files") != std::string::npos);
  CHECK_THROWS_AS(load_file(fixture("h5_extra/hostile_size_bomb.h5")), UnsafeError);
  CHECK(msg("hostile_size_bomb.h5").find("declares 68719476736 bytes") != std::string::npos);

  TempDir dir;
  fs::path src = fixture("keras/mlp_keras2.h5");
  for (size_t cut : {size_t(100), size_t(3000), size_t(fs::file_size(src) - 4096)}) {
    fs::path t = dir / str("cut", cut, ".h5");
    copy_prefix(src, t, cut);
    std::string m = error_of([&] { load_file(t); });
    INFO(m);
    CHECK(m.find("[h5] '" + t.string() + "'") != std::string::npos);
    CHECK_THROWS_AS(load_file(t), FormatError);
  }
  // HDF5's own words reach the message.
  std::string m = error_of([&] { load_file(dir / "cut100.h5"); });
  CHECK(m.find("(HDF5: ") != std::string::npos);
}

TEST_CASE("sniffing: signature after a user block, HDF5 named .keras or .bin", "[h5]") {
  Checkpoint c = load_file(fixture("h5_extra/userblock.h5"));
  CHECK(info_of(c, "user block bytes") == "512");
  CHECK(c.state_dict().at("w").to_vector<float>() == std::vector<float>{0, 1, 2, 3, 4, 5});
  CHECK(c.metadata.at("note") == "after a user block");
  CHECK(detect_format(Source::from_path(fixture("h5_extra/userblock.h5"))).name == "h5");
  CHECK(
      detect_format(Source::from_path(fixture("shared/keras_h5/tfkeras2110_h5_with_dot_keras_extension.keras"))).name ==
      "h5");
  TempDir dir;
  fs::copy_file(fixture("h5/plain.h5"), dir / "weights.bin");
  CHECK(detect_format(Source::from_path(dir / "weights.bin")).name == "h5");
  CHECK(is_hdf5(*open_file(fixture("h5/plain.h5"))));
  CHECK_FALSE(is_hdf5(*memory_reader(std::vector<uint8_t>(600, 0x89))));
}

TEST_CASE("loads and saves from several threads at once (HDF5 calls are serialised)", "[h5]") {
  TempDir dir;
  Checkpoint ref = load_file(fixture("keras/mlp_keras2.h5"));
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] {
      try {
        for (int k = 0; k < 5; ++k) {
          Checkpoint c = load_file(fixture(i % 2 ? "keras/mlp_keras2.h5" : "h5/plain.h5"));
          save(c, dir / str("t", i, "_", k, ".h5"), i % 2 ? "keras-h5" : "h5");
          Checkpoint back = load_file(dir / str("t", i, "_", k, ".h5"));
          if (back.state_dict().size() == c.state_dict().size()) ++good;
        }
      } catch (...) {}
    });
  for (auto& t : threads) t.join();
  CHECK(good == 20);
}

TEST_CASE("a failure in the middle of an h5 write leaves no target and no temporary file", "[h5]") {
  // fc.* is written (a dense layer) before odd.thing turns out to have no Keras 3 class.
  StateDict sd;
  sd.insert("fc.weight", Tensor::zeros(DType::F32, {4, 3}));
  sd.insert("fc.bias", Tensor::zeros(DType::F32, {4}));
  sd.insert("odd.thing", Tensor::zeros(DType::F32, {5}));
  TempDir dir;
  std::string msg = error_of([&] { save(Checkpoint::from_state_dict(sd), dir / "m.h5", "keras3-h5"); });
  CHECK(msg.find("cannot tell which Keras layer class layer 'odd'") != std::string::npos);
  CHECK(fs::is_empty(dir.path()));
  // Over an existing file (--force): the old content stays.
  StateDict old;
  old.insert("w", Tensor::zeros(DType::F32, {2}));
  save(Checkpoint::from_state_dict(old), dir / "m.h5", "h5");
  SaveOptions force;
  force.overwrite = true;
  CHECK_THROWS_AS(save(Checkpoint::from_state_dict(sd), dir / "m.h5", "keras3-h5", force), UnsupportedError);
  CHECK(load_file(dir / "m.h5").state_dict().keys() == std::vector<std::string>{"w"});
  CHECK(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()) == 1);
}

TEST_CASE("convert to h5 streams: peak RSS follows the largest tensor, not the file", "[h5]") {
#if defined(__SANITIZE_ADDRESS__)
  SUCCEED("RSS is not meaningful under ASan");
  return;
#endif
  // 8 x 16 MiB float32 in a .pt; the writer used to build the whole .h5 in memory (~3x the data).
  // The input is made by a forked child: a child's peak RSS starts at its parent's RSS at fork()
  // (and survives exec), so this process must not hold the tensors when it starts the CLI.
  auto tensor = [](int i) {
    Tensor t = Tensor::zeros(DType::F32, {1024, 4096});
    float* p = t.data_as<float>();
    for (int64_t k = 0; k < t.numel(); ++k) p[k] = float(i) + float(k % 1000) / 1000.0f;
    return t;
  };
  TempDir dir;
  pid_t maker = ::fork();
  REQUIRE(maker >= 0);
  if (maker == 0) {
    try {
      StateDict sd;
      for (int i = 0; i < 8; ++i) sd.insert(str("block", i, ".weight"), tensor(i));
      save(Checkpoint::from_state_dict(sd), dir / "in.pt", "pt");
      ::_exit(0);
    } catch (...) {
      ::_exit(1);
    }
  }
  int made = 0;
  REQUIRE(::waitpid(maker, &made, 0) == maker);
  REQUIRE((WIFEXITED(made) && WEXITSTATUS(made) == 0));
  fs::path out = dir / "out.h5";
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::string in = (dir / "in.pt").string(), o = out.string();
    ::execl(TB_CLI_PATH, TB_CLI_PATH, "convert", in.c_str(), o.c_str(), "-q", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  struct rusage ru {};
  REQUIRE(::wait4(pid, &status, 0, &ru) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  const double peak_mib = double(ru.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
  INFO("peak RSS of tensorbridge convert: " << peak_mib << " MiB for 128 MiB of tensors");
  CHECK(peak_mib < 16 + 64);  // largest tensor + 64 MiB (the issue's budget)
  StateDict back = load_file(out).state_dict();
  REQUIRE(back.size() == 8);
  for (int i = 0; i < 8; ++i) {
    INFO(i);
    CHECK(equal(back.at(str("block", i, ".weight")), tensor(i)));
  }
}

namespace {
/** Loads `file` by path and from an in-memory image on a second thread while this one is alive
 *  (so the process has several threads); the messages of the refusals, "" for a load that worked. */
std::vector<std::string> load_from_second_thread(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Source image;
  image.reader = memory_reader(bytes, file.filename().string());
  std::vector<std::string> out;
  std::thread t([&] {
    for (const Source& src : {Source::from_path(file), image}) {
      try {
        load_h5(src);
        out.push_back("");
      } catch (const std::exception& e) {
        out.push_back(e.what());
      }
    }
  });
  t.join();
  return out;
}

/** Sets an environment variable for one scope. */
struct ScopedEnv {
  std::string name;
  ScopedEnv(std::string n, const std::string& v) : name(std::move(n)) { ::setenv(name.c_str(), v.c_str(), 1); }
  ~ScopedEnv() { ::unsetenv(name.c_str()); }
};
}  // namespace

TEST_CASE("with several threads the probe runs in the spawned helper and refuses a file that crashes HDF5", "[h5]") {
  // fork() from a process with several threads can deadlock the child; the probe is then the
  // tensorbridge-h5probe executable (posix_spawn), for a file by path and for in-memory bytes (memfd).
  TempDir dir;
  fs::path real = fs::path(TB_CLI_PATH).parent_path() / "tensorbridge-h5probe";
  REQUIRE(fs::exists(real));
  fs::path marker = dir / "spawned", wrapper = dir / "probe.sh";
  {
    std::ofstream w(wrapper);
    w << "#!/bin/sh\necho x >> '" << marker.string() << "'\nexec '" << real.string() << "' \"$@\"\n";
  }
  fs::permissions(wrapper, fs::perms::owner_all);
  ScopedEnv env("TB_H5PROBE", wrapper.string());
  fs::path bad = fixture("malformed/h5_global_heap_bad_index.h5");
  for (const std::string& m : load_from_second_thread(bad)) {
    INFO(m);
    CHECK(m.find("h5_global_heap_bad_index.h5") != std::string::npos);
    CHECK(m.find("the HDF5 library") != std::string::npos);
    CHECK(m.find("reading this file's structure in a probe process") != std::string::npos);
  }
  std::ifstream count(marker);
  std::string all((std::istreambuf_iterator<char>(count)), std::istreambuf_iterator<char>());
  CHECK(all == "x\nx\n");  // both loads went through the helper
  // A good file loads through the helper, from a path and from memory.
  for (const std::string& m : load_from_second_thread(fixture("keras/mlp_keras2.h5"))) CHECK(m == "");
  // A refusal the helper reports (not a crash) arrives with its kind and message.
  fs::path bomb = fixture("malformed/h5_vlen_length_bomb.h5");
  for (const std::string& m : load_from_second_thread(bomb)) CHECK(!m.empty());
}

TEST_CASE("with TB_H5PROBE naming a missing helper the probe falls back to fork and still refuses", "[h5]") {
  // Documented in docs/FUZZING.md: without a helper a multithreaded process forks as before.
  TempDir dir;
  ScopedEnv env("TB_H5PROBE", (dir / "no-such-helper").string());
  for (const std::string& m : load_from_second_thread(fixture("malformed/h5_global_heap_bad_index.h5"))) {
    INFO(m);
    CHECK(m.find("reading this file's structure in a probe process") != std::string::npos);
  }
  for (const std::string& m : load_from_second_thread(fixture("keras/mlp_keras2.h5"))) CHECK(m == "");
}
