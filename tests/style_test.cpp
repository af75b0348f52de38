// Framework styles (torch <-> Keras) and key selection / renaming, checked against Keras itself.
#include "tests/support.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "nn/module.h"
#include "nn/select.h"
#include "nn/style.h"

using namespace tb;
namespace fs = std::filesystem;

namespace {

// .npy exchange with the Keras peer through our own npy reader/writer.
Tensor read_npy(const fs::path& p) { return tbtest::load_npy_tensor(p); }

void write_npy(const fs::path& p, const Tensor& t) {
  StateDict sd;
  sd.insert("x", t.contiguous().to(DType::F32));
  SaveOptions so;
  so.overwrite = true;
  save(Checkpoint::from_state_dict(sd), p, "npy", so);
}

StateDict read_dir(const fs::path& dir, const std::vector<std::string>& keys) {
  StateDict sd;
  for (auto& k : keys) sd.insert(k, read_npy(dir / (k + ".npy")));
  return sd;
}

void check_close(const Tensor& got, const Tensor& want, const std::string& what, double rtol = 1e-5,
                 double atol = 1e-5) {
  REQUIRE(got.shape() == want.shape());
  std::printf("%s: max abs difference %.3g\n", what.c_str(), max_abs_diff(got, want));
  CHECK(allclose(got, want, rtol, atol));
}

const std::vector<std::string> kMlpKeys = {"hidden.weight", "hidden.bias", "out.weight", "out.bias"};
const std::vector<std::string> kCnnKeys = {"0.weight", "0.bias",   "3.weight", "3.bias",    "7.weight",
                                           "7.bias",   "9.weight", "9.bias",   "11.weight", "11.bias"};

// Keras's Sequential equivalent of the seed CNN (NHWC) and of a BN net, built in the peers venv.
const char* kKerasModels = R"(
import os, sys, numpy as np
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tf_keras as keras
work = sys.argv[1]
def cnn():
    return keras.Sequential([keras.Input((32, 32, 3)),
        keras.layers.Conv2D(16, 5, activation="relu", name="c1"), keras.layers.MaxPooling2D(2, name="p1"),
        keras.layers.Conv2D(32, 5, activation="relu", name="c2"), keras.layers.MaxPooling2D(2, name="p2"),
        keras.layers.Flatten(name="flat"), keras.layers.Dense(120, activation="relu", name="d1"),
        keras.layers.Dense(84, activation="relu", name="d2"), keras.layers.Dense(10, name="d3")])
def bn():
    return keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.BatchNormalization(epsilon=1e-3, name="bn"), keras.layers.ReLU(name="relu"),
        keras.layers.Flatten(name="flat"), keras.layers.Dense(5, name="dense")])
def save_layers(model, tag):
    names = []
    for layer in model.layers:
        for i, w in enumerate(layer.get_weights()):
            np.save(os.path.join(work, "%s_%s_%d.npy" % (tag, layer.name, i)), w.astype(np.float32))
        names.append("%s:%d" % (layer.name, len(layer.get_weights())))
    print(tag, " ".join(names))
# 1. Keras models with random weights: save weights and predict, for Keras -> torch.
rng = np.random.default_rng(5)
for tag, build, shape in (("kcnn", cnn, (2, 32, 32, 3)), ("kbn", bn, (3, 6, 6, 3))):
    m = build()
    m.set_weights([(np.abs(rng.standard_normal(w.shape)) + 0.5 if "variance" in v.name
                    else rng.standard_normal(w.shape) * 0.2).astype(np.float32)
                   for w, v in zip(m.get_weights(), m.weights)])
    x = rng.random(shape).astype(np.float32)
    np.save(os.path.join(work, tag + "_X.npy"), x)
    np.save(os.path.join(work, tag + "_Y.npy"), m.predict(x, verbose=0))
    save_layers(m, tag)
# 2. The torch seed CNN converted by us to Keras style: load with set_weights (positional), predict.
m = cnn()
ws = []
for layer in m.layers:
    n = len(layer.get_weights())
    ws += [np.load(os.path.join(work, "t2k_%s_%d.npy" % (layer.name, i))) for i in range(n)]
m.set_weights(ws)
x = np.load(os.path.join(work, "cnn_X_nhwc.npy"))
np.save(os.path.join(work, "t2k_Y.npy"), m.predict(x, verbose=0))
print("done")
)";

