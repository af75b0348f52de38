// GGUF files written by the reference Python package `gguf` (fixtures/gen_gguf.py): plain tensors
// and every metadata type as gguf.GGUFReader reads them, quantized tensors dequantized bit-for-bit as
// gguf.quants.dequantize, files we write read back by GGUFReader (same values, same typed metadata,
// Q8_0 blocks equal to gguf.quants.quantize), --keep-quantized rewrites the same bytes, and damaged
// headers refused with exit 1 naming the file and what was wrong.
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "formats/gguf.h"
#include "formats/gguf_quants.h"
#include "formats/registry.h"
#include "tests/support.h"

using tbtest::contains;

using namespace tb;
namespace fs = std::filesystem;
using tbtest::run_cli;

namespace {

std::string fixture(const std::string& name) { return tbtest::fixture("gguf/" + name).string(); }

std::vector<uint8_t> bytes_of(const Tensor& t) {
  std::vector<uint8_t> b(t.nbytes());
  t.copy_to(b.data());
  return b;
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

// What gguf.GGUFReader sees in a file: per tensor its type name, numpy shape and CRC of its bytes;
// per field its value types and the CRC of its value bytes (after the key).
const char* kReaderDump = R"(
import sys, json, zlib, gguf
r = gguf.GGUFReader(sys.argv[1])
out = {'tensors': {}, 'fields': {}}
for t in r.tensors:
    shape = [int(x) for x in reversed(list(t.shape))]
    out['tensors'][t.name] = [t.tensor_type.name, shape, zlib.crc32(t.data.tobytes())]
for f in r.fields.values():
    if f.name.startswith('GGUF.'):
        continue
    value = b''.join(p.tobytes() for p in f.parts[3:])
    text = f.contents() if f.types[0] != gguf.GGUFValueType.ARRAY or f.types[-1] != gguf.GGUFValueType.ARRAY else None
    out['fields'][f.name] = [[int(x) for x in f.types], zlib.crc32(value), text]
print(json.dumps(out))
)";

nlohmann::json reader_dump(const std::string& path) {
  auto r = tbtest::python(tbtest::Peer::Peers, kReaderDump, {path});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  return nlohmann::json::parse(r.output);
}

// A small GGUF file built byte by byte, for damaged variants.
struct Builder {
  std::string b;
  void u32(uint32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); }
  void u64(uint64_t v) { b.append(reinterpret_cast<const char*>(&v), 8); }
  void s(const std::string& v) {
    u64(v.size());
    b += v;
  }
  void header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    b = "GGUF";
    u32(version);
    u64(n_tensors);
    u64(n_kv);
  }
  void tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    s(name);
    u32(uint32_t(ne.size()));
    for (auto n : ne) u64(n);
    u32(type);
    u64(offset);
  }
  void pad() { b.append((32 - b.size() % 32) % 32, '\0'); }
};

void expect_refused(const fs::path& file, const std::vector<std::string>& phrases) {
  auto r = run_cli({"inspect", file.string()});
  INFO(file.filename().string() << ": " << r.output);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, file.string()));
  for (const auto& p : phrases) CHECK(contains(r.output, p));
}

}  // namespace

