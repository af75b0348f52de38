// nn modules: PyTorch's state_dict keys, load_state_dict reports, and forward passes equal to torch's
// stored outputs (seed MLP, seed CNN, BatchNorm1d/2d networks).
#include "tests/support.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "nn/module.h"
#include "nn/select.h"

using namespace tb;
namespace fs = std::filesystem;

namespace {

// Minimal .npy (v1/v2, little-endian, C order) reader for f4/i8 expected values, so these tests do not
// depend on the npy adapter.
Tensor read_npy(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  REQUIRE(f.good());
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  REQUIRE(bytes.size() >= 10);
  REQUIRE(bytes.compare(0, 6, "\x93NUMPY") == 0);
  size_t hl, off;
  if (bytes[6] == 1) {
    hl = uint8_t(bytes[8]) | (size_t(uint8_t(bytes[9])) << 8);
    off = 10;
  } else {
    hl = uint8_t(bytes[8]) | (size_t(uint8_t(bytes[9])) << 8) | (size_t(uint8_t(bytes[10])) << 16);
    off = 12;
  }
  std::string h = bytes.substr(off, hl);
  REQUIRE(h.find("'fortran_order': False") != std::string::npos);
  DType dt = h.find("'<f4'") != std::string::npos ? DType::F32 : DType::I64;
  REQUIRE((dt == DType::F32 || h.find("'<i8'") != std::string::npos));
  size_t a = h.find('(', h.find("'shape'")), b = h.find(')', a);
  Shape shape;
  std::stringstream ss(h.substr(a + 1, b - a - 1));
  std::string item;
  while (std::getline(ss, item, ','))
    if (item.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(item));
  size_t data = off + hl;
  return Tensor::from_bytes(dt, shape, bytes.data() + data, bytes.size() - data);
}

StateDict read_weights_dir(const fs::path& dir, const std::vector<std::string>& keys) {
  StateDict sd;
  for (auto& k : keys) sd.insert(k, read_npy(dir / (k + ".npy")));
  return sd;
}

StateDict read_weights_dir(const fs::path& dir) {
  std::ifstream f(dir / "KEYS.txt");
  std::vector<std::string> keys;
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) keys.push_back(line.substr(0, line.find(' ')));
  REQUIRE(!keys.empty());
  return read_weights_dir(dir, keys);
}

// Max |a-b| printed; within 1e-5 relative (plus a tiny absolute floor for values near 0).
void check_close(const Tensor& got, const Tensor& want, const std::string& what) {
  REQUIRE(got.shape() == want.shape());
  double d = max_abs_diff(got, want);
  std::printf("%s: max abs difference to torch %.3g\n", what.c_str(), d);
  CHECK(allclose(got, want, 1e-5, 1e-6));
}

std::shared_ptr<nn::Sequential> bn1d_net() {
  auto s = std::make_shared<nn::Sequential>();
  s->add(std::make_shared<nn::Linear>(20, 32)).add(nn::BatchNorm1d(32)).add(std::make_shared<nn::ReLU>());
  s->add(std::make_shared<nn::Linear>(32, 10));
  return s;
}

std::shared_ptr<nn::Sequential> bn2d_net() {
  nn::Conv2d::Options o;
  o.pad_h = o.pad_w = 1;
  auto s = std::make_shared<nn::Sequential>();
  s->add(std::make_shared<nn::Conv2d>(3, 8, 3, 3, o)).add(nn::BatchNorm2d(8)).add(std::make_shared<nn::ReLU>());
  return s;
}

std::string keys_and_shapes(const StateDict& sd) {
  std::string s;
  for (auto& [k, t] : sd) s += k + " " + std::string(dtype_name(t.dtype())) + " " + shape_str(t.shape()) + "\n";
  return s;
}

}  // namespace

