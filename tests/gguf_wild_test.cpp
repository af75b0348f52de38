// GGUF files written by llama.cpp / ggml themselves, not by us: llama.cpp's vocab-only file, a
// llama.cpp convert.py model with F16/F32 tensors and the ggml C writer's example file
// (fixtures/shared/gguf, see its PROVENANCE.md), and ggml's own quantizers' output for every type
// (fixtures/gguf/ggml_quants.gguf, fixtures/gen_gguf_ggml.sh). Judged by the reference reader
// gguf.GGUFReader: every key with its value, every tensor with its shape and bytes, quantized ones
// dequantized bit-for-bit as gguf.quants.dequantize; rewritten byte for byte with --keep-quantized;
// converted to safetensors and read back by the safetensors package with the same values.
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "formats/gguf_quants.h"
#include "formats/registry.h"
#include "tests/support.h"

using namespace tb;
namespace fs = std::filesystem;
using nlohmann::json;
using tbtest::contains;
using tbtest::run_cli;

namespace {

const std::vector<std::string> kFiles = {
    "shared/gguf/llamacpp_vocab_llama_spm.gguf",
    "shared/gguf/llamacpp_convert_llama2_tiny_random_f16.gguf",
    "shared/gguf/llamacpp_gguf_example_dummy.gguf",
    "gguf/ggml_quants.gguf",
};

std::string path_of(const std::string& name) { return tbtest::fixture(name).string(); }

std::string file_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::vector<uint8_t> bytes_of(const Tensor& t) {
  std::vector<uint8_t> b(t.nbytes());
  t.copy_to(b.data());
  return b;
}

// What GGUFReader reads, in file order: each field's value types and contents(), each tensor's
// type, numpy shape and CRC of its bytes; argv[2] gets gguf.quants.dequantize of the quantized ones.
const char* kReaderDump = R"(
import sys, json, zlib, gguf, numpy as np
from safetensors.numpy import save_file
r = gguf.GGUFReader(sys.argv[1])
out = {'fields': [], 'tensors': []}
for f in r.fields.values():
    if not f.name.startswith('GGUF.'):
        out['fields'].append([f.name, [int(t) for t in f.types], f.contents()])
plain = {gguf.GGMLQuantizationType[n] for n in ('F32', 'F16', 'BF16', 'F64', 'I8', 'I16', 'I32', 'I64')}
ref = {}
for t in r.tensors:
    shape = [int(x) for x in reversed(list(t.shape))]
    out['tensors'].append([t.name, t.tensor_type.name, shape, zlib.crc32(t.data.tobytes())])
    if t.tensor_type not in plain:
        ref[t.name] = np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type))
if ref:
    save_file(ref, sys.argv[2])
print(json.dumps(out))
)";

json reader_dump(const std::string& file, const fs::path& ref) {
  auto r = tbtest::python(tbtest::Peer::Peers, kReaderDump, {file, ref.string()});
  INFO(r.output.substr(0, 2000));
  REQUIRE(r.exit_code == 0);
  return json::parse(r.output);
}

// GGUF value types (gguf.GGUFValueType).
enum : int { U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 };

/** One scalar of tensorbridge's metadata text (parsed as JSON) against GGUFReader's value. */
void check_scalar(const json& got, const json& want, int type) {
  switch (type) {
    case F32: CHECK(float(got.get<double>()) == float(want.get<double>())); break;
    case F64: CHECK(got.get<double>() == want.get<double>()); break;
    case I8:
    case I16:
    case I32:
    case I64: CHECK(got.get<int64_t>() == want.get<int64_t>()); break;
    case STRING:
    case BOOL: CHECK(got == want); break;
    default: CHECK(got.get<uint64_t>() == want.get<uint64_t>());
  }
}

/** tensorbridge's text of a key-value (strings as is, numbers in decimal, arrays as JSON) against
 *  GGUFReader's types and contents(). */
void check_value(const std::string& text, const std::vector<int>& types, const json& want) {
  if (types[0] == STRING) {
    CHECK(text == want.get<std::string>());
  } else if (types[0] == ARRAY) {
    REQUIRE(types.size() == 2);  // these files have no nested arrays
    json got = json::parse(text);
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) check_scalar(got[i], want[i], types[1]);
  } else {
    check_scalar(json::parse(text), want, types[0]);
  }
}

}  // namespace

