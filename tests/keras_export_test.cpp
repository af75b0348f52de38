// `export MODEL out.keras`: nn models (the seed MLP and CNN, a Conv+BatchNorm net, a Sequential with
// LeakyReLU, padded AvgPool2d, AdaptiveAvgPool2d(1), Tanh, Softmax) written as Keras 3 archives that
// keras.saving.load_model loads and whose predict() on the NHWC input equals PyTorch's output.
#include "tests/support.h"

using namespace tb;

namespace {

struct Export {
  std::string source, name, x, y;
  std::vector<std::string> extra;  // --arch, --input-shape, ...
};

}  // namespace

TEST_CASE("export to .keras: Keras 3 load_model + predict equals PyTorch", "[keras_export][needs_hdf5]") {
  tbtest::TempDir dir;
  const std::vector<Export> cases = {
      {"torch/mlp.params",
       "mlp",
       "torch/mlp_X.npy",
       "torch/mlp_Y.npy",
       {"--arch", "mlp:20,256,10", "--input-shape", "-1,20"}},
      {"torch/cnn.pt",
       "cnn",
       "torch/cnn_X.npy",
       "torch/cnn_Y.npy",
       {"--arch", "seed-cnn", "--input-shape", "-1,3,32,32"}},
      {"arch/cnn_bn_whole.pt",
       "cnn_bn",
       "arch/cnn_X.npy",
       "arch/cnn_Y.npy",
       {"--allow-unknown-globals", "--arch", "conv2d:3,8,3,1,1 batchnorm:8 relu maxpool:2,2,0 flatten linear:128,10",
        "--input-shape", "-1,3,8,8"}},
      {"arch/pools_whole.pt",
       "pools",
       "arch/pools_X.npy",
       "arch/pools_Y.npy",
       {"--allow-unknown-globals", "--input-shape", "-1,3,9,9"}},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    const std::string out = (dir / (c.name + ".keras")).string();
    std::vector<std::string> args = {"export", tbtest::fixture(c.source).string(), out};
    args.insert(args.end(), c.extra.begin(), c.extra.end());
    auto r = tbtest::run_cli(args);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    auto py = tbtest::python(tbtest::Peer::Peers, R"(
import os, sys
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import numpy as np, keras
m = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2]); y = np.load(sys.argv[3])
if x.ndim == 4: x = x.transpose(0, 2, 3, 1)  # the Keras model takes NHWC
out = m.predict(x, verbose=0)
d = float(np.abs(out - y).max())
print('maxdiff', d)
assert out.shape == y.shape and d < 1e-5, 'outputs differ'
)",
                             {out, tbtest::fixture(c.x).string(), tbtest::fixture(c.y).string()});
    INFO(py.output);
    CHECK(py.exit_code == 0);
  }
}

TEST_CASE("export to .keras names the module Keras cannot take", "[keras_export][needs_hdf5]") {
  tbtest::TempDir dir;
  auto r = tbtest::run_cli({"export", tbtest::fixture("torch/cnn.pt").string(), (dir / "x.keras").string(), "--arch",
                            "conv2d:3,16,5 relu maxpool:2,2,1 conv2d:16,32,5 relu maxpool:2,2 flatten linear:800,120 "
                            "relu linear:120,84 relu "
                            "linear:84,10",
                            "--input-shape", "-1,3,32,32"});
  // A padded MaxPool2d has no Keras layer (Keras pads with zeros, torch with -inf).
  CHECK(r.exit_code == 1);
  INFO(r.output);
  CHECK(r.output.find("MaxPool2d at '2' uses padding") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir / "x.keras"));
}
