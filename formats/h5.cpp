// HDF5 / Keras .h5 adapters ("h5", "keras-h5", "keras3-h5") through the HDF5 C library.
// Layout, naming and safety rules: formats/h5.h.
#include "tensor/checked.h"
#include "formats/h5.h"

#include <hdf5.h>

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

namespace tb {

namespace {

constexpr int kMaxDepth = 64;
constexpr uint64_t kBombFloor = 64ull << 20;  // below this a declared size is never called a bomb
constexpr uint64_t kBombRatio = 1000;         // declared bytes per stored byte (tf-keras uses the same)
constexpr size_t kMaxAttrBytes = 64u << 20;

// ------------------------------------------------------------------------------------------------
// Library access: one mutex, automatic error printing off, RAII handles, error stack -> message.

std::recursive_mutex& h5_mutex() {
  static std::recursive_mutex m;
  return m;
}

void h5_init() {
  static bool done = [] {
    H5open();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
}

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

herr_t collect_error(unsigned n, const H5E_error2_t* e, void* data) {
  auto* out = static_cast<std::vector<std::string>*>(data);
  if (n < 4 && e && e->desc && *e->desc) out->push_back(e->desc);
  return 0;
}

/** HDF5's own messages (innermost first), then clears the stack. */
std::string error_stack() {
  std::vector<std::string> msgs;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_error, &msgs);
  H5Eclear2(H5E_DEFAULT);
  std::string s;
  for (const auto& m : msgs) s += (s.empty() ? "" : "; ") + m;
  return s.empty() ? "no HDF5 detail" : s;
}

[[noreturn]] void fail(const std::string& label, const std::string& what) {
  throw FormatError(str("[h5] '", label, "': ", what, " (HDF5: ", error_stack(), ")"));
}

Handle check_id(hid_t id, Handle::Closer c, const std::string& label, const std::string& what) {
  if (id < 0) fail(label, what);
  return Handle(id, c);
}

herr_t deny_elink(const char* parent, const char* obj, const char* tfile, const char*, unsigned*, hid_t, void*) {
  (void)parent;
  (void)obj;
  (void)tfile;
  return -1;  // never traverse into another file
}

/** Link access list that refuses external links, used for every open. */
hid_t safe_lapl() {
  static hid_t lapl = [] {
    hid_t p = H5Pcreate(H5P_LINK_ACCESS);
    H5Pset_elink_cb(p, deny_elink, nullptr);
    H5Pset_nlinks(p, 16);
    return p;
  }();
  return lapl;
}

// ------------------------------------------------------------------------------------------------
// Attributes

struct AttrValue {
  bool is_string = false;
  bool scalar = false;
  bool supported = true;
  std::vector<std::string> strings;
  std::vector<double> reals;
  std::vector<int64_t> ints;
  bool integer = false;

  std::string text() const {
    if (!supported) return "<unsupported attribute type>";
    nlohmann::json j;
    if (is_string) {
      if (scalar && strings.size() == 1) return strings[0];
      j = strings;
    } else if (integer) {
      if (scalar && ints.size() == 1) return std::to_string(ints[0]);
      j = ints;
    } else {
      if (scalar && reals.size() == 1) return nlohmann::json(reals[0]).dump();
      j = reals;
    }
    return j.dump();
  }
};

AttrValue read_attr(hid_t aid, const std::string& label, const std::string& what) {
  AttrValue v;
  Handle space = check_id(H5Aget_space(aid), H5Sclose, label, "cannot read the dataspace of attribute " + what);
  Handle type = check_id(H5Aget_type(aid), H5Tclose, label, "cannot read the type of attribute " + what);
  H5S_class_t sc = H5Sget_simple_extent_type(space.get());
  v.scalar = sc == H5S_SCALAR;
  hssize_t n = sc == H5S_NULL ? 0 : H5Sget_simple_extent_npoints(space.get());
  TB_CHECK(n >= 0, FormatError, "[h5] '", label, "': attribute ", what, " has an invalid dataspace");
  H5T_class_t cls = H5Tget_class(type.get());
  size_t tsize = H5Tget_size(type.get());
  if (cls == H5T_STRING) {
    v.is_string = true;
    if (n == 0) return v;
    if (H5Tis_variable_str(type.get()) > 0) {
      TB_CHECK(size_t(n) <= kMaxAttrBytes / sizeof(char*), FormatError, "[h5] '", label, "': attribute ", what,
               " declares ", n, " strings");
      Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
      H5Tset_size(mem.get(), H5T_VARIABLE);
      H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
      std::vector<char*> ptrs(size_t(n), nullptr);
      if (H5Aread(aid, mem.get(), ptrs.data()) < 0) fail(label, "cannot read attribute " + what);
      for (char* p : ptrs) v.strings.emplace_back(p ? p : "");
      H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, ptrs.data());
    } else {
      TB_CHECK(tsize > 0 && uint64_t(n) * tsize <= kMaxAttrBytes, FormatError, "[h5] '", label, "': attribute ", what,
               " declares ", n, " strings of ", tsize, " bytes");
      std::vector<char> buf(size_t(n) * tsize);
      if (H5Aread(aid, type.get(), buf.data()) < 0) fail(label, "cannot read attribute " + what);
      bool spacepad = H5Tget_strpad(type.get()) == H5T_STR_SPACEPAD;
      for (hssize_t i = 0; i < n; ++i) {
        std::string s(buf.data() + size_t(i) * tsize, tsize);
        if (auto z = s.find('\0'); z != std::string::npos) s.resize(z);
        if (spacepad)
          while (!s.empty() && s.back() == ' ') s.pop_back();
        v.strings.push_back(std::move(s));
      }
    }
    return v;
  }
  if (cls == H5T_INTEGER || cls == H5T_FLOAT) {
    TB_CHECK(uint64_t(n) * 8 <= kMaxAttrBytes, FormatError, "[h5] '", label, "': attribute ", what, " declares ", n,
             " elements");
    if (n == 0) return v;
    if (cls == H5T_INTEGER) {
      v.integer = true;
      v.ints.resize(size_t(n));
      if (H5Aread(aid, H5T_NATIVE_INT64, v.ints.data()) < 0) fail(label, "cannot read attribute " + what);
    } else {
      v.reals.resize(size_t(n));
      if (H5Aread(aid, H5T_NATIVE_DOUBLE, v.reals.data()) < 0) fail(label, "cannot read attribute " + what);
    }
    return v;
  }
  v.supported = false;
  return v;
}

struct AttrVisit {
  std::string label, path;
  Metadata* md;
  std::map<std::string, AttrValue>* keep;  // optional: raw values by name (for Keras structure)
};

herr_t attr_cb(hid_t loc, const char* name, const H5A_info_t*, void* data) {
  auto* v = static_cast<AttrVisit*>(data);
  std::string what = "'" + (v->path.empty() ? std::string() : v->path + "/") + name + "'";
  Handle a = check_id(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose, v->label, "cannot open attribute " + what);
  AttrValue val = read_attr(a.get(), v->label, what);
  (*v->md)[v->path.empty() ? std::string(name) : naming::decode_name(v->path, naming::Target::Hdf5) + "/" + name] =
      val.text();
  if (v->keep) (*v->keep)[name] = std::move(val);
  return 0;
}

// HDF5 1.10 (H5O__attr_iterate_real) lists attributes kept in the object header ("compact"
// storage) by first copying them all into a table (H5A__compact_build_table). The table grows by
// realloc and records its capacity, not its fill, as the count, so when one attribute message
// fails to decode, the cleanup (H5A__attr_release_table -> H5A__close) closes slots that were
// never written: a crash that depends on heap contents (docs/FUZZING.md, finding 3). H5Aexists
// walks the same messages and decodes each the same way (H5O__msg_iterate_real, H5O_LOAD_NATIVE)
// but with a plain callback and no table, so it fails cleanly on a bad one. The name it looks for
// is longer than any attribute message can hold (the stored name length is 16 bits), so it never
// matches and the walk visits every message. A decode that succeeded is kept with the object
// header, and the same bytes decode the same way again, so the table is safe once this passed.
// Dense storage (fractal heap + name B-tree) is listed in native order below, which walks the
// B-tree without a table (other orders build one, sized by the B-tree's record count, and sort it).
void check_attr_messages(hid_t obj, const std::string& label, const std::string& path) {
  static const std::string kNoSuchName(70000, '?');
  if (H5Aexists(obj, kNoSuchName.c_str()) < 0)
    fail(label, "cannot list the attributes of '/" + path + "' (a damaged attribute message)");
}

void read_attrs(hid_t obj, const std::string& label, const std::string& path, Metadata& md,
                std::map<std::string, AttrValue>* keep = nullptr) {
  AttrVisit v{label, path, &md, keep};
  check_attr_messages(obj, label, path);
  hsize_t idx = 0;
  // Exceptions must not cross HDF5's C frames: collect names first, then read. Native order (see
  // above); the values land in maps, so the order does not show.
  std::vector<std::string> names;
  auto name_cb = [](hid_t, const char* name, const H5A_info_t*, void* d) -> herr_t {
    static_cast<std::vector<std::string>*>(d)->push_back(name);
    return 0;
  };
  if (H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, name_cb, &names) < 0)
    fail(label, "cannot list the attributes of '/" + path + "'");
  std::sort(names.begin(), names.end());
  for (const auto& n : names) attr_cb(obj, n.c_str(), nullptr, &v);
}

