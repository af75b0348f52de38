// Writing HDF5 files through libhdf5: plain, Keras 2 ("keras-h5") and Keras 3 ("keras3-h5") layouts,
// and the Keras 3 weights image used by .keras archives.
#include "formats/detail/h5_internal.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "formats/adapters.h"
#include "formats/h5_layers.inc"
#include "formats/naming.h"
#include "tensor/atomic_output.h"

namespace tb {
namespace h5detail {

std::vector<std::string> names_from(const Metadata& md, const std::string& key) {
  return h5detail::split_attr(md, key).value_or(std::vector<std::string>{});
}

// ------------------------------------------------------------------------------------------------
// Writing

/** The output file, written by HDF5 itself (sec2 driver) straight into the AtomicFileWriter's
 *  temporary file: tensors go to disk one H5Dwrite at a time instead of into an in-memory image. */
class OutFile {
 public:
  explicit OutFile(const AtomicFileWriter& out) : label_(out.target().string()) {
    fapl_ = check_id(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, label_, "cannot create a file access list");
    H5Pset_fapl_sec2(fapl_.get());
    // Closing the file closes whatever is still open in it, so close() really writes everything.
    H5Pset_fclose_degree(fapl_.get(), H5F_CLOSE_STRONG);
#if H5_VERSION_GE(1, 10, 7)
    // A private temporary file: a lock protects nothing and fails on file systems without flock.
    H5Pset_file_locking(fapl_.get(), false, true);
#endif
    // The writer created the temporary file (O_EXCL, beside the target); HDF5 truncates and fills
    // the same inode, so the writer's fsync + rename commits what HDF5 wrote.
    file_ = check_id(H5Fcreate(out.temp_path().c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl_.get()), H5Fclose, label_,
                     "cannot create the HDF5 file '" + out.temp_path().string() + "'");
    void* handle = nullptr;
    if (H5Fget_vfd_handle(file_.get(), fapl_.get(), &handle) >= 0 && handle) fd_ = *static_cast<int*>(handle);
    lcpl_ = Handle(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
    H5Pset_create_intermediate_group(lcpl_.get(), 1);
    H5Pset_char_encoding(lcpl_.get(), H5T_CSET_UTF8);
  }
  hid_t file() const { return file_.get(); }
  hid_t lcpl() const { return lcpl_.get(); }
  const std::string& label() const { return label_; }
  /** Counts n bytes of a dataset HDF5 has written: their writeback starts early, as NewFileWriter's. */
  void wrote(size_t n) {
    if (fd_ >= 0) writeback_.wrote(fd_, n);
  }
  /** Writes the metadata HDF5 still holds and closes the file; an error (disk full) is thrown. */
  void close() {
    if (H5Fclose(file_.release()) < 0) fail(label_, "cannot finish writing the file");
  }

 private:
  std::string label_;
  Handle fapl_, file_, lcpl_;
  int fd_ = -1;  // HDF5's own descriptor (sec2 driver), for WritebackPacer
  WritebackPacer writeback_;
};

Handle file_type(DType dt) {
  auto copy = [](hid_t t) { return Handle(H5Tcopy(t), H5Tclose); };
  switch (dt) {
    case DType::F32: return copy(H5T_IEEE_F32LE);
    case DType::F64: return copy(H5T_IEEE_F64LE);
    case DType::I8: return copy(H5T_STD_I8LE);
    case DType::I16: return copy(H5T_STD_I16LE);
    case DType::I32: return copy(H5T_STD_I32LE);
    case DType::I64: return copy(H5T_STD_I64LE);
    case DType::U8: return copy(H5T_STD_U8LE);
    case DType::U16: return copy(H5T_STD_U16LE);
    case DType::U32: return copy(H5T_STD_U32LE);
    case DType::U64: return copy(H5T_STD_U64LE);
    case DType::F16: {  // as h5py: IEEE half
      Handle t = copy(H5T_IEEE_F32LE);
      H5Tset_fields(t.get(), 15, 10, 5, 0, 10);
      H5Tset_size(t.get(), 2);
      H5Tset_ebias(t.get(), 15);
      return t;
    }
    case DType::Bool: {  // as h5py: enum int8 {FALSE, TRUE}
      Handle t(H5Tenum_create(H5T_NATIVE_INT8), H5Tclose);
      int8_t f = 0, tr = 1;
      H5Tenum_insert(t.get(), "FALSE", &f);
      H5Tenum_insert(t.get(), "TRUE", &tr);
      return t;
    }
    case DType::C64:
    case DType::C128: {  // as h5py: compound {r, i}
      size_t half = dt == DType::C64 ? 4 : 8;
      Handle t(H5Tcreate(H5T_COMPOUND, 2 * half), H5Tclose);
      hid_t f = dt == DType::C64 ? H5T_IEEE_F32LE : H5T_IEEE_F64LE;
      H5Tinsert(t.get(), "r", 0, f);
      H5Tinsert(t.get(), "i", half, f);
      return t;
    }
    default: {  // bfloat16, float8: opaque bytes + attribute dtype (as Keras 3 / h5py with ml_dtypes)
      Handle t(H5Tcreate(H5T_OPAQUE, dtype_size(dt)), H5Tclose);
      H5Tset_tag(t.get(), "");
      return t;
    }
  }
}

void write_str_attr(hid_t obj, const std::string& name, const std::string& value, H5T_cset_t cset) {
  Handle t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t.get(), H5T_VARIABLE);
  H5Tset_cset(t.get(), cset);
  Handle s(H5Screate(H5S_SCALAR), H5Sclose);
  Handle a = check_id(H5Acreate2(obj, name.c_str(), t.get(), s.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose, "<output>",
                      "cannot create attribute '" + name + "'");
  const char* p = value.c_str();
  if (H5Awrite(a.get(), t.get(), &p) < 0) fail("<output>", "cannot write attribute '" + name + "'");
}

void write_str_list_attr(hid_t obj, const std::string& name, const std::vector<std::string>& values) {
  if (values.empty()) {  // as Keras: np.asarray([]) -> float64 (0,)
    hsize_t zero = 0;
    Handle s(H5Screate_simple(1, &zero, nullptr), H5Sclose);
    Handle a = check_id(H5Acreate2(obj, name.c_str(), H5T_IEEE_F64LE, s.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
                        "<output>", "cannot create attribute '" + name + "'");
    double dummy = 0;
    H5Awrite(a.get(), H5T_NATIVE_DOUBLE, &dummy);
    return;
  }
  Handle t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t.get(), H5T_VARIABLE);
  H5Tset_cset(t.get(), H5T_CSET_ASCII);
  hsize_t n = values.size();
  Handle s(H5Screate_simple(1, &n, nullptr), H5Sclose);
  Handle a = check_id(H5Acreate2(obj, name.c_str(), t.get(), s.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose, "<output>",
                      "cannot create attribute '" + name + "'");
  std::vector<const char*> ptrs;
  for (const auto& v : values) ptrs.push_back(v.c_str());
  if (H5Awrite(a.get(), t.get(), ptrs.data()) < 0) fail("<output>", "cannot write attribute '" + name + "'");
}

/** Keras' save_attributes_to_hdf5_group: split a long list into name0, name1, ... (64512-byte header limit). */
void write_keras_list_attr(hid_t obj, const std::string& name, const std::vector<std::string>& values) {
  size_t total = 0;
  for (const auto& v : values) total += v.size() + 1;
  const size_t limit = 64512;
  if (total <= limit) return write_str_list_attr(obj, name, values);
  size_t chunks = total / limit + 1;
  while (true) {
    size_t per = (values.size() + chunks - 1) / chunks;
    bool fits = true;
    for (size_t c = 0; c * per < values.size() && fits; ++c) {
      size_t sz = 0;
      for (size_t i = c * per; i < std::min(values.size(), (c + 1) * per); ++i) sz += values[i].size() + 1;
      fits = sz <= limit;
    }
    if (fits || per <= 1) {
      for (size_t c = 0; c * per < values.size(); ++c)
        write_str_list_attr(obj, name + std::to_string(c),
                            std::vector<std::string>(values.begin() + long(c * per),
                                                     values.begin() + long(std::min(values.size(), (c + 1) * per))));
      return;
    }
    ++chunks;
  }
}

/** One tensor straight to disk: a packed copy only when it is not contiguous (or bool, normalised
 *  to 0/1); a mapped input tensor's pages are dropped once written, as Writer::write_tensor does. */
void write_dataset(OutFile& f, const std::string& path, const Tensor& t0) {
  Tensor t = t0.contiguous();
  Handle ftype = file_type(t.dtype());
  Handle space;
  if (t.dim() == 0) {
    space = Handle(H5Screate(H5S_SCALAR), H5Sclose);
  } else {
    std::vector<hsize_t> dims(t.shape().begin(), t.shape().end());
    space = Handle(H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose);
  }
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  H5Pset_obj_track_times(dcpl.get(), 0);
  Handle d = check_id(H5Dcreate2(f.file(), path.c_str(), ftype.get(), space.get(), f.lcpl(), dcpl.get(), H5P_DEFAULT),
                      H5Dclose, f.label(), "cannot create dataset '" + path + "'");
  if (t.numel() > 0) {
    std::vector<uint8_t> bools;
    const void* data = t.data();
    if (t.dtype() == DType::Bool) {  // normalise to 0/1
      bools.resize(size_t(t.numel()));
      for (size_t i = 0; i < bools.size(); ++i) bools[i] = t.data()[i] != 0;
      data = bools.data();
    }
    // Same memory and file type: no conversion buffer; a contiguous dataset this large bypasses
    // HDF5's sieve buffer and goes to pwrite from the tensor's own bytes.
    if (H5Dwrite(d.get(), ftype.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
      fail(f.label(), "cannot write dataset '" + path + "'");
    release_written_pages(t);
    f.wrote(t.nbytes());
    report_write_progress(t.nbytes());
  }
  auto cls = H5Tget_class(ftype.get());
  if (cls == H5T_OPAQUE) write_str_attr(d.get(), "dtype", std::string(dtype_name(t.dtype())), H5T_CSET_UTF8);
}

Handle ensure_group(OutFile& f, const std::string& path) {
  if (path.empty()) return Handle(H5Gopen2(f.file(), "/", H5P_DEFAULT), H5Gclose);
  if (has_link(f.file(), path.c_str())) {
    Handle g(H5Gopen2(f.file(), path.c_str(), H5P_DEFAULT), H5Gclose);
    if (!g.ok()) fail(f.label(), "'" + path + "' is a dataset, not a group");
    return g;
  }
  Handle gcpl(H5Pcreate(H5P_GROUP_CREATE), H5Pclose);
  H5Pset_obj_track_times(gcpl.get(), 0);
  return check_id(H5Gcreate2(f.file(), path.c_str(), f.lcpl(), gcpl.get(), H5P_DEFAULT), H5Gclose, f.label(),
                  "cannot create group '" + path + "'");
}

/** Keras attributes that hold lists of names: an empty one is written as Keras writes it, a float64 (0,) array. */
bool is_keras_name_list(const std::string& attr) { return attr == "layer_names" || attr == "weight_names"; }

/** True when no part of path is a dataset (so the group can be created). */
bool can_create_group(OutFile& f, const std::string& path) {
  for (size_t i = path.find('/');; i = path.find('/', i + 1)) {
    std::string prefix = path.substr(0, i);
    if (has_link(f.file(), prefix.c_str()) && !is_group(f.file(), prefix.c_str())) return false;
    if (i == std::string::npos) return true;
  }
}

/** Metadata as attributes: "<object path>/<name>" on that object (the path encoded by the naming
 *  rule; a missing group is created, as for a weightless Keras layer's weight_names), else on the root.
 *  A non-empty `under` (an existing group) stands for the root: every object path is below it. */
void write_metadata(OutFile& f, const Metadata& md, const std::set<std::string>& skip, bool ascii_when_possible,
                    const std::string& under = "") {
  for (const auto& [k, v] : md) {
    if (skip.count(k) || k.empty()) continue;
    std::string obj = under, name = k;
    auto slash = k.rfind('/');
    if (slash != std::string::npos && slash > 0 && slash + 1 < k.size()) {
      std::string path = naming::encode_name(k.substr(0, slash), naming::Target::Hdf5);
      if (!under.empty()) path = under + "/" + path;
      if (has_link(f.file(), path.c_str()) || can_create_group(f, path)) {
        if (!has_link(f.file(), path.c_str())) ensure_group(f, path);
        obj = path;
        name = k.substr(slash + 1);
      }
    }
    Handle o = check_id(H5Oopen(f.file(), obj.empty() ? "/" : obj.c_str(), H5P_DEFAULT), H5Oclose, f.label(),
                        "cannot open '" + obj + "'");
    if (has_attr(o.get(), name.c_str())) continue;
    // Lists that came from string-array attributes go back as string arrays.
    auto list = (v.size() > 1 && v.front() == '[') ? h5detail::json_string_list(v) : std::nullopt;
    if (list && (!list->empty() || is_keras_name_list(name)))
      write_str_list_attr(o.get(), name, *list);
    else {
      bool ascii = ascii_when_possible && std::all_of(v.begin(), v.end(), [](char c) { return uint8_t(c) < 0x80; });
      write_str_attr(o.get(), name, v, ascii ? H5T_CSET_ASCII : H5T_CSET_UTF8);
    }
  }
}

/** A checkpoint read from a Keras 2 file (layer_names kept in its metadata). */
bool has_keras2_structure(const Metadata& md) {
  return md.count("layer_names") || md.count("layer_names0") || md.count("model_weights/layer_names") ||
         md.count("model_weights/layer_names0");
}

/** Every tensor as a dataset at its stored path (formats/naming.h); '/' makes groups. */
void save_plain(const StateDict& sd, const Metadata& md, OutFile& f) {
  std::vector<std::string> paths = naming::stored_names(sd, naming::Target::Hdf5);
  std::set<std::string> groups;
  for (const auto& p : paths)
    for (size_t i = p.find('/'); i != std::string::npos; i = p.find('/', i + 1)) groups.insert(p.substr(0, i));
  for (size_t i = 0; i < sd.size(); ++i)
    TB_CHECK(!groups.count(paths[i]), UnsupportedError, "[h5] tensor '", sd.entries()[i].first,
             "' is also a group of other tensors ('", sd.entries()[i].first, "/...'); HDF5 cannot hold both");
  for (size_t i = 0; i < sd.size(); ++i) write_dataset(f, paths[i], sd.entries()[i].second);
  write_metadata(f, md, {}, has_keras2_structure(md));  // Keras writes its string attributes as ASCII
}

/** The side group (kKerasSourceGroup, formats/detail/h5_internal.h) of a Keras file written from
 *  another layout: each layer variable's stored path with the tensor name it had, every tensor no
 *  layer holds, and the source's metadata. Keras never looks there; reading the file back restores
 *  the source's names, tensors and metadata, so A -> Keras layout -> A is exact. */
void write_source_group(OutFile& f, const Checkpoint& ckpt, const std::vector<std::string>& paths,
                        const std::vector<std::string>& names) {
  std::set<std::string> placed;
  for (const auto& n : names) placed.insert(n);
  const std::string side = kKerasSourceGroup;
  Handle g = ensure_group(f, side);
  write_keras_list_attr(g.get(), "paths", paths);
  write_keras_list_attr(g.get(), "names", names);
  ensure_group(f, side + "/tensors");
  for (const auto& [key, t] : ckpt.state_dict())
    if (!placed.count(key)) write_dataset(f, side + "/tensors/" + naming::encode_name(key, naming::Target::Hdf5), t);
  ensure_group(f, side + "/metadata");
  write_metadata(f, ckpt.metadata, {}, has_keras2_structure(ckpt.metadata), side + "/metadata");
}

void save_keras2(const Checkpoint& ckpt, OutFile& f, const H5WriteOptions& opts) {
  auto layers = keras_layers(ckpt);
  if (has_keras2_structure(ckpt.metadata)) {
    // Read from a Keras 2 file (save_weights or model.save): its groups, attributes (model_config,
    // weightless layers' empty weight_names) and optimizer state go back as they were.
    save_plain(ckpt.state_dict(), ckpt.metadata, f);
    return;
  }
  bool from_keras3 = false;
  for (const auto& l : layers)
    if (l.name.rfind("layers/", 0) == 0) from_keras3 = true;
  std::vector<std::string> layer_names;
  std::map<std::string, std::vector<std::pair<std::string, Tensor>>> groups;
  std::vector<std::string> paths, names;  // stored dataset path and tensor name of each layer weight
  for (const auto& l : layers) {
    std::string lname = l.name;
    if (from_keras3) lname = lname.substr(lname.rfind('/') + 1);
    const std::string raw_lname = lname;
    lname = naming::encode_component(lname, naming::Target::Hdf5);  // one group per layer
    TB_CHECK(!groups.count(lname), KeyError, "[h5] keras layer name '", raw_lname, "' is duplicated");
    layer_names.push_back(lname);
    auto& g = groups[lname];
    for (size_t i = 0; i < l.weights.size(); ++i) {
      const auto& w = l.weights[i];
      std::string wname = w.name;
      if (from_keras3)
        wname = raw_lname + "/" + h5detail::keras3_var_name(l.name, i) + ":0";
      else if (wname.find('/') == std::string::npos) {
        if (wname.find(':') == std::string::npos) wname += ":0";
        wname = raw_lname + "/" + wname;
      }
      g.push_back({naming::encode_name(wname, naming::Target::Hdf5), w.tensor});
      paths.push_back(lname + "/" + g.back().first);
      names.push_back(w.key);
    }
  }
  Handle root = ensure_group(f, "");
  write_keras_list_attr(root.get(), "layer_names", layer_names);
  write_str_attr(root.get(), "backend", opts.backend, H5T_CSET_ASCII);
  write_str_attr(root.get(), "keras_version", opts.keras_version, H5T_CSET_ASCII);
  // Groups in sorted(name) order, as Keras creates them.
  for (const auto& [lname, weights] : groups) {
    Handle g = ensure_group(f, lname);
    std::vector<std::string> wn;
    for (const auto& [wname, t] : weights) wn.push_back(wname);
    write_keras_list_attr(g.get(), "weight_names", wn);
    for (const auto& [wname, t] : weights) write_dataset(f, lname + "/" + wname, t);
  }
  if (!groups.count("top_level_model_weights")) {
    Handle g = ensure_group(f, "top_level_model_weights");
    write_str_list_attr(g.get(), "weight_names", {});
  }
  write_source_group(f, ckpt, paths, names);
}

void save_keras3(const Checkpoint& ckpt, OutFile& f) {
  StateDict sd = ckpt.state_dict();
  bool native = !sd.empty();
  for (const auto& [key, t] : sd) {
    auto pos = key.rfind("vars/");
    bool ok = pos != std::string::npos && (pos == 0 || key[pos - 1] == '/') && h5detail::is_uint(key.substr(pos + 5));
    native = native && ok;
  }
  if (native) {  // already Keras 3 paths: write them as they are (groups first, so their attributes find them)
    ensure_group(f, "layers");
    ensure_group(f, "vars");
    for (const auto& [k, v] : ckpt.metadata) {  // empty vars groups of weightless layers
      auto pos = k.rfind("/vars/name");
      if (pos != std::string::npos && pos + 10 == k.size() && k.rfind("layers/", 0) == 0)
        ensure_group(f, k.substr(0, pos + 5));
    }
    save_plain(sd, ckpt.metadata, f);
    return;
  }
  auto layers = keras_layers(ckpt);
  ensure_group(f, "layers");
  std::map<std::string, int> counters;
  std::vector<std::string> paths, names;  // each layer variable's Keras 3 path and the tensor's own name
  for (const auto& l : layers) {
    if (l.weights.empty()) continue;
    std::string cls = h5detail::guess_keras_class(l);
    TB_CHECK(!cls.empty(), UnsupportedError, "[h5] cannot tell which Keras layer class layer '", l.name,
             "' is (weights: ", l.weights.front().name, ", ...); Keras 3 names objects by class");
    int n = counters[cls]++;
    std::string obj = "layers/" + (n == 0 ? cls : cls + "_" + std::to_string(n));
    Handle vars = ensure_group(f, obj + "/vars");
    write_str_attr(vars.get(), "name", l.name, H5T_CSET_UTF8);
    for (size_t i = 0; i < l.weights.size(); ++i) {
      paths.push_back(obj + "/vars/" + std::to_string(i));
      names.push_back(l.weights[i].key);
      write_dataset(f, paths.back(), l.weights[i].tensor);
    }
  }
  ensure_group(f, "vars");
  write_source_group(f, ckpt, paths, names);
}

void save_impl(const Checkpoint& ckpt, const std::filesystem::path& path, const H5WriteOptions& opts,
               const std::string& layout) {
  TB_ASSERT(layout == "plain" || layout == "keras" || layout == "keras3", "[h5] layout '", layout, "'");
  // HDF5 writes the writer's temporary file; a failure (or a kill) before commit() leaves no target,
  // and the writer removes the temporary file when it is destroyed uncommitted.
  AtomicFileWriter out(path, opts.overwrite);
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  h5_init();
  try {
    OutFile f(out);  // closed (by its destructor) before out removes the file on an error
    if (layout == "plain") {
      save_plain(ckpt.state_dict(), ckpt.metadata, f);
    } else if (layout == "keras") {
      save_keras2(ckpt, f, opts);
    } else {
      save_keras3(ckpt, f);
    }
    f.close();
  } catch (Error& e) {
    e.add_context("while writing '" + path.string() + "' (layout " + layout + ")");
    throw;
  }
  out.commit();
}

}  // namespace h5detail

std::vector<uint8_t> keras3_weights_bytes(const Checkpoint& ckpt) {
  using namespace h5detail;
  // An AtomicFileWriter that is never committed: HDF5 writes its temporary file, which is read back
  // and then removed by the writer's destructor (and by the signal handler if the process is killed).
  AtomicFileWriter out(std::filesystem::temp_directory_path() / "tensorbridge-keras-weights.h5", true);
  {
    std::lock_guard<std::recursive_mutex> lock(h5_mutex());
    h5_init();
    OutFile f(out);
    save_keras3(ckpt, f);
    f.close();
  }
  auto r = open_file(out.temp_path(), false);
  std::vector<uint8_t> bytes(size_t(r->size()));
  if (!bytes.empty()) r->read_at(0, bytes.data(), bytes.size());
  return bytes;
}

}  // namespace tb
