#include "models/compare.h"

#include "formats/naming.h"
#include "nn/style.h"

#include <unistd.h>

#include <cmath>
#include <random>
#include <set>

namespace tb {

bool DiffReport::equal() const {
  if (!only_a.empty() || !only_b.empty()) return false;
  for (const auto& t : tensors)
    if (!t.equal) return false;
  return true;
}

DiffReport diff_state_dicts(const StateDict& a0, const StateDict& b0, double rtol, double atol) {
  // A bare array (x.npy, torch.save(tensor)) and the same tensor stored under the naming rule's
  // name for it ("arr_0") are one tensor.
  const StateDict a = naming::with_unnamed_tensor_named(a0);
  const StateDict b = naming::with_unnamed_tensor_named(b0);
  DiffReport r;
  for (const auto& [k, t] : a)
    if (!b.contains(k)) r.only_a.push_back(k);
  for (const auto& [k, t] : b)
    if (!a.contains(k)) r.only_b.push_back(k);
  for (const auto& [k, ta] : a) {
    const Tensor* tb_ = b.find(k);
    if (!tb_) continue;
    TensorDiff d;
    d.name = k;
    if (ta.dtype() != tb_->dtype()) {
      d.problem = str("dtype ", dtype_name(ta.dtype()), " vs ", dtype_name(tb_->dtype()));
    } else if (ta.shape() != tb_->shape()) {
      d.problem = str("shape ", shape_str(ta.shape()), " vs ", shape_str(tb_->shape()));
    }
    if (!d.problem.empty()) {
      r.tensors.push_back(d);
      continue;
    }
    d.bit_exact = tb::equal(ta, *tb_);
    if (d.bit_exact) {
      d.equal = true;
    } else {
      d.max_abs = max_abs_diff(ta, *tb_);
      // Largest relative error over elements, against |b|.
      double rel = 0;
      if (!is_complex(ta.dtype())) {
        auto x = ta.to(DType::F64).to_vector<double>(), y = tb_->to(DType::F64).to_vector<double>();
        for (size_t i = 0; i < x.size(); ++i) {
          if (x[i] == y[i]) continue;
          double den = std::fabs(y[i]);
          double e = den > 0 ? std::fabs(x[i] - y[i]) / den : INFINITY;
          if (std::isnan(e)) e = INFINITY;
          rel = std::max(rel, e);
        }
      }
      d.max_rel = rel;
      d.equal = (rtol > 0 || atol > 0) && tb::allclose(ta, *tb_, rtol, atol, true);
    }
    r.tensors.push_back(d);
  }
  return r;
}

ScratchDir::ScratchDir() {
  std::random_device rd;
  path_ = std::filesystem::temp_directory_path() /
          ("tensorbridge-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
  std::filesystem::create_directories(path_);
}
ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::vector<std::string> writable_formats() {
  std::vector<std::string> out;
  for (const auto* f : all_formats())
    if (f->save) out.push_back(f->name);
  return out;
}

namespace {
std::string extension_for(const std::string& format) {
  const auto* f = find_format(format);
  if (f && !f->extensions.empty()) return f->extensions.front();
  return "." + format;
}

std::string summarize(const DiffReport& d) {
  std::string s;
  if (!d.only_a.empty()) s += str(d.only_a.size(), " key(s) lost (first: ", d.only_a.front(), ")");
  if (!d.only_b.empty())
    s += str(s.empty() ? "" : "; ", d.only_b.size(), " key(s) added (first: ", d.only_b.front(), ")");
  for (const auto& t : d.tensors) {
    if (t.bit_exact) continue;
    s += str(s.empty() ? "" : "; ", t.name, ": ", t.problem.empty() ? str("max abs error ", t.max_abs) : t.problem);
    break;
  }
  return s;
}
}  // namespace

bool looks_torch_style(const StateDict& sd) {
  for (const auto& [k, t] : sd)
    if (k.find('/') != std::string::npos || k.find(':') != std::string::npos) return false;
  return !sd.empty();
}

int round_trip_exit_code(const std::vector<RoundTripRow>& rows) {
  size_t checked = 0;
  for (const auto& r : rows) {
    if (r.status == kCannotHold) continue;
    if (r.status != "bit-exact") return 1;
    ++checked;
  }
  return checked > 0 ? 0 : 1;
}

std::vector<RoundTripRow> round_trip(const StateDict& original, const std::string& source_format,
                                     const std::vector<std::string>& vias, const std::filesystem::path& work_dir) {
  std::vector<RoundTripRow> rows;
  // A .keras archive also holds the architecture, which most formats do not carry; its tensors come
  // back through its weights file (the Keras 3 layout), which is what is compared.
  const std::string back_format = source_format == "keras" ? "keras3-h5" : source_format;
  Checkpoint src = Checkpoint::from_state_dict(original);
  for (const auto& via : vias) {
    RoundTripRow row{via, "", ""};
    auto mid = work_dir / ("via_" + via + extension_for(via));
    auto back = work_dir / ("back_" + via + extension_for(back_format));
    try {
      // Keras layouts carry Keras names and layouts: a torch-style dict goes there in Keras style and
      // comes back in torch style, with the original module names (Keras 3 files do not keep them).
      const bool keras = (via == "keras-h5" || via == "keras3-h5") && looks_torch_style(original);
      nn::StyleOptions back_style;
      if (keras) {
        for (const auto& [k, t] : original) {
          std::string prefix = k.substr(0, k.rfind('.') == std::string::npos ? 0 : k.rfind('.'));
          if (back_style.names.empty() || back_style.names.back() != prefix) back_style.names.push_back(prefix);
        }
        save(Checkpoint::from_state_dict(nn::convert_style(original, "keras")), mid, via, SaveOptions{true, {}});
      } else {
        SaveOptions so{true, {}};
        if (via == "npy" && original.size() > 1) so.options["object"] = "1";  // the whole dict as an object array
        save(src, mid, via, so);
      }
      Checkpoint m = load(mid);
      StateDict msd = m.state_dict();
      if (keras) msd = nn::convert_style(msd, "torch", back_style);
      save(Checkpoint::from_state_dict(msd), back, back_format, SaveOptions{true, {}});
      StateDict result = load(back).state_dict();
      DiffReport d = diff_state_dicts(original, result, 0, 0);
      bool exact = d.only_a.empty() && d.only_b.empty();
      for (const auto& t : d.tensors) exact = exact && t.bit_exact;
      row.status = exact ? "bit-exact" : "DIFFERENT";
      row.detail = exact ? str(original.size(), " tensors") : summarize(d);
    } catch (const OutOfMemoryError&) {
      throw;  // the machine, not the format: the whole round trip stops with exit 2
    } catch (const UnsupportedError& e) {
      row.status = kCannotHold;
      row.detail = e.message();
    } catch (const Error& e) {
      row.status = "error";
      row.detail = e.message();
    }
    rows.push_back(row);
  }
  return rows;
}

}  // namespace tb