// ------------------------------------------------------------------------------------------------
// Walking the tree

struct LinkEntry {
  std::string name;
  H5L_type_t type;
};

std::vector<LinkEntry> list_links(hid_t group, const std::string& label, const std::string& path) {
  std::vector<LinkEntry> out;
  auto cb = [](hid_t, const char* name, const H5L_info_t* info, void* d) -> herr_t {
    static_cast<std::vector<LinkEntry>*>(d)->push_back({name, info->type});
    return 0;
  };
  hsize_t idx = 0;
  if (H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, &idx, cb, &out) < 0)
    fail(label, "cannot list group '/" + path + "'");
  return out;
}

/** Object header address (identity for cycle detection; creation order in a freshly written file). */
std::optional<uint64_t> object_address(hid_t obj) {
#if H5_VERSION_GE(1, 12, 0)
  H5O_info2_t info;
  if (H5Oget_info3(obj, &info, H5O_INFO_BASIC) < 0) return std::nullopt;
  haddr_t a = 0;
  std::memcpy(&a, &info.token, sizeof(a));  // the native VOL keeps the address in the token
  return uint64_t(a);
#else
  H5O_info_t info;
  if (H5Oget_info2(obj, &info, H5O_INFO_BASIC) < 0) return std::nullopt;
  return uint64_t(info.addr);
#endif
}

struct Walk {
  std::string label;
  Metadata* md;
  std::vector<std::string> datasets;  // paths without leading '/', in walk order (by name)
  std::map<std::string, uint64_t> address;
  std::set<uint64_t> seen;  // object addresses (hard-link cycles)
};