TEST_CASE("plain tensor types and every metadata type, v3 and v2, as GGUFReader reads them", "[gguf]") {
  auto ref = reader_dump(fixture("types.gguf"));
  for (const char* name : {"types.gguf", "types_v2.gguf"}) {
    Checkpoint c = load(fixture(name));
    CHECK(c.format == "gguf");
    StateDict sd = c.state_dict();
    REQUIRE(sd.size() == ref["tensors"].size());
    for (const auto& [tname, t] : sd) {
      INFO(tname);
      const auto& want = ref["tensors"].at(tname);
      CHECK(t.shape() == want[1].get<Shape>());
      auto b = bytes_of(t);
      CHECK(tbtest::crc32(b.data(), b.size()) == want[2].get<uint32_t>());
      CHECK(t.storage()->kind() == Storage::Kind::Mapped);  // zero-copy
    }
    CHECK(dtype_name(sd.at("w.bf16").dtype()) == "bfloat16");
    CHECK(dtype_name(sd.at("w.i64").dtype()) == "int64");
    const std::map<std::string, std::string> want_meta = {{"general.architecture", "tbtest"},
                                                          {"t.u8", "200"},
                                                          {"t.i8", "-100"},
                                                          {"t.u16", "60000"},
                                                          {"t.i16", "-30000"},
                                                          {"t.u32", "4000000000"},
                                                          {"t.i32", "-2000000000"},
                                                          {"t.u64", "18000000000000000000"},
                                                          {"t.i64", "-9000000000000000000"},
                                                          {"t.f32", "0.1"},
                                                          {"t.f64", "2.5e-300"},
                                                          {"t.bool_true", "true"},
                                                          {"t.bool_false", "false"},
                                                          {"t.string", "h\xc3\xa9llo \"gguf\"\n"},
                                                          {"t.array_i32", "[1, -2, 3]"},
                                                          {"t.array_str", "[\"a\", \"b c\", \"\xc3\xa9\"]"},
                                                          {"t.array_f32", "[0.5, 1.5]"},
                                                          {"t.nested", "[[1, 2], [3]]"}};
    CHECK(c.metadata == want_meta);
  }
  auto r = run_cli({"inspect", fixture("types.gguf")});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "gguf version: 3"));
  CHECK(contains(r.output, "t.nested: [[1, 2], [3]]"));
  CHECK(contains(r.output, "w.i32   int32     [2, 1, 2, 2]"));
}

TEST_CASE("quantized tensors dequantize bit-for-bit as gguf.quants.dequantize", "[gguf]") {
  // quants_ref.safetensors holds gguf.quants.dequantize of every tensor, computed by the generator.
  StateDict got = load(fixture("quants.gguf")).state_dict();
  StateDict want = load(fixture("quants_ref.safetensors")).state_dict();
  REQUIRE(got.size() == want.size());
  for (const auto& [name, w] : want) {
    INFO(name);
    const Tensor& g = got.at(name);
    CHECK(g.dtype() == DType::F32);
    CHECK(g.shape() == w.shape());
    CHECK(bytes_of(g) == bytes_of(w));
  }
  CHECK(got.at("q.q8_0_3d").shape() == Shape{2, 3, 32});
}

TEST_CASE("a type without a dequantizer is refused by name, --keep-quantized keeps it", "[gguf]") {
  auto r = run_cli({"inspect", fixture("unsupported.gguf")});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "tensor 'q.q8_k' has type Q8_K"));
  CHECK(contains(r.output, "--keep-quantized"));
  r = run_cli({"inspect", "--keep-quantized", fixture("unsupported.gguf")});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "q.q8_k  uint8    [292]"));
  CHECK(contains(r.output, str(kGgufQuantizedKey, "q.q8_k: Q8_K [1, 256]")));
}

TEST_CASE("GGUF -> GGUF with --keep-quantized rewrites the same tensor bytes and typed metadata", "[gguf]") {
  tbtest::TempDir dir;
  for (const char* name : {"quants.gguf", "types.gguf", "unsupported.gguf", "aligned64.gguf"}) {
    INFO(name);
    const std::string out = (dir / name).string();
    auto r = run_cli({"convert", "-q", "--keep-quantized", fixture(name), out});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    auto a = reader_dump(fixture(name)), b = reader_dump(out);
    CHECK(a["tensors"] == b["tensors"]);  // type, shape and bytes
    CHECK(a["fields"] == b["fields"]);    // value types and bytes
  }
  // The rewritten quantized file dequantizes to the reference values again.
  StateDict got = load(dir / "quants.gguf").state_dict();
  StateDict want = load(fixture("quants_ref.safetensors")).state_dict();
  for (const auto& [name, w] : want) CHECK(bytes_of(got.at(name)) == bytes_of(w));
}

