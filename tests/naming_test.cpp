// The naming rule (formats/naming.h): every name survives every format and comes back bit-exact,
// real frameworks read the files we write, and a lone unnamed array is one tensor everywhere.
#include "tests/support.h"

#include <set>

#include <nlohmann/json.hpp>

#include "formats/naming.h"

using tbtest::contains;

using tb::Checkpoint;
using tb::DType;
using tb::StateDict;
using tb::Tensor;
using tb::naming::decode_name;
using tb::naming::encode_name;
using tb::naming::Target;

namespace {

const std::vector<Target> kTargets = {Target::Hdf5, Target::Npz, Target::Folder, Target::Onnx, Target::Safetensors};

/** Names frameworks write, and names that break naive writers. No name is the group of another in
 *  HDF5 (a tensor cannot also be a group there). */
const std::vector<std::string> kNames = {
    "/model.10/Constant_output_0",  // torch 2.x ONNX export
    "../../x",                      // would leave the folder of an unzipped .npz
    "a//b",
    "trail/",
    "dense/kernel:0",
    "onnx::MatMul_12",
    "",
    "ünïcödé/名前",
    "50%",
    "%2F",
    "p/./q",
    ".",
    "back\\slash",
    "__metadata__",
    "snapshot_done",
    "tab\there",
};

StateDict tricky_dict() {
  StateDict sd;
  float v = 0;
  for (const auto& n : kNames) {
    sd.insert(n, Tensor::from_vector<float>(DType::F32, {2}, {v, v + 0.5f}));
    v += 1;
  }
  return sd;
}

std::set<std::string> key_set(const StateDict& sd) {
  std::set<std::string> out;
  for (const auto& [k, t] : sd) out.insert(k);
  return out;
}

}  // namespace

TEST_CASE("encode_name: only what a format cannot hold is escaped, '%' included", "[naming]") {
  CHECK(encode_name("/model.10/Constant_output_0", Target::Hdf5) == "%2Fmodel.10/Constant_output_0");
  CHECK(encode_name("../../x", Target::Npz) == "%2E./%2E./x");
  CHECK(encode_name("a//b", Target::Hdf5) == "a%2F/b");
  CHECK(encode_name("trail/", Target::Npz) == "trail%2F");
  CHECK(encode_name("dense/kernel:0", Target::Hdf5) == "dense/kernel:0");
  CHECK(encode_name("hidden.weight", Target::Npz) == "hidden.weight");
  CHECK(encode_name("", Target::Onnx) == "%_");
  CHECK(encode_name("50%", Target::Safetensors) == "50%25");
  CHECK(encode_name("__metadata__", Target::Safetensors) == "%5F_metadata__");
  CHECK(encode_name("a/b", Target::Folder) == "a%2Fb");
  CHECK(encode_name("snapshot_done", Target::Folder) == "%73napshot_done");
  CHECK(encode_name("back\\slash", Target::Npz) == "back%5Cslash");
  CHECK(encode_name("back\\slash", Target::Hdf5) == "back\\slash");
  CHECK(encode_name("/model.10/Constant_output_0", Target::Onnx) == "/model.10/Constant_output_0");
  CHECK(encode_name(std::string("nul\0x", 5), Target::Hdf5) == "nul%00x");
}

TEST_CASE("decode_name inverts encode_name for every target and keeps other tools' names", "[naming]") {
  for (Target t : kTargets) {
    std::set<std::string> stored;
    for (const auto& n : kNames) {
      std::string e = encode_name(n, t);
      INFO("name '" << n << "' stored as '" << e << "'");
      CHECK(!e.empty());
      CHECK(decode_name(e, t) == n);
      CHECK(stored.insert(e).second);  // injective
      if (t == Target::Hdf5 || t == Target::Npz) {
        CHECK(e.front() != '/');
        CHECK(e.back() != '/');
        CHECK(!contains(e, "//"));
        size_t start = 0;
        while (true) {
          size_t end = e.find('/', start);
          std::string comp = e.substr(start, end == std::string::npos ? std::string::npos : end - start);
          CHECK(comp != ".");
          CHECK(comp != "..");
          if (end == std::string::npos) break;
          start = end + 1;
        }
      }
      if (t == Target::Folder) CHECK(e.find('/') == std::string::npos);
    }
  }
  // Text no encoder produces is read as it is.
  CHECK(decode_name("50%", Target::Hdf5) == "50%");
  CHECK(decode_name("a%41", Target::Hdf5) == "a%41");
  CHECK(decode_name("%2e", Target::Npz) == "%2e");
  CHECK(decode_name("x%2E", Target::Npz) == "x%2E");  // '.' is escaped only at a component's start
}

