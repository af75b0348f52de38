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
    tbtest::skip(
        "this tensorbridge binary does not register 'run' yet (cli/commands.cpp must call "
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

TEST_CASE("run --arch mlp:20,256,10 and seed-cnn on torch weights (.pt and converted .npz)", "[needs_hdf5]") {
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

TEST_CASE("run with the architecture from the file (whole-module .pt, Keras full-model .h5)", "[needs_hdf5]") {
  require_run_command();
  tbtest::TempDir dir;
  // A user class (__main__.MLP): its forward is not in the file, so run asks for --arch and writes nothing.
  auto r =
      tbtest::run_cli({"run", tbtest::fixture("torch/whole_module_mlp.pt").string(), "--allow-unknown-globals",
                       "--input", tbtest::fixture("torch/mlp_X.npy").string(), "--output", (dir / "a.npy").string()});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("holds a whole module of the user class __main__.MLP") != std::string::npos);
  CHECK(!fs::exists(dir / "a.npy"));
  r = tbtest::run_cli({"run", tbtest::fixture("torch/whole_module_mlp.pt").string(), "--allow-unknown-globals",
                       "--arch", "mlp:20,256,10", "--input", tbtest::fixture("torch/mlp_X.npy").string(), "--output",
                       (dir / "a.npy").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  check_output(dir / "a.npy", tbtest::fixture("torch/mlp_Y.npy"), "run whole_module_mlp.pt --arch mlp:20,256,10");

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
  auto r =
      tbtest::run_cli({"run", tbtest::fixture("torch/cnn.pt").string(), "--arch", "seed-cnn", "--backend", "vulkan",
                       "--input", tbtest::fixture("torch/cnn_X.npy").string(), "--output", (dir / "y.npy").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("vulkan") != std::string::npos);
  check_output(dir / "y.npy", tbtest::fixture("torch/cnn_Y.npy"), "run seed-cnn on Vulkan", 1e-4, 1e-5);
}

TEST_CASE("run --arch loads by structure: the chapter MLP, its renamed and converted copies, the mapping printed",
          "[needs_hdf5][needs_onnx]") {
  require_run_command();
  tbtest::TempDir dir;
  const std::string X = tbtest::fixture("arch/mlp_X.npy").string();
  const fs::path Y = tbtest::fixture("arch/mlp_Y.npy");
  const std::string params = tbtest::fixture("arch/chapter_mlp.params").string();
  auto r =
      tbtest::run_cli({"run", params, "--arch", "mlp:20,256,10", "--input", X, "--output", (dir / "y.npy").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("loaded by structure (file order):") != std::string::npos);
  CHECK(r.output.find("  output.{weight,bias} -> out.{weight,bias} (Linear)") != std::string::npos);
  check_output(dir / "y.npy", Y, "chapter MLP --arch mlp:20,256,10");

  r = tbtest::run_cli({"run", params, "--arch", "linear:20,256 relu linear:256,10", "--input", X, "--output",
                       (dir / "seq.npy").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("  hidden.{weight,bias} -> 0.{weight,bias} (Linear)") != std::string::npos);
  check_output(dir / "seq.npy", Y, "chapter MLP --arch linear:20,256 relu linear:256,10");

  // Renamed layers (Sequential 0/2, fc1/fc2, layers.N, net.*) and copies converted to other formats.
  std::vector<std::string> files;
  for (const char* f : {"seq_mlp.pt", "fc_mlp.pt", "layers_mlp.pt", "net_mlp.pt"})
    files.push_back(tbtest::fixture(std::string("arch/") + f).string());
  for (const char* ext : {"safetensors", "npz", "h5", "oneflow"}) {
    fs::path to = dir / (std::string("copy.") + ext);
    auto c = tbtest::run_cli({"convert", params, to.string(), "--to", std::string(ext) == "h5" ? "keras-h5" : ext});
    INFO(c.output);
    REQUIRE(c.exit_code == 0);
    files.push_back(to.string());
  }
  // A whole module converted to a OneFlow folder keeps its state dict (the module tree is not state).
  auto c = tbtest::run_cli(
      {"convert", tbtest::fixture("arch/seq_mlp_whole.pt").string(), (dir / "whole_of").string(), "--to", "oneflow"});
  INFO(c.output);
  REQUIRE(c.exit_code == 0);
  files.push_back((dir / "whole_of").string());
  for (size_t i = 0; i < files.size(); ++i) {
    fs::path out = dir / ("v" + std::to_string(i) + ".npy");
    r = tbtest::run_cli({"run", files[i], "--arch", "mlp:20,256,10", "--input", X, "--output", out.string()});
    INFO(files[i] << "\n" << r.output);
    REQUIRE(r.exit_code == 0);
    check_output(out, Y, "run " + fs::path(files[i]).filename().string());
  }

  // export goes the same way.
  r = tbtest::run_cli(
      {"export", params, (dir / "mlp.onnx").string(), "--arch", "mlp:20,256,10", "--input-shape", "-1,20"});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(fs::exists(dir / "mlp.onnx"));
}

TEST_CASE("run --arch refuses partial and ambiguous fits, and --strict-names keeps loading by names") {
  require_run_command();
  tbtest::TempDir dir;
  const std::string X = tbtest::fixture("arch/mlp_X.npy").string();
  auto r = tbtest::run_cli({"run", tbtest::fixture("arch/mlp3.pt").string(), "--arch", "mlp:20,256,10", "--input", X,
                            "--output", (dir / "y.npy").string()});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("the state dict has 3 layers with tensors, the architecture 2") != std::string::npos);
  CHECK(r.output.find("no layer of the architecture fits the state dict's 0: weight [32, 20], bias [32]") !=
        std::string::npos);
  CHECK(!fs::exists(dir / "y.npy"));

  r = tbtest::run_cli({"run", tbtest::fixture("arch/chapter_mlp.params").string(), "--arch", "mlp:20,256,10",
                       "--strict-names", "--input", X, "--output", (dir / "y.npy").string()});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("missing keys (2): 'out.weight', 'out.bias'") != std::string::npos);
  CHECK(r.output.find("unexpected keys (2): 'output.weight', 'output.bias'") != std::string::npos);

  // Two layers of one shape after one that must come last: two orders fit, both listed.
  StateDict sd;
  auto lin = [&](const std::string& n, int64_t out, int64_t in) {
    sd.insert(n + ".weight", Tensor::zeros(DType::F32, {out, in}));
    sd.insert(n + ".bias", Tensor::zeros(DType::F32, {out}));
  };
  lin("a", 8, 4), lin("c", 4, 4), lin("b", 4, 4);
  save(Checkpoint::from_state_dict(sd), dir / "amb.pt");
  r = tbtest::run_cli({"run", (dir / "amb.pt").string(), "--arch", "linear:4,4 relu linear:4,4 relu linear:4,8",
                       "--input", X, "--output", (dir / "y.npy").string()});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("(1) c -> 0, b -> 2, a -> 4") != std::string::npos);
  CHECK(r.output.find("(2) b -> 0, c -> 2, a -> 4") != std::string::npos);
}

TEST_CASE("run whole modules: user classes with --arch, Sequential and OneFlow modules by themselves") {
  require_run_command();
  tbtest::TempDir dir;
  const std::string X = tbtest::fixture("arch/mlp_X.npy").string();
  const fs::path Y = tbtest::fixture("arch/mlp_Y.npy");
  for (std::string f : {"chapter_mlp_whole.pt", "oneflow_mlp_whole"}) {
    const std::string file = tbtest::fixture("arch/" + f).string();
    // Without the flag the user class is refused, and the refusal names the flag.
    auto r =
        tbtest::run_cli({"run", file, "--arch", "mlp:20,256,10", "--input", X, "--output", (dir / "y.npy").string()});
    INFO(r.output);
    CHECK(r.exit_code == 1);
    CHECK(r.output.find("__main__.MLP") != std::string::npos);
    CHECK(r.output.find("loads with --allow-unknown-globals") != std::string::npos);
    r = tbtest::run_cli({"run", file, "--allow-unknown-globals", "--input", X, "--output", (dir / "y.npy").string()});
    INFO(r.output);
    CHECK(r.exit_code == 1);
    CHECK(r.output.find("holds a whole module of the user class __main__.MLP") != std::string::npos);
    CHECK(r.output.find("--arch \"linear:20,256 relu linear:256,10\"") != std::string::npos);
    CHECK(!fs::exists(dir / "y.npy"));
    r = tbtest::run_cli({"run", file, "--allow-unknown-globals", "--arch", "linear:20,256 relu linear:256,10",
                         "--input", X, "--output", (dir / (f + ".npy")).string()});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    check_output(dir / (f + ".npy"), Y, "run " + f + " --arch");
  }
  auto r = tbtest::run_cli(
      {"run", tbtest::fixture("arch/seq_mlp_whole.pt").string(), "--input", X, "--output", (dir / "seq.npy").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  check_output(dir / "seq.npy", Y, "run seq_mlp_whole.pt");
  r = tbtest::run_cli(
      {"run", tbtest::fixture("arch/oneflow_seq_whole").string(), "--input", X, "--output", (dir / "of.npy").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("oneflow module tree") != std::string::npos);
  check_output(dir / "of.npy", Y, "run oneflow_seq_whole");
  r = tbtest::run_cli({"run", tbtest::fixture("shared/oneflow/flow_save_dir_full_module/3x3_i3o3_conv2d").string(),
                       "--input", tbtest::fixture("arch/oneflow_conv_X.npy").string(), "--output",
                       (dir / "conv.npy").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  check_output(dir / "conv.npy", tbtest::fixture("arch/oneflow_conv_Y.npy"), "run OneFlow's Conv2d whole module");
}

TEST_CASE("run --arch by structure on Vulkan (lavapipe tolerance 1e-4 relative)") {
  require_run_command();
  if (!compute::vulkan::is_available()) tbtest::skip("no Vulkan compute device (build or driver)");
  tbtest::TempDir dir;
  auto r =
      tbtest::run_cli({"run", tbtest::fixture("arch/cnn_bn.pt").string(), "--arch",
                       "conv2d:3,8,3,1,1 batchnorm:8 relu maxpool:2 flatten linear:128,10", "--backend", "vulkan",
                       "--input", tbtest::fixture("arch/cnn_X.npy").string(), "--output", (dir / "y.npy").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  check_output(dir / "y.npy", tbtest::fixture("arch/cnn_Y.npy"), "cnn_bn.pt by structure on Vulkan", 1e-4, 1e-5);
  r = tbtest::run_cli({"run", tbtest::fixture("arch/chapter_mlp.params").string(), "--arch", "mlp:20,256,10",
                       "--backend", "vulkan", "--input", tbtest::fixture("arch/mlp_X.npy").string(), "--output",
                       (dir / "m.npy").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  check_output(dir / "m.npy", tbtest::fixture("arch/mlp_Y.npy"), "chapter MLP by structure on Vulkan", 1e-4, 1e-5);
}

TEST_CASE("convert: --select and --rename apply to the output's names, after --style", "[needs_hdf5]") {
  tbtest::TempDir dir;
  // Keras names in, torch names out: the torch names are selected and renamed.
  auto r = tbtest::run_cli({"convert", tbtest::fixture("keras/mlp_keras2.h5").string(), (dir / "t.pt").string(),
                            "--style", "torch", "--select", "hidden.*", "--rename", "hidden\\.(.*)=encoder.\\1"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(load(dir / "t.pt").state_dict().keys() == std::vector<std::string>{"encoder.weight", "encoder.bias"});
  // torch names in, Keras names out (style chosen by the target).
  r = tbtest::run_cli({"convert", tbtest::fixture("arch/chapter_mlp.params").string(), (dir / "k.h5").string(), "--to",
                       "keras-h5", "--select", "output/*"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(load(dir / "k.h5").state_dict().keys() ==
        std::vector<std::string>{"output/output/kernel:0", "output/output/bias:0"});
}
