#include "cli/nn_commands.h"

#include <algorithm>
#include <iostream>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "compute/backend.h"
#include "formats/registry.h"
#include "models/arch.h"
#include "models/keras_export.h"
#include "models/onnx_graph.h"
#include "models/onnx_runner.h"
#include "nn/module.h"

namespace tb::cli {
namespace {

/** Where run and export get their model: a file with its architecture, or weights plus --arch. */
struct ModelSource {
  std::string model, arch, key;
  bool strip = false, allow_unknown = false, strict_names = false;

  void add_options(CLI::App* cmd) {
    cmd->add_option(
           "model", model,
           "Model file (whole-module .pt or OneFlow folder, Keras full-model .h5, .onnx) or weights with --arch")
        ->required();
    cmd->add_option(
        "--arch", arch,
        "Architecture for weights (or a whole module of a user class): mlp:IN,HIDDEN,...,OUT, seed-cnn or a "
        "layer sequence such as \"linear:20,256 relu linear:256,10\"; the file's layers are matched by "
        "order and shape, whatever their names");
    cmd->add_option("--key", key, "Dotted path of the state dict inside the file (model_state_dict)");
    cmd->add_flag("--strip-prefix", strip, "With --arch: strip 'module.' and '_orig_mod.' prefixes");
    cmd->add_flag("--strict-names", strict_names,
                  "With --arch: load by exact key names only (no matching by structure)");
    cmd->add_flag("--allow-unknown-globals", allow_unknown,
                  "Whole-module pickles of user classes (__main__.MLP): keep them as opaque objects (never called)");
  }
  /** Loads the model; the key mapping of a structural load goes to stderr, one line per layer. */
  nn::FileModel load() const {
    try {
      return load_checked();
    } catch (UnsafeError& e) {
      if (!allow_unknown)
        e.add_context(
            "a whole module of your own class (torch.save(net), flow.save(net)) loads with "
            "--allow-unknown-globals: its classes are kept by name, nothing in the file is run");
      throw;
    }
  }

