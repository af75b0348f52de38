// .npz: savez / savez_compressed archives (ours and numpy's, old and new), keys with dots and slashes,
// zero-copy stored members, and np.load reading what we write.
#include "tests/support.h"

#include <sstream>

#include "formats/detail/zip.h"
#include "formats/npy.h"
#include "tensor/io.h"

using namespace tb;

namespace {

Tensor ramp(DType t, const Shape& shape, double scale = 0.25) {
  int64_t n = checked_numel(shape);
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = double(i - 3) * scale;
  return Tensor::from_vector<double>(DType::F64, shape, v).to(t);
}

Checkpoint load_path(const std::filesystem::path& p) { return load_npz(Source::from_path(p)); }

}  // namespace

TEST_CASE("committed savez and savez_compressed fixtures load the same arrays", "[npz]") {
  Tensor f32 = load_npy_tensor(open_file(tbtest::fixture("numpy/f32_c.npy")));
  Checkpoint a = load_path(tbtest::fixture("numpy/arrays.npz"));
  Checkpoint b = load_path(tbtest::fixture("numpy/arrays_compressed.npz"));
  StateDict sa = a.state_dict(), sb = b.state_dict();
  CHECK(sa.keys() == std::vector<std::string>{"x", "y", "f32", "ints"});
  CHECK(sb.keys() == sa.keys());
  for (const auto& [k, t] : sa) CHECK(equal(t, sb.at(k)));
  CHECK(equal(sa.at("f32"), f32));
  CHECK(sa.at("ints").to_vector<int16_t>() == std::vector<int16_t>{0, 1, 2, 3, 4, 5});
  CHECK(detect_format(Source::from_path(tbtest::fixture("numpy/arrays.npz"))).name == "npz");
  CHECK(detect_format(Source::from_path(tbtest::fixture("numpy/arrays_compressed.npz"))).name == "npz");
}

TEST_CASE("third-party npz files: candle, Fortran members, text scalars, object members", "[npz]") {
  StateDict c = load_path(tbtest::fixture("shared/numpy/candle_test.npz")).state_dict();
  REQUIRE(c.contains("x"));
  REQUIRE(c.contains("x_plus_one"));
  auto x = c.at("x").to_vector<int64_t>();
  auto x1 = c.at("x_plus_one").to_vector<int64_t>();
  REQUIRE(x.size() == 10);
  for (size_t i = 0; i < x.size(); ++i) CHECK(x1[i] == x[i] + 1);

  StateDict f = load_path(tbtest::fixture("shared/numpy/fortran_f4_in_npz.npz")).state_dict();
  CHECK(f.at("X").shape() == Shape{4, 3});
  CHECK(f.at("y").shape() == Shape{4});
  CHECK(f.at("Ri_rows").dtype() == DType::I64);
  // cross-check the Fortran member's values with numpy
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import sys, numpy as np
print(' '.join(repr(float(v)) for v in np.load(sys.argv[1])['X'].reshape(-1)))
)",
                          {tbtest::fixture("shared/numpy/fortran_f4_in_npz.npz").string()});
  REQUIRE(r.exit_code == 0);
  std::istringstream is(r.output);
  for (int64_t i = 0; i < 12; ++i) {
    double v = 0;
    is >> v;
    CHECK(f.at("X").item_as_double(i) == float(v));
  }

  for (const char* name : {"shared/numpy/py3-arr-savez.npz", "shared/numpy/py3-arr-savez-compressed.npz"}) {
    Checkpoint p = load_path(tbtest::fixture(name));
    REQUIRE(p.root.get("x"));
    CHECK(p.root.get("x")->as_tensor().shape() == Shape{4, 3});
    CHECK(p.root.get("x")->as_tensor().dtype() == DType::I64);
    REQUIRE(p.root.get("foo"));
    CHECK(p.root.get("foo")->is_str());  // '<U3' 0-d text: kept as a string leaf
  }
  LoadOptions o;
  o.allow_unknown_globals = true;
  for (const char* name : {"shared/numpy/py3-objarr_numpy2.npz", "shared/numpy/py2-objarr.npz"}) {
    INFO(name);
    Checkpoint obj = load_npz(Source::from_path(tbtest::fixture(name)), o);
    REQUIRE(obj.root.get("x"));
    CHECK(obj.root.get("x")->kind() == Value::Kind::List);
    CHECK(obj.root.get("x")->items().size() == 4);
  }
  // by default too: the Python 2 xrange class is only referenced (kept as an opaque global, never called)
  Checkpoint py2 = load_path(tbtest::fixture("shared/numpy/py2-objarr.npz"));
  REQUIRE(py2.root.get("x"));
  CHECK(py2.root.get("x")->items().at(1).kind() == Value::Kind::Object);
}

