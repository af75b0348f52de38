// The HDF5 adapters when the build has no HDF5 (TB_WITH_HDF5=OFF): they still sniff the signature,
// so users learn what the file is, and explain how to get support. keras_layers() works anyway.
#include "formats/adapters.h"
#include "formats/detail/stub.h"
#include "formats/detail/zip.h"
#include "formats/h5.h"
#include "formats/h5_layers.inc"

namespace tb {
namespace {
const char* kWhy = "built without HDF5 support; reconfigure with -DTB_WITH_HDF5=ON";

bool sniff(const Source& s) { return s.reader && is_hdf5(*s.reader); }
}  // namespace

Checkpoint load_h5(const Source& src, const LoadOptions&) {
  throw UnsupportedError(str("[h5] '", src.label(), "': ", kWhy));
}

void write_h5(const Checkpoint&, const std::filesystem::path& p, const H5WriteOptions&) {
  throw UnsupportedError(str("[h5] cannot write '", p.string(), "': ", kWhy));
}

void save_h5(const Checkpoint& ckpt, const std::filesystem::path& p, const SaveOptions&) { write_h5(ckpt, p, {}); }

const FormatAdapter& h5_format() {
  static const FormatAdapter a =
      detail::unavailable_adapter("h5", "HDF5 / Keras .h5 (not built)", {".h5", ".hdf5"}, sniff, kWhy);
  return a;
}
const FormatAdapter& keras_archive_format() {
  static const FormatAdapter a = detail::unavailable_adapter(
      "keras", "Keras 3 .keras archive (not built: its weights are HDF5)", {".keras"},
      [](const Source& s) {
        if (!s.reader || !zip::looks_like_zip(*s.reader)) return false;
        try {
          zip::ZipReader zr(s.reader);
          return zr.find("config.json") && zr.find("model.weights.h5");
        } catch (...) {
          return false;
        }
      },
      kWhy);
  return a;
}
const FormatAdapter& keras_h5_format() {
  static const FormatAdapter a = detail::unavailable_adapter(
      "keras-h5", "Keras 2 save_weights .h5 layout (not built)", {}, [](const Source&) { return false; }, kWhy);
  return a;
}
const FormatAdapter& keras3_h5_format() {
  static const FormatAdapter a = detail::unavailable_adapter(
      "keras3-h5", "Keras 3 .weights.h5 layout (not built)", {}, [](const Source&) { return false; }, kWhy);
  return a;
}
}  // namespace tb
