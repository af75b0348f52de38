// The format plug-in interface. Every adapter turns a Source (a file Reader, or a folder path for
// multi-file formats) into a Checkpoint and, when it can write, a Checkpoint into files.
//
// A Checkpoint is the common model in the middle: a Value tree (a Dict of name -> Tensor for flat
// formats; any nesting for .pt and pickled .npy), string metadata, and writer details for `inspect`.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tensor/io.h"
#include "tensor/limits.h"
#include "tensor/state_dict.h"
#include "tensor/value.h"

namespace tb {

/** A loaded file's own structure, kept so that a writer of the same format can write it again around
 *  the tensors (an ONNX model's graph). Opaque outside that format's code; other writers ignore it. */
struct NativeSource {
  std::string format;                // adapter that made it ("onnx"); empty when none
  std::shared_ptr<const void> data;  // format-specific
  /** Tensor name now -> its name when loaded, for tensors renamed since (convert --rename). */
  std::map<std::string, std::string> renamed_from;
};

/** A loaded file: its object tree (root), string metadata and what a writer of the same format
 *  needs to reproduce it. Tensors in root may view the input's mapping. */
struct Checkpoint {
  std::string format;  // adapter name that produced it ("pt", "npz", ...)
  Value root;          // the saved object
  Metadata metadata;   // string metadata (safetensors __metadata__, HDF5 attributes, ...)
  /** Writer details for `inspect` ("torch archive version" -> "3", "keras_version" -> "2.3.1"). */
  std::vector<std::pair<std::string, std::string>> info;
  /** The source's structure for a writer of the same format (see NativeSource). */
  NativeSource native;

  /** The tensors as one flat StateDict: root (or the sub-tree at dotted key) flattened to dotted
   *  names, metadata attached. Non-tensor leaves are reported through skipped. */
  StateDict state_dict(const std::string& key = {}, std::vector<NonTensor>* skipped = nullptr) const;
  /** What a flat writer stores: state_dict(), except that a lone tensor root (a loaded .npy) is named
   *  "tensor"; metadata attached. */
  StateDict named_tensors() const;
  /** A Checkpoint holding a flat StateDict (root = Dict of tensors, metadata copied). Its state_dict()
   *  returns these entries without walking root again, while root is still that Dict, unresized. */
  static Checkpoint from_state_dict(const StateDict& sd, std::string format = {});

 private:
  std::shared_ptr<const StateDict> flat_;  // the entries root was built from (from_state_dict)
  const void* flat_root_ = nullptr;        // root's identity then
};

/** How load() reads: memory mapping, pickle safety, lazy decoding and what one load may cost. */
struct LoadOptions {
  bool mmap = true;  // zero-copy where the format allows it
  /** Pickles: keep objects of non-allowed classes as opaque values instead of refusing the file.
   *  Nothing is ever called or imported either way. */
  bool allow_unknown_globals = false;
  /** GGUF: keep quantized tensors as their raw uint8 blocks (type and shape in metadata) instead of
   *  dequantizing them to float32. */
  bool keep_quantized = false;
  /** TensorFlow checkpoints: name the model's variables by their object paths
   *  ("layer_with_weights-0/kernel") and keep optimizer slots and counters out of the tensors (as
   *  non-tensor values that `inspect` lists); see formats/tf_checkpoint.h. */
  bool readable_names = false;
  /** Tensors the loader would decode (GGUF quantized blocks to float32) are decoded on first access
   *  instead (Storage::deferred) and freed again once written: a one-pass conversion then holds one
   *  decoded tensor at a time. Only for tensors that are read, not modified in place. */
  bool deferred_decoding = false;
  /** What one load may cost (bytes, objects, depth, time); see tensor/limits.h. */
  LoadLimits limits = default_load_limits();
};

/** How save() writes: whether an existing target is replaced, plus format-specific options. */
struct SaveOptions {
  bool overwrite = false;
  /** Format-specific knobs ("trim_storage" -> "1", "shard_size" -> "5GB"); each format lists the keys
   *  it reads in FormatAdapter::save_options, and save() refuses any other key. */
  std::map<std::string, std::string> options;
  /** The value of key, or fallback when it is not set. */
  std::string option(const std::string& key, const std::string& fallback = {}) const {
    auto it = options.find(key);
    return it == options.end() ? fallback : it->second;
  }
};

/** What a loader reads: a file (reader set) or a folder (reader null, path set). */
struct Source {
  std::filesystem::path path;
  std::shared_ptr<Reader> reader;
  /** Name for messages: the reader's label for a file, path_label for a folder. */
  const std::string& label() const { return reader ? reader->label() : path_label; }
  /** The path as a string: the label when there is no reader. */
  std::string path_label;
  /** A folder or TensorFlow checkpoint prefix (reader null) or an opened file; IoError when p does not exist. */
  static Source from_path(const std::filesystem::path& p, bool use_mmap = true);
};

/** One key of SaveOptions::options that a format's writer reads. */
struct SaveOption {
  std::string key;
  std::string help;  // accepted values and default, e.g. "0 or 1 (default 0)"
};

/** One file format: detection (sniff), reading (load) and, unless read-only, writing (save). */
struct FormatAdapter {
  std::string name{};                     // "pt", "npy", "npz", "h5", "onnx", "safetensors", "oneflow"
  std::string description{};              // one line for `tensorbridge formats`
  std::vector<std::string> extensions{};  // {".pt", ".pth", ".bin"}
  /** True when the bytes (or folder) are certainly this format. Must be cheap. It may throw a tb::Error
   *  when the bytes are this kind of container but broken (a zip bomb); detection then goes on with
   *  the other formats and quotes the reason if none matches. */
  std::function<bool(const Source&)> sniff{};
  /** Reads the whole checkpoint; throws FormatError (and others) with the source's label. */
  std::function<Checkpoint(const Source&, const LoadOptions&)> load{};
  /** nullptr when the format is read-only here. */
  std::function<void(const Checkpoint&, const std::filesystem::path&, const SaveOptions&)> save{};
  /** Whether save() keeps nested values (lists, dicts, ints) rather than only a flat tensor dict. */
  bool keeps_tree = false;
  /** The SaveOptions::options keys save() reads; tb::save() refuses others, naming these. */
  std::vector<SaveOption> save_options{};
  /** Parses the options as save() will (typed tables: formats/typed_options.h), throwing on an unknown
   *  key or a bad value; empty: only the keys are checked against save_options. */
  std::function<void(const SaveOptions&, const std::filesystem::path&)> check_options{};
};

/** What every typed option struct of a writer holds (see formats/typed_options.h). */
struct WriteOptions {
  bool overwrite = false;  // replace an existing output
};

}  // namespace tb