TEST_CASE("our npz (stored and deflated) is read by np.load for every key, dots and slashes included", "[npz]") {
  tbtest::TempDir dir;
  StateDict sd;
  sd.insert("hidden.weight", ramp(DType::F32, {4, 3}));
  sd.insert("hidden.bias", ramp(DType::F32, {4}));
  sd.insert("block/conv.0/weight", ramp(DType::F16, {2, 2, 3}));
  sd.insert("num_batches_tracked", ramp(DType::I64, {}, 4));
  sd.insert("mask", ramp(DType::Bool, {5}));
  sd.insert("empty", ramp(DType::F64, {0, 2}));
  sd.insert("big", ramp(DType::F32, {300, 200}, 0.0));  // zeros: compresses well
  Tensor base = ramp(DType::F32, {3, 5});
  sd.insert("transposed", base.transpose(0, 1));
  for (bool compress : {false, true}) {
    auto path = dir / (compress ? "c.npz" : "s.npz");
    SaveOptions so;
    if (compress) so.options["compress"] = "1";
    save(Checkpoint::from_state_dict(sd), path, "", so);
    // our reader, zero-copy for stored members
    Checkpoint c = load(path);
    CHECK(c.format == "npz");
    StateDict back = c.state_dict();
    CHECK(back.keys() == sd.keys());
    for (const auto& [k, t] : sd) CHECK(equal(back.at(k), t.contiguous()));
    if (!compress) {
      CHECK(back.at("big").storage()->kind() == Storage::Kind::Mapped);
      zip::ZipReader zr(open_file(path));
      for (const auto& e : zr.entries()) CHECK(e.data_offset % 64 == 0);
    }
    auto r = tbtest::python(tbtest::Peer::Torch, R"(
import sys, zipfile, numpy as np
f = np.load(sys.argv[1])
keys = ['hidden.weight', 'hidden.bias', 'block/conv.0/weight', 'num_batches_tracked', 'mask', 'empty', 'big', 'transposed']
assert sorted(f.files) == sorted(keys), f.files
ramp = lambda n: (np.arange(n) - 3) * 0.25
assert np.array_equal(f['hidden.weight'], ramp(12).astype(np.float32).reshape(4, 3))
assert f['hidden.bias'].dtype == np.float32
assert np.array_equal(f['block/conv.0/weight'], ramp(12).astype(np.float16).reshape(2, 2, 3))
assert f['num_batches_tracked'].shape == () and f['num_batches_tracked'] == -12
assert f['mask'].dtype == np.bool_ and list(f['mask']) == [True, True, True, False, True]
assert f['empty'].shape == (0, 2)
assert not f['big'].any() and f['big'].shape == (300, 200)
assert np.array_equal(f['transposed'], ramp(15).astype(np.float32).reshape(3, 5).T)
z = zipfile.ZipFile(sys.argv[1])
assert z.testzip() is None
print(sorted({i.compress_type for i in z.infolist()}))
)",
                            {path.string()});
    INFO(r.output);
    CHECK(r.exit_code == 0);
    CHECK(r.output.find(compress ? "[8]" : "[0]") != std::string::npos);
  }
  SaveOptions bad;
  bad.options["compress"] = "yes";
  CHECK_THROWS_AS(save_npz(Checkpoint::from_state_dict(sd), dir / "x.npz", bad), UnsupportedError);
  CHECK_FALSE(std::filesystem::exists(dir / "x.npz"));
}

TEST_CASE("large mapped tensors go to npz and .pt with the CRC-32 of their file bytes", "[npz]") {
  // Tensors of at least 1 MiB from a mapped input are read from the file in chunks (not through the
  // mapping) and checksummed on the way: 2.7 MiB is two whole chunks and a partial one.
  tbtest::TempDir dir;
  StateDict sd;
  sd.insert("w", Tensor::randn({700, 1000}, 11u));
  sd.insert("small", ramp(DType::F32, {3}));
  save(Checkpoint::from_state_dict(sd), dir / "src.safetensors");
  StateDict mapped = load(dir / "src.safetensors").state_dict();
  REQUIRE(mapped.at("w").storage()->kind() == Storage::Kind::Mapped);
  save(Checkpoint::from_state_dict(mapped), dir / "w.npz");
  save(Checkpoint::from_state_dict(mapped), dir / "w.pt");
  save(Checkpoint::from_state_dict(sd), dir / "ref.npz");  // from memory: the reference bytes
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import sys, zipfile, numpy as np, torch
for f in sys.argv[1:3]:
    assert zipfile.ZipFile(f).testzip() is None, f
ref = np.load(sys.argv[3])
z = np.load(sys.argv[1])
t = torch.load(sys.argv[2])
for k in ('w', 'small'):
    assert np.array_equal(z[k], ref[k]) and np.array_equal(t[k].numpy(), ref[k]), k
print('ok', z['w'].shape)
)",
                          {(dir / "w.npz").string(), (dir / "w.pt").string(), (dir / "ref.npz").string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("ok (700, 1000)") != std::string::npos);
}

TEST_CASE("bf16 in npz round-trips through the raw-bits convention", "[npz]") {
  tbtest::TempDir dir;
  StateDict sd;
  sd.insert("w", ramp(DType::BF16, {3, 4}));
  sd.insert("q", ramp(DType::F8E4M3FN, {8}));
  save_npz(Checkpoint::from_state_dict(sd), dir / "b.npz");
  StateDict back = load_path(dir / "b.npz").state_dict();
  CHECK(equal(back.at("w"), sd.at("w")));
  CHECK(equal(back.at("q"), sd.at("q")));
}

TEST_CASE("corrupt npz members are reported with the member name", "[npz]") {
  tbtest::TempDir dir;
  StateDict sd;
  sd.insert("layer.weight", ramp(DType::F32, {64, 64}));
  SaveOptions so;
  so.options["compress"] = "1";
  save_npz(Checkpoint::from_state_dict(sd), dir / "c.npz", so);
  auto r = open_file(dir / "c.npz", false);
  auto bytes = r->read_bytes(0, size_t(r->size()));
  zip::ZipReader zr(memory_reader(bytes));
  const auto& e = zr.at("layer.weight.npy");
  bytes[size_t(e.data_offset + e.compressed_size / 2)] ^= 0xFF;
  {
    AtomicFileWriter w(dir / "bad.npz");
    w.write(bytes.data(), bytes.size());
    w.commit();
  }
  try {
    load_path(dir / "bad.npz");
    FAIL("expected FormatError");
  } catch (const FormatError& err) {
    CHECK(std::string(err.what()).find("layer.weight.npy") != std::string::npos);
  }
}
