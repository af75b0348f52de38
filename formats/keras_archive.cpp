// Keras 3 `.keras` archives (model.save('m.keras')): a zip of config.json (the architecture),
// metadata.json (keras_version, date_saved) and model.weights.h5 (the Keras 3 weights layout, read
// by the h5 reader from the member's bytes). The config reaches the checkpoint's metadata as
// "model_config", where nn finds a Keras architecture (as for a full-model .h5).
#include <nlohmann/json.hpp>

#include "formats/adapters.h"
#include "formats/detail/zip.h"
#include "formats/h5.h"

namespace tb {

namespace {

constexpr const char* kWeights = "model.weights.h5";
constexpr const char* kConfig = "config.json";
constexpr const char* kMeta = "metadata.json";
/** config.json and metadata.json are read whole: a bound a real model's config stays far below. */
constexpr uint64_t kMaxJson = uint64_t(64) << 20;

bool sniff_keras(const Source& s) {
  if (!s.reader || !zip::looks_like_zip(*s.reader)) return false;
  try {
    zip::ZipReader zr(s.reader);
    return zr.find(kConfig) && zr.find(kWeights);
  } catch (const Error&) {
    throw;  // a broken zip: the registry quotes the reason if nothing else matches
  } catch (...) {
    return false;
  }
}

std::string read_json_member(const zip::ZipReader& zr, const zip::Entry& e, LoadBudget& budget, const std::string& label) {
  TB_CHECK(e.uncompressed_size <= kMaxJson, FormatError, "[keras] '", label, "': member '", e.name, "' claims ",
           e.uncompressed_size, " bytes; a Keras ", e.name, " is far smaller (limit ", kMaxJson, ")");
  zr.check_claim(e);
  budget.charge_bytes(e.uncompressed_size, str("member '", e.name, "'"));
  std::string text = zr.read_string(e);
  try {
    if (nlohmann::json::parse(text).is_discarded()) throw FormatError("unreachable");
  } catch (const nlohmann::json::exception& err) {
    throw FormatError(str("[keras] '", label, "': member '", e.name, "' is not valid JSON: ", err.what()));
  }
  return text;
}

}  // namespace

Checkpoint load_keras_archive(const Source& src, const LoadOptions& opts) {
  TB_CHECK(src.reader != nullptr, FormatError, "[keras] '", src.label(), "' is a folder, not a .keras file");
  zip::ZipReader zr(src.reader);
  LoadBudget budget(opts.limits, src.label(), src.reader->size());
  const zip::Entry* w = zr.find(kWeights);
  const zip::Entry* cfg = zr.find(kConfig);
  TB_CHECK(w && cfg, FormatError, "[keras] '", src.label(), "': a .keras archive needs ", kConfig, " and ", kWeights);
  std::string config = read_json_member(zr, *cfg, budget, src.label());
  zr.check_claim(*w);
  if (!w->stored()) budget.charge_bytes(w->uncompressed_size, str("inflating member '", w->name, "'"));
  Source weights;
  weights.reader = zr.open(*w);  // a view of the archive when stored (as Keras writes it)
  LoadOptions inner = opts;
  Checkpoint c = load_h5(weights, inner);
  c.format = "keras";
  c.metadata["model_config"] = config;
  c.info.insert(c.info.begin(), {"archive", str(kConfig, " + ", kWeights)});
  if (const zip::Entry* m = zr.find(kMeta)) {
    auto meta = nlohmann::json::parse(read_json_member(zr, *m, budget, src.label()));
    if (meta.is_object())
      for (const char* k : {"keras_version", "date_saved"})
        if (meta.contains(k) && meta[k].is_string()) {
          c.info.emplace_back(k, meta[k].get<std::string>());
          c.metadata[k] = meta[k].get<std::string>();
        }
  }
  for (const auto& e : zr.entries())
    if (e.name != kWeights && e.name != kConfig && e.name != kMeta) c.info.emplace_back("ignored member", e.name);
  return c;
}

const FormatAdapter& keras_archive_format() {
  static const FormatAdapter a = [] {
    FormatAdapter f;
    f.name = "keras";
    f.description = "Keras 3 .keras archive (config.json + model.weights.h5; read)";
    f.extensions = {".keras"};
    f.sniff = sniff_keras;
    f.load = load_keras_archive;
    return f;
  }();
  return a;
}

}  // namespace tb