TEST_CASE("state_dict keys, order, dtypes and shapes are exactly PyTorch's") {
  nn::MLP mlp;
  auto cnn = nn::seed_cnn();
  auto b1 = bn1d_net();
  auto b2 = bn2d_net();
  std::string ours = keys_and_shapes(mlp.state_dict()) + "--\n" + keys_and_shapes(cnn->state_dict()) + "--\n" +
                     keys_and_shapes(b1->state_dict()) + "--\n" + keys_and_shapes(b2->state_dict()) + "--\n" +
                     mlp.repr() + "\n--\n" + cnn->repr() + "\n--\n" + b1->repr() + "\n";
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import torch, torch.nn as nn
class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(20, 256)
        self.out = nn.Linear(256, 10)
cnn = nn.Sequential(nn.Conv2d(3,16,5), nn.ReLU(), nn.MaxPool2d(2,2), nn.Conv2d(16,32,5), nn.ReLU(),
                    nn.MaxPool2d(2,2), nn.Flatten(), nn.Linear(800,120), nn.ReLU(), nn.Linear(120,84), nn.ReLU(),
                    nn.Linear(84,10))
b1 = nn.Sequential(nn.Linear(20,32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32,10))
b2 = nn.Sequential(nn.Conv2d(3,8,3,padding=1), nn.BatchNorm2d(8), nn.ReLU())
out = ""
for m in (MLP(), cnn, b1, b2):
    for k, v in m.state_dict().items():
        out += "%s %s [%s]\n" % (k, str(v.dtype).replace("torch.", ""), ", ".join(str(d) for d in v.shape))
    out += "--\n"
out += repr(MLP()) + "\n--\n" + repr(cnn) + "\n--\n" + repr(b1) + "\n"
print(out, end="")
)");
  REQUIRE(r.exit_code == 0);
  CHECK(ours == r.output);
}

TEST_CASE("seed MLP: load_state_dict from torch's weights, forward equals torch's output") {
  StateDict sd = read_weights_dir(tbtest::fixture("torch/mlp_weights"),
                                  {"hidden.weight", "hidden.bias", "out.weight", "out.bias"});
  nn::MLP clone;
  nn::LoadReport rep = clone.load_state_dict(sd);
  CHECK(rep.ok());
  CHECK(rep.loaded.size() == 4);
  Tensor X = read_npy(tbtest::fixture("torch/mlp_X.npy"));
  Tensor Y = read_npy(tbtest::fixture("torch/mlp_Y.npy"));
  check_close(clone(X), Y, "seed MLP (CPU)");

  // The same through the built-in architecture used by `run --arch mlp:20,256,10`.
  auto m = nn::builtin_model("mlp:20,256,10");
  m->load_state_dict(sd);
  check_close(m->forward(X), Y, "mlp:20,256,10 (CPU)");
}

TEST_CASE("seed CNN: forward equals torch's output") {
  auto cnn = nn::seed_cnn();
  CHECK(cnn->load_state_dict(read_weights_dir(tbtest::fixture("nn/cnn_weights"))).ok());
  check_close(cnn->forward(read_npy(tbtest::fixture("torch/cnn_X.npy"))), read_npy(tbtest::fixture("torch/cnn_Y.npy")),
              "seed CNN (CPU)");
}

TEST_CASE("BatchNorm1d / BatchNorm2d networks (eval statistics, num_batches_tracked int64)") {
  auto b1 = bn1d_net();
  StateDict sd1 = read_weights_dir(tbtest::fixture("nn/bn1d_weights"));
  CHECK(b1->load_state_dict(sd1).ok());
  CHECK(b1->state_dict().at("1.num_batches_tracked").dtype() == DType::I64);
  CHECK(b1->state_dict().at("1.num_batches_tracked").item_as_double() == 3);
  check_close(b1->forward(read_npy(tbtest::fixture("torch/bn1d_X.npy"))), read_npy(tbtest::fixture("torch/bn1d_Y.npy")),
              "BatchNorm1d net (CPU)");
  auto b2 = bn2d_net();
  CHECK(b2->load_state_dict(read_weights_dir(tbtest::fixture("nn/bn2d_weights"))).ok());
  check_close(b2->forward(read_npy(tbtest::fixture("torch/bn2d_X.npy"))), read_npy(tbtest::fixture("torch/bn2d_Y.npy")),
              "BatchNorm2d net (CPU)");
}