TEST_CASE("real GGUF files: every key-value and tensor as GGUFReader reads them", "[gguf]") {
  tbtest::TempDir dir;
  for (const auto& name : kFiles) {
    INFO(name);
    const fs::path ref = dir / "ref.safetensors";
    fs::remove(ref);
    json dump = reader_dump(path_of(name), ref);
    Checkpoint c = load(path_of(name));
    CHECK(c.format == "gguf");

    REQUIRE(c.metadata.size() == dump["fields"].size());
    for (const auto& f : dump["fields"]) {
      const std::string key = f[0];
      INFO(key);
      REQUIRE(c.metadata.count(key) == 1);
      check_value(c.metadata.at(key), f[1].get<std::vector<int>>(), f[2]);
    }

    StateDict sd = c.state_dict();
    StateDict want = fs::exists(ref) ? load(ref).state_dict() : StateDict{};
    REQUIRE(sd.size() == dump["tensors"].size());
    size_t i = 0;
    for (const auto& t : dump["tensors"]) {
      const std::string tname = t[0];
      INFO(tname << " " << t[1]);
      CHECK(sd.entries()[i++].first == tname);  // file order
      const Tensor& got = sd.at(tname);
      CHECK(got.shape() == t[2].get<Shape>());
      const auto* type = gguf::ggml_type_by_name(t[1].get<std::string>());
      REQUIRE(type != nullptr);
      if (type->native) {
        CHECK(got.dtype() == *type->native);
        auto b = bytes_of(got);
        CHECK(tbtest::crc32(b.data(), b.size()) == t[3].get<uint32_t>());
      } else {
        CHECK(got.dtype() == DType::F32);
        CHECK(bytes_of(got) == bytes_of(want.at(tname)));  // bit-for-bit gguf.quants.dequantize
      }
    }

    // inspect lists every key and every tensor.
    auto r = run_cli({"inspect", path_of(name)});
    CHECK(r.exit_code == 0);
    for (const auto& f : dump["fields"]) CHECK(contains(r.output, "  " + f[0].get<std::string>() + ": "));
    for (const auto& t : dump["tensors"]) CHECK(contains(r.output, "  " + t[0].get<std::string>() + " "));
  }
}

TEST_CASE("real GGUF files are rewritten byte for byte with --keep-quantized", "[gguf]") {
  // Same key-values in the same order and bytes, same tensor infos, offsets and padding; a
  // vocab-only file (no tensors) ends after its key-values with no data padding, as ggml writes it.
  tbtest::TempDir dir;
  for (const auto& name : kFiles) {
    INFO(name);
    const fs::path out = dir / fs::path(name).filename();
    auto r = run_cli({"convert", "-q", "--keep-quantized", path_of(name), out.string()});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK(file_bytes(out) == file_bytes(path_of(name)));
  }
  // A file without tensors still converts to nothing else.
  auto r = run_cli({"convert", "-q", path_of(kFiles[0]), (dir / "v.safetensors").string()});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "holds no tensors; nothing to write"));
}

TEST_CASE("real GGUF files converted to safetensors are read back by safetensors with the same values", "[gguf]") {
  tbtest::TempDir dir;
  for (size_t k = 1; k < kFiles.size(); ++k) {
    const std::string& name = kFiles[k];
    INFO(name);
    const fs::path out = dir / (fs::path(name).stem().string() + ".safetensors");
    auto r = run_cli({"convert", "-q", path_of(name), out.string()});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    // safetensors.deserialize gives the raw bytes of every dtype (numpy has no bfloat16).
    auto p = tbtest::python(tbtest::Peer::Peers, R"(
import sys, gguf, numpy as np, safetensors
st = {name: v for name, v in safetensors.deserialize(open(sys.argv[2], 'rb').read())}
with safetensors.safe_open(sys.argv[2], 'numpy') as f:
    meta = f.metadata()
r = gguf.GGUFReader(sys.argv[1])
plain = {'F32': 'F32', 'F16': 'F16', 'BF16': 'BF16'}
assert len(st) == len(r.tensors), (len(st), len(r.tensors))
for t in r.tensors:
    s = st[t.name]
    shape = [int(x) for x in reversed(list(t.shape))]
    kind = t.tensor_type.name
    if kind in plain:
        want_dtype, want = plain[kind], t.data.tobytes()
    else:
        want_dtype, want = 'F32', np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type)).tobytes()
    assert s['dtype'] == want_dtype and s['shape'] == shape, (t.name, s['dtype'], s['shape'])
    assert bytes(s['data']) == want, t.name
for f in r.fields.values():
    if f.name.startswith('GGUF.'):
        continue
    assert f.name in meta, f.name
    if f.types == [gguf.GGUFValueType.STRING]:
        assert meta[f.name] == f.contents(), f.name
print('ok', len(st))
)",
                            {path_of(name), out.string()});
    INFO(p.output);
    CHECK(p.exit_code == 0);
    CHECK(contains(p.output, "ok "));
  }
}
