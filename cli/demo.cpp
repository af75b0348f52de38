// `tensorbridge demo`: the main job on the bundled fixtures. It takes the seed MLP and CNN
// checkpoints written by PyTorch, sends them through every writable format and back, checks each
// result bit for bit, checks that the same weights written by other frameworks read identically,
// and prints one table. Exit 0 when everything that ran agreed.
#include <iomanip>
#include <iostream>

#include "cli/commands.h"
#include "cli/compare.h"

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
            << "result" << "detail\n";
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

  // 1. Every writable format and back, for the seed models written by torch.save.
  const std::vector<std::pair<std::string, std::string>> seeds = {{"torch/mlp.params", "seed MLP"},
                                                                  {"torch/cnn.pt", "seed CNN"}};
  ScratchDir scratch;
  for (const auto& [rel, label] : seeds) {
    std::string what = rel;
    try {
      Checkpoint c = load(dir / rel);
      StateDict sd = c.state_dict();
      rows.push_back({what, "load (" + c.format + ")", "ok",
                      str(label, ": ", sd.size(), " tensors, ", sd.total_bytes(), " bytes")});
      auto result = round_trip(sd, c.format, writable_formats(), scratch.path());
      for (const auto& r : result) {
        rows.push_back({what, c.format + "->" + r.via + "->" + c.format, r.status, r.detail});
        if (r.status == "DIFFERENT" || r.status == "error") ok = false;
      }
    } catch (const Error& e) {
      note_error(what, "load", e);
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

  print_rows(rows);
  size_t exact = 0, refused = 0;
  for (const auto& r : rows) {
    exact += r.result == "bit-exact";
    refused += r.result == "refused";
  }
  std::cout << "\n" << exact << " bit-exact, " << refused << " refused (format not available or lossy), "
            << (ok ? "no differences" : "DIFFERENCES FOUND") << "\n";
  return ok ? 0 : 1;
}

}  // namespace tb::cli
