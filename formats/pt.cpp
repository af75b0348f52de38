// PyTorch torch.save reader (zip + legacy) and zip writer. Layout: see pt.h.
#include "formats/pt.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <unordered_map>

#include "formats/adapters.h"
#include "formats/detail/pickle.h"
#include "formats/detail/torch_storage.h"
#include "formats/detail/zip.h"

namespace tb {

namespace {

const uint8_t kLegacyMagic[15] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                  0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};

bool is_legacy(const Reader& r) {
  if (r.size() < sizeof(kLegacyMagic)) return false;
  uint8_t b[sizeof(kLegacyMagic)];
  r.read_at(0, b, sizeof(b));
  return std::memcmp(b, kLegacyMagic, sizeof(b)) == 0;
}

std::string tag(const Source& src) { return str("[pt] '", src.label(), "'"); }

using torch_storage::parse_pid;

std::string read_record(const zip::ZipReader& z, const std::string& name, size_t max = 4096) {
  const zip::Entry* e = z.find(name);
  if (!e || e->uncompressed_size > max) return {};
  return z.read_string(*e);
}

// ---- post-processing --------------------------------------------------------------------------

void export_metadata(const Value& v, const std::string& path, Metadata& md, int depth) {
  if (depth > 64 || !v.is_dict()) return;
  const auto& d = v.dict_data();
  if (d.attrs) {
    for (const auto& [k, m] : d.attrs->items) {
      if (!k.is_str() || k.as_str() != "_metadata" || !m.is_dict()) continue;
      for (const auto& [prefix, entry] : m.dict_data().items) {
        if (!prefix.is_str() || !entry.is_dict()) continue;
        for (const auto& [ek, ev] : entry.dict_data().items) {
          if (!ek.is_str()) continue;
          std::string key = path.empty() ? "_metadata" : path + "._metadata";
          if (!prefix.as_str().empty()) key += "." + prefix.as_str();
          key += "." + ek.as_str();
          std::string val = ev.is_str() ? ev.as_str() : ev.repr();
          md[key] = val;
        }
      }
    }
  }
  for (const auto& [k, child] : d.items)
    if (k.is_str() && child.is_dict())
      export_metadata(child, path.empty() ? k.as_str() : path + "." + k.as_str(), md, depth + 1);
}

const Value* state_get(const Value& module, const char* key) {
  if (module.kind() != Value::Kind::Object) return nullptr;
  const auto& o = module.as_object();
  if (!o.state || !o.state->is_dict()) return nullptr;
  return o.state->get(key);
}

void module_state_dict_into(const Value& m, const std::string& prefix, Value& out, int depth) {
  TB_CHECK(depth < 200, FormatError, "[pt] module tree deeper than 200 levels");
  auto add = [&](const Value* d, const Value* skip_set) {
    if (!d || !d->is_dict()) return;
    for (const auto& [k, v] : d->dict_data().items) {
      if (!k.is_str() || v.is_none()) continue;
      if (skip_set && skip_set->kind() == Value::Kind::Set) {
        bool skip = false;
        for (const auto& s : skip_set->items()) skip = skip || (s.is_str() && s.as_str() == k.as_str());
        if (skip) continue;
      }
      out.dict_data().items.emplace_back(Value::string(prefix + k.as_str()), v);
    }
  };
  add(state_get(m, "_parameters"), nullptr);
  add(state_get(m, "_buffers"), state_get(m, "_non_persistent_buffers_set"));
  if (const Value* mods = state_get(m, "_modules"); mods && mods->is_dict())
    for (const auto& [k, child] : mods->dict_data().items)
      if (k.is_str() && !child.is_none()) module_state_dict_into(child, prefix + k.as_str() + ".", out, depth + 1);
}

// Replaces pickled modules (anywhere in dicts/lists) by their state_dict; returns the new value.
// A container reached twice (shared in the pickle) is visited once: done maps it to its result.
Value replace_modules(const Value& v, int depth, Value* first_module, std::unordered_map<const void*, Value>& done) {
  if (depth > 64) return v;
  if (auto it = done.find(v.identity()); it != done.end()) return it->second;
  if (pt_is_module(v)) {
    if (first_module && first_module->is_none()) *first_module = v;
    Value sd = pt_module_state_dict(v);
    sd.dict_data().attrs = std::make_shared<ValueDict>();
    sd.dict_data().attrs->items.emplace_back(Value::string("__module__"), v);
    done.emplace(v.identity(), sd);
    return sd;
  }
  done.emplace(v.identity(), v);
  auto visit = [&](Value& x) {  // only containers can hold modules: leave tensors and scalars alone
    if (x.is_dict() || x.kind() == Value::Kind::List || x.kind() == Value::Kind::Object)
      x = replace_modules(x, depth + 1, first_module, done);
  };
  if (v.is_dict())
    for (auto& kv : v.dict_data().items) visit(kv.second);
  else if (v.kind() == Value::Kind::List)
    for (auto& x : v.items()) visit(x);
  return v;
}

// Visits the tensors flatten() would list, in its order (a tensor reached twice is visited twice),
// without building their names.
template <class Fn>
void each_tensor(const Value& v, const Fn& fn) {
  switch (v.kind()) {
    case Value::Kind::Tensor: fn(v.as_tensor()); return;
    case Value::Kind::Dict:
      for (const auto& kv : v.dict_data().items) each_tensor(kv.second, fn);
      return;
    case Value::Kind::List:
    case Value::Kind::Tuple:
      for (const auto& x : v.items()) each_tensor(x, fn);
      return;
    default: return;
  }
}

void add_size_info(Checkpoint& ck, size_t nstorages, uint64_t storage_bytes) {
  uint64_t tensor_bytes = 0;
  bool any_smaller = false;
  each_tensor(ck.root, [&](const Tensor& t) {
    tensor_bytes += t.nbytes();
    any_smaller = any_smaller || (t.storage() && t.nbytes() < t.storage()->nbytes());
  });
  std::vector<std::string> smaller;
  if (any_smaller)  // names only when there is something to report
    for (const auto& [name, t] : flatten(ck.root))
      if (t.storage() && t.nbytes() < t.storage()->nbytes() && smaller.size() < 20)
        smaller.push_back(str(name, " (", t.nbytes(), " of ", t.storage()->nbytes(), " storage bytes)"));
  ck.info.emplace_back("storages", std::to_string(nstorages));
  ck.info.emplace_back("storage bytes", std::to_string(storage_bytes));
  ck.info.emplace_back("tensor bytes", std::to_string(tensor_bytes));
  for (const auto& s : smaller) ck.info.emplace_back("view smaller than its storage", s);
}

// The common end of both loaders: pickled nn.Modules become their state dicts (the first module's
// class goes to info), OrderedDict _metadata goes to metadata, and the size summary is added.
void finish_checkpoint(Checkpoint& ck, const Value& unpickled, size_t nstorages, uint64_t storage_bytes) {
  Value module;
  std::unordered_map<const void*, Value> done;
  ck.root = replace_modules(unpickled, 0, &module, done);
  if (!module.is_none()) ck.info.emplace_back("whole module", module.as_object().cls);
  export_metadata(ck.root, "", ck.metadata, 0);
  add_size_info(ck, nstorages, storage_bytes);
}

// ---- zip ---------------------------------------------------------------------------------------

Checkpoint load_zip(const Source& src, const LoadOptions& opts) {
  const std::string where = tag(src);
  LoadBudget budget(opts.limits, src.label(), src.reader->size());
  zip::ZipReader z(src.reader);
  TB_CHECK(!z.entries().empty(), FormatError, where, ": empty zip archive, not a torch.save file");
  const std::string& first = z.entries().front().name;
  size_t slash = first.find('/');
  TB_CHECK(slash != std::string::npos, FormatError, where, ": first zip entry '", first,
           "' is not inside a folder; torch.save archives keep every record under one folder");
  const std::string folder = first.substr(0, slash);
  const std::string pre = folder + "/";
  const zip::Entry* pkl = z.find(pre + "data.pkl");
  TB_CHECK(pkl, FormatError, where, ": no '", pre, "data.pkl' record (a zip file, but not a torch.save archive)");
  TB_CHECK(!z.find(pre + "constants.pkl"), UnsupportedError, where,
           ": this is a TorchScript archive (torch.jit.save), read by the torchscript format");

  std::string byteorder = read_record(z, pre + "byteorder");
  std::string version = read_record(z, pre + ".data/version");
  if (version.empty()) version = read_record(z, pre + "version");
  while (!version.empty() && (version.back() == '\n' || version.back() == '\r')) version.pop_back();
  TB_CHECK(byteorder.empty() || byteorder == "little" || byteorder == "big", FormatError, where,
           ": byteorder record is '", byteorder, "' (expected 'little' or 'big')");
  const bool big = byteorder == "big";

  torch_storage::ZipStorages storages(z, pre + "data/", big, opts, budget, where);
  pickle::Options po;
  po.tag = "[pt]";
  po.allow_unknown_globals = opts.allow_unknown_globals;
  po.budget = &budget;
  po.persistent_load = [&](const Value& pid) { return storages.load(pid); };
  if (!pkl->stored()) budget.charge_bytes(pkl->uncompressed_size, str("inflating '", pkl->name, "'"));
  auto pr = z.open(*pkl);
  pickle::Result res = pickle::load_one(*pr, 0, pr->size(), po);

  Checkpoint ck;
  ck.format = "pt";
  ck.info.emplace_back("container", "zip");
  ck.info.emplace_back("archive", folder);
  if (!version.empty()) ck.info.emplace_back("version", version);
  ck.info.emplace_back("byteorder", byteorder.empty() ? "little (no record)" : byteorder);
  std::string fv = read_record(z, pre + ".format_version"), al = read_record(z, pre + ".storage_alignment");
  if (!fv.empty()) ck.info.emplace_back("format version", fv);
  if (!al.empty()) ck.info.emplace_back("storage alignment", al);
  ck.info.emplace_back("pickle protocol", std::to_string(res.protocol));
  finish_checkpoint(ck, res.value, storages.count(), storages.bytes());
  return ck;
}

// ---- legacy ------------------------------------------------------------------------------------

/** The class a legacy ('module', class, ...) persistent id names (whole pickled modules); nullopt for
 *  every other id. */
std::optional<Value> module_pid_class(const Value& pid) {
  if (pid.kind() == Value::Kind::Tuple && !pid.items().empty() && pid.items()[0].is_str() &&
      pid.items()[0].as_str() == "module")
    return pid.items().size() > 1 ? pid.items()[1] : Value();
  return std::nullopt;
}

Checkpoint load_legacy(const Source& src, const LoadOptions& opts) {
  const std::string where = tag(src);
  const Reader& r = *src.reader;
  LoadBudget budget(opts.limits, src.label(), r.size());
  pickle::Options base;
  base.tag = "[pt]";
  base.budget = &budget;
  auto magic = pickle::load_one(r, 0, r.size(), base);
  auto proto = pickle::load_one(r, magic.end, r.size() - magic.end, base);
  TB_CHECK(proto.value.is_int(), FormatError, where, ": legacy protocol version is not an int");
  TB_CHECK(proto.value.as_int() == 1001, UnsupportedError, where, ": legacy protocol version ", proto.value.as_int(),
           " (expected 1001)");
  auto sysinfo = pickle::load_one(r, proto.end, r.size() - proto.end, base);
  bool little = true;
  if (const Value* le = sysinfo.value.get("little_endian")) little = le->as_bool();
  const uint64_t obj_start = sysinfo.end;

  // Pass 1: find the storages each persistent id declares (no tensors built).
  struct Decl {
    DType dtype;
    int64_t numel;
  };
  std::map<std::string, Decl> decls;
  pickle::Options p1 = base;
  p1.allow_unknown_globals = opts.allow_unknown_globals;
  p1.persistent_load = [&](const Value& pid) -> Value {
    if (auto cls = module_pid_class(pid)) return *cls;
    torch_storage::Pid p = parse_pid(pid, where);
    auto it = decls.find(p.key);
    if (it == decls.end()) {
      decls.emplace(p.key, Decl{p.dtype, p.numel});
    } else {
      TB_CHECK(it->second.dtype == p.dtype, FormatError, where, ": storage '", p.key, "' declared as ",
               dtype_name(it->second.dtype), " and ", dtype_name(p.dtype));
    }
    return Value();
  };
  auto obj = pickle::load_one(r, obj_start, r.size() - obj_start, p1);
  auto keys = pickle::load_one(r, obj.end, r.size() - obj.end, base);
  TB_CHECK(keys.value.kind() == Value::Kind::List, FormatError, where, ": legacy storage key list is a ",
           keys.value.kind_name());

  // Locate every storage: int64 LE element count + data, in key-list order.
  struct Loc {
    DType dtype;
    int64_t numel;
    uint64_t offset;
  };
  std::map<std::string, Loc> locs;
  uint64_t pos = keys.end, storage_bytes = 0;
  for (const auto& k : keys.value.items()) {
    TB_CHECK(k.is_str(), FormatError, where, ": legacy storage key is not a str: ", k.repr());
    auto d = decls.find(k.as_str());
    TB_CHECK(d != decls.end(), FormatError, where, ": storage key '", k.as_str(),
             "' in the key list is not used by the object pickle (cannot know its element size)");
    r.check_range(pos, 8, str("legacy storage '", k.as_str(), "' header"));
    int64_t n = r.read_le<int64_t>(pos);
    size_t isz = dtype_size(d->second.dtype);
    TB_CHECK(n >= 0 && uint64_t(n) <= (r.size() - pos - 8) / isz, FormatError, where, ": legacy storage '", k.as_str(),
             "' claims ", n, " elements of ", dtype_name(d->second.dtype), " but only ", r.size() - pos - 8,
             " bytes remain (truncated file?)");
    TB_CHECK(n >= d->second.numel, FormatError, where, ": legacy storage '", k.as_str(), "' holds ", n,
             " elements but the pickle declares ", d->second.numel);
    locs[k.as_str()] = Loc{d->second.dtype, n, pos + 8};
    storage_bytes += uint64_t(n) * isz;
    pos += 8 + uint64_t(n) * isz;
  }
  for (const auto& [k, d] : decls)
    TB_CHECK(locs.count(k), FormatError, where, ": storage '", k, "' is used but missing from the key list");

  // Pass 2: build tensors over the located storages (shared by key).
  std::unordered_map<std::string, Value> roots;
  pickle::Options p2 = p1;
  p2.persistent_load = [&](const Value& pid) -> Value {
    if (auto cls = module_pid_class(pid)) return *cls;
    torch_storage::Pid p = parse_pid(pid, where);
    auto it = roots.find(p.key);
    if (it == roots.end()) {
      const Loc& l = locs.at(p.key);
      size_t nbytes = size_t(l.numel) * dtype_size(l.dtype);
      std::shared_ptr<Storage> st;
      if (opts.mmap && little) {
        st = r.load(l.offset, nbytes);
      } else {
        budget.charge_bytes(nbytes, str("storage '", p.key, "'"));
        st = Storage::allocate(nbytes, false);
        if (nbytes) r.read_at(l.offset, st->data(), nbytes);
      }
      it = roots.emplace(p.key, Value::tensor(Tensor(st, l.dtype, {l.numel}, {1}, 0))).first;
    }
    if (p.view_meta.is_none()) return it->second;
    // (view_key, offset, size): a storage view of the root storage (torch < 0.4)
    TB_CHECK(p.view_meta.is_sequence() && p.view_meta.items().size() == 3, FormatError, where,
             ": storage view metadata is ", p.view_meta.repr());
    int64_t off = p.view_meta.items()[1].as_int(), sz = p.view_meta.items()[2].as_int();
    const Tensor& root = it->second.as_tensor();
    TB_CHECK(off >= 0 && sz >= 0 && off + sz <= root.numel(), FormatError, where, ": storage view [", off, ", ",
             off + sz, ") outside storage '", p.key, "' of ", root.numel(), " elements");
    return Value::tensor(root.slice(0, off, off + sz));
  };
  auto obj2 = pickle::load_one(r, obj_start, r.size() - obj_start, p2);

  Checkpoint ck;
  ck.format = "pt";
  ck.info.emplace_back("container", "legacy");
  ck.info.emplace_back("legacy protocol", "1001");
  ck.info.emplace_back("byteorder", little ? "little" : "big (data little-endian)");
  ck.info.emplace_back("pickle protocol", std::to_string(obj2.protocol));
  finish_checkpoint(ck, obj2.value, roots.size(), storage_bytes);
  return ck;
}

// ---- writer ------------------------------------------------------------------------------------

struct StorageOut {
  std::string key;
  std::shared_ptr<Storage> storage;
  DType dtype;
  int64_t begin = 0, end = 0;  // byte span written
};

bool sniff_pt(const Source& src) {
  try {
    if (!src.reader) return false;
    const Reader& r = *src.reader;
    if (is_legacy(r)) return true;
    if (!zip::starts_with_member(r)) return false;
    // torch.save writes "<archive>/data.pkl" as the first member: its local header says so without
    // parsing the central directory (load does that once; a 100,000-tensor file has 100,000 records).
    if (auto first = zip::first_member(r); first && torch_storage::is_archive_pickle(first->name)) return true;
    zip::ZipReader z(src.reader);
    if (z.entries().empty()) return false;
    const std::string& first = z.entries().front().name;
    size_t slash = first.find('/');
    if (slash == std::string::npos) return false;
    return z.find(first.substr(0, slash) + "/data.pkl") != nullptr;
  } catch (...) {
    return false;
  }
}

}  // namespace

