// ONNX: initializers from real exporters (torch 0.3 .. 2.9, OnnxMLTools, tf2onnx), typed fields,
// external data, name recovery, weights-only writing checked by onnx/onnxruntime. Graph export and
// import are in onnx_graph_test.cpp.
#include "tests/support.h"

#include <algorithm>
#include <array>
#include <climits>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <set>

#include "formats/onnx.h"
#include "tensor/io.h"

using namespace tb;
using tbtest::fixture;
using tbtest::Peer;

namespace {

std::string info_of(const Checkpoint& c, const std::string& key) {
  std::string out;
  for (const auto& [k, v] : c.info)
    if (k == key) out += (out.empty() ? "" : "\n") + v;
  return out;
}

Checkpoint load_file(const std::filesystem::path& p) {
  Source s = Source::from_path(p);
  REQUIRE(sniff_onnx(s));
  return load(p);
}

}  // namespace

TEST_CASE("torch.onnx.export initializers keep state_dict names and values", "[onnx]") {
  Checkpoint c = load_file(fixture("onnx/mlp.onnx"));
  CHECK(c.format == "onnx");
  StateDict sd = c.state_dict();
  CHECK(sd.keys() == std::vector<std::string>{"hidden.weight", "hidden.bias", "out.weight", "out.bias"});
  for (const char* k : {"hidden.weight", "hidden.bias", "out.weight", "out.bias"}) {
    Tensor expect = tbtest::read_npy_minimal(fixture(std::string("torch/mlp_weights/") + k + ".npy"));
    CHECK(equal(sd.at(k), expect));
  }
  CHECK(info_of(c, "ir_version") == "7");
  CHECK(info_of(c, "producer_name") == "pytorch");
  CHECK(info_of(c, "producer_version") == "1.13.0");
  CHECK(info_of(c, "opset") == "13");
  CHECK(info_of(c, "renamed").empty());
  // raw_data tensors are views into the parsed model, not copies.
  CHECK(sd.at("hidden.weight").storage()->kind() == Storage::Kind::External);
}

TEST_CASE("MatMul-renamed, transposed torch weights get their state_dict names back", "[onnx]") {
  Checkpoint c = load_file(fixture("onnx_extra/mlp3d.onnx"));
  StateDict sd = c.state_dict();
  for (const char* k : {"hidden.weight", "hidden.bias", "out.weight", "out.bias"}) {
    INFO(k);
    REQUIRE(sd.contains(k));
    CHECK(equal(sd.at(k).contiguous(),
                tbtest::read_npy_minimal(fixture(std::string("torch/mlp_weights/") + k + ".npy"))));
  }
  for (const auto& k : sd.keys()) CHECK(k.rfind("onnx::", 0) != 0);
  std::string renamed = info_of(c, "renamed");
  CHECK(renamed.find("-> hidden.weight (MatMul weight [20, 256] transposed back to [256, 20])") != std::string::npos);
  CHECK(renamed.find("-> out.weight") != std::string::npos);
}

