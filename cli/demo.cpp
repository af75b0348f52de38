// `tensorbridge demo`: the main job on the bundled fixtures. It takes the seed MLP and CNN
// checkpoints written by PyTorch, sends them through every writable format and back (checked bit
// for bit), loads each converted file into the C++ model and runs it on every backend (CPU, and
// Vulkan when a device exists), checking the output against PyTorch's (Y2 == Y), checks that the
// same weights written by other frameworks read identically, and prints one table. Exit 0 when
// everything that ran agreed.
#include <array>
#include <iomanip>
#include <iostream>

#include "cli/commands.h"
#include "compute/backend.h"
#include "models/arch.h"
#include "models/compare.h"

namespace tb::cli {

namespace {
struct DemoRow {
  std::string what, check, result, detail;
};

void print_rows(const std::vector<DemoRow>& rows) {
  size_t w0 = 10, w1 = 10;
  for (const auto& r : rows) {
    w0 = std::max(w0, r.what.size());
    w1 = std::max(w1, r.check.size());
  }
  std::cout << std::left << std::setw(int(w0 + 2)) << "input" << std::setw(int(w1 + 2)) << "check" << std::setw(12)
            << "result"
            << "detail\n";
  for (const auto& r : rows)
    std::cout << std::left << std::setw(int(w0 + 2)) << r.what << std::setw(int(w1 + 2)) << r.check << std::setw(12)
              << r.result << r.detail << "\n";
}
}  // namespace

int run_demo(const std::filesystem::path& dir) {
  std::vector<DemoRow> rows;
  bool ok = true;
  auto note_error = [&](const std::string& what, const std::string& check, const Error& e) {
    rows.push_back({what, check, "error", e.message()});
    ok = false;
  };

  // 1. Every writable format and back, for the seed models written by torch.save; then each
  //    converted file runs in the C++ model on every backend and must give PyTorch's output.
  struct Seed {
    std::string file, label, arch, x, y;
  };
  const std::vector<Seed> seeds = {
      {"torch/mlp.params", "seed MLP", "mlp:20,256,10", "torch/mlp_X.npy", "torch/mlp_Y.npy"},
      {"torch/cnn.pt", "seed CNN", "seed-cnn", "torch/cnn_X.npy", "torch/cnn_Y.npy"}};
  std::vector<std::string> backends = compute::available_backends();
  for (const auto& seed : seeds) {
    ScratchDir scratch;
    const std::string& what = seed.file;
    std::vector<RoundTripRow> result;
    try {
      Checkpoint c = load(dir / seed.file);
      StateDict sd = c.state_dict();
      rows.push_back({what, "load (" + c.format + ")", "ok",
                      str(seed.label, ": ", sd.size(), " tensors, ", sd.total_bytes(), " bytes")});
      result = round_trip(sd, c.format, writable_formats(), scratch.path());
      for (const auto& r : result) {
        rows.push_back({what, c.format + "->" + r.via + "->" + c.format, r.status, r.detail});
        if (r.status == "DIFFERENT" || r.status == "error") ok = false;
      }
    } catch (const Error& e) {
      note_error(what, "load", e);
      continue;
    }
    Tensor x, y;
    try {
      x = load(dir / seed.x).state_dict().entries().front().second;
      y = load(dir / seed.y).state_dict().entries().front().second;
    } catch (const Error& e) {
      note_error(seed.x, "load input/output", e);
      continue;
    }
    // The intermediate files round_trip wrote ("via_<format>.<ext>") are loaded into the model.
    std::vector<std::pair<std::string, std::filesystem::path>> files = {{"pt (original)", dir / seed.file}};
    for (const auto& r : result) {
      if (r.status != "bit-exact") continue;
      for (const auto& entry : std::filesystem::directory_iterator(scratch.path()))
        if (entry.path().filename().string().rfind("via_" + r.via + ".", 0) == 0)
          files.push_back({r.via, entry.path()});
    }
    for (const auto& [fmt, path] : files) {
      for (const auto& be_name : backends) {
        std::string check = str("run from ", fmt, " on ", be_name);
        try {
          nn::FileModel fm = nn::load_model(path, seed.arch);
          std::shared_ptr<compute::Backend> be = compute::make_backend(be_name);
          fm.model->to(be);
          Tensor y2 = (*fm.model)(x);
          double diff = max_abs_diff(y2, y);
          // CPU: 1e-5 relative; Vulkan accumulates in another order (documented in nn tests).
          double rtol = be_name == "cpu" ? 1e-5 : 1e-4, atol = be_name == "cpu" ? 1e-6 : 1e-5;
          bool same = allclose(y2, y, rtol, atol);
          rows.push_back({what, check, same ? "Y2 == Y" : "DIFFERENT", str("max abs diff ", diff, " vs PyTorch")});
          ok = ok && same;
        } catch (const Error& e) {
          note_error(what, check, e);
        }
      }
    }
  }

  // 2. The same seed MLP weights written by other frameworks must read identically.
  try {
    StateDict ref = load(dir / "torch/mlp.params").state_dict();
    const std::vector<std::pair<std::string, std::string>> peers = {
        {"safetensors/mlp.safetensors", "safetensors library"},
        {"onnx/mlp.onnx", "torch.onnx.export"},
    };
    for (const auto& [rel, who] : peers) {
      try {
        StateDict other = load(dir / rel).state_dict();
        DiffReport d = diff_state_dicts(ref, other, 0, 0);
        size_t exact = 0;
        for (const auto& t : d.tensors) exact += t.bit_exact;
        bool same = d.only_a.empty() && d.only_b.empty() && exact == d.tensors.size();
        rows.push_back({rel, "equals torch/mlp.params", same ? "bit-exact" : "DIFFERENT",
                        str("written by ", who, "; ", exact, "/", ref.size(), " tensors identical",
                            d.only_a.empty() ? "" : str(", missing ", d.only_a.front()))});
        ok = ok && same;
      } catch (const UnsupportedError& e) {
        rows.push_back({rel, "equals torch/mlp.params", "refused", e.message()});
      } catch (const Error& e) {
        note_error(rel, "equals torch/mlp.params", e);
      }
    }
  } catch (const Error& e) {
    note_error("torch/mlp.params", "load", e);
  }

  // 3. Weights trained in Keras run in the C++ model and give Keras's own predictions.
  const std::vector<std::array<std::string, 3>> keras_files = {
      {"keras/mlp_keras2.h5", "keras/mlp_keras2_Y.npy", "tf-keras save_weights"},
      {"keras/mlp.weights.h5", "keras/mlp_keras3_Y.npy", "Keras 3 save_weights"}};
  for (const auto& [rel, yrel, who] : keras_files) {
    std::string check = "run on cpu vs Keras predict";
    try {
      Tensor x = load(dir / "keras/mlp_X.npy").state_dict().entries().front().second;
      Tensor y = load(dir / yrel).state_dict().entries().front().second;
      nn::FileModel fm = nn::load_model(dir / rel, "mlp:20,256,10");
      Tensor y2 = (*fm.model)(x);
      bool same = allclose(y2, y, 1e-5, 1e-6);
      rows.push_back({rel, check, same ? "Y2 == Y" : "DIFFERENT",
                      str("written by ", who, "; max abs diff ", max_abs_diff(y2, y))});
      ok = ok && same;
    } catch (const Error& e) {
      note_error(rel, check, e);
    }
  }

  print_rows(rows);
  size_t exact = 0, refused = 0, runs = 0;
  for (const auto& r : rows) {
    exact += r.result == "bit-exact";
    refused += r.result == "refused";
    runs += r.result == "Y2 == Y";
  }
  std::cout << "\n"
            << exact << " bit-exact conversions, " << runs << " model runs equal to the framework's output, " << refused
            << " refused, backends: ";
  for (size_t i = 0; i < backends.size(); ++i) std::cout << (i ? ", " : "") << backends[i];
  std::cout << "; " << (ok ? "no differences" : "DIFFERENCES FOUND") << "\n";
  return ok ? 0 : 1;
}

}  // namespace tb::cli