std::vector<nn::KerasLayer> read_keras_layers(const fs::path& work, const std::string& tag, const std::string& line) {
  // line: "<tag> name:count name:count ..."
  std::vector<nn::KerasLayer> layers;
  std::stringstream ss(line);
  std::string item;
  ss >> item;
  REQUIRE(item == tag);
  while (ss >> item) {
    nn::KerasLayer L;
    L.name = item.substr(0, item.find(':'));
    int n = std::stoi(item.substr(item.find(':') + 1));
    for (int i = 0; i < n; ++i) {
      Tensor t = read_npy(work / (tag + "_" + L.name + "_" + std::to_string(i) + ".npy"));
      L.weights.emplace_back(std::to_string(i), t);
    }
    // Name weights the way a Keras file does (kernel/bias, gamma/beta/moving_mean/moving_variance).
    if (n == 4) {
      const char* names[] = {"gamma", "beta", "moving_mean", "moving_variance"};
      for (int i = 0; i < 4; ++i) L.weights[size_t(i)].first = names[i];
      L.class_name = "BatchNormalization";
    } else if (n == 2) {
      L.weights[0].first = "kernel";
      L.weights[1].first = "bias";
      L.class_name = L.weights[0].second.dim() == 4 ? "Conv2D" : "Dense";
    } else {
      L.class_name = L.name == "flat" ? "Flatten" : "";
    }
    layers.push_back(L);
  }
  return layers;
}

}  // namespace

