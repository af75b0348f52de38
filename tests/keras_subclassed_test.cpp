// Keras 3 subclassed models' .weights.h5 (fixtures/gen_keras_subclassed.py): groups named by the
// model's attributes (hidden/vars/0), no layer list, no config. Layers are recognised from their
// variables' shapes, so --style torch and run --arch work, and PyTorch gives Keras's outputs.
#include "tests/support.h"

#include "compute/backend.h"
#include "formats/registry.h"

using namespace tb;

namespace {
std::string fx(const std::string& name) { return tbtest::fixture("keras_subclassed/" + name).string(); }
}  // namespace

TEST_CASE("Keras 3 subclassed MLP weights run in the chapter's MLP like Keras", "[keras_subclassed][needs_hdf5]") {
  tbtest::TempDir dir;
  std::vector<std::string> backends = {"cpu"};
  if (compute::vulkan::is_available()) backends.push_back("vulkan");
  for (const auto& be : backends) {
    INFO(be);
    const std::string y = (dir / (be + ".npy")).string();
    auto r = tbtest::run_cli(
        {"run", fx("mlp.weights.h5"), "--arch", "mlp:20,256,10", "-i", fx("mlp_X.npy"), "-o", y, "--backend", be});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    r = tbtest::run_cli({"diff", y, fx("mlp_Y.npy"), "--rtol", "1e-5", "--atol", "1e-6"});
    INFO(r.output);
    CHECK(r.exit_code == 0);
  }
}

TEST_CASE("Keras 3 subclassed weights convert to torch names by attribute, in PyTorch layouts",
          "[keras_subclassed][needs_hdf5]") {
  tbtest::TempDir dir;
  const std::string mlp = (dir / "mlp.pt").string();
  auto r = tbtest::run_cli({"convert", fx("mlp.weights.h5"), mlp, "--style", "torch"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  StateDict sd = load(mlp).state_dict();
  CHECK(sd.at("hidden.weight").shape() == Shape{256, 20});
  CHECK(sd.at("dense_1.weight").shape() == Shape{10, 256});  // Keras 3 files output_layer as layers/dense_1
  CHECK(sd.at("dense_1.bias").shape() == Shape{10});

  const std::string cnn = (dir / "cnn.pt").string();
  r = tbtest::run_cli({"convert", fx("cnn.weights.h5"), cnn, "--style", "torch"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  // The judge: PyTorch loads the converted file into the same network and gives Keras's outputs.
  auto py = tbtest::python(tbtest::Peer::Torch, R"(
import sys, numpy as np, torch
from torch import nn
class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3); self.bn = nn.BatchNorm2d(4, eps=1e-3); self.fc = nn.Linear(64, 3)
    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))
m = CNN(); m.load_state_dict(torch.load(sys.argv[1])); m.eval()
x = torch.from_numpy(np.load(sys.argv[2])).permute(0, 3, 1, 2)
d = float(np.abs(m(x).detach().numpy() - np.load(sys.argv[3])).max())
print('maxdiff', d)
assert d < 1e-5
)",
                           {cnn, fx("cnn_X.npy"), fx("cnn_Y.npy")});
  INFO(py.output);
  CHECK(py.exit_code == 0);
}