Checkpoint load_pt(const Source& src, const LoadOptions& opts) {
  TB_CHECK(src.reader, IoError, "[pt] '", src.label(), "' is a folder, not a torch.save file");
  const Reader& r = *src.reader;
  if (is_legacy(r)) return load_legacy(src, opts);
  if (r.size() >= 4) {
    uint8_t b[8] = {};
    r.read_at(0, b, std::min<uint64_t>(8, r.size()));
    if (b[0] == 'P' && b[1] == 'K' && b[2] == 3 && b[3] == 4) return load_zip(src, opts);
    TB_CHECK(std::memcmp(b, "PYTORCH1", std::min<uint64_t>(8, r.size())) != 0 || r.size() < 8, UnsupportedError,
             tag(src), ": 'PYTORCH1' preview format from 2018 (torch itself rejects it)");
  }
  if (r.size() > 262) {
    char u[5];
    r.read_at(257, u, 5);
    TB_CHECK(std::memcmp(u, "ustar", 5) != 0, UnsupportedError, tag(src),
             ": tar-based torch.save file (torch < 0.1.10) is not supported; re-save it with a current torch");
  }
  throw FormatError(str(tag(src),
                        ": not a torch.save file (neither a zip archive with data.pkl nor the legacy "
                        "magic number 80 02 8a 0a 6c fc 9c 46 f9 20 6a a8 50 19)"));
}

