// nn models as full ONNX graphs: exported graphs run in onnxruntime and give PyTorch's outputs;
// graphs exported by torch.onnx.export and by us are rebuilt as nn models and run in C++.
#include "tests/support.h"

#include "models/arch.h"
#include "models/onnx_graph.h"

using namespace tb;

namespace {
nn::Module::Ptr seed_model(const std::string& arch, const std::string& weights) {
  return nn::load_model(tbtest::fixture(weights), arch).model;
}

void check_in_onnxruntime(const std::filesystem::path& model, const std::string& io) {
  auto c = tbtest::python(tbtest::Peer::Torch, R"(
import sys, onnx
onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)
print('checker ok')
)",
                          {model.string()});
  INFO(c.output);
  CHECK(c.exit_code == 0);
  auto r = tbtest::python(tbtest::Peer::Peers, R"(
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])
x = np.load(sys.argv[2]); y = np.load(sys.argv[3])
out = s.run(None, {s.get_inputs()[0].name: x})[0]
print('maxdiff', float(np.abs(out - y).max()))
assert np.allclose(out, y, rtol=1e-5, atol=1e-6), 'outputs differ'
)",
                          {model.string(), tbtest::fixture("torch/" + io + "_X.npy").string(),
                           tbtest::fixture("torch/" + io + "_Y.npy").string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
}
}  // namespace

TEST_CASE("the seed MLP and CNN export as ONNX graphs that onnxruntime runs to PyTorch's outputs", "[nn_onnx]") {
  if (!nn::onnx_graph_support()) tbtest::skip("built without ONNX");
  tbtest::TempDir dir;
  nn::save_onnx_model(*seed_model("mlp:20,256,10", "torch/mlp.params"), {-1, 20}, dir / "mlp.onnx");
  check_in_onnxruntime(dir / "mlp.onnx", "mlp");
  nn::save_onnx_model(*seed_model("seed-cnn", "torch/cnn.pt"), {-1, 3, 32, 32}, dir / "cnn.onnx");
  check_in_onnxruntime(dir / "cnn.onnx", "cnn");
  // Our graph comes back as an nn model with the same outputs.
  for (const char* io : {"mlp", "cnn"}) {
    INFO(io);
    nn::FileModel fm = nn::load_model(dir / (std::string(io) + ".onnx"));
    CHECK(fm.architecture == "onnx graph");
    Tensor x = tbtest::load_npy_tensor(tbtest::fixture(std::string("torch/") + io + "_X.npy"));
    Tensor y = tbtest::load_npy_tensor(tbtest::fixture(std::string("torch/") + io + "_Y.npy"));
    CHECK(allclose((*fm.model)(x), y, 1e-5, 1e-6));
  }
}

TEST_CASE("a graph written by torch.onnx.export runs as an nn model", "[nn_onnx]") {
  if (!nn::onnx_graph_support()) tbtest::skip("built without ONNX");
  nn::FileModel fm = nn::load_model(tbtest::fixture("onnx/mlp.onnx"));
  Tensor x = tbtest::load_npy_tensor(tbtest::fixture("torch/mlp_X.npy"));
  Tensor y = tbtest::load_npy_tensor(tbtest::fixture("torch/mlp_Y.npy"));
  Tensor y2 = (*fm.model)(x);
  INFO("max abs diff " << max_abs_diff(y2, y));
  CHECK(allclose(y2, y, 1e-5, 1e-6));
}

TEST_CASE("export names the module ONNX cannot take", "[nn_onnx]") {
  if (!nn::onnx_graph_support()) tbtest::skip("built without ONNX");
  tbtest::TempDir dir;
  nn::Sequential seq;
  seq.add(std::make_shared<nn::Linear>(4, 3));
  seq.add(std::make_shared<nn::AvgPool2d>(2));
  try {
    nn::save_onnx_model(seq, {-1, 4}, dir / "x.onnx");
    FAIL("expected UnsupportedError");
  } catch (const UnsupportedError& e) {
    CHECK(std::string(e.what()).find("AvgPool2d") != std::string::npos);
    CHECK(std::string(e.what()).find("'1'") != std::string::npos);
  }
  CHECK_FALSE(std::filesystem::exists(dir / "x.onnx"));
}