TEST_CASE("every writable format keeps every name and byte (A -> B -> A)", "[naming][needs_hdf5][needs_onnx]") {
  tbtest::TempDir dir;
  const StateDict sd = tricky_dict();
  const std::vector<std::pair<std::string, std::string>> formats = {
      {"pt", "x.pt"}, {"npz", "x.npz"},   {"safetensors", "x.safetensors"},
      {"h5", "x.h5"}, {"onnx", "x.onnx"}, {"oneflow", "x_oneflow"}};
  for (const auto& [fmt, file] : formats) {
    INFO("format " << fmt);
    tb::save(Checkpoint::from_state_dict(sd), dir / file, fmt);
    StateDict back = tb::load(dir / file).state_dict();
    REQUIRE(key_set(back) == key_set(sd));
    for (const auto& [k, t] : sd) CHECK(tb::equal(back.at(k), t));
  }
  // OneFlow's snapshot layout: one folder per tensor.
  tb::SaveOptions so;
  so.options["layout"] = "snapshot";
  tb::save(Checkpoint::from_state_dict(sd), dir / "snap", "oneflow", so);
  StateDict back = tb::load(dir / "snap").state_dict();
  CHECK(key_set(back) == key_set(sd));
  for (const auto& [k, t] : sd) CHECK(tb::equal(back.at(k), t));
}

TEST_CASE("the CLI round trip of tricky names is bit-exact in every format that holds them",
          "[naming][needs_hdf5][needs_onnx]") {
  tbtest::TempDir dir;
  tb::save(Checkpoint::from_state_dict(tricky_dict()), dir / "names.safetensors", "safetensors");
  auto r = tbtest::run_cli({"roundtrip", (dir / "names.safetensors").string(), "--json"});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  std::set<std::string> exact;
  for (const auto& row : j["rows"])
    if (row["result"] == "bit-exact") exact.insert(row["via"].get<std::string>());
  for (const char* f : {"pt", "npz", "npy", "safetensors", "h5", "oneflow", "onnx"}) CHECK(exact.count(f));
}

TEST_CASE("h5py, numpy, onnx read the escaped names and no npz member leaves its folder",
          "[naming][needs_hdf5][needs_onnx]") {
  tbtest::TempDir dir;
  const StateDict sd = tricky_dict();
  tb::save(Checkpoint::from_state_dict(sd), dir / "x.h5", "h5");
  tb::save(Checkpoint::from_state_dict(sd), dir / "x.npz", "npz");
  tb::save(Checkpoint::from_state_dict(sd), dir / "x.onnx", "onnx");
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import sys, zipfile, h5py, numpy as np, onnx
names = []
h5py.File(sys.argv[1], 'r').visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
assert '%2Fmodel.10/Constant_output_0' in names, names
assert '%2E./%2E./x' in names and 'a%2F/b' in names and '%_' in names, names
assert '\u00fcn\u00efc\u00f6d\u00e9/\u540d\u524d' in names, names
members = zipfile.ZipFile(sys.argv[2]).namelist()
for m in members:
    parts = m.split('/')
    assert not m.startswith('/') and '\\' not in m and '..' not in parts and '.' not in parts and '' not in parts, m
f = np.load(sys.argv[2])
assert '%2E./%2E./x' in f.files and 'a%2F/b' in f.files, f.files
assert all(f[k].shape == (2,) for k in f.files)
m = onnx.load(sys.argv[3])
onnx.checker.check_model(m, full_check=True)
inits = [t.name for t in m.graph.initializer]
assert '/model.10/Constant_output_0' in inits and '%_' in inits and '50%25' in inits, inits
print('OK', len(names), len(members), len(inits))
)",
                          {(dir / "x.h5").string(), (dir / "x.npz").string(), (dir / "x.onnx").string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "OK 16 16 16"));
}