TEST_CASE("typed fields, sparse initializers, Constant nodes and metadata_props", "[onnx]") {
  Checkpoint c = load_file(fixture("onnx_extra/typed_fields.onnx"));
  StateDict sd = c.state_dict();
  CHECK(sd.at("f32").to_vector<float>() == std::vector<float>{0.5f, -1.25f, 3.0f, 1e-3f});
  CHECK(sd.at("f32").shape() == Shape{2, 2});
  CHECK(sd.at("f16").dtype() == DType::F16);
  CHECK(sd.at("f16").to_vector<uint16_t>() == std::vector<uint16_t>{0x3C00, 0xC100, 0x7BFF});
  CHECK(sd.at("bf16").to(DType::F32).to_vector<float>() == std::vector<float>{1.0f, -2.0f, 0.15625f});
  CHECK(sd.at("i8").to_vector<int8_t>() == std::vector<int8_t>{-128, 0, 127});
  CHECK(sd.at("u8").to_vector<uint8_t>() == std::vector<uint8_t>{0, 1, 255});
  CHECK(sd.at("i16").to_vector<int16_t>() == std::vector<int16_t>{-32768, 32767});
  CHECK(sd.at("u16").to_vector<uint16_t>() == std::vector<uint16_t>{0, 65535});
  CHECK(sd.at("boolean").dtype() == DType::Bool);
  CHECK(sd.at("boolean").to_vector<uint8_t>() == std::vector<uint8_t>{1, 0, 1});
  CHECK(sd.at("i32").to_vector<int32_t>() == std::vector<int32_t>{-7, 2147483647});
  CHECK(sd.at("i64").to_vector<int64_t>() == std::vector<int64_t>{-9000000000LL, 5});
  CHECK(sd.at("f64").to_vector<double>() == std::vector<double>{0.1, -1e300});
  CHECK(sd.at("u32").to_vector<uint32_t>() == std::vector<uint32_t>{0, 4294967295u});
  CHECK(sd.at("u64").to_vector<uint64_t>() == std::vector<uint64_t>{1, 18446744073709551615ull});
  CHECK(sd.at("c64").dtype() == DType::C64);
  CHECK(sd.at("c64").to_vector<std::complex<float>>() == std::vector<std::complex<float>>{{1.0f, 2.0f}, {-3.0f, 0.5f}});
  CHECK(sd.at("scalar").shape().empty());
  CHECK(sd.at("scalar").item_as_double() == 42.0);
  CHECK(sd.at("sparse_w").to_vector<float>() == std::vector<float>{0, 1.5f, 0, 0, 0, -2.0f});
  CHECK(sd.at("const_t").to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3});
  CHECK(sd.at("const_f").item_as_double() == 2.5);
  CHECK(sd.at("const_ints").to_vector<int64_t>() == std::vector<int64_t>{3, 1, 4});
  CHECK(c.metadata.at("author") == "tensorbridge");
  CHECK(c.metadata.at("purpose") == "typed fields");
  CHECK(info_of(c, "producer_name") == "gen_onnx.py");
  CHECK(info_of(c, "constants") == "3");
}

