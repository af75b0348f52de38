// ONNX graphs that are not a chain of layers (fixtures/gen_onnx_graphs.py: torch.onnx.export of a
// two-input two-output module, a residual CNN, Linear + Softmax) run through `tensorbridge run` and
// the library on the CPU and Vulkan backends and give PyTorch's outputs.
#include "tests/support.h"

#include "compute/backend.h"
#include "models/arch.h"
#include "models/onnx_graph.h"
#include "models/onnx_runner.h"

using namespace tb;
namespace fs = std::filesystem;

namespace {

std::string graph(const std::string& name) { return tbtest::fixture("onnx_graphs/" + name).string(); }

std::vector<std::string> backends() {
  std::vector<std::string> b = {"cpu"};
  if (compute::vulkan::is_available()) b.push_back("vulkan");
  return b;
}

void require_same(const std::string& got, const std::string& want) {
  auto r = tbtest::run_cli({"diff", got, want, "--rtol", "1e-5", "--atol", "1e-6"});
  INFO(r.output);
  CHECK(r.exit_code == 0);
}

}  // namespace

TEST_CASE("a two-input two-output graph runs with inputs in order or by name, .npy or .pb", "[nn_graph]") {
  if (!nn::onnx_graph_support()) tbtest::skip("built without ONNX");
  tbtest::TempDir dir;
  const std::string a = graph("two_in_two_out_in0.npy"), b = graph("two_in_two_out_in1.npy");
  const std::string b_pb = (dir / "b.pb").string();
  auto c = tbtest::run_cli({"convert", b, b_pb});
  INFO(c.output);
  REQUIRE(c.exit_code == 0);
  for (const auto& be : backends()) {
    INFO(be);
    const std::string y1 = (dir / (be + "_y1.npy")).string(), y2 = (dir / (be + "_y2.npy")).string();
    auto r = tbtest::run_cli({"run", graph("two_in_two_out.onnx"), "--input", a, "--input", b, "--output", y1,
                              "--output", y2, "--backend", be});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK(r.output.find("OnnxGraph") != std::string::npos);
    require_same(y1, graph("two_in_two_out_out0.npy"));
    require_same(y2, graph("two_in_two_out_out1.npy"));
    // By name, in another order, one input as an ONNX TensorProto; outputs by name too.
    r = tbtest::run_cli({"run", graph("two_in_two_out.onnx"), "--input", "b=" + b_pb, "--input", "a=" + a, "--output",
                         "y2=" + y2, "--output", "y1=" + y1, "--backend", be, "--force"});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    require_same(y1, graph("two_in_two_out_out0.npy"));
    require_same(y2, graph("two_in_two_out_out1.npy"));
  }
}

TEST_CASE("run names the graph values it is missing or does not know", "[nn_graph]") {
  if (!nn::onnx_graph_support()) tbtest::skip("built without ONNX");
  tbtest::TempDir dir;
  const std::string y = (dir / "y.npy").string();
  auto r = tbtest::run_cli({"run", graph("two_in_two_out.onnx"), "--input", "a=" + graph("two_in_two_out_in0.npy"),
                            "--output", y, "--output", (dir / "y2.npy").string()});
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("no --input for 'b'") != std::string::npos);
  CHECK(r.output.find("'a', 'b'") != std::string::npos);
  r = tbtest::run_cli({"run", graph("two_in_two_out.onnx"), "--input", graph("two_in_two_out_in0.npy"), "--input",
                       graph("two_in_two_out_in1.npy"), "--output", y});
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("no --output for 'y2'") != std::string::npos);
  CHECK_FALSE(fs::exists(y));
  // Inputs swapped: the shapes do not fit the graph's declared inputs.
  r = tbtest::run_cli({"run", graph("two_in_two_out.onnx"), "--input", graph("two_in_two_out_in1.npy"), "--input",
                       graph("two_in_two_out_in0.npy"), "--output", y, "--output", (dir / "y2.npy").string()});
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("input 'a' must have shape [-1, 20]") != std::string::npos);
}

TEST_CASE("a residual CNN and Linear + Softmax exported by torch run like PyTorch", "[nn_graph]") {
  if (!nn::onnx_graph_support()) tbtest::skip("built without ONNX");
  tbtest::TempDir dir;
  for (const std::string name : {"residual_cnn", "sequential_softmax"})
    for (const auto& be : backends()) {
      INFO(name << " on " << be);
      const std::string y = (dir / (name + be + ".npy")).string();
      auto r =
          tbtest::run_cli({"run", graph(name + ".onnx"), "-i", graph(name + "_in0.npy"), "-o", y, "--backend", be});
      INFO(r.output);
      REQUIRE(r.exit_code == 0);
      require_same(y, graph(name + "_out0.npy"));
    }
}

TEST_CASE("the library runs a graph of several inputs in one call", "[nn_graph]") {
  if (!nn::onnx_graph_support()) tbtest::skip("built without ONNX");
  nn::FileModel fm = nn::load_model(graph("two_in_two_out.onnx"));
  auto* g = dynamic_cast<nn::OnnxGraphModule*>(fm.model.get());
  REQUIRE(g != nullptr);
  REQUIRE(g->inputs().size() == 2);
  CHECK(g->inputs()[1].name == "b");
  std::vector<Tensor> ys = nn::run_model(*fm.model, {tbtest::load_npy_tensor(graph("two_in_two_out_in0.npy")),
                                                     tbtest::load_npy_tensor(graph("two_in_two_out_in1.npy"))});
  REQUIRE(ys.size() == 2);
  Tensor want = tbtest::load_npy_tensor(graph("two_in_two_out_out0.npy"));
  REQUIRE(ys[0].shape() == want.shape());
  CHECK(allclose(ys[0], want, 1e-5, 1e-6));
  // The Module interface is for one input and one output, and says so.
  std::string err = tbtest::error_of<tb::Error>([&] { (*fm.model)(ys[0]); });
  CHECK(err.find("one --input per input") != std::string::npos);
}

TEST_CASE("a graph with an op the runner does not have is refused before running, naming node and op", "[nn_graph]") {
  if (!nn::onnx_graph_support()) tbtest::skip("built without ONNX");
  const fs::path model = "/usr/share/libonnx-testdata/data/node/test_erf/model.onnx";
  if (!fs::exists(model)) tbtest::skip("libonnx-testdata is not installed");
  tbtest::TempDir dir;
  auto r = tbtest::run_cli(
      {"run", model.string(), "-i", graph("sequential_softmax_in0.npy"), "-o", (dir / "y.npy").string()});
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("node #0 (Erf) cannot run: the op is not supported; supported ops: Abs, Add, AveragePool") !=
        std::string::npos);
  CHECK_FALSE(fs::exists(dir / "y.npy"));
}