TEST_CASE("safetensors reads our keys and a tensor named __metadata__ is escaped", "[naming]") {
  tbtest::TempDir dir;
  tb::save(Checkpoint::from_state_dict(tricky_dict()), dir / "x.safetensors", "safetensors");
  auto r = tbtest::python(tbtest::Peer::Peers, R"(
import sys
from safetensors import safe_open
with safe_open(sys.argv[1], 'np') as f:
    keys = list(f.keys())
    assert '%5F_metadata__' in keys and '%_' in keys and '50%25' in keys and '../../x' in keys, keys
    assert all(f.get_tensor(k).shape == (2,) for k in keys)
print('OK', len(keys))
)",
                          {(dir / "x.safetensors").string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "OK 16"));
}

TEST_CASE("a lone unnamed array has one name everywhere and diff calls it the same tensor",
          "[naming][needs_hdf5][needs_onnx]") {
  tbtest::TempDir dir;
  const std::string npy = tbtest::fixture("numpy/f32_c.npy").string();
  for (const char* ext : {".npz", ".h5", ".onnx", ".safetensors", ".pt"}) {
    std::string out = (dir / (std::string("x") + ext)).string();
    auto r = tbtest::run_cli({"convert", npy, out, "-q"});
    INFO(ext << ": " << r.output);
    REQUIRE(r.exit_code == 0);
    StateDict sd = tb::load(out).state_dict();
    REQUIRE(sd.size() == 1);
    if (std::string(ext) != ".pt") CHECK(sd.entries()[0].first == std::string(tb::naming::kUnnamedTensor));
    r = tbtest::run_cli({"diff", npy, out});
    CHECK(r.exit_code == 0);
    CHECK(contains(r.output, "EQUAL"));
    r = tbtest::run_cli({"diff", out, npy});
    CHECK(r.exit_code == 0);
  }
  // numpy names it the same way (np.savez(x) -> arr_0).
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import sys, numpy as np
print(np.load(sys.argv[1]).files)
)",
                          {(dir / "x.npz").string()});
  CHECK(contains(r.output, "['arr_0']"));
}

TEST_CASE("torch-only values (num_batches_tracked) survive Keras layouts and Keras still loads them",
          "[naming][needs_hdf5]") {
  tbtest::TempDir dir;
  const std::string pt = tbtest::fixture("torch/bn1d.pt").string();
  auto r = tbtest::run_cli({"roundtrip", pt, "--via", "keras-h5,keras3-h5", "--json"});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  for (const auto& row : j["rows"]) CHECK(row["result"] == "bit-exact");

  REQUIRE(tbtest::run_cli({"convert", pt, (dir / "bn.h5").string(), "--to", "keras-h5", "-q"}).exit_code == 0);
  REQUIRE(tbtest::run_cli({"convert", pt, (dir / "bn.weights.h5").string(), "--to", "keras3-h5", "-q"}).exit_code == 0);
  StateDict k2 = tb::load(dir / "bn.h5").state_dict();
  REQUIRE(k2.contains("torch_only/layer_1/num_batches_tracked"));
  CHECK(k2.at("torch_only/layer_1/num_batches_tracked").item_as_double() ==
        tb::load(pt).state_dict().at("1.num_batches_tracked").item_as_double());
  r = tbtest::python(tbtest::Peer::Peers, R"(
import os, sys
os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
import numpy as np, tf_keras, keras
def layers(k, names):
    return [k.Input((20,)), k.layers.Dense(32, name=names[0]), k.layers.BatchNormalization(name=names[1]),
            k.layers.ReLU(), k.layers.Dense(10, name=names[2])]
m2 = tf_keras.Sequential(layers(tf_keras, ['layer_0', 'layer_1', 'layer_3']))
m2.load_weights(sys.argv[1])
m3 = keras.Sequential(layers(keras, [None, None, None]))
m3.load_weights(sys.argv[2])
x = np.random.RandomState(0).rand(4, 20).astype('float32')
print('OK', np.array_equal(m2.predict(x, verbose=0), np.asarray(m3.predict(x, verbose=0))))
)",
                     {(dir / "bn.h5").string(), (dir / "bn.weights.h5").string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "OK True"));
}