void walk(hid_t group, const std::string& path, int depth, Walk& w) {
  TB_CHECK(depth <= kMaxDepth, FormatError, "[h5] '", w.label, "': groups nested deeper than ", kMaxDepth, " at '/",
           path, "'");
  for (const auto& link : list_links(group, w.label, path)) {
    std::string child = path.empty() ? link.name : path + "/" + link.name;
    if (link.type == H5L_TYPE_EXTERNAL)
      throw UnsafeError(str("[h5] '", w.label, "': '/", child,
                            "' is an external link into another file; refusing to follow it"));
    if (link.type == H5L_TYPE_SOFT) {
      // Soft links inside the file are aliases of objects reached through their hard path; one
      // that does not resolve inside the file is refused.
      htri_t ok = H5Oexists_by_name(group, link.name.c_str(), safe_lapl());
      if (ok <= 0) {
        H5Eclear2(H5E_DEFAULT);
        throw UnsafeError(str("[h5] '", w.label, "': soft link '/", child, "' does not resolve inside the file"));
      }
      continue;
    }
    if (link.type != H5L_TYPE_HARD)
      throw UnsafeError(str("[h5] '", w.label, "': '/", child, "' is a user-defined link; refusing to follow it"));
    Handle obj = check_id(H5Oopen(group, link.name.c_str(), safe_lapl()), H5Oclose, w.label,
                          "cannot open '/" + child + "'");
    auto addr = object_address(obj.get());
    H5Eclear2(H5E_DEFAULT);
    if (addr && !w.seen.insert(*addr).second) continue;  // second hard link to the same object
    H5I_type_t t = H5Iget_type(obj.get());
    read_attrs(obj.get(), w.label, child, *w.md);
    if (t == H5I_GROUP) {
      walk(obj.get(), child, depth + 1, w);
    } else if (t == H5I_DATASET) {
      w.datasets.push_back(child);
      w.address[child] = addr.value_or(UINT64_MAX);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Datasets -> tensors

struct DTypeRead {
  DType dtype;
  bool byteswap = false;
  hid_t mem = -1;  // memory type to read with (owned by the caller's Handle)
};

bool float_fields(hid_t t, size_t spos, size_t epos, size_t esize, size_t mpos, size_t msize) {
  size_t a, b, c, d, e;
  if (H5Tget_fields(t, &a, &b, &c, &d, &e) < 0) return false;
  return a == spos && b == epos && c == esize && d == mpos && e == msize && H5Tget_offset(t) == 0;
}

std::optional<DType> special_dtype(hid_t dset, const std::string& label, const std::string& path) {
  if (H5Aexists(dset, "dtype") <= 0) {
    H5Eclear2(H5E_DEFAULT);
    return std::nullopt;
  }
  Handle a = check_id(H5Aopen(dset, "dtype", H5P_DEFAULT), H5Aclose, label, "cannot open attribute dtype");
  AttrValue v = read_attr(a.get(), label, "'" + path + "/dtype'");
  if (!v.is_string || v.strings.size() != 1) return std::nullopt;
  const std::string& n = v.strings[0];
  if (n == "bfloat16") return DType::BF16;
  if (n == "float8_e4m3fn") return DType::F8E4M3FN;
  if (n == "float8_e5m2") return DType::F8E5M2;
  return std::nullopt;
}

/** Maps a dataset's file type to a dtype and the memory type that reads it without conversion. */
DTypeRead map_type(hid_t ftype, std::optional<DType> special, const std::string& label, const std::string& path,
                   Handle& mem_owner) {
  H5T_class_t cls = H5Tget_class(ftype);
  size_t size = H5Tget_size(ftype);
  auto unsupported = [&](const std::string& why) -> UnsupportedError {
    return UnsupportedError(str("[h5] '", label, "': dataset '", path, "' has ", why));
  };
  DTypeRead r;
  if (special) {
    TB_CHECK(size == dtype_size(*special), FormatError, "[h5] '", label, "': dataset '", path, "' says dtype ",
             dtype_name(*special), " but its elements are ", size, " bytes");
    r.dtype = *special;
    mem_owner = Handle(H5Tcopy(ftype), H5Tclose);
    r.mem = mem_owner.get();
    if (cls == H5T_INTEGER || cls == H5T_FLOAT) r.byteswap = H5Tget_order(ftype) == H5T_ORDER_BE;
    return r;
  }
  if (cls == H5T_INTEGER || cls == H5T_FLOAT) {
    if (H5Tget_precision(ftype) != size * 8 || H5Tget_offset(ftype) != 0)
      throw unsupported(str("a ", H5Tget_precision(ftype), "-bit ", cls == H5T_FLOAT ? "float" : "integer", " type in ",
                            size, " bytes (padded numeric types are not supported)"));
    r.byteswap = H5Tget_order(ftype) == H5T_ORDER_BE;
    if (cls == H5T_INTEGER) {
      bool sign = H5Tget_sign(ftype) == H5T_SGN_2;
      switch (size) {
        case 1: r.dtype = sign ? DType::I8 : DType::U8; break;
        case 2: r.dtype = sign ? DType::I16 : DType::U16; break;
        case 4: r.dtype = sign ? DType::I32 : DType::U32; break;
        case 8: r.dtype = sign ? DType::I64 : DType::U64; break;
        default: throw unsupported(str("a ", size, "-byte integer type"));
      }
    } else {
      if (size == 4 && float_fields(ftype, 31, 23, 8, 0, 23)) r.dtype = DType::F32;
      else if (size == 8 && float_fields(ftype, 63, 52, 11, 0, 52)) r.dtype = DType::F64;
      else if (size == 2 && float_fields(ftype, 15, 10, 5, 0, 10)) r.dtype = DType::F16;
      else if (size == 2 && float_fields(ftype, 15, 7, 8, 0, 7)) r.dtype = DType::BF16;
      else throw unsupported(str("a non-IEEE ", size, "-byte float type"));
    }
    mem_owner = Handle(H5Tcopy(ftype), H5Tclose);
    r.mem = mem_owner.get();
    return r;
  }
  if (cls == H5T_ENUM) {
    // h5py bool: enum of int8 {FALSE = 0, TRUE = 1}.
    int nmembers = H5Tget_nmembers(ftype);
    if (size == 1 && nmembers == 2) {
      r.dtype = DType::Bool;
      mem_owner = Handle(H5Tcopy(ftype), H5Tclose);
      r.mem = mem_owner.get();
      return r;
    }
    throw unsupported(str("an enum type with ", nmembers, " members of ", size, " bytes"));
  }
  if (cls == H5T_COMPOUND) {
    // h5py complex: compound {r, i} of two equal IEEE floats.
    if (H5Tget_nmembers(ftype) == 2 && (size == 8 || size == 16)) {
      Handle m0(H5Tget_member_type(ftype, 0), H5Tclose), m1(H5Tget_member_type(ftype, 1), H5Tclose);
      size_t half = size / 2;
      bool ok = H5Tget_class(m0.get()) == H5T_FLOAT && H5Tget_class(m1.get()) == H5T_FLOAT &&
                H5Tget_size(m0.get()) == half && H5Tget_size(m1.get()) == half && H5Tget_member_offset(ftype, 0) == 0 &&
                H5Tget_member_offset(ftype, 1) == half &&
                H5Tget_order(m0.get()) == H5Tget_order(m1.get());
      if (ok) {
        r.dtype = size == 8 ? DType::C64 : DType::C128;
        r.byteswap = H5Tget_order(m0.get()) == H5T_ORDER_BE;
        mem_owner = Handle(H5Tcopy(ftype), H5Tclose);
        r.mem = mem_owner.get();
        return r;
      }
    }
    throw unsupported("a compound type that is not a complex number {r, i}");
  }
  if (cls == H5T_OPAQUE) throw unsupported(str("an opaque ", size, "-byte type without a dtype attribute"));
  throw unsupported(str("HDF5 type class ", int(cls), " (not a numeric array)"));
}

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

/** Charges the bytes a dataset declares (elements x file type size) to the load's budget. Datasets
 *  this cannot size (strings, broken headers) are left to read_dataset, which reports them. */
void charge_dataset(hid_t file, const std::string& path, const FileCtx& ctx) {
  ctx.budget->tick("sizing datasets");
  hssize_t n = 0;
  size_t isz = 0;
  uint64_t stored = 0;
  Handle d(H5Dopen2(file, ("/" + path).c_str(), H5P_DEFAULT), H5Dclose);
  if (d.ok()) {
    Handle space(H5Dget_space(d.get()), H5Sclose), type(H5Dget_type(d.get()), H5Tclose);
    if (space.ok() && type.ok() && H5Tget_class(type.get()) != H5T_STRING &&
        H5Sget_simple_extent_type(space.get()) == H5S_SIMPLE) {
      n = H5Sget_simple_extent_npoints(space.get());
      isz = H5Tget_size(type.get());
      stored = H5Dget_storage_size(d.get());
    }
  }
  H5Eclear2(H5E_DEFAULT);
  if (n <= 0 || isz == 0) return;
  ctx.budget->charge_bytes_lazy(LoadBudget::sat_mul(uint64_t(n), isz), [&] {
    return str("dataset '", path, "' (", n, " elements of ", isz, " bytes, ", stored, " bytes stored in the file)");
  });
}

/** Reads one dataset; returns an undefined tensor for string datasets (kept in metadata instead). */
Tensor read_dataset(hid_t file, const std::string& path, const FileCtx& ctx, Metadata& md) {
  const std::string& label = ctx.label;
  Handle d = check_id(H5Dopen2(file, ("/" + path).c_str(), H5P_DEFAULT), H5Dclose, label,
                      "cannot open dataset '" + path + "'");
  Handle dcpl = check_id(H5Dget_create_plist(d.get()), H5Pclose, label, "cannot read the layout of '" + path + "'");
  H5D_layout_t layout = H5Pget_layout(dcpl.get());
  if (layout == H5D_VIRTUAL)
    throw UnsafeError(str("[h5] '", label, "': dataset '", path,
                          "' is a virtual dataset (it maps data from other files); refusing to read it"));
  if (H5Pget_external_count(dcpl.get()) > 0)
    throw UnsafeError(str("[h5] '", label, "': dataset '", path,
                          "' keeps its data in external raw files; refusing to read it"));

  Handle space = check_id(H5Dget_space(d.get()), H5Sclose, label, "cannot read the shape of '" + path + "'");
  Shape shape;
  H5S_class_t sc = H5Sget_simple_extent_type(space.get());
  if (sc == H5S_NULL) {
    shape = {0};
  } else if (sc == H5S_SIMPLE) {
    int nd = H5Sget_simple_extent_ndims(space.get());
    TB_CHECK(nd >= 0 && nd <= 32, FormatError, "[h5] '", label, "': dataset '", path, "' has ", nd, " dimensions");
    std::vector<hsize_t> dims(static_cast<size_t>(nd));
    H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
    for (hsize_t x : dims) {
      TB_CHECK(x <= hsize_t(INT64_MAX), FormatError, "[h5] '", label, "': dataset '", path, "' has dimension ", x);
      shape.push_back(int64_t(x));
    }
  }

  Handle ftype = check_id(H5Dget_type(d.get()), H5Tclose, label, "cannot read the type of '" + path + "'");
  if (H5Tget_class(ftype.get()) == H5T_STRING) {
    // Strings are metadata, not tensors (scalar ones only; arrays noted).
    if (sc == H5S_SCALAR) {
      Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
      if (H5Tis_variable_str(ftype.get()) > 0) {
        H5Tset_size(mem.get(), H5T_VARIABLE);
        char* p = nullptr;
        if (H5Dread(d.get(), mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &p) < 0) fail(label, "cannot read '" + path + "'");
        md[path] = p ? p : "";
        H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, &p);
      } else {
        size_t n = H5Tget_size(ftype.get());
        TB_CHECK(n <= kMaxAttrBytes, FormatError, "[h5] '", label, "': string dataset '", path, "' of ", n, " bytes");
        std::string s(n, '\0');
        if (H5Dread(d.get(), ftype.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, s.data()) < 0)
          fail(label, "cannot read '" + path + "'");
        if (auto z = s.find('\0'); z != std::string::npos) s.resize(z);
        md[path] = s;
      }
    } else {
      md[path] = "<string array dataset, not read>";
    }
    return {};
  }

  Handle mem;
  DTypeRead dt = map_type(ftype.get(), special_dtype(d.get(), label, path), label, path, mem);
  const std::string what = str("[h5] '", label, "': dataset '", path, "'");
  const int64_t numel = checked_numel(shape, what);
  const uint64_t nbytes = checked_nbytes(numel, dtype_size(dt.dtype), what);

  // Size checks before any allocation.
  uint64_t stored = H5Dget_storage_size(d.get());
  if (layout == H5D_CONTIGUOUS) {
    haddr_t off = H5Dget_offset(d.get());
    H5Eclear2(H5E_DEFAULT);
    if (off != HADDR_UNDEF) {
      TB_CHECK(nbytes <= ctx.file_size && off <= ctx.file_size - nbytes, FormatError, "[h5] '", label, "': dataset '",
               path, "' (", dtype_name(dt.dtype), " ", shape_str(shape), ") needs ", nbytes, " bytes at offset ", off,
               " but the file has only ", ctx.file_size, " bytes (truncated or corrupt)");
    } else {
      TB_CHECK(nbytes <= kBombFloor, UnsafeError, "[h5] '", label, "': dataset '", path, "' declares ", nbytes,
               " bytes (", shape_str(shape), ") but stores none; refusing to allocate it");
    }
    // The bytes of a contiguous dataset are one checked range of the file: reading them parses no
    // more metadata, so the probe stops here.
    if (ctx.probe) return {};
    // Zero copy: raw little-endian bytes at a known file offset.
    bool raw = !dt.byteswap && dt.dtype != DType::Bool;
    if (raw && ctx.mappable && off != HADDR_UNDEF && numel > 0 && stored == nbytes) {
      if (ctx.mmap && uint64_t(off) % dtype_size(dt.dtype) == 0) {
        auto storage = ctx.reader->map(off, size_t(nbytes));
        if (storage) return Tensor(storage, dt.dtype, shape, contiguous_strides(shape), 0);
      }
      // Owned: the bytes are the tensor, so one read straight into uninitialised storage, instead
      // of a zero-filled tensor that H5Dread then fills through its type-conversion path.
      auto storage = Storage::allocate(size_t(nbytes), false);
      ctx.reader->read_at(off, storage->data(), size_t(nbytes));
      return Tensor(storage, dt.dtype, shape, contiguous_strides(shape), 0);
    }
  } else {
    TB_CHECK(nbytes <= kBombFloor || nbytes / kBombRatio <= std::max<uint64_t>(stored, 1), UnsafeError, "[h5] '",
             label, "': dataset '", path, "' declares ", nbytes, " bytes (", dtype_name(dt.dtype), " ",
             shape_str(shape), ") but stores only ", stored, " bytes; refusing a possible decompression bomb");
    TB_CHECK(nbytes <= kBombFloor || nbytes / kBombRatio <= ctx.file_size, UnsafeError, "[h5] '", label,
             "': dataset '", path, "' declares ", nbytes, " bytes, far beyond the ", ctx.file_size, "-byte file");
  }

  if (ctx.probe && nbytes > kProbeMaxTensor) return {};  // (the probe's memory stays bounded)
  Tensor t = Tensor::zeros(dt.dtype, shape);
  if (numel > 0) {
    if (H5Dread(d.get(), dt.mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data()) < 0)
      fail(label, str("cannot read dataset '", path, "' (", dtype_name(dt.dtype), " ", shape_str(shape), ")"));
    if (dt.byteswap) byteswap_elements(t.data(), dt.dtype, size_t(numel));
    if (dt.dtype == DType::Bool)
      for (int64_t i = 0; i < numel; ++i) t.data()[i] = t.data()[i] != 0;
  }
  return t;
}

// ------------------------------------------------------------------------------------------------
// Loading

uint64_t signature_offset(const Reader& r) {
  static const uint8_t sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  uint64_t size = r.size();
  for (uint64_t off = 0; off + 8 <= size; off = off == 0 ? 512 : off * 2) {
    uint8_t b[8];
    r.read_at(off, b, 8);
    if (std::memcmp(b, sig, 8) == 0) return off;
    if (off > (1ull << 40)) break;
  }
  return UINT64_MAX;
}

// HDF5 1.10 (H5HG__cache_heap_deserialize) walks a global heap collection ("GCOL": strings of
// variable length, virtual dataset mappings) object by object and loops forever on an object of
// index 0 and size 0, which makes no progress. Every collection in the file is walked here first,
// the same way, and a collection whose walk would stall or leave it is refused.
void check_global_heaps(const Reader& r, uint64_t sig, const std::string& label) {
  const uint64_t size = r.size();
  if (sig + 16 > size) return;
  uint8_t sb[16];
  r.read_at(sig, sb, 16);
  const unsigned lengths = sb[8] <= 1 ? sb[14] : sb[10];  // superblock v0/1 vs v2/3 "size of lengths"
  if (lengths != 2 && lengths != 4 && lengths != 8) return;  // HDF5 itself refuses such a file
  auto le = [](const uint8_t* p, unsigned n) {
    uint64_t v = 0;
    for (unsigned i = 0; i < n; ++i) v |= uint64_t(p[i]) << (8 * i);
    return v;
  };
  const uint64_t header = 8 + lengths, obj_header = 8 + lengths;
  auto walk = [&](uint64_t pos) {
    if (pos + header > size) return;
    uint8_t h[16];
    r.read_at(pos, h, header);
    if (h[4] != 1) return;  // not a version-1 collection: HDF5 refuses it
    const uint64_t csize = std::min(le(h + 8, lengths), size - pos);
    for (uint64_t p = header; p < csize && p + obj_header <= csize;) {
      uint8_t o[16];
      r.read_at(pos + p, o, obj_header);
      uint64_t idx = le(o, 2), osize = le(o + 8, lengths);
      uint64_t need = idx > 0 ? (osize > csize ? UINT64_MAX : obj_header + (osize + 7) / 8 * 8) : osize;
      TB_CHECK(need > 0 && need <= csize - p, FormatError, "[h5] '", label, "': global heap collection at offset ", pos,
               " has object ", idx, " of size ", osize, " at +", p, ", which ",
               need == 0 ? "makes no progress (HDF5 would loop forever)" : "runs past the collection");
      p += need;
    }
  };
  // Every "GCOL" in [p, p + n): memchr for 'G' (vectorised) then a 4-byte compare is ~3x faster
  // than glibc's memmem for a 4-byte needle (31 against 85 ms on a 224 MiB file), and the scan
  // reads every byte of the file.
  auto each_gcol = [](const uint8_t* p, uint64_t n, auto&& found) {
    const uint8_t* end = p + n;
    while (end - p >= 4 && (p = static_cast<const uint8_t*>(std::memchr(p, 'G', size_t(end - p) - 3)))) {
      if (std::memcmp(p, "GCOL", 4) == 0) found(p);
      ++p;
    }
  };
  if (const uint8_t* all = r.contiguous_bytes()) {
    each_gcol(all, size, [&](const uint8_t* p) { walk(uint64_t(p - all)); });
    return;
  }
  std::vector<uint8_t> chunk;
  for (uint64_t off = 0; off + 4 <= size; off += (1u << 20)) {
    uint64_t n = std::min<uint64_t>(size - off, (1u << 20) + 3);
    chunk.resize(size_t(n));
    r.read_at(off, chunk.data(), size_t(n));
    each_gcol(chunk.data(), n, [&](const uint8_t* p) { walk(off + uint64_t(p - chunk.data())); });
  }
}

bool has_attr(hid_t obj, const char* name) {
  htri_t e = H5Aexists(obj, name);
  H5Eclear2(H5E_DEFAULT);
  return e > 0;
}

bool has_link(hid_t loc, const char* name) {
  htri_t e = H5Lexists(loc, name, H5P_DEFAULT);
  H5Eclear2(H5E_DEFAULT);
  return e > 0;
}

bool is_group(hid_t loc, const char* name) {
  if (!has_link(loc, name)) return false;
  H5O_info_t info;
#if H5_VERSION_GE(1, 12, 0)
  herr_t rc = H5Oget_info_by_name3(loc, name, &info, H5O_INFO_BASIC, safe_lapl());
#else
  herr_t rc = H5Oget_info_by_name2(loc, name, &info, H5O_INFO_BASIC, safe_lapl());
#endif
  H5Eclear2(H5E_DEFAULT);
  return rc >= 0 && info.type == H5O_TYPE_GROUP;
}

std::vector<std::string> names_from(const Metadata& md, const std::string& key) {
  return h5detail::split_attr(md, key).value_or(std::vector<std::string>{});
}

Checkpoint load_hdf5(const Source& src, FileCtx& ctx, uint64_t sig);

// HDF5 1.10.8 trusts much of what it reads: H5HG_read indexes a global heap collection with the
// object index of a variable-length string without checking it, H5T__conv_vlen allocates whatever
// length such a string claims (docs/FUZZING.md, findings 5 and 6), and other damaged metadata
// crash it in ways no check of ours can foresee without re-implementing the format. So every file
// is first read by a forked copy of this process, under an address-space limit, which makes every
// HDF5 call the load makes (metadata, attributes, strings, chunked and compact data up to
// kProbeMaxTensor each; not the bytes of contiguous datasets, one checked range of the file):
// - it crashes, dies or hangs: the file is refused here;
// - it refuses the file (a tb::Error, an allocation past the limit included): that error is
//   passed back through a pipe and thrown here, without this process touching the file again;
// - it loads: this process repeats the same calls on the same bytes.
// Costs one fork (copying this process's page tables) and the metadata read twice.
extern "C" void __sanitizer_set_death_callback(void (*)(void)) __attribute__((weak));
constexpr int kProbeLoaded = 0, kProbeRefused = 90;  // the probe's own exit codes

/** The probe's refusal: kind letter + message. */
std::string probe_report(const std::exception& e) {
  char kind = 'F';
  if (dynamic_cast<const UnsafeError*>(&e)) kind = 'S';
  else if (dynamic_cast<const UnsupportedError*>(&e)) kind = 'U';
  else if (dynamic_cast<const KeyError*>(&e)) kind = 'K';
  else if (dynamic_cast<const IoError*>(&e)) kind = 'I';
  else if (dynamic_cast<const InternalError*>(&e)) kind = 'X';
  else if (dynamic_cast<const std::bad_alloc*>(&e)) kind = 'M';
  std::string msg = e.what();
  if (msg.size() > 8000) msg.resize(8000);
  return kind + msg;
}

[[noreturn]] void rethrow_probe_report(const std::string& r, const std::string& label) {
  std::string msg = r.size() > 1 ? r.substr(1) : std::string("no message");
  switch (r.empty() ? 'F' : r[0]) {
    case 'S': throw UnsafeError(msg);
    case 'U': throw UnsupportedError(msg);
    case 'K': throw KeyError(msg);
    case 'I': throw IoError(msg);
    case 'X': throw InternalError(msg);
    case 'M':
      throw UnsafeError(str("[h5] '", label, "': reading this file's structure needs more than ",
                            kProbeMemory >> 20, " MiB + twice the file size of memory (", msg,
                            "); refusing a possible memory bomb"));
    default: throw FormatError(msg);
  }
}

uint64_t address_space_in_use() {
  std::ifstream statm("/proc/self/statm");
  uint64_t pages = 0;
  statm >> pages;
  return pages * uint64_t(::sysconf(_SC_PAGESIZE));
}

void probe_in_child(const Source& src, const FileCtx& parent_ctx, uint64_t sig) {
  using clock = std::chrono::steady_clock;
  // Metadata of a normal file reads in well under a second; chunked data adds its decompression.
  const auto limit = std::chrono::seconds(60) + std::chrono::milliseconds(parent_ctx.file_size / (16u << 10));
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return;  // no probe possible: load in this process, as before
  const uint64_t as_limit = address_space_in_use() + kProbeMemory + 2 * parent_ctx.file_size;
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return;
  }
  if (pid == 0) {
    // The child: no core file, a bounded address space, and no sanitizer death callback (a
    // fuzzer's would record the input as a crash of its own; the parent reports the refusal).
    ::close(fds[0]);
    struct rlimit no_core {0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);
    struct rlimit as {};
    if (::getrlimit(RLIMIT_AS, &as) == 0 && (as.rlim_cur == RLIM_INFINITY || as.rlim_cur > as_limit)) {
      as.rlim_cur = as_limit;
      ::setrlimit(RLIMIT_AS, &as);
    }
    if (&__sanitizer_set_death_callback) __sanitizer_set_death_callback(nullptr);
    int code = kProbeLoaded;
    std::string report;
    try {
      FileCtx ctx = parent_ctx;
      ctx.probe = true;
      ctx.mmap = false;
      load_hdf5(src, ctx, sig);
    } catch (const std::exception& e) {
      code = kProbeRefused;
      report = probe_report(e);
    } catch (...) {
      code = kProbeRefused;
      report = "Fan exception that is not a std::exception";
    }
    for (size_t off = 0; off < report.size();) {
      ssize_t w = ::write(fds[1], report.data() + off, report.size() - off);
      if (w <= 0) break;
      off += size_t(w);
    }
    ::_exit(code);  // no atexit handlers, no flushing of the parent's stdio buffers
  }
  ::close(fds[1]);
  ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
  std::string report;
  auto drain = [&] {  // what the child wrote so far (never blocks)
    char buf[4096];
    for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) != 0;) {
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) break;  // EAGAIN: nothing more now
      report.append(buf, size_t(n));
    }
  };
  // The pipe wakes this process when the child writes or exits (its end closes); the 50 ms cap
  // covers a write end that a process forked meanwhile by another thread still holds.
  const auto start = clock::now();
  int status = 0;
  while (true) {
    struct pollfd pfd {fds[0], POLLIN, 0};
    ::poll(&pfd, 1, 50);
    drain();
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {  // reaped elsewhere (SIGCHLD ignored): nothing learnt, load as without the probe
      ::close(fds[0]);
      return;
    }
    if (clock::now() - start > limit) {
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      ::close(fds[0]);
      throw UnsafeError(str("[h5] '", parent_ctx.label, "': the HDF5 library did not finish reading the file's structure in ",
                            std::chrono::duration_cast<std::chrono::seconds>(limit).count(),
                            " s (a probe process was stopped); refusing it as damaged or hostile"));
    }
  }
  drain();  // the child has exited: everything it wrote is in the pipe
  ::close(fds[0]);
  if (WIFEXITED(status) && WEXITSTATUS(status) == kProbeLoaded) return;
  if (WIFEXITED(status) && WEXITSTATUS(status) == kProbeRefused) rethrow_probe_report(report, parent_ctx.label);
  if (WIFEXITED(status)) {
    // Anything else is a sanitizer's report (ASan exits with 1 after a SEGV it caught) or an exit
    // from inside the library.
    throw FormatError(str("[h5] '", parent_ctx.label, "': the HDF5 library failed (exit status ", WEXITSTATUS(status),
                          ") reading this file's structure in a probe process; refusing a damaged or hostile file"));
  }
  const int sig_no = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  const char* name = sig_no ? ::strsignal(sig_no) : nullptr;
  throw FormatError(str("[h5] '", parent_ctx.label, "': the HDF5 library crashed (signal ", sig_no, ", ",
                        name ? name : "?", ") reading this file's structure in a probe process; refusing a damaged "
                        "or hostile file"));
}