TEST_CASE("a file we write from safetensors is read by GGUFReader with the same values", "[gguf]") {
  tbtest::TempDir dir;
  // float32/float16/bfloat16 and integer tensors from a GGUF source, dequantized tensors as float32.
  for (const char* name : {"types.gguf", "quants.gguf"}) {
    const std::string st = (dir / (std::string(name) + ".safetensors")).string();
    const std::string out = (dir / name).string();
    REQUIRE(run_cli({"convert", "-q", fixture(name), st}).exit_code == 0);
    auto r = run_cli({"convert", "-q", st, out});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    auto dump = reader_dump(out);
    StateDict sd = load(st).state_dict();
    REQUIRE(dump["tensors"].size() == sd.size());
    for (const auto& [tname, t] : sd) {
      INFO(tname);
      const auto& d = dump["tensors"].at(tname);
      CHECK(d[0] == std::string(gguf::ggml_type_for(t.dtype())->name));
      CHECK(d[1].get<Shape>() == t.shape());
      auto b = bytes_of(t);
      CHECK(d[2].get<uint32_t>() == tbtest::crc32(b.data(), b.size()));
    }
    // safetensors metadata (strings) arrive as GGUF strings.
    for (const auto& [k, v] : sd.metadata) {
      INFO(k);
      REQUIRE(dump["fields"].contains(k));
      CHECK(dump["fields"][k][0] == nlohmann::json::array({8}));
      CHECK(dump["fields"][k][2] == v);
    }
  }
}

TEST_CASE("Q8_0 output (--dtype q8_0) has the blocks gguf.quants.quantize writes", "[gguf]") {
  // The C++ quantizer on the generator's inputs (zeros, ties at .5, random) against the reference blocks.
  StateDict ref = load(fixture("q8_0_ref.safetensors")).state_dict();
  Tensor x = ref.at("x");
  std::vector<uint8_t> q(size_t(x.numel()) / 32 * 34);
  gguf::quantize_q8_0(x.data_as<float>(), size_t(x.numel()), q.data());
  CHECK(q == bytes_of(ref.at("q8_0")));

  // Through the CLI: GGUFReader sees Q8_0 tensors equal to gguf.quants.quantize of the input; 1-d
  // tensors and integer tensors keep their type.
  tbtest::TempDir dir;
  const std::string out = (dir / "q.gguf").string();
  auto r = run_cli({"convert", "-q", "--dtype", "q8_0", fixture("quants.gguf"), out});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto p = tbtest::python(tbtest::Peer::Peers, R"(
import sys, warnings, numpy as np, gguf
warnings.simplefilter('ignore')  # tiny MXFP4 blocks overflow 1/d inside quantize
from gguf import GGMLQuantizationType as T
src = {t.name: t for t in gguf.GGUFReader(sys.argv[1]).tensors}
for t in gguf.GGUFReader(sys.argv[2]).tensors:
    assert t.tensor_type == T.Q8_0, (t.name, t.tensor_type)
    x = gguf.quants.dequantize(src[t.name].data, src[t.name].tensor_type)
    assert np.array_equal(t.data, gguf.quants.quantize(x, T.Q8_0)), t.name
print('ok', len(src))
)",
                          {fixture("quants.gguf"), out});
  INFO(p.output);
  CHECK(p.exit_code == 0);
  CHECK(contains(p.output, "ok 24"));
  r = run_cli({"convert", "-q", "--dtype", "q8_0", fixture("types.gguf"), (dir / "t.gguf").string()});
  REQUIRE(r.exit_code == 0);
  StateDict t = load(dir / "t.gguf").state_dict();
  CHECK(t.at("w.f64").dtype() == DType::F64);  // 1-d: kept
  CHECK(t.at("w.i32").dtype() == DType::I32);  // integer: kept
  CHECK(t.at("w.f16").dtype() == DType::F16);  // last dim 4 is not a multiple of 32: kept
  r = run_cli({"convert", "-q", "--dtype", "q8_0", fixture("types.gguf"), (dir / "t.safetensors").string()});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "q8_0 is supported for gguf output"));
}

