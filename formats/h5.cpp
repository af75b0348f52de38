// HDF5 / Keras .h5 adapters ("h5", "keras-h5", "keras3-h5") through the HDF5 C library.
// Layout, naming and safety rules: formats/h5.h.
#include "formats/adapters.h"
#include "formats/detail/h5_internal.h"

namespace tb {

using namespace h5detail;

namespace {

/** "x.weights.h5" is the Keras 3 naming (Keras 3 requires it), so the plain "h5" writer picks keras3 there. */
std::string default_layout(const std::filesystem::path& p) {
  std::string name = p.filename().string();
  const std::string suffix = ".weights.h5";
  if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
    return "keras3";
  return "plain";
}

/** opts with `layout` where it names none: the keras-h5 and keras3-h5 formats' own layout. */
H5WriteOptions or_layout(H5WriteOptions opts, const char* layout) {
  if (opts.layout.empty()) opts.layout = layout;
  return opts;
}
void write_keras_h5(const Checkpoint& c, const std::filesystem::path& p, const H5WriteOptions& o) {
  write_h5(c, p, or_layout(o, "keras"));
}
void write_keras3_h5(const Checkpoint& c, const std::filesystem::path& p, const H5WriteOptions& o) {
  write_h5(c, p, or_layout(o, "keras3"));
}

/** The three formats' keys; `layout` is the format's default. */
OptionTable<H5WriteOptions> h5_options(const std::string& layout) {
  using O = H5WriteOptions;
  return {choice_option<O>("layout", &O::layout, {"plain", "keras", "keras3"},
                           str("plain, keras or keras3 (default ", layout, ")")),
          text_option<O>("backend", &O::backend, "Keras layouts: the backend attribute (default tensorflow)"),
          text_option<O>("keras_version", &O::keras_version,
                         "Keras layouts: the keras_version attribute (default 2.21.0)")};
}

FormatAdapter make_adapter(std::string name, std::string desc, std::vector<std::string> exts, bool sniffs,
                           const std::string& layout,
                           void (*write)(const Checkpoint&, const std::filesystem::path&, const H5WriteOptions&)) {
  FormatAdapter a;
  a.name = std::move(name);
  a.description = std::move(desc);
  a.extensions = std::move(exts);
  if (sniffs)
    a.sniff = [](const Source& s) { return s.reader && is_hdf5(*s.reader); };
  else
    a.sniff = [](const Source&) { return false; };
  a.load = [](const Source& s, const LoadOptions& o) { return load_h5(s, o); };
  return with_writer(std::move(a), h5_options(layout), write);
}

}  // namespace

Checkpoint load_h5(const Source& src, const LoadOptions& opts) { return load_impl(src, opts); }

void write_h5(const Checkpoint& ckpt, const std::filesystem::path& path, const H5WriteOptions& opts) {
  save_impl(ckpt, path, opts, opts.layout.empty() ? default_layout(path) : opts.layout);
}

void save_h5(const Checkpoint& ckpt, const std::filesystem::path& path, const SaveOptions& opts) {
  h5_format().save(ckpt, path, opts);
}

const FormatAdapter& h5_format() {
  static const FormatAdapter a =
      make_adapter("h5", "HDF5 (h5py) and Keras .h5 / .weights.h5 (write option layout=plain|keras|keras3)",
                   {".h5", ".hdf5"}, true, "plain", write_h5);
  return a;
}

const FormatAdapter& keras_h5_format() {
  static const FormatAdapter a =
      make_adapter("keras-h5", "Keras 2 / tf.keras save_weights .h5 layout (write; reads as h5)", {}, false, "keras",
                   write_keras_h5);
  return a;
}

const FormatAdapter& keras3_h5_format() {
  static const FormatAdapter a = make_adapter("keras3-h5", "Keras 3 .weights.h5 layout (write; reads as h5)", {}, false,
                                              "keras3", write_keras3_h5);
  return a;
}

}  // namespace tb