TEST_CASE("Keras full-model .h5 -> .h5 keeps weightless layers and tf-keras load_model predicts the same",
          "[naming][needs_hdf5]") {
  tbtest::TempDir dir;
  std::vector<std::string> args;
  std::vector<std::string> sources = {tbtest::fixture("h5_extra/cnn_keras2_full.h5").string(),
                                      tbtest::fixture("keras/mlp_keras2_full.h5").string()};
  for (const char* rel :
       {"keras_h5/keras213_full_model_conv_bn_dense.h5", "keras_h5/tfkeras224_full_model_conv1d_bn.h5",
        "keras_h5/tfkeras240_full_model_with_adam_optimizer.hdf5"})
    sources.push_back(tbtest::shared_fixture(rel).string());
  for (size_t i = 0; i < sources.size(); ++i) {
    for (const char* to : {"h5", "keras-h5"}) {
      std::string out = (dir / (std::to_string(i) + "_" + to + ".h5")).string();
      auto r = tbtest::run_cli({"convert", sources[i], out, "--to", to, "-q"});
      INFO(sources[i] << " --to " << to << ": " << r.output);
      REQUIRE(r.exit_code == 0);
      CHECK(tbtest::run_cli({"inspect", out}).exit_code == 0);  // our reader takes it back
      r = tbtest::run_cli({"diff", sources[i], out});
      CHECK(r.exit_code == 0);
      args.push_back(sources[i]);
      args.push_back(out);
    }
  }
  auto r = tbtest::python(tbtest::Peer::Peers, R"(
import os, sys
os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
import numpy as np, tf_keras as keras
n = 0
for a, b in zip(sys.argv[1::2], sys.argv[2::2]):
    m1 = keras.models.load_model(a, compile=False)
    m2 = keras.models.load_model(b, compile=False)
    shape = [2 if d is None else d for d in m1.input_shape]
    x = np.random.RandomState(0).rand(*shape).astype('float32')
    assert np.array_equal(m1.predict(x, verbose=0), m2.predict(x, verbose=0)), b
    n += 1
print('OK', n)
)",
                          args);
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "OK 10"));
}

TEST_CASE("Keras weights-only files keep every layer group and attribute through h5 -> h5", "[naming][needs_hdf5]") {
  tbtest::TempDir dir;
  std::vector<std::string> args;
  for (const char* rel :
       {"keras_h5/keras1_weights_only_cnn_W_b_naming.h5", "keras_h5/keras206_weights_only_conv2d_bn_dense.h5",
        "keras_h5/tfkeras224_weights_only_toyresnet.h5", "keras_h5/tfkeras240_weights_only_lstm.h5"}) {
    std::string src = tbtest::shared_fixture(rel).string();
    std::string out = (dir / (std::to_string(args.size()) + ".h5")).string();
    REQUIRE(tbtest::run_cli({"convert", src, out, "-q"}).exit_code == 0);
    args.push_back(src);
    args.push_back(out);
  }
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import sys, h5py, numpy as np
def items(path):
    out = {}
    def text(v):  # fixed-length (bytes) and variable-length (str) strings hold the same names
        if isinstance(v, np.ndarray): return [text(x) for x in v.tolist()]
        return v.decode() if isinstance(v, bytes) else v
    def visit(name, obj):
        attrs = {k: text(v) for k, v in obj.attrs.items()}
        data = obj[()].tobytes() if isinstance(obj, h5py.Dataset) else None
        out[name] = (type(obj).__name__, attrs, data)
    with h5py.File(path, 'r') as f:
        visit('/', f)
        f.visititems(visit)
    return out
for a, b in zip(sys.argv[1::2], sys.argv[2::2]):
    A, B = items(a), items(b)
    assert A.keys() == B.keys(), (a, set(A) ^ set(B))
    for k in A:
        assert A[k] == B[k], (a, k)
print('OK', len(sys.argv) // 2)
)",
                          args);
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "OK 4"));
}
