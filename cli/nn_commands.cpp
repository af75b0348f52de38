#include "cli/nn_commands.h"

#include <iostream>
#include <memory>
#include <string>

#include "formats/registry.h"
#include "compute/backend.h"
#include "nn/arch.h"
#include "nn/module.h"

namespace tb::cli {
namespace {

struct RunArgs {
  std::string model, input, output, arch, backend = "cpu", key;
  bool strip = false, overwrite = false, allow_unknown = false;
};

void run_model(const RunArgs& a) {
  LoadOptions lo;
  lo.allow_unknown_globals = a.allow_unknown;
  nn::FileModel fm = a.arch.empty() ? nn::load_model(a.model, lo) : nn::load_model(a.model, a.arch, a.key, a.strip);
  std::shared_ptr<compute::Backend> be = compute::make_backend(a.backend);
  fm.model->to(be);
  StateDict in = load(a.input).state_dict();
  TB_CHECK(in.size() == 1, ShapeError, "run: input '", a.input, "' must hold one array, found ", in.size());
  const Tensor& x = in.entries().front().second;
  Tensor y = (*fm.model)(x);
  StateDict out;
  out.insert("Y", y);
  SaveOptions so;
  so.overwrite = a.overwrite;
  save(Checkpoint::from_state_dict(out), a.output, {}, so);
  std::cout << "run: " << fm.model->type_name() << " (" << fm.architecture << ") on " << be->name() << ": "
            << x.describe() << " -> " << y.describe() << " written to " << a.output << "\n";
}

}  // namespace

void register_nn_commands(CLI::App& app) {
  auto args = std::make_shared<RunArgs>();
  auto* run = app.add_subcommand("run", "Load a model (architecture from the file, or --arch with a weights file) and run it on an input array");
  run->add_option("model", args->model, "Model file: whole-module .pt, Keras full-model .h5, .onnx; or weights with --arch")->required();
  run->add_option("--input,-i", args->input, "Input array (.npy)")->required();
  run->add_option("--output,-o", args->output, "Output array (.npy)")->required();
  run->add_option("--arch", args->arch, "Built-in architecture for a weights-only file: mlp:IN,HIDDEN,...,OUT or seed-cnn");
  run->add_option("--backend", args->backend, "cpu (default), vulkan or vulkan:N");
  run->add_option("--key", args->key, "Dotted path of the state dict inside the file (model_state_dict)");
  run->add_flag("--strip-prefix", args->strip, "With --arch: strip 'module.' and '_orig_mod.' prefixes");
  run->add_flag("--allow-unknown-globals", args->allow_unknown,
                "Whole-module pickles of user classes (__main__.MLP): keep them as opaque objects (never called)");
  run->add_flag("--overwrite", args->overwrite, "Replace an existing output file");
  run->callback([args] { run_model(*args); });
}

}  // namespace tb::cli
