// `tensorbridge run`: the built binary loads a model (built-in --arch with weights, or the architecture
// from the file), runs it on an .npy input and writes an .npy output equal to torch's / Keras's.
#include "tests/support.h"

#include "compute/backend.h"

using namespace tb;
namespace fs = std::filesystem;

namespace {

void require_run_command() {
  auto r = tbtest::run_cli({"run", "--help"});
  if (r.output.find("--arch") == std::string::npos)
    tbtest::skip("this tensorbridge binary does not register 'run' yet (cli/commands.cpp must call "
                 "register_nn_commands)");
  REQUIRE(r.exit_code == 0);
}

void check_output(const fs::path& out, const fs::path& want, const std::string& what, double rtol = 1e-5,
                  double atol = 1e-6) {
  Tensor y = tbtest::load_npy_tensor(out), w = tbtest::load_npy_tensor(want);
  REQUIRE(y.shape() == w.shape());
  std::printf("%s: max abs difference %.3g\n", what.c_str(), max_abs_diff(y, w));
  CHECK(allclose(y, w, rtol, atol));
}

}  // namespace

TEST_CASE("run --arch mlp:20,256,10 and seed-cnn on torch weights (.pt and converted .npz)") {
  require_run_command();
  tbtest::TempDir dir;
  auto r = tbtest::run_cli({"run", tbtest::fixture("torch/mlp.params").string(), "--arch", "mlp:20,256,10", "--input",
                            tbtest::fixture("torch/mlp_X.npy").string(), "--output", (dir / "y.npy").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  check_output(dir / "y.npy", tbtest::fixture("torch/mlp_Y.npy"), "run mlp");

  // Refuses to overwrite without --overwrite; leaves the file as it was.
  r = tbtest::run_cli({"run", tbtest::fixture("torch/mlp.params").string(), "--arch", "mlp:20,256,10", "--input",
                       tbtest::fixture("torch/mlp_X.npy").string(), "--output", (dir / "y.npy").string()});
  CHECK(r.exit_code != 0);

  save(load(tbtest::fixture("torch/cnn.pt")), dir / "cnn.npz");
  r = tbtest::run_cli({"run", (dir / "cnn.npz").string(), "--arch", "seed-cnn", "--input",
                       tbtest::fixture("torch/cnn_X.npy").string(), "--output", (dir / "cnn_y.npy").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  check_output(dir / "cnn_y.npy", tbtest::fixture("torch/cnn_Y.npy"), "run seed-cnn");

  // Keras-style weights (tf-keras save_weights of the same MLP) with a built-in architecture.
  r = tbtest::run_cli({"run", tbtest::fixture("keras/mlp_keras2.h5").string(), "--arch", "mlp:20,256,10", "--input",
                       tbtest::fixture("keras/mlp_X.npy").string(), "--output", (dir / "k.npy").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  check_output(dir / "k.npy", tbtest::fixture("keras/mlp_keras2_Y.npy"), "run keras weights");
}

TEST_CASE("run with the architecture from the file (whole-module .pt, Keras full-model .h5)") {
  require_run_command();
  tbtest::TempDir dir;
  auto r = tbtest::run_cli({"run", tbtest::fixture("torch/whole_module_mlp.pt").string(), "--allow-unknown-globals", "--input",
                            tbtest::fixture("torch/mlp_X.npy").string(), "--output", (dir / "a.npy").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("pt module tree") != std::string::npos);
  check_output(dir / "a.npy", tbtest::fixture("torch/mlp_Y.npy"), "run whole_module_mlp.pt");

  r = tbtest::run_cli({"run", tbtest::fixture("keras/mlp_keras2_full.h5").string(), "--input",
                       tbtest::fixture("keras/mlp_X.npy").string(), "--output", (dir / "b.npy").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  check_output(dir / "b.npy", tbtest::fixture("keras/mlp_keras2_Y.npy"), "run mlp_keras2_full.h5");
}

TEST_CASE("run errors name the problem") {
  require_run_command();
  tbtest::TempDir dir;
  auto r = tbtest::run_cli({"run", tbtest::fixture("torch/mlp.params").string(), "--input",
                            tbtest::fixture("torch/mlp_X.npy").string(), "--output", (dir / "y.npy").string()});
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("holds only weights") != std::string::npos);
  CHECK(!fs::exists(dir / "y.npy"));
  r = tbtest::run_cli({"run", tbtest::fixture("torch/mlp.params").string(), "--arch", "resnet50", "--input",
                       tbtest::fixture("torch/mlp_X.npy").string(), "--output", (dir / "y.npy").string()});
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("unknown built-in architecture 'resnet50'") != std::string::npos);
  r = tbtest::run_cli({"run", tbtest::fixture("torch/mlp.params").string(), "--arch", "mlp:20,256,10", "--backend",
                       "tpu", "--input", tbtest::fixture("torch/mlp_X.npy").string(), "--output",
                       (dir / "y.npy").string()});
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("tpu") != std::string::npos);
}

TEST_CASE("run --backend vulkan (lavapipe tolerance 1e-4 relative)") {
  require_run_command();
  if (!compute::vulkan::is_available()) tbtest::skip("no Vulkan compute device (build or driver)");
  tbtest::TempDir dir;
  auto r = tbtest::run_cli({"run", tbtest::fixture("torch/cnn.pt").string(), "--arch", "seed-cnn", "--backend",
                            "vulkan", "--input", tbtest::fixture("torch/cnn_X.npy").string(), "--output",
                            (dir / "y.npy").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("vulkan") != std::string::npos);
  check_output(dir / "y.npy", tbtest::fixture("torch/cnn_Y.npy"), "run seed-cnn on Vulkan", 1e-4, 1e-5);
}
