#include "cli/nn_commands.h"

#include <iostream>
#include <memory>
#include <string>

#include "formats/registry.h"
#include "nn/module.h"
#include "nn/select.h"
#include "nn/style.h"

namespace tb::cli {
namespace {

struct RunArgs {
  std::string model, input, output, arch, backend = "cpu", key, style = "torch";
  bool strip = false, overwrite = false;
};

void run_model(const RunArgs& a) {
  TB_CHECK(!a.arch.empty(), UnsupportedError, "run: '", a.model,
           "' holds only weights here; give --arch (mlp:20,256,10 or seed-cnn). Building the architecture from "
           "the file (ONNX graph, Keras model_config, whole-module pickle) is not implemented yet");
  TB_CHECK(a.backend == "cpu", UnsupportedError, "run: backend '", a.backend,
           "' is not available to nn yet; use --backend cpu");
  nn::Module::Ptr model = nn::builtin_model(a.arch);
  StateDict sd = load(a.model).state_dict(a.key);
  if (a.style == "keras") {
    nn::StyleOptions opts;
    opts.names = nn::weighted_layer_prefixes(*model);
    sd = nn::convert_style(sd, "torch", opts);
  }
  if (a.strip) sd = nn::strip_prefixes(sd);
  model->load_state_dict(sd, true);
  nn::apply_style_metadata(*model, sd.metadata);
  StateDict in = load(a.input).state_dict();
  TB_CHECK(in.size() == 1, ShapeError, "run: input '", a.input, "' must hold one array, found ", in.size());
  Tensor y = model->forward(in.entries().front().second);
  StateDict out;
  out.insert("Y", y);
  SaveOptions so;
  so.overwrite = a.overwrite;
  save(Checkpoint::from_state_dict(out), a.output, {}, so);
  std::cout << "run: " << model->type_name() << " on " << in.entries().front().second.describe() << " -> "
            << y.describe() << " written to " << a.output << "\n";
}

}  // namespace

void register_nn_commands(CLI::App& app) {
  auto args = std::make_shared<RunArgs>();
  auto* run = app.add_subcommand("run", "Load weights into a model and run it on an input array (CPU)");
  run->add_option("model", args->model, "Weight file (any supported format)")->required();
  run->add_option("--input,-i", args->input, "Input array (.npy)")->required();
  run->add_option("--output,-o", args->output, "Output array (.npy)")->required();
  run->add_option("--arch", args->arch, "Built-in architecture: mlp:IN,HIDDEN,...,OUT or seed-cnn");
  run->add_option("--backend", args->backend, "cpu (vulkan once the compute backends land)");
  run->add_option("--key", args->key, "Dotted path of the state dict inside the file (model_state_dict)");
  run->add_option("--style", args->style, "Weight layout in the file: torch (default) or keras");
  run->add_flag("--strip-prefix", args->strip, "Strip 'module.' and '_orig_mod.' prefixes");
  run->add_flag("--overwrite", args->overwrite, "Replace an existing output file");
  run->callback([args] { run_model(*args); });
}

}  // namespace tb::cli