TEST_CASE("damaged and hostile headers are refused naming the file and the problem", "[gguf]") {
  tbtest::TempDir dir;
  auto make = [&](const std::string& name, const Builder& b) {
    fs::path p = dir / name;
    write_file(p, b.b);
    return p;
  };
  // A valid base: one key, one F32 [4] tensor.
  auto base = [](uint64_t n_tensors = 1, uint64_t n_kv = 1) {
    Builder b;
    b.header(3, n_tensors, n_kv);
    b.s("general.name");
    b.u32(8);
    b.s("x");
    return b;
  };
  {
    Builder b = base();
    b.tensor("w", {4}, 0, 0);
    b.pad();
    b.b.append(16, '\0');
    REQUIRE(run_cli({"inspect", make("ok.gguf", b).string()}).exit_code == 0);
    // Truncated anywhere: in the header, the infos or the data.
    for (size_t cut : {size_t(10), size_t(30), size_t(50), b.b.size() - 1}) {
      Builder t = b;
      t.b.resize(cut);
      expect_refused(make(str("cut", cut, ".gguf"), t), {"truncated"});
    }
  }
  expect_refused(make("huge_kv.gguf", base(0, uint64_t(1) << 60)), {"key-values but the file has room for at most"});
  expect_refused(make("huge_tensors.gguf", base(uint64_t(1) << 60, 1)), {"tensors but the file has room for at most"});
  {
    Builder b;
    b.header(3, 0, 1);
    b.u64(uint64_t(1) << 62);  // key length
    b.b.append(16, 'k');
    expect_refused(make("long_string.gguf", b), {"a string of 4611686018427387904 bytes", "truncated"});
  }
  {
    Builder b;
    b.header(3, 0, 1);
    b.s("arr");
    b.u32(9);
    b.u32(4);
    b.u64(uint64_t(1) << 40);  // uint32 elements
    b.b.append(8, '\0');
    expect_refused(make("huge_array.gguf", b), {"metadata 'arr'", "an array of 1099511627776 uint32"});
  }
  {
    Builder b = base();
    b.tensor("w", {4, 1, 1, 1, 1}, 0, 0);
    expect_refused(make("ndims.gguf", b), {"tensor 'w'", "n_dims 5", "at most 4"});
  }
  {
    Builder b = base();
    b.tensor("w", {4}, 0, 64);
    b.pad();
    b.b.append(16, '\0');
    expect_refused(make("offset_past_end.gguf", b), {"tensor 'w'", "needs bytes [64, 80)", "data has 16 bytes"});
  }
  {
    Builder b = base();
    b.tensor("w", {4}, 0, 4);
    b.pad();
    b.b.append(64, '\0');
    expect_refused(make("unaligned.gguf", b), {"tensor 'w'", "offset 4 is not a multiple of the alignment 32"});
  }
  {
    Builder b = base(2, 1);
    b.tensor("w", {16}, 0, 0);
    b.tensor("v", {4}, 0, 32);
    b.pad();
    b.b.append(96, '\0');
    expect_refused(make("overlap.gguf", b), {"tensor 'v'", "overlaps tensor 'w'"});
  }
  {
    Builder b = base(2, 1);
    b.tensor("w", {4}, 0, 0);
    b.tensor("w", {4}, 0, 32);
    b.pad();
    b.b.append(64, '\0');
    expect_refused(make("dup_tensor.gguf", b), {"tensor 'w' appears twice"});
  }
  {
    Builder b = base(0, 2);
    b.s("general.name");
    b.u32(8);
    b.s("y");
    expect_refused(make("dup_key.gguf", b), {"metadata key 'general.name' appears twice"});
  }
  {
    Builder b = base();
    b.tensor("w", {4}, 99, 0);
    expect_refused(make("bad_type.gguf", b), {"tensor 'w' has type 99, which is not a GGML type"});
  }
  {
    Builder b = base();
    b.tensor("w", {48}, 8, 0);  // Q8_0 rows must be multiples of 32
    expect_refused(make("bad_block.gguf", b), {"tensor 'w' (Q8_0)", "not a multiple of the block size 32"});
  }
  {
    Builder b;
    b.header(3, 0, 1);
    b.s("general.alignment");
    b.u32(4);
    b.u32(48);
    expect_refused(make("bad_alignment.gguf", b), {"general.alignment must be a power of two but is 48"});
  }
  {
    Builder b;
    b.header(3, 0, 1);
    b.s("k");
    b.u32(77);
    b.u32(0);
    expect_refused(make("bad_value_type.gguf", b), {"metadata 'k'", "value type 77 is not a GGUF value type"});
  }
  {
    Builder b = base(0, 0);
    b.b[4] = 1;
    b.b.append(8, '\0');
    expect_refused(make("v1.gguf", b), {"GGUF version 1", "not supported"});
  }
  expect_refused(tbtest::fixture("gguf/big_endian.gguf"), {"big-endian GGUF", "only little-endian"});
  {
    // 1 MiB of uint8 metadata renders as ~5 MiB of text: the load budget is charged before it is built.
    Builder b;
    b.header(3, 0, 1);
    b.s("big");
    b.u32(9);
    b.u32(0);
    b.u64(1 << 20);
    b.b.append(1 << 20, '\xff');
    const fs::path p = make("metadata_bomb.gguf", b);
    auto r = run_cli({"--max-memory", "2M", "inspect", p.string()});
    INFO(r.output);
    CHECK(r.exit_code == 1);
    CHECK(contains(r.output, "--max-memory"));
    CHECK(contains(r.output, "metadata 'big'"));
    CHECK(run_cli({"inspect", p.string()}).exit_code == 0);  // within the default budget
  }
}