TEST_CASE("tensorbridge export writes a graph that tensorbridge run executes", "[nn_onnx]") {
  if (!nn::onnx_graph_support()) tbtest::skip("built without ONNX");
  tbtest::TempDir dir;
  auto onnx = (dir / "cnn.onnx").string();
  auto r = tbtest::run_cli(
      {"export", tbtest::fixture("torch/cnn.pt").string(), onnx, "--arch", "seed-cnn", "--input-shape", "-1,3,32,32"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto y = (dir / "y.npy").string();
  r = tbtest::run_cli({"run", onnx, "--input", tbtest::fixture("torch/cnn_X.npy").string(), "--output", y});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("onnx graph") != std::string::npos);
  r = tbtest::run_cli({"diff", y, tbtest::fixture("torch/cnn_Y.npy").string(), "--rtol", "1e-5", "--atol", "1e-6"});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  r = tbtest::run_cli(
      {"export", tbtest::fixture("torch/cnn.pt").string(), onnx, "--arch", "seed-cnn", "--input-shape", "x"});
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("--input-shape") != std::string::npos);
}

TEST_CASE("activations, softmax and global pooling export to ONNX and run in onnxruntime like nn", "[nn_onnx]") {
  if (!nn::onnx_graph_support()) tbtest::skip("built without ONNX");
  tbtest::TempDir dir;
  auto seq = std::make_shared<nn::Sequential>();
  seq->add(std::make_shared<nn::Conv2d>(1, 4, 3));
  seq->add(std::make_shared<nn::LeakyReLU>(0.2));
  seq->add(std::make_shared<nn::GlobalAvgPool2d>());
  seq->add(std::make_shared<nn::Flatten>());
  seq->add(std::make_shared<nn::Linear>(4, 5));
  seq->add(std::make_shared<nn::Tanh>());
  seq->add(std::make_shared<nn::Linear>(5, 3));
  seq->add(std::make_shared<nn::Sigmoid>());
  seq->add(std::make_shared<nn::Softmax>(1));
  StateDict sd = seq->state_dict();
  StateDict random;
  uint32_t state = 12345;
  for (const auto& [name, t] : sd) {
    std::vector<float> v(size_t(t.numel()));
    for (float& f : v) f = float((state = state * 1664525u + 1013904223u) >> 8) / float(1 << 24) - 0.5f;
    random.insert(name, Tensor::from_vector(DType::F32, t.shape(), v));
  }
  seq->load_state_dict(random);
  std::vector<float> xs(2 * 1 * 6 * 7);
  for (float& f : xs) f = float((state = state * 1664525u + 1013904223u) >> 8) / float(1 << 24) * 4.0f - 2.0f;
  Tensor x = Tensor::from_vector(DType::F32, {2, 1, 6, 7}, xs);
  Tensor y = (*seq)(x);
  StateDict io;
  io.insert("x", x);
  save(Checkpoint::from_state_dict(io), dir / "x.npy");
  StateDict yo;
  yo.insert("y", y);
  save(Checkpoint::from_state_dict(yo), dir / "y.npy");
  nn::save_onnx_model(*seq, {-1, 1, 6, 7}, dir / "m.onnx");
  auto r = tbtest::python(tbtest::Peer::Peers, R"(
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])
out = s.run(None, {s.get_inputs()[0].name: np.load(sys.argv[2])})[0]
y = np.load(sys.argv[3])
print('maxdiff', float(np.abs(out - y).max()))
assert np.allclose(out, y, rtol=1e-5, atol=1e-6), 'outputs differ'
)",
                          {(dir / "m.onnx").string(), (dir / "x.npy").string(), (dir / "y.npy").string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  auto ops = tbtest::python(tbtest::Peer::Torch, R"(
import sys, onnx
m = onnx.load(sys.argv[1])
onnx.checker.check_model(m, full_check=True)
print(sorted({n.op_type for n in m.graph.node}))
)",
                            {(dir / "m.onnx").string()});
  INFO(ops.output);
  CHECK_THAT(ops.output,
             Catch::Matchers::Contains(
                 "['Conv', 'Flatten', 'Gemm', 'GlobalAveragePool', 'LeakyRelu', 'Sigmoid', 'Softmax', 'Tanh']"));
  // And back: our import of our export runs to the same numbers.
  nn::FileModel back = nn::load_model(dir / "m.onnx");
  Tensor y2 = (*back.model)(x);
  CHECK(y2.to_vector<float>() == y.to_vector<float>());
}
