// Keras Functional models that are not one chain (residual Add, Concatenate, Subtract, separable and
// depthwise convolutions, two inputs and two outputs) load with nn::load_model and run with
// `tensorbridge run`, giving what Keras predict gave (fixtures/gen_keras_functional.py).
#include "tests/support.h"

#include "compute/backend.h"
#include "models/arch.h"
#include "models/keras_graph.h"

using namespace tb;
using namespace tbtest;

namespace {

Tensor npy(const std::string& rel) { return load_npy_tensor(fixture("keras_functional/" + rel)); }

void check_close(const Tensor& ours, const Tensor& keras) {
  INFO(ours.describe() << " vs Keras " << keras.describe());
  REQUIRE(ours.shape() == keras.shape());
  CHECK(allclose(ours, keras, 1e-4, 1e-5));
}

}  // namespace

TEST_CASE("Keras functional graphs run as Keras predicts them", "[keras]") {
  struct Case {
    const char* file;
    std::vector<const char*> inputs, outputs;
  };
  for (const Case& c : {Case{"residual.keras", {"residual_X.npy"}, {"residual_Y.npy"}},
                        Case{"branches.keras", {"branches_X.npy"}, {"branches_Y.npy"}},
                        Case{"two_io.h5", {"two_io_x.npy", "two_io_y.npy"}, {"two_io_o1.npy", "two_io_o2.npy"}}}) {
    INFO(c.file);
    nn::FileModel fm = nn::load_model(fixture(std::string("keras_functional/") + c.file));
    CHECK(fm.architecture == "keras model_config graph");
    std::vector<Tensor> in;
    for (const char* f : c.inputs) in.push_back(npy(f));
    std::vector<Tensor> out = nn::run_model(*fm.model, in);
    REQUIRE(out.size() == c.outputs.size());
    for (size_t i = 0; i < out.size(); ++i) check_close(out[i], npy(c.outputs[i]));
  }
}

TEST_CASE("tensorbridge run gives Keras's outputs on every backend", "[keras][cli]") {
  std::vector<std::string> backends = {"cpu"};
  if (compute::vulkan::is_available()) backends.push_back("vulkan");
  TempDir dir;
  for (const auto& be : backends)
    for (const char* name : {"residual", "branches"}) {
      INFO(be << " " << name);
      const fs::path out = dir / (be + name + ".npy");
      auto r = run_cli({"run", fixture(str("keras_functional/", name, ".keras")).string(), "--input",
                        fixture(str("keras_functional/", name, "_X.npy")).string(), "--output", out.string(),
                        "--backend", be});
      INFO(r.output);
      REQUIRE(r.exit_code == 0);
      CHECK(r.output.find("keras model_config graph") != std::string::npos);
      check_close(load_npy_tensor(out), npy(str(name, "_Y.npy")));
    }
}

TEST_CASE("tensorbridge run takes a Keras graph's inputs in order or by name", "[keras][cli]") {
  TempDir dir;
  const std::string model = fixture("keras_functional/two_io.h5").string();
  const std::string x = fixture("keras_functional/two_io_x.npy").string(),
                    y = fixture("keras_functional/two_io_y.npy").string();
  auto r = run_cli({"run", model, "--input", x, "--input", y, "--output", (dir / "a1.npy").string(), "--output",
                    (dir / "a2.npy").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  check_close(load_npy_tensor(dir / "a1.npy"), npy("two_io_o1.npy"));
  check_close(load_npy_tensor(dir / "a2.npy"), npy("two_io_o2.npy"));
  // By the model's input and output names, in any order.
  r = run_cli({"run", model, "--input", "y=" + y, "--input", "x=" + x, "--output", "o2=" + (dir / "b2.npy").string(),
               "--output", "o1=" + (dir / "b1.npy").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  check_close(load_npy_tensor(dir / "b1.npy"), npy("two_io_o1.npy"));
  check_close(load_npy_tensor(dir / "b2.npy"), npy("two_io_o2.npy"));
  // One input short: refused, naming what the graph takes.
  r = run_cli({"run", model, "--input", x, "--output", (dir / "c.npy").string()});
  CHECK(r.exit_code != 0);
  CHECK(!fs::exists(dir / "c.npy"));
}

TEST_CASE("Keras graphs: chains stay Sequential, unknown layers are refused by name", "[keras]") {
  // A residual model is not a chain; a Sequential one and a Functional chain are.
  const std::string residual = R"({"class_name": "Functional", "config": {"name": "m", "layers": [
    {"class_name": "InputLayer", "name": "x", "config": {"name": "x", "batch_input_shape": [null, 4]}, "inbound_nodes": []},
    {"class_name": "Dense", "name": "d", "config": {"name": "d", "units": 4}, "inbound_nodes": [[["x", 0, 0, {}]]]},
    {"class_name": "Add", "name": "s", "config": {"name": "s"}, "inbound_nodes": [[["x", 0, 0, {}], ["d", 0, 0, {}]]]}],
    "input_layers": [["x", 0, 0]], "output_layers": [["s", 0, 0]]}})";
  CHECK_FALSE(nn::keras_config_is_chain(residual));
  const std::string chain = R"({"class_name": "Functional", "config": {"name": "m", "layers": [
    {"class_name": "InputLayer", "name": "x", "config": {"name": "x", "batch_input_shape": [null, 4]}, "inbound_nodes": []},
    {"class_name": "Dense", "name": "d", "config": {"name": "d", "units": 4}, "inbound_nodes": [[["x", 0, 0, {}]]]}],
    "input_layers": [["x", 0, 0]], "output_layers": [["d", 0, 0]]}})";
  CHECK(nn::keras_config_is_chain(chain));
  CHECK(nn::keras_config_is_chain(R"({"class_name": "Sequential", "config": {"layers": []}})"));

  StateDict sd;
  sd.insert("d/d/kernel:0", Tensor::zeros(DType::F32, {4, 4}));
  sd.insert("d/d/bias:0", Tensor::zeros(DType::F32, {4}));
  auto g = nn::keras_graph_module(residual, sd, {}, "m.h5");
  std::vector<Tensor> y = nn::run_model(*g, {Tensor::from_vector<float>(DType::F32, {1, 4}, {1, 2, 3, 4})});
  CHECK(y.at(0).to_vector<float>() == std::vector<float>{1, 2, 3, 4});  // x + Dense of zeros

  std::string padded = residual;
  padded.replace(padded.find("\"Add\""), 5, "\"ZeroPadding2D\"");
  CHECK_THROWS_WITH(nn::keras_graph_module(padded, sd, {}, "m.h5"),
                    Catch::Matchers::Contains("layer 's' of type 'ZeroPadding2D' is not supported in a Keras graph"));
  // A weight count that does not fit the layer is named too.
  StateDict short_sd;
  short_sd.insert("d/d/kernel:0", Tensor::zeros(DType::F32, {4, 4}));
  CHECK_THROWS_WITH(nn::keras_graph_module(residual, short_sd, {}, "m.h5"),
                    Catch::Matchers::Contains("layer 'd' (Dense) has 1 weights in the file, expected 2"));
}