TEST_CASE("the writer refuses what GGUF cannot hold, naming the tensor", "[gguf]") {
  tbtest::TempDir dir;
  StateDict sd;
  sd.insert("mask", Tensor::from_vector<uint8_t>(DType::Bool, {2}, {1, 0}));
  auto e = tbtest::error_of<UnsupportedError>([&] { save(Checkpoint::from_state_dict(sd), dir / "b.gguf"); });
  CHECK(contains(e, "tensor 'mask' has dtype bool, which GGUF cannot store"));
  CHECK(!fs::exists(dir / "b.gguf"));
  // Raw blocks whose size does not match their description.
  StateDict raw;
  raw.insert("q", Tensor::zeros(DType::U8, {33}));
  raw.metadata[std::string(kGgufQuantizedKey) + "q"] = "Q8_0 [32]";
  e = tbtest::error_of<FormatError>([&] { save(Checkpoint::from_state_dict(raw), dir / "r.gguf"); });
  CHECK(contains(e, "tensor 'q' should hold the raw blocks of Q8_0 [32] (uint8 [34])"));
}

TEST_CASE("a quantized GGUF converts holding one dequantized tensor at a time, values as an eager load", "[gguf]") {
  // 8 tensors of 16 MiB in float32 (4.25 MiB each as Q8_0): decoding them all first would hold 128 MiB.
  tbtest::TempDir dir;
  // Made in a child process: a forked child's peak RSS starts at its parent's, so this one stays small.
  const pid_t maker = ::fork();
  REQUIRE(maker >= 0);
  if (maker == 0) {
    StateDict sd;
    for (int i = 0; i < 8; ++i) sd.insert("blk." + std::to_string(i) + ".weight", Tensor::randn({1024, 4096}, 7u + i));
    save(Checkpoint::from_state_dict(std::move(sd)), dir / "f32.safetensors");
    std::_Exit(0);
  }
  REQUIRE(tbtest::wait_status(maker) == 0);
  auto r = run_cli({"convert", "-q", "--dtype", "q8_0", (dir / "f32.safetensors").string(), (dir / "q.gguf").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  for (const std::string to : {"safetensors", "npz", "pt"}) {
    const fs::path out = dir / ("out." + to);
    r = run_cli({"convert", "-q", (dir / "q.gguf").string(), out.string()});
    INFO(to << ": " << r.output);
    REQUIRE(r.exit_code == 0);
    // The CLI (~20 MiB), the mapped 34 MiB of blocks, one 16 MiB tensor: well under the 128 MiB of all.
    // Not under ASan: its quarantine keeps freed tensors resident.
#if !defined(__SANITIZE_ADDRESS__)
    CHECK(r.max_rss_kb < 100 * 1024);
#endif
  }
  const StateDict eager = load(dir / "q.gguf").state_dict();
  for (const std::string to : {"safetensors", "npz", "pt"}) {
    INFO(to);
    CHECK(tbtest::same_state_dicts(load(dir / ("out." + to)).state_dict(), eager));
  }
}