TEST_CASE("load_state_dict names missing, unexpected and mis-shaped keys") {
  StateDict sd = read_weights_dir(tbtest::fixture("torch/mlp_weights"),
                                  {"hidden.weight", "hidden.bias", "out.weight", "out.bias"});
  StateDict bad;
  bad.insert("module.hidden.weight", sd.at("hidden.weight"));
  bad.insert("hidden.bias", sd.at("hidden.bias"));
  bad.insert("out.weight", sd.at("out.weight").transpose(0, 1));
  bad.insert("out.bias", sd.at("out.bias"));

  nn::MLP m;
  try {
    m.load_state_dict(bad, true);
    FAIL("strict load accepted a bad state dict");
  } catch (const KeyError& e) {
    std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("error(s) loading state_dict for MLP") != std::string::npos);
    CHECK(msg.find("missing keys (1): 'hidden.weight'") != std::string::npos);
    CHECK(msg.find("unexpected keys (1): 'module.hidden.weight'") != std::string::npos);
    CHECK(msg.find("size mismatch (1): out.weight: checkpoint float32[256, 10] vs model float32[10, 256]") !=
          std::string::npos);
  }
  // Strict failure changed nothing.
  CHECK(m.state_dict().at("hidden.bias").item_as_double(0) == 0.0);

  // Shape mismatches alone are a ShapeError.
  StateDict only_shape = sd;
  only_shape.set("out.bias", Tensor::zeros(DType::F32, {11}));
  CHECK_THROWS_AS(m.load_state_dict(only_shape), ShapeError);

  // Non-strict: the report, matching keys loaded.
  nn::LoadReport rep = m.load_state_dict(bad, false);
  CHECK(rep.missing == std::vector<std::string>{"hidden.weight"});
  CHECK(rep.unexpected == std::vector<std::string>{"module.hidden.weight"});
  REQUIRE(rep.mismatched.size() == 1);
  CHECK(rep.loaded == std::vector<std::string>{"hidden.bias", "out.bias"});
  CHECK(equal(m.state_dict().at("hidden.bias"), sd.at("hidden.bias")));

  // After stripping the wrapper prefix and fixing the layout, strict loading works.
  StateDict fixed = nn::strip_prefixes(bad);
  fixed.set("out.weight", sd.at("out.weight"));
  CHECK(m.load_state_dict(fixed).ok());

  // Dtypes are cast to the module's (float64 checkpoint into float32 parameters).
  StateDict f64;
  for (auto& [k, t] : sd) f64.insert(k, t.to(DType::F64));
  nn::MLP m2;
  m2.load_state_dict(f64);
  CHECK(m2.state_dict().at("out.weight").dtype() == DType::F32);
  CHECK(equal(m2.state_dict().at("out.weight"), sd.at("out.weight")));
}

TEST_CASE("Softmax, Dropout, Flatten and MaxPool2d padding match torch") {
  std::vector<float> xs(2 * 3 * 5 * 5);
  for (size_t i = 0; i < xs.size(); ++i) xs[i] = float(std::sin(double(i) * 0.7) * 3.0);
  Tensor x = Tensor::from_vector(DType::F32, {2, 3, 5, 5}, xs);
  nn::Sequential s;
  s.add(std::make_shared<nn::MaxPool2d>(3, 3, 2, 2, 1, 1))
      .add(std::make_shared<nn::Dropout>(0.3))
      .add(std::make_shared<nn::Flatten>())
      .add(std::make_shared<nn::Softmax>(1));
  Tensor y = s.forward(x);
  REQUIRE(y.shape() == Shape{2, 27});
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import torch, math
x = torch.tensor([math.sin(i * 0.7) * 3.0 for i in range(150)], dtype=torch.float64).float().reshape(2,3,5,5)
m = torch.nn.Sequential(torch.nn.MaxPool2d(3, 2, 1), torch.nn.Dropout(0.3), torch.nn.Flatten(), torch.nn.Softmax(1)).eval()
print(" ".join("%.9g" % v for v in m(x).flatten().tolist()))
)");
  REQUIRE(r.exit_code == 0);
  std::stringstream ss(r.output);
  std::vector<float> want;
  for (double v; ss >> v;) want.push_back(float(v));
  REQUIRE(want.size() == 54);
  check_close(y, Tensor::from_vector(DType::F32, {2, 27}, want), "MaxPool2d(pad)+Flatten+Softmax");
}

TEST_CASE("builtin_model rejects unknown architectures by name") {
  try {
    nn::builtin_model("resnet50");
    FAIL("accepted");
  } catch (const UnsupportedError& e) {
    CHECK(std::string(e.what()).find("unknown built-in architecture 'resnet50'") != std::string::npos);
  }
  CHECK_THROWS_AS(nn::builtin_model("mlp:20,x"), UnsupportedError);
  auto m = nn::builtin_model("mlp:4,3,3,2");
  CHECK(m->state_dict().keys() == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias", "4.weight",
                                                           "4.bias"});
}
