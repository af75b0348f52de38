// HDF5 (.h5 / .hdf5 / HDF5-based .keras) through the official HDF5 C library: plain h5py files and
// every Keras weight layout. No HDF5 type appears in this header.
//
// Byte layout (what the HDF5 library reads for us; facts in shared/docs/FORMATS.md section 4):
//  1. Signature "\x89HDF\r\n\x1a\n" at offset 0, 512, 1024, 2048, ... (a user block may precede it).
//  2. A tree of groups; leaves are datasets (typed n-d arrays, contiguous/chunked/compact, optionally
//     gzip/shuffle filtered) and every object may carry attributes (strings, numbers, arrays).
//  3. Layouts, detected from the file itself (Checkpoint::info "layout"; a /tensorbridge group we
//     wrote gives back the names, tensors and metadata of the file it was written from, see Writing):
//     - "plain": any h5py file. Every dataset is a tensor keyed by its path without the leading '/'
//       ("hidden.weight", "extra/table").
//     - "keras": Keras 1/2 / tf.keras `save_weights` layout: root attrs layer_names, backend,
//       keras_version; one group per layer with attr weight_names (split as weight_names0, 1, ... when
//       long; an empty list stored as a float64 (0,) array); dataset = <layer>/<weight name>, e.g.
//       /dense/dense/kernel:0.
//     - "keras-full": Keras `model.save("m.h5")`: the same under /model_weights plus root attr
//       model_config (JSON, kept as metadata) and /optimizer_weights.
//     - "keras3": Keras 3 `.weights.h5`: layers/<object>/vars/<i>, optimizer/vars/<i>, vars; no root
//       attrs; a dataset with attr dtype="bfloat16" holds bfloat16 bits.
//
// Tensor names (all layouts): the full HDF5 dataset path without the leading '/', decoded by the
// naming rule (formats/naming.h, "%2F" -> '/'), e.g.
// "dense_1/dense_1/kernel:0", "model_weights/dense/dense/bias:0", "layers/dense/vars/0",
// "optimizer_weights/Adam/iter:0". Keras layouts read the layer datasets first, in layer_names /
// weight_names order (Keras loads by position), then every other dataset in the file.
// Metadata: every attribute, keyed by its name for root attributes and "<object path>/<name>"
// otherwise ("hidden/weight_names", "model_config"). Strings are kept as-is, string or number arrays
// become JSON arrays, numbers their decimal text.
//
// Safety: external links, soft links that do not resolve inside the file, external storage and
// virtual datasets are refused (UnsafeError); a dataset whose declared size is far beyond its stored
// bytes (or a contiguous one beyond the file) is refused before reading; recursion is bounded and
// hard-link cycles are visited once. HDF5's error stack becomes one FormatError message.
// HDF5 is not thread-safe: every call into it holds one process-wide mutex.
//
// Writing (through AtomicFileWriter; the file image is built in memory with HDF5's core driver):
//  - layout "plain" (adapter "h5"): one dataset per key at its naming-rule path ('/' makes groups,
//    dots kept); metadata as attributes on the object "<path>" for keys "<path>/<name>" (a missing
//    group is created), so a Keras file read here is written back with every layer group, weightless
//    ones included (empty weight_names as Keras writes it: a float64 (0,) array).
//  - layout "keras" (adapter "keras-h5"): exactly what tf.keras 2.x save_weights writes (variable-
//    length ASCII string attrs layer_names / weight_names / backend / keras_version, dataset
//    <layer>/<weight name>). Layers come from keras_layers() below. A checkpoint read from a Keras 2
//    file (save_weights or model.save, its layer_names in metadata) is written back as it was, as
//    "plain" does: model_config, optimizer_weights and weightless layers kept.
//  - layout "keras3" (adapter "keras3-h5"): layers/<object>/vars/<i> plus empty root vars group.
//  - Both Keras layouts, written from anything but their own files, add the group /tensorbridge that
//    Keras never reads: the source's tensor name of every layer weight, every tensor no layer holds
//    (optimizer state, "torch_only/..." values such as num_batches_tracked; nn/style.h) and the
//    source's metadata. Reading restores all three (info "names"), so A -> Keras layout -> A is exact.
//  Options (H5WriteOptions): "layout" (plain|keras|keras3), "keras_version", "backend".
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "formats/format.h"

namespace tb {

/** One weight of a Keras layer, in saved (positional) order. */
struct KerasWeight {
  std::string name;  // Keras weight name: "dense/kernel:0" (Keras 2), "kernel" (guessed), "0" (Keras 3 vars index)
  std::string key;   // key of the tensor in the checkpoint's flat dict
  Tensor tensor;
};

/** A Keras layer (or Keras 3 saveable object) with its weights in positional order. */
struct KerasLayer {
  std::string name;  // layer group name ("dense_1"); Keras 3: object path ("layers/dense_1")
  std::vector<KerasWeight> weights;
};

/** Offset of the HDF5 signature ("\x89HDF\r\n\x1a\n" at 0, 512, 1024, 2048, ...), UINT64_MAX when there is
 *  none; throws what the reader throws. Needs no HDF5 library (formats/hdf5_signature.cpp). */
uint64_t hdf5_signature_offset(const Reader& r);
/** True when the bytes hold the HDF5 signature at 0, 512, 1024, 2048, ... (never throws). */
bool is_hdf5(const Reader& r);

/** Reads any HDF5 file (plain or Keras); Checkpoint::info carries layout, keras_version, backend. */
Checkpoint load_h5(const Source& src, const LoadOptions& opts = {});

/** The HDF5 writers' options (--option KEY=VALUE; the same keys for h5, keras-h5 and keras3-h5). */
struct H5WriteOptions : WriteOptions {
  std::string layout;                    // plain, keras or keras3; empty: the format's own (see write_h5)
  std::string backend = "tensorflow";    // Keras 2 layout: the root attribute backend
  std::string keras_version = "2.21.0";  // Keras 2 layout: the root attribute keras_version
};

/** Writes ckpt in opts.layout; empty: plain, or keras3 for a file named "*.weights.h5" (Keras 3's naming). */
void write_h5(const Checkpoint& ckpt, const std::filesystem::path& path, const H5WriteOptions& opts);
/** write_h5 with SaveOptions::options parsed as H5WriteOptions (keys layout, backend, keras_version). */
void save_h5(const Checkpoint& ckpt, const std::filesystem::path& path, const SaveOptions& opts = {});

/** The bytes of ckpt written in the Keras 3 weights layout (what a .keras archive holds as
 *  model.weights.h5); written through a temporary file that is removed before this returns. */
std::vector<uint8_t> keras3_weights_bytes(const Checkpoint& ckpt);

/** The Keras layer structure of a checkpoint, in Keras order.
 *  - Loaded from a Keras file (metadata layer_names / weight_names present): exactly the file's layers,
 *    weightless ones included, weights in weight_names order.
 *  - Keras 3 keys ("layers/<obj>/vars/<i>"): one layer per object path, weights by index.
 *  - Otherwise from the keys in dict order: "<layer>/<weight path>" (first path component is the layer;
 *    a leading "model_weights/" is dropped, "optimizer_weights/" skipped) or "<layer>.<weight>"
 *    (split at the last '.'; the layer name gets '.' replaced by '_').
 *  Throws UnsupportedError when a tensor cannot be placed in a layer. */
std::vector<KerasLayer> keras_layers(const Checkpoint& ckpt);

}  // namespace tb