TEST_CASE("Keras <-> torch style against Keras itself: seed CNN both ways, BN with eps, round trip bit-exact") {
  tbtest::TempDir work;
  // torch -> Keras for the torch seed CNN (the Keras side loads it positionally in the script).
  StateDict torch_cnn = load(tbtest::fixture("torch/cnn.pt")).state_dict();
  nn::StyleOptions to_keras;
  to_keras.names = {"c1", "c2", "d1", "d2", "d3"};
  std::vector<nn::KerasLayer> t2k = nn::torch_to_keras(torch_cnn, to_keras);
  REQUIRE(t2k.size() == 5);
  CHECK(t2k[0].class_name == "Conv2D");
  CHECK(t2k[0].weight("kernel")->shape() == Shape{5, 5, 3, 16});
  CHECK(t2k[2].weight("kernel")->shape() == Shape{800, 120});
  for (auto& L : t2k)
    for (size_t i = 0; i < L.weights.size(); ++i)
      write_npy(work / ("t2k_" + L.name + "_" + std::to_string(i) + ".npy"), L.weights[i].second);
  Tensor X = read_npy(tbtest::fixture("torch/cnn_X.npy"));
  write_npy(work / "cnn_X_nhwc.npy", X.permute({0, 2, 3, 1}));

  auto r = tbtest::python(tbtest::Peer::Peers, kKerasModels, {work.path().string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  std::string kcnn_line, kbn_line;
  {
    std::stringstream ss(r.output);
    for (std::string line; std::getline(ss, line);) {
      if (line.rfind("kcnn ", 0) == 0) kcnn_line = line;
      if (line.rfind("kbn ", 0) == 0) kbn_line = line;
    }
  }
  REQUIRE(!kcnn_line.empty());

  // torch -> Keras: Keras's prediction equals torch's stored output.
  check_close(read_npy(work / "t2k_Y.npy"), read_npy(tbtest::fixture("torch/cnn_Y.npy")),
              "torch CNN converted to Keras, Keras predict vs torch");

  // Keras -> torch: the seed CNN in C++ with the converted weights predicts what Keras predicted.
  std::vector<nn::KerasLayer> kcnn = read_keras_layers(work.path(), "kcnn", kcnn_line);
  auto cnn = nn::seed_cnn();
  nn::StyleOptions to_torch;
  to_torch.names = nn::weighted_layer_prefixes(*cnn);
  CHECK(to_torch.names == std::vector<std::string>{"0", "3", "7", "9", "11"});
  StateDict k2t = nn::keras_to_torch(kcnn, to_torch);
  REQUIRE(cnn->load_state_dict(k2t).ok());
  Tensor kx = read_npy(work / "kcnn_X.npy");  // NHWC
  // Keras's float32 oneDNN kernels sum in another order than torch; with random weights the outputs
  // reach ~10, so compare at 1e-4 relative (the transform itself is exact: see the round trip below).
  check_close(cnn->forward(kx.permute({0, 3, 1, 2})), read_npy(work / "kcnn_Y.npy"),
              "Keras CNN converted to torch, C++ forward vs Keras predict", 1e-4, 1e-4);

  // Round trip Keras -> torch -> Keras is bit-exact.
  nn::StyleOptions back;
  back.names = {"c1", "c2", "d1", "d2", "d3"};
  std::vector<nn::KerasLayer> again = nn::torch_to_keras(k2t, back);
  size_t n = 0;
  for (auto& L : kcnn) {
    if (L.weights.empty()) continue;
    REQUIRE(n < again.size());
    CHECK(again[n].name == L.name);
    REQUIRE(again[n].weights.size() == L.weights.size());
    for (size_t i = 0; i < L.weights.size(); ++i) {
      CHECK(again[n].weights[i].first == L.weights[i].first);
      CHECK(equal(again[n].weights[i].second, L.weights[i].second));
    }
    ++n;
  }
  CHECK(n == again.size());

  // BatchNormalization: gamma/beta/moving stats, eps 1e-3 carried, num_batches_tracked synthesised.
  std::vector<nn::KerasLayer> kbn = read_keras_layers(work.path(), "kbn", kbn_line);
  StateDict bn_sd = nn::keras_to_torch(kbn, {{"0", "1", "4"}, {4, 4}, true, 1e-5});
  CHECK(bn_sd.keys() == std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                                 "1.running_var", "1.num_batches_tracked", "4.weight", "4.bias"});
  CHECK(bn_sd.metadata.at("1.eps") == "0.001");
  nn::Sequential net;
  net.add(std::make_shared<nn::Conv2d>(3, 4, 3)).add(nn::BatchNorm2d(4)).add(std::make_shared<nn::ReLU>());
  net.add(std::make_shared<nn::Flatten>()).add(std::make_shared<nn::Linear>(64, 5));
  REQUIRE(net.load_state_dict(bn_sd).ok());
  CHECK(nn::apply_style_metadata(net, bn_sd.metadata) == 1);
  check_close(net.forward(read_npy(work / "kbn_X.npy").permute({0, 3, 1, 2})), read_npy(work / "kbn_Y.npy"),
              "Keras Conv+BN+Dense converted to torch, C++ forward vs Keras predict");
}

TEST_CASE("Keras weight files written by tf-keras and Keras 3 run as the torch MLP") {
  Tensor X = read_npy(tbtest::fixture("keras/mlp_X.npy"));
  struct Case {
    const char* file;
    const char* expected;
  } cases[] = {{"keras/mlp_keras2.h5", "keras/mlp_keras2_Y.npy"},
               {"keras/mlp_keras2_full.h5", "keras/mlp_keras2_Y.npy"},
               {"keras/mlp_keras3_legacy_full.h5", "keras/mlp_keras3_Y.npy"},
               {"keras/mlp.weights.h5", "keras/mlp_keras3_Y.npy"}};
  StateDict torch_sd = read_dir(tbtest::fixture("torch/mlp_weights"), kMlpKeys);
  for (auto& c : cases) {
    INFO(c.file);
    Checkpoint ck;
    try {
      ck = load(tbtest::fixture(c.file));
    } catch (const UnsupportedError& e) {
      tbtest::skip(std::string("no HDF5 support in this build: ") + e.what());
    }
    StateDict sd = ck.state_dict();
    nn::StyleOptions opts;
    opts.names = {"hidden", "out"};  // Keras 3 .weights.h5 names objects dense, dense_1
    std::vector<nn::KerasLayer> layers = nn::keras_layers_from_state_dict(sd);
    StateDict t = nn::keras_to_torch(layers, opts);
    nn::MLP m;
    REQUIRE(m.load_state_dict(t).ok());
    for (auto& k : kMlpKeys) CHECK(equal(t.at(k), torch_sd.at(k)));
    check_close(m.forward(X), read_npy(tbtest::fixture(c.expected)), std::string(c.file) + " in C++ vs Keras predict");
  }
  // convert_style both ways on the Keras 2 file: torch style equals the torch weights; back is bit-exact.
  StateDict k2 = load(tbtest::fixture("keras/mlp_keras2.h5")).state_dict();
  StateDict t = nn::convert_style(k2, "torch");
  CHECK(t.keys() == kMlpKeys);
  StateDict k = nn::convert_style(t, "keras");
  CHECK(k.keys() == std::vector<std::string>{"hidden/hidden/kernel:0", "hidden/hidden/bias:0", "out/out/kernel:0",
                                             "out/out/bias:0"});
  for (auto& [key, tensor] : k) CHECK(equal(tensor, k2.at(key)));
  CHECK_THROWS_AS(nn::convert_style(t, "mxnet"), UnsupportedError);
}

TEST_CASE("unsupported layers are named") {
  StateDict sd;
  sd.insert("ln.weight", Tensor::zeros(DType::F32, {4}));
  sd.insert("ln.bias", Tensor::zeros(DType::F32, {4}));
  try {
    nn::torch_to_keras(sd);
    FAIL("accepted");
  } catch (const UnsupportedError& e) {
    CHECK(std::string(e.what()).find("torch module 'ln'") != std::string::npos);
  }
  nn::KerasLayer L{"emb", "Embedding", {{"embeddings", Tensor::zeros(DType::F32, {10, 4})}}, 1e-3, {}};
  try {
    nn::keras_to_torch({L});
    FAIL("accepted");
  } catch (const UnsupportedError& e) {
    CHECK(std::string(e.what()).find("Keras layer 'emb' (Embedding") != std::string::npos);
  }
}

TEST_CASE("partial reuse: select by glob or regex, rename, strip module./_orig_mod.") {
  StateDict sd = read_dir(tbtest::fixture("torch/mlp_weights"), kMlpKeys);
  CHECK(nn::glob_match("hidden.*", "hidden.weight"));
  CHECK(!nn::glob_match("hidden.*", "out.weight"));
  CHECK(nn::glob_match("*.b?as", "out.bias"));
  CHECK(nn::glob_match("[ho]*.weight", "out.weight"));
  CHECK(!nn::glob_match("[!ho]*.weight", "out.weight"));

  StateDict first = nn::select_keys(sd, {"hidden.*"});
  CHECK(first.keys() == std::vector<std::string>{"hidden.weight", "hidden.bias"});
  CHECK(first.at("hidden.weight").shares_storage(sd.at("hidden.weight")));
  CHECK(nn::select_keys(sd, {"(hidden|out)\\.bias"}, true).keys() ==
        std::vector<std::string>{"hidden.bias", "out.bias"});
  try {
    nn::select_keys(sd, {"encoder.*"});
    FAIL("accepted");
  } catch (const KeyError& e) {
    CHECK(std::string(e.what()).find("'encoder.*' matches no key; keys are: hidden.weight") != std::string::npos);
  }

  // Seed 001 exercise: reuse the trained first layer in a new net with a different head.
  StateDict wrapped = nn::add_prefix(sd, "module._orig_mod.");
  StateDict renamed = nn::rename_keys(wrapped, {"module\\.(.*)=\\1", "x=y"});
  CHECK(renamed.keys().front() == "_orig_mod.hidden.weight");
  StateDict stripped = nn::strip_prefixes(wrapped);
  CHECK(stripped.keys() == kMlpKeys);
  nn::MLP fresh(20, 256, 3);
  nn::LoadReport rep = fresh.load_state_dict(nn::select_keys(stripped, {"hidden.*"}), false);
  CHECK(rep.loaded == std::vector<std::string>{"hidden.weight", "hidden.bias"});
  CHECK(rep.missing == std::vector<std::string>{"out.weight", "out.bias"});
  CHECK(equal(fresh.state_dict().at("hidden.weight"), sd.at("hidden.weight")));

  StateDict clash;
  clash.insert("module.a", Tensor::zeros(DType::F32, {1}));
  clash.insert("a", Tensor::zeros(DType::F32, {1}));
  CHECK_THROWS_AS(nn::strip_prefixes(clash), KeyError);
  CHECK_THROWS_AS(nn::rename_keys(sd, {"no-equals"}), FormatError);
  CHECK_THROWS_AS(nn::rename_keys(sd, {"(=x"}), FormatError);
}