 private:
  nn::FileModel load_checked() const {
    LoadOptions lo;
    lo.allow_unknown_globals = allow_unknown;
    lo.readable_names = true;  // TF checkpoints: the model's variables, without optimizer state
    if (arch.empty()) {
      nn::FileModel fm = nn::load_model(model, lo);
      nn::require_forward(*fm.model, model);
      return fm;
    }
    nn::ArchLoad how;
    how.key = key;
    how.strip = strip;
    how.load = lo;
    how.arch.strict_names = strict_names;
    nn::FileModel fm = nn::load_model(model, arch, how);
    if (fm.mapping.renamed()) {
      std::cerr << "loaded by structure (" << fm.mapping.order << "):\n";
      std::string lines = fm.mapping.describe();
      for (size_t p = 0, q; p < lines.size(); p = q + 1) {
        q = lines.find('\n', p);
        std::cerr << "  " << lines.substr(p, q - p) << "\n";
      }
    }
    return fm;
  }
};

struct RunArgs {
  ModelSource src;
  std::vector<std::string> inputs, outputs;
  std::string backend = "cpu";
  bool overwrite = false;
};

/** Orders the --input/--output values by the model's value names: "NAME=FILE" when NAME is one of
 *  them, otherwise the next unnamed value in order. */
std::vector<std::string> by_name(const std::vector<std::string>& given, const std::vector<std::string>& names,
                                 const char* flag) {
  std::vector<std::string> files(names.size());
  std::vector<std::string> positional;
  for (const auto& g : given) {
    auto eq = g.find('=');
    auto it = eq == std::string::npos ? names.end() : std::find(names.begin(), names.end(), g.substr(0, eq));
    if (it == names.end()) {
      positional.push_back(g);
      continue;
    }
    std::string& slot = files[size_t(it - names.begin())];
    TB_CHECK(slot.empty(), KeyError, "run: ", flag, " '", *it, "' is given twice");
    slot = g.substr(eq + 1);
  }
  size_t next = 0;
  for (auto& f : files)
    if (f.empty() && next < positional.size()) f = positional[next++];
  auto list = [&] {
    std::string s;
    for (const auto& n : names) s += (s.empty() ? "'" : ", '") + n + "'";
    return s;
  };
  TB_CHECK(next == positional.size(), KeyError, "run: ", given.size(), " ", flag, " values for ", names.size(),
           " model values (", list(), ")");
  for (size_t i = 0; i < files.size(); ++i)
    TB_CHECK(!files[i].empty(), KeyError, "run: no ", flag, " for '", names[i], "'; the model's values are ", list(),
             " (give them in order or as ", flag, " NAME=FILE)");
  return files;
}

void run_model(const RunArgs& a) {
  nn::FileModel fm = a.src.load();
  std::shared_ptr<compute::Backend> be = compute::make_backend(a.backend);
  fm.model->to(be);
  std::vector<std::string> in_names = {"input"}, out_names = {"Y"};
  if (auto* g = dynamic_cast<nn::OnnxGraphModule*>(fm.model.get())) {
    in_names.clear(), out_names.clear();
    for (const auto& v : g->inputs()) in_names.push_back(v.name);
    for (const auto& v : g->outputs()) out_names.push_back(v.name);
  }
  const std::vector<std::string> in_files = by_name(a.inputs, in_names, "--input");
  const std::vector<std::string> out_files = by_name(a.outputs, out_names, "--output");
  std::vector<Tensor> xs;
  for (const auto& f : in_files) {
    StateDict in = load(f).state_dict();
    TB_CHECK(in.size() == 1, ShapeError, "run: input '", f, "' must hold one array, found ", in.size());
    xs.push_back(in.entries().front().second);
  }
  std::vector<Tensor> ys = nn::run_model(*fm.model, xs);
  SaveOptions so;
  so.overwrite = a.overwrite;
  for (size_t i = 0; i < ys.size(); ++i) {
    StateDict out;
    out.insert(out_names[i], ys[i]);
    save(Checkpoint::from_state_dict(out), out_files[i], {}, so);
  }
  auto shapes = [](const std::vector<Tensor>& ts) {
    std::string s;
    for (const auto& t : ts) s += (s.empty() ? "" : ", ") + t.describe();
    return s;
  };
  std::string written;
  for (const auto& f : out_files) written += (written.empty() ? "" : ", ") + f;
  std::cout << "run: " << fm.model->type_name() << " (" << fm.architecture << ") on " << be->name() << ": "
            << shapes(xs) << " -> " << shapes(ys) << " written to " << written << "\n";
}

struct ExportArgs {
  ModelSource src;
  std::string output, input_shape;
  bool force = false;
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
  nn::FileModel fm = a.src.load();
  SaveOptions so;
  so.overwrite = a.force;
  const bool keras = std::filesystem::path(a.output).extension() == ".keras";
  if (keras)
    nn::save_keras_model(*fm.model, parse_shape(a.input_shape), a.output, so);
  else
    nn::save_onnx_model(*fm.model, parse_shape(a.input_shape), a.output, so);
  std::cout << "export: " << fm.model->type_name() << " (" << fm.architecture << ") written to " << a.output
            << (keras ? " as a Keras 3 model (channels-last inputs)\n" : " as an ONNX graph\n");
}

}  // namespace

void register_nn_commands(CLI::App& app) {
  auto ex = std::make_shared<ExportArgs>();
  auto* exp = app.add_subcommand(
      "export", "Write a model (structure and weights) as a full ONNX graph (.onnx) or a Keras 3 model (.keras)");
  ex->src.add_options(exp);
  exp->add_option("output", ex->output, "Output .onnx or .keras file")->required();
  exp->add_option("--input-shape", ex->input_shape, "Input shape, -1 for a symbolic batch: -1,20 or -1,3,32,32")
      ->required();
  exp->add_flag("--force", ex->force, "Overwrite an existing output");
  exp->footer(
      "Examples:\n  tensorbridge export mlp.params mlp.onnx --arch mlp:20,256,10 --input-shape -1,20\n"
      "  tensorbridge export cnn.pt cnn.keras --arch seed-cnn --input-shape -1,3,32,32   # Keras takes NHWC");
  exp->callback([ex] { export_model(*ex); });

  auto args = std::make_shared<RunArgs>();
  auto* run = app.add_subcommand(
      "run", "Load a model (architecture from the file, or --arch with a weights file) and run it on an input array");
  args->src.add_options(run);
  run->add_option(
         "--input,-i", args->inputs,
         "Input array (.npy, or an ONNX TensorProto .pb); repeat for a graph of several inputs, in the graph's "
         "order, or name them: --input NAME=FILE")
      ->required()
      ->allow_extra_args(false);
  run->add_option("--output,-o", args->outputs,
                  "Output array (.npy or .pb); one per graph output, in order or as NAME=FILE")
      ->required()
      ->allow_extra_args(false);
  run->add_option("--backend", args->backend, "cpu (default), vulkan or vulkan:N");
  run->add_flag("--force,--overwrite", args->overwrite, "Replace an existing output file");
  run->footer(
      "Examples:\n  tensorbridge run mlp.params --arch mlp:20,256,10 --input X.npy --output Y.npy --backend vulkan\n"
      "  tensorbridge run net.pt --arch \"linear:20,256 relu linear:256,10\" --allow-unknown-globals -i X.npy -o "
      "Y.npy\n"
      "  tensorbridge run two_inputs.onnx --input a=A.npy --input b=B.npy --output Y.npy");
  run->callback([args] { run_model(*args); });
}

}  // namespace tb::cli