TEST_CASE("empty tensors stored in typed fields load as empty tensors", "[onnx]") {
  // fuzz_onnx finding: an empty float_data/double_data/int64_data has no buffer, and copying zero
  // bytes from it was undefined behaviour (UBSan: null pointer passed to memcpy).
  tbtest::TempDir dir;
  auto r = tbtest::python(Peer::Torch, R"(
import sys, os, onnx
from onnx import helper, TensorProto
inits = [TensorProto(name=n, data_type=t, dims=[0, 3]) for n, t in
         (('f32', 1), ('f64', 11), ('i64', 7), ('c64', 14), ('u64', 13), ('i32', 6))]
onnx.save(helper.make_model(helper.make_graph([], 'g', [], [], inits)), os.path.join(sys.argv[1], 'e.onnx'))
print('ok')
)",
                          {dir.path().string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  StateDict sd = load_file(dir.path() / "e.onnx").state_dict();
  REQUIRE(sd.size() == 6);
  for (const auto& [k, t] : sd) {
    INFO(k);
    CHECK(t.shape() == Shape{0, 3});
    CHECK(t.nbytes() == 0);
  }
}

TEST_CASE("every third-party ONNX file loads with the expected initializers", "[onnx]") {
  auto f = [](const std::string& n) { return fixture("shared/onnx/" + n); };
  {
    Checkpoint c = load_file(f("onnxmltools130_keras_dense_bn_float_data.onnx"));
    StateDict sd = c.state_dict();
    CHECK(info_of(c, "ir_version") == "3");
    CHECK(info_of(c, "producer_name").find("OnnxMLTools") != std::string::npos);
    CHECK(sd.size() >= 16);
    bool has_16x64 = false;
    for (const auto& [k, t] : sd) has_16x64 |= t.shape() == Shape{16, 64} && t.dtype() == DType::F32;
    CHECK(has_16x64);
  }
  {
    Checkpoint c = load_file(f("onnxmltools122_keras_conv2d.onnx"));
    StateDict sd = c.state_dict();
    bool conv = false, dense = false;
    for (const auto& [k, t] : sd) {
      conv |= t.shape() == Shape{2, 1, 3, 3};
      dense |= t.shape() == Shape{128, 10};
    }
    CHECK(conv);
    CHECK(dense);
  }
  {
    Checkpoint c = load_file(f("pytorch03_dense_bn.onnx"));
    CHECK(info_of(c, "producer_version") == "0.3");
    CHECK(info_of(c, "opset") == "6");
    StateDict sd = c.state_dict();
    CHECK(sd.contains("1"));
    bool int64_scalar = false;
    for (const auto& [k, t] : sd) int64_scalar |= t.dtype() == DType::I64 && t.dim() == 0;
    CHECK(int64_scalar);
  }
  {
    Checkpoint c = load_file(f("pytorch291_conv2d_dynamo.onnx"));
    StateDict sd = c.state_dict();
    CHECK(sd.at("conv1.weight").shape() == Shape{6, 4, 3, 3});
    CHECK(sd.at("conv1.bias").shape() == Shape{6});
    CHECK(info_of(c, "ir_version") == "10");
    CHECK(info_of(c, "opset") == "18");
    CHECK(info_of(c, "graph") == "main_graph");
  }
  {
    StateDict sd = load_file(f("pytorch280_lstm.onnx")).state_dict();
    CHECK(sd.at("onnx::LSTM_110").shape() == Shape{1, 32, 4});
    CHECK(sd.at("onnx::LSTM_111").shape() == Shape{1, 32, 8});
    CHECK(sd.at("onnx::LSTM_112").shape() == Shape{1, 64});
  }
  {
    Checkpoint c = load_file(f("tf2onnx1100_int32_initializers.onnx"));
    CHECK(info_of(c, "opset_imports").find("ai.onnx.ml=2") != std::string::npos);
    StateDict sd = c.state_dict();
    bool two = false, one = false;
    for (const auto& [k, t] : sd) {
      if (t.dtype() != DType::I32) continue;
      two |= t.shape() == Shape{1} && t.to_vector<int32_t>() == std::vector<int32_t>{2};
      one |= t.shape() == Shape{2, 3};
    }
    CHECK(two);
    CHECK(one);
  }
  CHECK(load_file(f("tf2onnx160_no_initializers.onnx")).state_dict().empty());
}

TEST_CASE("external data is read through a memory map at its offsets", "[onnx]") {
  auto dir = fixture("shared/onnx/external_data");
  auto raw = [&](const std::string& file, size_t off, size_t n) {
    std::string s = read_text_file(dir / file);
    REQUIRE(off + n <= s.size());
    return s.substr(off, n);
  };
  auto bytes_of = [](const Tensor& t) {
    std::string s(t.nbytes(), '\0');
    t.copy_to(s.data());
    return s;
  };
  StateDict sd = load_file(dir / "external_data.onnx").state_dict();
  CHECK(sd.at("weight").shape() == Shape{4, 4});
  CHECK(sd.at("bias").shape() == Shape{4});
  CHECK(bytes_of(sd.at("weight")) == raw("external_data.bin", 320, 64));
  CHECK(bytes_of(sd.at("bias")) == raw("external_data.bin", 384, 16));
  CHECK(sd.at("weight").storage()->kind() == Storage::Kind::Mapped);

  StateDict off = load_file(dir / "external_data_offset.onnx").state_dict();
  REQUIRE(off.size() == 1);
  CHECK(off.entries()[0].second.shape() == Shape{2, 3});
  CHECK(bytes_of(off.entries()[0].second) == raw("external_data_offset.bin", 96, 24));

  StateDict multi = load_file(dir / "multi_external_files.onnx").state_dict();
  CHECK(bytes_of(multi.at("weight")) == raw("multi_external_weights.bin", 0, 64));
  CHECK(bytes_of(multi.at("bias")) == raw("multi_external_bias.bin", 0, 16));

  LoadOptions no_mmap;
  no_mmap.mmap = false;
  StateDict copied = load_onnx(Source::from_path(dir / "external_data.onnx", false), no_mmap).state_dict();
  CHECK(equal(copied.at("weight"), sd.at("weight")));
}

TEST_CASE("sniffing accepts ONNX models only", "[onnx]") {
  for (const char* p : {"onnx/mlp.onnx", "onnx_extra/typed_fields.onnx", "shared/onnx/pytorch03_dense_bn.onnx",
                        "shared/onnx/tf2onnx160_no_initializers.onnx"}) {
    INFO(p);
    CHECK(sniff_onnx(Source::from_path(fixture(p))));
    CHECK(detect_format(Source::from_path(fixture(p))).name == "onnx");
  }
  for (const auto& e : std::filesystem::recursive_directory_iterator(TB_FIXTURES_DIR)) {
    if (!e.is_regular_file() || e.path().extension() == ".onnx") continue;
    INFO(e.path());
    CHECK_FALSE(sniff_onnx(Source::from_path(e.path())));
  }
  // Truncating a real model breaks the field walk.
  std::string s = read_text_file(fixture("onnx/mlp.onnx"));
  Source cut;
  cut.reader = memory_reader(std::vector<uint8_t>(s.begin(), s.begin() + long(s.size() - 7)), "cut.onnx");
  CHECK_FALSE(sniff_onnx(cut));
  CHECK_THROWS_AS(load_onnx(cut), FormatError);
}

TEST_CASE("hostile models are refused with messages naming the tensor", "[onnx]") {
  tbtest::TempDir dir;
  auto r = tbtest::python(Peer::Torch, R"(
import sys, os, onnx
from onnx import helper, TensorProto
d = sys.argv[1]
open(os.path.join(d, 'w.bin'), 'wb').write(b'\0' * 64)
def save(name, tp):
    g = helper.make_graph([], 'g', [], [], [tp])
    onnx.save(helper.make_model(g), os.path.join(d, name))
def ext(name, loc, offset='0', length='64'):
    tp = TensorProto(name='w', data_type=1, dims=[4, 4])
    tp.data_location = TensorProto.EXTERNAL
    for k, v in (('location', loc), ('offset', offset), ('length', length)):
        e = tp.external_data.add(); e.key = k; e.value = v
    save(name, tp)
ext('dotdot.onnx', '../w.bin')
ext('absolute.onnx', '/etc/passwd')
ext('past_end.onnx', 'w.bin', offset='16')
ext('missing.onnx', 'nothere.bin')
save('short_raw.onnx', TensorProto(name='w', data_type=1, dims=[4, 4], raw_data=b'\0' * 60))
tp = TensorProto(name='w', data_type=1, dims=[4, 4]); tp.float_data.extend([1.0] * 15); save('short_typed.onnx', tp)
save('negative.onnx', TensorProto(name='w', data_type=1, dims=[-4, 4]))
save('huge.onnx', TensorProto(name='w', data_type=1, dims=[1 << 40, 1 << 40], raw_data=b''))
tp = TensorProto(name='w', data_type=1, dims=[1 << 20, 1 << 20]); tp.float_data.extend([1.0]); save('huge_typed.onnx', tp)
print('ok')
)",
                          {dir.path().string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto msg = [&](const std::string& f) -> std::string {
    try {
      load(dir / f);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  CHECK_THROWS_AS(load(dir / "dotdot.onnx"), UnsafeError);
  CHECK(msg("dotdot.onnx").find("tensor 'w': external data location '../w.bin' leaves the model's folder") !=
        std::string::npos);
  CHECK_THROWS_AS(load(dir / "absolute.onnx"), UnsafeError);
  CHECK_THROWS_AS(load(dir / "past_end.onnx"), FormatError);
  CHECK(msg("past_end.onnx").find("needs bytes [16, 80) of 'w.bin' but that file has 64 bytes") != std::string::npos);
  CHECK_THROWS_AS(load(dir / "missing.onnx"), IoError);
  CHECK(msg("short_raw.onnx").find("tensor 'w' (float32 [4, 4]) needs 64 bytes but raw_data has 60") !=
        std::string::npos);
  CHECK(msg("short_typed.onnx").find("float_data holds 15 values but the dims need 16") != std::string::npos);
  CHECK_THROWS_AS(load(dir / "negative.onnx"), FormatError);
  CHECK_THROWS(load(dir / "huge.onnx"));
  // 4 TiB claimed by the dims, one float given: refused before anything is allocated.
  CHECK(msg("huge_typed.onnx").find("float_data holds 1 values but the dims need 1099511627776") != std::string::npos);
}

TEST_CASE("weights-only files pass onnx.checker and read back bit-exact in onnx and onnxruntime", "[onnx]") {
  tbtest::TempDir dir;
  StateDict sd = load(fixture("onnx/mlp.onnx")).state_dict();
  // A few more dtypes, a transposed view and a tensor that will be empty.
  StateDict typed = load(fixture("onnx_extra/typed_fields.onnx")).state_dict();
  for (const char* k : {"f16", "bf16", "i8", "u16", "boolean", "i64", "f64", "u64", "c64", "scalar"})
    sd.insert(k, typed.at(k));
  sd.insert("transposed", sd.at("out.weight").transpose(0, 1));
  sd.insert("empty", Tensor::zeros(DType::F32, {0, 3}));
  // 3 MiB (its raw_data streamed, length varints of 4 bytes) and its transposed view: i * 0.25, exact.
  std::vector<float> ramp(1024 * 768);
  for (size_t i = 0; i < ramp.size(); ++i) ramp[i] = float(i) * 0.25f;
  sd.insert("big", Tensor::from_vector<float>(DType::F32, {1024, 768}, ramp));
  sd.insert("big.t", sd.at("big").transpose(0, 1));
  Checkpoint ck = Checkpoint::from_state_dict(sd);
  ck.metadata["source"] = "mlp.onnx";

  auto inline_path = dir / "inline.onnx";
  save(ck, inline_path);
  CHECK_FALSE(std::filesystem::exists(dir / "inline.onnx.data"));
  CHECK_THROWS_AS(save(ck, inline_path), IoError);  // no overwrite without permission

  SaveOptions ext;
  ext.options["external_data_threshold"] = "1KB";
  auto ext_path = dir / "model.onnx";
  save(ck, ext_path, "onnx", ext);
  REQUIRE(std::filesystem::exists(dir / "model.onnx.data"));
  CHECK_NOTHROW(check_onnx_model(inline_path));
  CHECK_NOTHROW(check_onnx_model(ext_path));

  for (const auto& p : {inline_path, ext_path}) {
    INFO(p);
    Checkpoint back = load(p);
    CHECK(back.metadata.at("source") == "mlp.onnx");
    StateDict b = back.state_dict();
    REQUIRE(b.keys() == sd.keys());
    for (const auto& [k, t] : sd) {
      INFO(k);
      CHECK(equal(b.at(k), t.contiguous()));
    }
  }
  CHECK(load(ext_path).state_dict().at("hidden.weight").storage()->kind() == Storage::Kind::Mapped);

  // The reference library: checker, load with external data, bit-exact arrays, 4096-aligned offsets.
  std::vector<std::string> args = {inline_path.string(), ext_path.string()};
  for (const char* k : {"hidden.weight", "hidden.bias", "out.weight", "out.bias"})
    args.push_back(fixture(std::string("torch/mlp_weights/") + k + ".npy").string());
  auto r = tbtest::python(Peer::Torch, R"(
import sys, onnx, numpy as np
from onnx import numpy_helper
inl, ext = sys.argv[1], sys.argv[2]
ref = {k: np.load(p) for k, p in zip(['hidden.weight', 'hidden.bias', 'out.weight', 'out.bias'], sys.argv[3:])}
for path in (inl, ext):
    onnx.checker.check_model(path)
    m = onnx.load(path)
    arrs = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    for k, v in ref.items():
        assert arrs[k].dtype == v.dtype and arrs[k].tobytes() == v.tobytes(), k
    assert arrs['transposed'].tobytes() == ref['out.weight'].T.tobytes()
    big = np.arange(1024 * 768, dtype=np.float32).reshape(1024, 768) * np.float32(0.25)
    assert arrs['big'].shape == (1024, 768) and arrs['big'].tobytes() == big.tobytes()
    assert arrs['big.t'].shape == (768, 1024) and arrs['big.t'].tobytes() == np.ascontiguousarray(big.T).tobytes()
    assert arrs['f16'].dtype == np.float16 and arrs['f16'].tolist() == [1.0, -2.5, 65504.0]
    assert arrs['u64'].tolist() == [1, 18446744073709551615]
    assert arrs['c64'].tolist() == [1 + 2j, -3 + 0.5j]
    assert arrs['boolean'].tolist() == [True, False, True]
    assert arrs['empty'].shape == (0, 3)
    assert {p.key: p.value for p in m.metadata_props} == {'source': 'mlp.onnx'}
m = onnx.load(ext, load_external_data=False)
n_ext = 0
for i in m.graph.initializer:
    if i.data_location == onnx.TensorProto.EXTERNAL:
        kv = {e.key: e.value for e in i.external_data}
        assert kv['location'] == 'model.onnx.data' and int(kv['offset']) % 4096 == 0, kv
        n_ext += 1
assert n_ext >= 10, n_ext
print('ok')
)",
                          args);
  INFO(r.output);
  CHECK(r.exit_code == 0);

  // onnxruntime has no complex64 outputs and numpy no bfloat16: its copies leave those out.
  sd.erase("c64");
  sd.erase("bf16");
  Checkpoint ort_ck = Checkpoint::from_state_dict(sd);
  args[0] = (dir / "ort_inline.onnx").string();
  args[1] = (dir / "ort_ext.onnx").string();
  save(ort_ck, args[0]);
  save(ort_ck, args[1], "onnx", ext);
  auto ort = tbtest::python(Peer::Peers, R"(
import sys, numpy as np, onnxruntime as ort
for path in sys.argv[1:3]:
    s = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    names = [o.name for o in s.get_outputs()]
    out = dict(zip(names, s.run(None, {})))
    for k, p in zip(['hidden.weight', 'hidden.bias', 'out.weight', 'out.bias'], sys.argv[3:]):
        assert out[k].tobytes() == np.load(p).tobytes(), k
    assert out['i64'].tolist() == [-9000000000, 5]
    big = np.arange(1024 * 768, dtype=np.float32).reshape(1024, 768) * np.float32(0.25)
    assert out['big'].tobytes() == big.tobytes() and out['big.t'].tobytes() == np.ascontiguousarray(big.T).tobytes()
print('ok')
)",
                            args);
  INFO(ort.output);
  CHECK(ort.exit_code == 0);
}

namespace tb::onnx_detail {
// formats/onnx.cpp: the writer before streaming (the whole ModelProto with its raw_data, serialized by
// libprotobuf into one string), kept as the reference for the streamed bytes.
void save_onnx_in_memory(const Checkpoint& ckpt, const std::filesystem::path& path, const SaveOptions& opts);
}  // namespace tb::onnx_detail

TEST_CASE("streamed initializers give byte for byte the file libprotobuf serializes in memory", "[onnx]") {
  // save_onnx writes each initializer's raw_data itself around libprotobuf's serialization of the rest;
  // identical bytes mean the two files parse into equal ModelProtos (same fields, order, lengths).
  tbtest::TempDir dir;
  uint32_t seed = 1;
  auto pattern = [&](DType dt, Shape shape) {
    Tensor t = Tensor::zeros(dt, std::move(shape));
    for (size_t i = 0; i < t.nbytes(); ++i) {
      seed = seed * 1103515245u + 12345u;
      t.data()[i] = uint8_t(seed >> 16) & (dt == DType::Bool ? 1 : 0xff);
    }
    return t;
  };
  StateDict all;
  for (const auto& d : all_dtypes()) {
    if (!d.onnx) continue;
    all.insert("w." + std::string(d.name), pattern(d.dtype, {3, 5}));
    all.insert("scalar." + std::string(d.name), pattern(d.dtype, {}));
  }
  all.insert("empty.f32", Tensor::zeros(DType::F32, {0}));
  all.insert("empty.i64", Tensor::zeros(DType::I64, {0, 3}));
  all.insert("empty.bool", Tensor::zeros(DType::Bool, {4, 0, 2}));
  // raw_data lengths on both sides of the varint steps (1 -> 2 -> 3 bytes), then 4 bytes (3 MiB).
  for (int64_t n : {127, 128, 16383, 16384, 2097151}) all.insert(str("u8.", n), pattern(DType::U8, {n}));
  all.insert("big", pattern(DType::F32, {1024, 768}));
  all.insert("big.transposed", pattern(DType::F32, {768, 1024}).transpose(0, 1));
  all.insert("small.transposed", pattern(DType::F64, {7, 9}).transpose(0, 1));
  StateDict no_f8;  // the ONNX 1.12 checker runs on these (it predates float8)
  for (const auto& [k, t] : all)
    if (t.dtype() != DType::F8E4M3FN && t.dtype() != DType::F8E5M2) no_f8.insert(k, t);

  std::vector<std::pair<std::string, Checkpoint>> cases;
  cases.emplace_back("all", Checkpoint::from_state_dict(all));
  cases.back().second.metadata = {{"source", "test"}, {"empty", ""}, {"unicode", "\xc2\xb5-\xc3\xbf"}};
  cases.emplace_back("no_f8", Checkpoint::from_state_dict(no_f8));
  cases.back().second.metadata = {{"source", "no float8"}};
  StateDict one;
  one.insert("only", Tensor::from_vector<float>(DType::F32, {}, {2.5f}));
  cases.emplace_back("scalar", Checkpoint::from_state_dict(one));
  std::vector<std::pair<std::string, SaveOptions>> modes(4);
  modes[0].first = "inline";
  modes[1].first = "producer";
  modes[1].second.options["producer_name"] = "someone else";
  modes[2].first = "always";
  modes[2].second.options["external_data"] = "always";
  modes[3].first = "threshold";
  modes[3].second.options["external_data_threshold"] = "1KB";
  std::filesystem::create_directory(dir / "ref");
  for (const auto& [cname, ck] : cases) {
    for (const auto& [mname, opts] : modes) {
      INFO(cname << " " << mname);
      // Same file name in two folders: external data locations name the .data file.
      auto streamed = dir / (cname + "_" + mname + ".onnx"), reference = dir / "ref" / (cname + "_" + mname + ".onnx");
      save(ck, streamed, "onnx", opts);
      onnx_detail::save_onnx_in_memory(ck, reference, opts);
      std::string a = read_text_file(streamed), b = read_text_file(reference);
      CHECK(a.size() == b.size());
      CHECK(a == b);
      auto data = [](std::filesystem::path p) { return p += ".data"; };
      bool external = mname == "always" || (mname == "threshold" && cname != "scalar");
      REQUIRE(std::filesystem::exists(data(streamed)) == external);
      REQUIRE(std::filesystem::exists(data(reference)) == external);
      if (external) CHECK(read_text_file(data(streamed)) == read_text_file(data(reference)));
      StateDict back = load(streamed).state_dict();
      const StateDict& want = ck.state_dict();
      REQUIRE(back.keys() == want.keys());
      for (const auto& [k, t] : want) {
        INFO(k);
        CHECK(back.at(k).dtype() == t.dtype());
        CHECK(equal(back.at(k), t.contiguous()));
      }
    }
  }
  CHECK_NOTHROW(check_onnx_model(dir / "no_f8_inline.onnx"));
}

TEST_CASE("external_data=never refuses what cannot fit; bad options are named", "[onnx]") {
  tbtest::TempDir dir;
  Checkpoint ck = Checkpoint::from_state_dict(load(fixture("onnx/mlp.onnx")).state_dict());
  SaveOptions o;
  o.options["external_data"] = "sometimes";
  CHECK_THROWS_AS(save(ck, dir / "a.onnx", "onnx", o), UnsupportedError);
  o.options["external_data"] = "always";
  o.options["external_data_threshold"] = "12 parsecs";
  CHECK_THROWS_AS(save(ck, dir / "a.onnx", "onnx", o), UnsupportedError);
  CHECK_FALSE(std::filesystem::exists(dir / "a.onnx"));
  CHECK_FALSE(std::filesystem::exists(dir / "a.onnx.data"));
  o.options.erase("external_data_threshold");
  save(ck, dir / "a.onnx", "onnx", o);
  CHECK(std::filesystem::exists(dir / "a.onnx.data"));
}
