// HDF5 / Keras .h5 adapters ("h5", "keras-h5", "keras3-h5") through the HDF5 C library.
// Layout, naming and safety rules: formats/h5.h.
#include "formats/detail/h5_internal.h"

#include "formats/adapters.h"

namespace tb {

using namespace h5detail;

namespace {

bool sniff_h5(const Source& s) {
  if (!s.reader) return false;
  try {
    return is_hdf5(*s.reader);
  } catch (...) {
    return false;
  }
}

/** "x.weights.h5" is the Keras 3 naming (Keras 3 requires it), so the plain "h5" writer picks keras3 there. */
std::string default_layout(const std::filesystem::path& p, const std::string& fallback) {
  std::string name = p.filename().string();
  const std::string suffix = ".weights.h5";
  if (fallback == "plain" && name.size() > suffix.size() &&
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
    return "keras3";
  return fallback;
}

FormatAdapter make_adapter(std::string name, std::string desc, std::vector<std::string> exts, bool sniffs,
                           std::string layout) {
  FormatAdapter a;
  a.name = std::move(name);
  a.description = std::move(desc);
  a.extensions = std::move(exts);
  if (sniffs)
    a.sniff = sniff_h5;
  else
    a.sniff = [](const Source&) { return false; };
  a.load = [](const Source& s, const LoadOptions& o) { return load_h5(s, o); };
  a.save = [layout](const Checkpoint& c, const std::filesystem::path& p, const SaveOptions& o) {
    save_impl(c, p, o, o.option("layout", default_layout(p, layout)));
  };
  a.save_options = {{"layout", str("plain, keras or keras3 (default ", layout, ")")},
                    {"backend", "Keras layouts: the backend attribute (default tensorflow)"},
                    {"keras_version", "Keras layouts: the keras_version attribute (default 2.21.0)"}};
  return a;
}

}  // namespace

bool is_hdf5(const Reader& r) {
  try {
    return signature_offset(r) != UINT64_MAX;
  } catch (...) {
    return false;
  }
}

Checkpoint load_h5(const Source& src, const LoadOptions& opts) { return load_impl(src, opts); }

void save_h5(const Checkpoint& ckpt, const std::filesystem::path& path, const SaveOptions& opts) {
  save_impl(ckpt, path, opts, opts.option("layout", default_layout(path, "plain")));
}

const FormatAdapter& h5_format() {
  static const FormatAdapter a =
      make_adapter("h5", "HDF5 (h5py) and Keras .h5 / .weights.h5 (write option layout=plain|keras|keras3)",
                   {".h5", ".hdf5"}, true, "plain");
  return a;
}

const FormatAdapter& keras_h5_format() {
  static const FormatAdapter a =
      make_adapter("keras-h5", "Keras 2 / tf.keras save_weights .h5 layout (write; reads as h5)", {}, false, "keras");
  return a;
}

const FormatAdapter& keras3_h5_format() {
  static const FormatAdapter a =
      make_adapter("keras3-h5", "Keras 3 .weights.h5 layout (write; reads as h5)", {}, false, "keras3");
  return a;
}

}  // namespace tb