bool pt_is_module(const Value& v) {
  if (v.kind() != Value::Kind::Object) return false;
  const Value* m = state_get(v, "_modules");
  const Value* p = state_get(v, "_parameters");
  return m && p && m->is_dict() && p->is_dict();
}

Value pt_module_state_dict(const Value& module) {
  Value out = Value::dict("collections.OrderedDict");
  module_state_dict_into(module, "", out, 0);
  return out;
}

Value pt_module_tree(const Checkpoint& ckpt) {
  if (!ckpt.root.is_dict() || !ckpt.root.dict_data().attrs) return Value();
  for (const auto& [k, v] : ckpt.root.dict_data().attrs->items)
    if (k.is_str() && k.as_str() == "__module__") return v;
  return Value();
}

namespace {

/** The storages a .pt of root's tensors holds: tensors grouped by Storage, each written whole or
 *  (trim) as the union of its views; storages whose views disagree on dtype or alignment keep the
 *  bytes of their first dtype's views (the other views get private copies when written). */
struct StoragePlan {
  std::vector<Tensor> tensors;
  std::vector<StorageOut> outs;
  std::unordered_map<const Storage*, size_t> by_storage;  // index into outs
};

StoragePlan plan_storages(const Value& root, bool trim) {
  StoragePlan plan;
  std::vector<Tensor>& tensors = plan.tensors;
  std::vector<StorageOut>& outs = plan.outs;
  std::unordered_map<const Storage*, size_t>& by_storage = plan.by_storage;
  {
    StateDict flat = flatten(root);
    for (const auto& [n, t] : flat) tensors.push_back(t);
  }
  auto span_of = [](const Tensor& t) {
    return t.numel() == 0 ? std::pair<int64_t, int64_t>{t.byte_offset(), t.byte_offset()} : t.storage_span();
  };
  // First pass: spans and dtype per storage.
  for (const auto& t : tensors) {
    const Storage* s = t.storage().get();
    auto [b, e] = span_of(t);
    auto it = by_storage.find(s);
    if (it == by_storage.end()) {
      StorageOut o;
      o.storage = t.storage();
      o.dtype = t.dtype();
      o.begin = trim ? b : 0;
      o.end = trim ? e : int64_t(s->nbytes());
      by_storage.emplace(s, outs.size());
      outs.push_back(o);
    } else if (trim) {
      auto& o = outs[it->second];
      if (o.begin == o.end) {
        o.begin = b;
        o.end = e;
      } else if (b != e) {
        o.begin = std::min(o.begin, b);
        o.end = std::max(o.end, e);
      }
    }
  }
  std::unordered_map<const Storage*, bool> mixed;
  for (const auto& t : tensors) {
    const auto& o = outs[by_storage.at(t.storage().get())];
    if (t.dtype() != o.dtype) mixed[t.storage().get()] = true;
  }
  for (auto& o : outs) {
    // A whole storage that is not a multiple of the element size cannot be a typed storage, and one
    // viewed with several dtypes (a foreign loader's shared buffer) is not a torch storage: write the
    // bytes its views of the first dtype use (the others get private copies).
    int64_t isz = int64_t(dtype_size(o.dtype));
    if ((o.end - o.begin) % isz != 0 || o.begin % isz != 0 || mixed.count(o.storage.get())) {
      int64_t b = INT64_MAX, e = 0;
      for (const auto& t : tensors)
        if (t.storage() == o.storage && t.dtype() == o.dtype) {
          auto [tb_, te] = span_of(t);
          b = std::min(b, tb_);
          e = std::max(e, te);
        }
      o.begin = b == INT64_MAX ? 0 : b;
      o.end = std::max(o.begin, e);
    }
  }

  return plan;
}

}  // namespace

