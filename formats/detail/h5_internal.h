// Internals shared by the HDF5 adapter's files (formats/h5*.cpp): library access, RAII handles,
// the per-load context and the entry points each file provides to the others. Not a public header.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "formats/h5.h"
#include "tensor/checked.h"

namespace tb {
namespace h5detail {

constexpr int kMaxDepth = 64;
constexpr uint64_t kBombFloor = 64ull << 20;  // below this a declared size is never called a bomb
constexpr uint64_t kBombRatio = 1000;         // declared bytes per stored byte (tf-keras uses the same)
constexpr size_t kMaxAttrBytes = 64u << 20;

/** Group of a Keras file we write from another layout (Keras 3 weights, or Keras 2 from anything
 *  but a Keras 2 file) that holds what the layout has no place for. Keras never reads it (Keras 2
 *  reads the groups layer_names lists, Keras 3 the groups its model's attributes name):
 *    attrs paths / names (split as paths0, paths1, ... when long): each layer weight's dataset path
 *      ("layers/dense/vars/0", "hidden/hidden/kernel:0") and the tensor name it had;
 *    tensors/<name>: every tensor no layer holds (optimizer state, torch_only/...), naming-rule path;
 *    metadata: the source's metadata as attributes (root ones on metadata itself, "<path>/<name>"
 *      on metadata/<path>).
 *  Reading such a file gives back the source's names, tensors and metadata. */
inline constexpr const char* kKerasSourceGroup = "tensorbridge";

// ------------------------------------------------------------------------------------------------
// Library access: one mutex, automatic error printing off, RAII handles, error stack -> message.

/** The one lock every HDF5 call is made under (libhdf5 is built without thread safety). */
inline std::recursive_mutex& h5_mutex() {
  static std::recursive_mutex m;
  return m;
}

/** Opens the library once and turns its automatic error printing off. */
void h5_init();

/** Owns one HDF5 identifier and closes it with the matching H5*close. */
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer c) : id_(id), close_(c) {}
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      close_ = o.close_;
      o.id_ = -1;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = -1;
  }
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }
  /** Gives up ownership (the caller closes it). */
  hid_t release() {
    hid_t id = id_;
    id_ = -1;
    return id;
  }

 private:
  hid_t id_ = -1;
  Closer close_ = nullptr;
};

/** HDF5's own messages (innermost first), then clears the stack. */
std::string error_stack();
/** Throws a FormatError naming the file, what failed and HDF5's error stack. */
[[noreturn]] void fail(const std::string& label, const std::string& what);
/** Wraps an identifier, or fails with `what` when it is negative. */
Handle check_id(hid_t id, Handle::Closer c, const std::string& label, const std::string& what);
/** Link access list that refuses external links, used for every open. */
hid_t safe_lapl();
/** Whether the object has an attribute / the location a link / a group of that name. */
bool has_attr(hid_t obj, const char* name);
bool has_link(hid_t loc, const char* name);
bool is_group(hid_t loc, const char* name);
/** The strings of a Keras name-list attribute kept in metadata (empty when absent). */
std::vector<std::string> names_from(const Metadata& md, const std::string& key);

constexpr uint64_t kProbeMaxTensor = 256ull << 20;  // chunked/compact data the probe reads per dataset
constexpr uint64_t kProbeMemory = 1ull << 30;       // address space the probe may add (+2x the file)

struct FileCtx {
  std::string label;
  uint64_t file_size = 0;
  bool mappable = false;  // the superblock is at offset 0 of src.reader, so dataset offsets are file offsets
  std::shared_ptr<Reader> reader;
  bool mmap = true;
  bool probe = false;  // in the probe process (see probe_in_child): every HDF5 call, no tensor bytes
  /** The load's budget: every dataset is charged before any is read, so fill values of never-written
   *  datasets, which the file does not hold, are bounded in total and not only per dataset. */
  LoadBudget* budget = nullptr;
};

/** Refuses a file whose global heap collections would stall or overrun libhdf5's walk. */
void check_global_heaps(const Reader& r, uint64_t sig, const std::string& label);
/** Reads the file (ctx.probe: every HDF5 call, no tensor bytes). */
Checkpoint load_hdf5(const Source& src, FileCtx& ctx, uint64_t sig);
/** Reads the file's structure in a separate process first; throws what that process refused. */
void probe_in_child(const Source& src, const FileCtx& parent_ctx, uint64_t sig);
/** main() of the probe helper executable (tensorbridge-h5probe): the probe of probe_in_child for a
 *  process with several threads, where fork() is unsafe. Arguments and exit codes: h5_probe.cpp. */
int probe_main(int argc, char** argv);
/** The whole load: checks, probe, then load_hdf5. */
Checkpoint load_impl(const Source& src, const LoadOptions& opts);
/** Writes `ckpt` to `path` in `layout` (plain, keras or keras3; opts.layout is not read). */
void save_impl(const Checkpoint& ckpt, const std::filesystem::path& path, const H5WriteOptions& opts,
               const std::string& layout);

}  // namespace h5detail
}  // namespace tb
