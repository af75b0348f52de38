// Reading an HDF5 file through libhdf5: attributes -> metadata, the group tree, datasets -> tensors
// (bomb and budget checks), and load_hdf5, which the probe process runs too.
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

#include <nlohmann/json.hpp>

#include "formats/adapters.h"
#include "formats/naming.h"

namespace tb {
namespace h5detail {

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
      throw UnsafeError(
          str("[h5] '", w.label, "': '/", child, "' is an external link into another file; refusing to follow it"));
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
    Handle obj =
        check_id(H5Oopen(group, link.name.c_str(), safe_lapl()), H5Oclose, w.label, "cannot open '/" + child + "'");
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
      if (size == 4 && float_fields(ftype, 31, 23, 8, 0, 23))
        r.dtype = DType::F32;
      else if (size == 8 && float_fields(ftype, 63, 52, 11, 0, 52))
        r.dtype = DType::F64;
      else if (size == 2 && float_fields(ftype, 15, 10, 5, 0, 10))
        r.dtype = DType::F16;
      else if (size == 2 && float_fields(ftype, 15, 7, 8, 0, 7))
        r.dtype = DType::BF16;
      else
        throw unsupported(str("a non-IEEE ", size, "-byte float type"));
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
                H5Tget_member_offset(ftype, 1) == half && H5Tget_order(m0.get()) == H5Tget_order(m1.get());
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
    throw UnsafeError(
        str("[h5] '", label, "': dataset '", path, "' keeps its data in external raw files; refusing to read it"));

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
        if (H5Dread(d.get(), mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &p) < 0)
          fail(label, "cannot read '" + path + "'");
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
    TB_CHECK(nbytes <= kBombFloor || nbytes / kBombRatio <= std::max<uint64_t>(stored, 1), UnsafeError, "[h5] '", label,
             "': dataset '", path, "' declares ", nbytes, " bytes (", dtype_name(dt.dtype), " ", shape_str(shape),
             ") but stores only ", stored, " bytes; refusing a possible decompression bomb");
    TB_CHECK(nbytes <= kBombFloor || nbytes / kBombRatio <= ctx.file_size, UnsafeError, "[h5] '", label, "': dataset '",
             path, "' declares ", nbytes, " bytes, far beyond the ", ctx.file_size, "-byte file");
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

namespace {

/** A Keras file we wrote from another layout (formats/detail/h5_internal.h, kKerasSourceGroup):
 *  the tensor name of each stored dataset path, with every name checked and unique; the side
 *  group's own metadata replaced by the source's. */
std::map<std::string, std::string> restore_source(Checkpoint& ck, const std::vector<std::string>& datasets,
                                                  const std::string& label) {
  const std::string side = kKerasSourceGroup;
  const std::string tensors = side + "/tensors/", meta = side + "/metadata";
  auto listed = [&](const std::string& key) { return ck.metadata.count(key) || ck.metadata.count(key + "0"); };
  const std::vector<std::string> paths = names_from(ck.metadata, side + "/paths");
  const std::vector<std::string> names = names_from(ck.metadata, side + "/names");
  TB_CHECK(listed(side + "/paths") && listed(side + "/names") && paths.size() == names.size(), FormatError, "[h5] '",
           label, "': group '/", side,
           "' should list as many dataset paths as tensor names (attributes paths and names)");
  std::set<std::string> present(datasets.begin(), datasets.end());
  std::map<std::string, std::string> name_of;
  for (size_t i = 0; i < paths.size(); ++i) {
    const std::string& p = paths[i];
    TB_CHECK(present.count(p) && p.rfind(side + "/", 0) != 0, FormatError, "[h5] '", label, "': group '/", side,
             "' names dataset '/", p, "', which is not a layer weight of the file");
    TB_CHECK(name_of.emplace(p, names[i]).second, FormatError, "[h5] '", label, "': group '/", side,
             "' names dataset '/", p, "' twice");
  }
  std::map<std::string, std::string> out;
  std::set<std::string> taken;
  for (const auto& p : datasets) {
    std::string name = name_of.count(p)           ? name_of[p]
                       : p.rfind(tensors, 0) == 0 ? naming::decode_name(p.substr(tensors.size()), naming::Target::Hdf5)
                                                  : naming::decode_name(p, naming::Target::Hdf5);
    TB_CHECK(taken.insert(name).second, FormatError, "[h5] '", label, "': tensor name '", name,
             "' is given to two datasets (the second is '/", p, "')");
    out[p] = name;
  }
  Metadata md;
  for (const auto& [k, v] : ck.metadata) {
    if (k.rfind(meta + "/", 0) == 0) md[k.substr(meta.size() + 1)] = v;
  }
  ck.metadata = std::move(md);
  return out;
}

}  // namespace

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
    file = check_id(H5Fopen(src.path.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose, ctx.label, "cannot open as HDF5");
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
  // Written by us from another layout: the source's names, side tensors and metadata come back.
  std::map<std::string, std::string> restored;
  const std::string record = std::string(kKerasSourceGroup) + "/paths";
  const bool from_source = layout != "plain" && is_group(root.get(), kKerasSourceGroup) &&
                           (ck.metadata.count(record) || ck.metadata.count(record + "0"));
  if (from_source) restored = restore_source(ck, w.datasets, ctx.label);

  // Every dataset is charged before any is read: a file of never-written datasets is refused at
  // once instead of after filling the budget with fill values.
  if (ctx.budget && !ctx.probe)
    for (const auto& p : order) charge_dataset(file.get(), p, ctx);
  ck.root = Value::dict();
  for (const auto& p : order) {
    Tensor t = read_dataset(file.get(), p, ctx, ck.metadata);
    if (t.defined() && !ctx.probe)
      ck.root.set_item(Value::string(from_source ? restored.at(p) : naming::decode_name(p, naming::Target::Hdf5)),
                       Value::tensor(std::move(t)));
  }

  ck.info.push_back({"layout", layout});
  if (from_source)
    ck.info.push_back({"names", str("as in the file it was written from, with that file's metadata and the tensors "
                                    "no Keras layer holds (group /",
                                    kKerasSourceGroup, ")")});
  for (const char* k : {"keras_version", "backend"}) {
    if (from_source) break;  // the source's, not this file's
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

}  // namespace h5detail
}  // namespace tb