void write_pt(const Checkpoint& ckpt, const std::filesystem::path& path, const PtWriteOptions& opts) {
  std::string folder = path.stem().string();
  if (folder.empty()) folder = "archive";
  const std::string where = str("[pt] cannot write '", path.string(), "'");

  Value root = ckpt.root;
  if (root.is_dict() && root.dict_data().cls.empty() && ckpt.format != "pt") {
    // A flat state dict from another format: torch state_dicts are OrderedDicts.
    Value od = Value::dict("collections.OrderedDict");
    od.dict_data().items = root.dict_data().items;
    root = od;
  }

  StoragePlan plan = plan_storages(root, opts.trim_storage);
  const std::vector<Tensor>& tensors = plan.tensors;
  std::vector<StorageOut>& outs = plan.outs;
  const std::unordered_map<const Storage*, size_t>& by_storage = plan.by_storage;
  // Tensors whose dtype or alignment does not fit their storage's plan get a private packed copy.
  std::unordered_map<const void*, Tensor> private_copy;
  auto fits = [&](const Tensor& t, const StorageOut& o) {
    int64_t isz = int64_t(t.itemsize());
    return t.dtype() == o.dtype && (t.byte_offset() - o.begin) % isz == 0 && (o.end - o.begin) % isz == 0 &&
           t.byte_offset() >= o.begin;
  };
  pickle::Pickler pk(2);
  std::unordered_map<const Storage*, std::string> keys_of;
  std::vector<StorageOut> written;  // in key order of first use
  written.reserve(tensors.size() + 1);
  auto key_for = [&](const Tensor& t, int64_t* elem_off) -> const StorageOut& {
    const Storage* s = t.storage().get();
    auto it = by_storage.find(s);
    TB_ASSERT(it != by_storage.end());
    StorageOut* o = &outs[it->second];
    if (!fits(t, *o)) {
      // private copy with its own storage
      Tensor c = t.clone();
      StorageOut po;
      po.storage = c.storage();
      po.dtype = c.dtype();
      po.begin = 0;
      po.end = int64_t(c.storage()->nbytes());
      po.key = std::to_string(written.size());
      private_copy[c.storage().get()] = c;
      written.push_back(po);
      *elem_off = 0;
      return written.back();
    }
    if (o->key.empty()) {
      o->key = std::to_string(written.size());
      written.push_back(*o);
    }
    *elem_off = (t.byte_offset() - o->begin) / int64_t(t.itemsize());
    for (const auto& w : written)
      if (w.key == o->key) return w;
    TB_ASSERT(false);
    return written.back();
  };
  pk.on_tensor = [&](pickle::Pickler& p, const Tensor& t0) {
    int64_t off = 0;
    const StorageOut& so = key_for(t0, &off);
    bool private_c = private_copy.count(so.storage.get()) != 0;
    Tensor t = private_c ? private_copy[so.storage.get()] : t0;
    std::string_view storage_cls = info(t.dtype()).torch_storage;
    bool v3 = storage_cls.empty();
    int64_t isz = int64_t(t.itemsize());
    p.global_("torch._utils", v3 ? "_rebuild_tensor_v3" : "_rebuild_tensor_v2");
    p.mark();
    p.mark();
    p.string("storage");
    p.global_("torch", v3 ? "UntypedStorage" : std::string(storage_cls));
    p.string(so.key);
    p.string("cpu");
    p.integer(v3 ? (so.end - so.begin) : (so.end - so.begin) / isz);
    p.tuple();
    p.binpersid();
    p.integer(off);
    p.mark();
    for (auto d : t.shape()) p.integer(d);
    p.tuple();
    p.mark();
    for (auto s : t.strides()) p.integer(s);
    p.tuple();
    p.boolean(false);
    p.global_("collections", "OrderedDict");
    p.tuple_n(0);
    p.reduce();
    if (v3) p.global_("torch", std::string(info(t.dtype()).torch_dtype));
    p.tuple();
    p.reduce();
  };
  try {
    pk.dump(root);
  } catch (Error& e) {
    e.add_context(str("while writing '", path.string(), "'"));
    throw;
  }

  AtomicFileWriter out(path, opts.overwrite);
  zip::WriteOptions zo;
  zo.align = 64;
  zo.force_zip64 = true;
  zip::ZipWriter zw(out, zo);
  const std::string pre = folder + "/";
  zw.add_stored(pre + "data.pkl", pk.bytes().data(), pk.bytes().size());
  zw.add_stored(pre + "byteorder", std::string_view("little"));
  std::vector<const StorageOut*> order;
  for (const auto& w : written) order.push_back(&w);
  std::sort(order.begin(), order.end(), [](const StorageOut* a, const StorageOut* b) { return a->key < b->key; });
  for (const StorageOut* w : order) {
    uint64_t n = uint64_t(w->end - w->begin);
    // Written as a byte view of the storage, so pages of a mapped input are released once written.
    Tensor bytes(w->storage, DType::U8, {int64_t(n)}, {1}, int64_t(w->begin));
    zw.add_stored(pre + "data/" + w->key, n, [&bytes](Writer& wr) { wr.write_tensor(bytes); });
  }
  zw.add_stored(pre + "version", std::string_view("3\n"));
  zw.finish();
  out.commit();
}

void save_pt(const Checkpoint& ckpt, const std::filesystem::path& path, const SaveOptions& opts) {
  pt_format().save(ckpt, path, opts);
}

const FormatAdapter& pt_format() {
  static const FormatAdapter a = with_writer<PtWriteOptions>(
      {.name = "pt",
       .description = "PyTorch torch.save (zip and legacy; never runs pickled code)",
       .extensions = {".pt", ".pth", ".bin", ".params", ".ckpt", ".tar"},
       .sniff = sniff_pt,
       .load = load_pt,
       .keeps_tree = true},
      {flag_option<PtWriteOptions>(
          "trim_storage", &PtWriteOptions::trim_storage,
          "1 writes only the bytes each view uses (default 0: whole storages, as torch.save)")},
      write_pt);
  return a;
}

}  // namespace tb