Checkpoint load_impl(const Source& src, const LoadOptions& opts) {
  std::lock_guard<std::recursive_mutex> lock(h5_mutex());
  h5_init();
  TB_CHECK(src.reader, FormatError, "[h5] '", src.label(), "' is a folder, not an HDF5 file");
  FileCtx ctx;
  ctx.label = src.label();
  ctx.reader = src.reader;
  ctx.file_size = src.reader->size();
  ctx.mmap = opts.mmap;
  LoadBudget budget(opts.limits, ctx.label, ctx.file_size);
  ctx.budget = &budget;
  uint64_t sig = signature_offset(*src.reader);
  TB_CHECK(sig != UINT64_MAX, FormatError, "[h5] '", ctx.label,
           "': no HDF5 signature (\\x89HDF\\r\\n\\x1a\\n) at offset 0, 512, 1024, ...");
  ctx.mappable = sig == 0;
  check_global_heaps(*src.reader, sig, ctx.label);
  probe_in_child(src, ctx, sig);
  return load_hdf5(src, ctx, sig);
}

Checkpoint load_hdf5(const Source& src, FileCtx& ctx, uint64_t sig) {
  // Open by path when the reader is that file, else from an in-memory image.
  Handle fapl = check_id(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, ctx.label, "cannot create a file access list");
  H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG);
  std::error_code ec;
  bool by_path = !src.path.empty() && std::filesystem::is_regular_file(src.path, ec) &&
                 std::filesystem::file_size(src.path, ec) == ctx.file_size;
  std::vector<uint8_t> image;
  Handle file;
  if (by_path) {
    file = check_id(H5Fopen(src.path.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose, ctx.label,
                    "cannot open as HDF5");
  } else {
    image = src.reader->read_bytes(0, size_t(ctx.file_size));
    H5Pset_fapl_core(fapl.get(), 1 << 20, 0);
    if (H5Pset_file_image(fapl.get(), image.data(), image.size()) < 0) fail(ctx.label, "cannot use the file image");
    file = check_id(H5Fopen("tensorbridge-image.h5", H5F_ACC_RDONLY, fapl.get()), H5Fclose, ctx.label,
                    "cannot open as HDF5");
    ctx.mappable = false;
  }
  Handle root = check_id(H5Gopen2(file.get(), "/", H5P_DEFAULT), H5Gclose, ctx.label, "cannot open the root group");

  Checkpoint ck;
  ck.format = "h5";
  std::map<std::string, AttrValue> root_attrs;
  read_attrs(root.get(), ctx.label, "", ck.metadata, &root_attrs);
  Walk w{ctx.label, &ck.metadata, {}, {}, {}};
  walk(root.get(), "", 0, w);

  // Layout.
  std::string layout = "plain", base;
  if (has_attr(root.get(), "layer_names")) {
    layout = "keras";
  } else if (is_group(root.get(), "model_weights") && ck.metadata.count("model_weights/layer_names")) {
    layout = "keras-full";
    base = "model_weights/";
  } else if (root_attrs.empty() && (is_group(root.get(), "vars") || is_group(root.get(), "layers"))) {
    bool any_vars = is_group(root.get(), "vars");
    for (const auto& p : w.datasets)
      if (p.find("/vars/") != std::string::npos || p.rfind("vars/", 0) == 0) any_vars = true;
    if (any_vars) layout = "keras3";
  }

  std::vector<std::string> order;
  std::set<std::string> ordered;
  if (layout == "keras" || layout == "keras-full") {
    std::set<std::string> all(w.datasets.begin(), w.datasets.end());
    for (const auto& lname : names_from(ck.metadata, base + "layer_names")) {
      TB_CHECK(is_group(root.get(), (base + lname).c_str()), FormatError, "[h5] '", ctx.label, "': layer_names lists '",
               lname, "' but there is no group '/", base, lname, "'");
      const std::string attr_key = naming::decode_name(base + lname, naming::Target::Hdf5) + "/weight_names";
      for (const auto& wname : names_from(ck.metadata, attr_key)) {
        std::string p = base + lname + "/" + wname;
        TB_CHECK(all.count(p), FormatError, "[h5] '", ctx.label, "': layer '", lname, "' lists weight '", wname,
                 "' in weight_names but dataset '/", p, "' does not exist");
        if (ordered.insert(p).second) order.push_back(p);
      }
    }
  }
  if (layout == "keras3") {
    // Keras 3 names objects by class ("dense", "conv2d"), so names do not say the model order; the
    // writer creates them in model order, which is the order of their object headers in the file.
    std::stable_sort(w.datasets.begin(), w.datasets.end(),
                     [&](const std::string& a, const std::string& b) { return w.address[a] < w.address[b]; });
  }
  for (const auto& p : w.datasets)
    if (!ordered.count(p)) order.push_back(p);

  // Every dataset is charged before any is read: a file of never-written datasets is refused at
  // once instead of after filling the budget with fill values.
  if (ctx.budget && !ctx.probe)
    for (const auto& p : order) charge_dataset(file.get(), p, ctx);
  ck.root = Value::dict();
  for (const auto& p : order) {
    Tensor t = read_dataset(file.get(), p, ctx, ck.metadata);
    if (t.defined() && !ctx.probe)
      ck.root.set_item(Value::string(naming::decode_name(p, naming::Target::Hdf5)), Value::tensor(std::move(t)));
  }

  ck.info.push_back({"layout", layout});
  for (const char* k : {"keras_version", "backend"}) {
    auto it = ck.metadata.find(k);
    if (it == ck.metadata.end() && !base.empty()) it = ck.metadata.find(base + k);
    if (it != ck.metadata.end()) ck.info.push_back({k, it->second});
  }
  if (sig != 0) ck.info.push_back({"user block bytes", std::to_string(sig)});
  unsigned maj = 0, min = 0, rel = 0;
  H5get_libversion(&maj, &min, &rel);
  ck.info.push_back({"hdf5 library", str(maj, ".", min, ".", rel)});
  return ck;
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
    lcpl_ = Handle(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
    H5Pset_create_intermediate_group(lcpl_.get(), 1);
    H5Pset_char_encoding(lcpl_.get(), H5T_CSET_UTF8);
  }
  hid_t file() const { return file_.get(); }
  hid_t lcpl() const { return lcpl_.get(); }
  const std::string& label() const { return label_; }
  /** Writes the metadata HDF5 still holds and closes the file; an error (disk full) is thrown. */
  void close() {
    if (H5Fclose(file_.release()) < 0) fail(label_, "cannot finish writing the file");
  }

 private:
  std::string label_;
  Handle fapl_, file_, lcpl_;
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
  for (size_t i = path.find('/'); ; i = path.find('/', i + 1)) {
    std::string prefix = path.substr(0, i);
    if (has_link(f.file(), prefix.c_str()) && !is_group(f.file(), prefix.c_str())) return false;
    if (i == std::string::npos) return true;
  }
}

