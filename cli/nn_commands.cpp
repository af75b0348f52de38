#include "cli/nn_commands.h"

#include <iostream>
#include <memory>
#include <string>

#include "formats/registry.h"
#include "compute/backend.h"
#include "nn/arch.h"
#include "nn/module.h"
#include "nn/onnx_graph.h"

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

struct ExportArgs {
  std::string model, output, arch, key, input_shape;
  bool strip = false, force = false, allow_unknown = false;
};

Shape parse_shape(const std::string& text) {
  Shape out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t c = text.find(',', pos);
    std::string part = text.substr(pos, c == std::string::npos ? std::string::npos : c - pos);
    try {
      size_t used = 0;
      long long v = std::stoll(part, &used);
      TB_CHECK(used == part.size(), UnsupportedError, "");
      out.push_back(v);
    } catch (...) {
      throw UnsupportedError(str("--input-shape '", text, "': expected comma-separated integers like -1,3,32,32"));
    }
    if (c == std::string::npos) break;
    pos = c + 1;
  }
  TB_CHECK(!out.empty(), UnsupportedError, "--input-shape is empty");
  return out;
}

void export_model(const ExportArgs& a) {
  LoadOptions lo;
  lo.allow_unknown_globals = a.allow_unknown;
  nn::FileModel fm = a.arch.empty() ? nn::load_model(a.model, lo) : nn::load_model(a.model, a.arch, a.key, a.strip);
  SaveOptions so;
  so.overwrite = a.force;
  nn::save_onnx_model(*fm.model, parse_shape(a.input_shape), a.output, so);
  std::cout << "export: " << fm.model->type_name() << " (" << fm.architecture << ") written to " << a.output
            << " as an ONNX graph\n";
}

}  // namespace

void register_nn_commands(CLI::App& app) {
  auto ex = std::make_shared<ExportArgs>();
  auto* exp = app.add_subcommand("export", "Write a model (structure and weights) as a full ONNX graph");
  exp->add_option("model", ex->model, "Model file (whole-module .pt, Keras full-model .h5, .onnx) or weights with --arch")->required();
  exp->add_option("output", ex->output, "Output .onnx file")->required();
  exp->add_option("--input-shape", ex->input_shape, "Input shape, -1 for a symbolic batch: -1,20 or -1,3,32,32")->required();
  exp->add_option("--arch", ex->arch, "Built-in architecture for a weights-only file: mlp:IN,HIDDEN,...,OUT or seed-cnn");
  exp->add_option("--key", ex->key, "Dotted path of the state dict inside the file (model_state_dict)");
  exp->add_flag("--strip-prefix", ex->strip, "With --arch: strip 'module.' and '_orig_mod.' prefixes");
  exp->add_flag("--allow-unknown-globals", ex->allow_unknown, "Whole-module pickles of user classes: keep them opaque (never called)");
  exp->add_flag("--force", ex->force, "Overwrite an existing output");
  exp->footer("Example:\n  tensorbridge export mlp.params mlp.onnx --arch mlp:20,256,10 --input-shape -1,20");
  exp->callback([ex] { export_model(*ex); });

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
  run->add_flag("--force,--overwrite", args->overwrite, "Replace an existing output file");
  run->footer("Example:\n  tensorbridge run mlp.params --arch mlp:20,256,10 --input X.npy --output Y.npy --backend vulkan");
  run->callback([args] { run_model(*args); });
}

}  // namespace tb::cli