/** Metadata as attributes: "<object path>/<name>" on that object (the path encoded by the naming
 *  rule; a missing group is created, as for a weightless Keras layer's weight_names), else on the root. */
void write_metadata(OutFile& f, const Metadata& md, const std::set<std::string>& skip, bool ascii_when_possible) {
  for (const auto& [k, v] : md) {
    if (skip.count(k) || k.empty()) continue;
    std::string obj, name = k;
    auto slash = k.rfind('/');
    if (slash != std::string::npos && slash > 0 && slash + 1 < k.size()) {
      std::string path = naming::encode_name(k.substr(0, slash), naming::Target::Hdf5);
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
    if (list && (!list->empty() || is_keras_name_list(name))) write_str_list_attr(o.get(), name, *list);
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
    TB_CHECK(!groups.count(paths[i]), KeyError, "[h5] tensor '", sd.entries()[i].first,
             "' is also a group of other tensors ('", sd.entries()[i].first, "/...'); HDF5 cannot hold both");
  for (size_t i = 0; i < sd.size(); ++i) write_dataset(f, paths[i], sd.entries()[i].second);
  write_metadata(f, md, {}, has_keras2_structure(md));  // Keras writes its string attributes as ASCII
}

/** Tensors kept beside the Keras layers ("torch_only/...": values Keras has no variable for), as
 *  plain datasets outside layer_names, where Keras does not look. */
void save_keras_side_group(const StateDict& sd, OutFile& f) {
  for (const auto& [key, t] : sd)
    if (key.rfind(h5detail::kKerasSideGroup, 0) == 0) write_dataset(f, naming::encode_name(key, naming::Target::Hdf5), t);
}

void save_keras2(const Checkpoint& ckpt, OutFile& f, const SaveOptions& opts) {
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
      if (from_keras3) wname = raw_lname + "/" + h5detail::keras3_var_name(l.name, i) + ":0";
      else if (wname.find('/') == std::string::npos) {
        if (wname.find(':') == std::string::npos) wname += ":0";
        wname = raw_lname + "/" + wname;
      }
      g.push_back({naming::encode_name(wname, naming::Target::Hdf5), w.tensor});
    }
  }
  Handle root = ensure_group(f, "");
  write_keras_list_attr(root.get(), "layer_names", layer_names);
  write_str_attr(root.get(), "backend", opts.option("backend", "tensorflow"), H5T_CSET_ASCII);
  write_str_attr(root.get(), "keras_version", opts.option("keras_version", "2.21.0"), H5T_CSET_ASCII);
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
  save_keras_side_group(ckpt.state_dict(), f);
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
      if (pos != std::string::npos && pos + 10 == k.size() && k.rfind("layers/", 0) == 0) ensure_group(f, k.substr(0, pos + 5));
    }
    save_plain(sd, ckpt.metadata, f);
    return;
  }
  auto layers = keras_layers(ckpt);
  ensure_group(f, "layers");
  std::map<std::string, int> counters;
  for (const auto& l : layers) {
    if (l.weights.empty()) continue;
    std::string cls = h5detail::guess_keras_class(l);
    TB_CHECK(!cls.empty(), UnsupportedError, "[h5] cannot tell which Keras layer class layer '", l.name,
             "' is (weights: ", l.weights.front().name, ", ...); Keras 3 names objects by class");
    int n = counters[cls]++;
    std::string obj = "layers/" + (n == 0 ? cls : cls + "_" + std::to_string(n));
    Handle vars = ensure_group(f, obj + "/vars");
    write_str_attr(vars.get(), "name", l.name, H5T_CSET_UTF8);
    for (size_t i = 0; i < l.weights.size(); ++i) write_dataset(f, obj + "/vars/" + std::to_string(i), l.weights[i].tensor);
  }
  ensure_group(f, "vars");
  save_keras_side_group(ckpt.state_dict(), f);
}

void save_impl(const Checkpoint& ckpt, const std::filesystem::path& path, const SaveOptions& opts,
               const std::string& layout) {
  TB_CHECK(layout == "plain" || layout == "keras" || layout == "keras3", UnsupportedError,
           "[h5] unknown layout '", layout, "' (expected plain, keras or keras3)");
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

}  // namespace

std::vector<uint8_t> keras3_weights_bytes(const Checkpoint& ckpt) {
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
  if (fallback == "plain" && name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
    return "keras3";
  return fallback;
}

FormatAdapter make_adapter(std::string name, std::string desc, std::vector<std::string> exts, bool sniffs,
                           std::string layout) {
  FormatAdapter a;
  a.name = std::move(name);
  a.description = std::move(desc);
  a.extensions = std::move(exts);
  if (sniffs) a.sniff = sniff_h5;
  else a.sniff = [](const Source&) { return false; };
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
  static const FormatAdapter a = make_adapter(
      "h5", "HDF5 (h5py) and Keras .h5 / .weights.h5 (write option layout=plain|keras|keras3)",
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
