// TorchScript archive reader (torch.jit.save). Layout and naming: see torchscript.h.
#include "formats/torchscript.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <unordered_map>

#include "formats/adapters.h"
#include "formats/detail/pickle.h"
#include "formats/detail/torch_storage.h"
#include "formats/detail/zip.h"

namespace tb {

namespace {

std::string tag(const Source& src) { return str("[torchscript] '", src.label(), "'"); }

std::string read_record(const zip::ZipReader& z, const std::string& name, size_t max = 4096) {
  const zip::Entry* e = z.find(name);
  if (!e || e->uncompressed_size > max) return {};
  std::string s = z.read_string(*e);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

// ---- code/: the two declaration lines of each class, read as text --------------------------------

struct ClassDecl {
  bool module = false;  // `class X(Module):`
  std::vector<std::string> params, buffers;
};
using ClassDecls = std::unordered_map<std::string, ClassDecl>;

// The quoted names of a printed list: `["weight", "bias", ]` -> {weight, bias}. TorchScript prints
// names with double quotes and backslash escapes.
std::vector<std::string> quoted_names(std::string_view s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size(); ++i) {
    char q = s[i];
    if (q != '"' && q != '\'') continue;
    std::string name;
    for (++i; i < s.size() && s[i] != q; ++i) {
      if (s[i] == '\\' && i + 1 < s.size()) ++i;
      name += s[i];
    }
    out.push_back(std::move(name));
  }
  return out;
}

// `code/__torch__/torch/nn/modules/linear.py` declares classes of `__torch__.torch.nn.modules.linear`.
void parse_code_file(const std::string& module, std::string_view text, ClassDecls& decls) {
  ClassDecl* cur = nullptr;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string_view line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
    if (line.rfind("class ", 0) == 0) {
      size_t end = line.find_first_of("(:", 6);
      std::string name(line.substr(6, end == std::string_view::npos ? std::string_view::npos : end - 6));
      cur = &decls[module + "." + name];
      cur->module = end != std::string_view::npos && line.substr(end).rfind("(Module)", 0) == 0;
      continue;
    }
    if (!cur || line.empty() || line[0] != ' ') {
      if (!line.empty() && line[0] != ' ') cur = nullptr;
      continue;
    }
    size_t first = line.find_first_not_of(' ');
    std::string_view body = line.substr(first);
    if (body.rfind("__parameters__ = ", 0) == 0) cur->params = quoted_names(body.substr(17));
    if (body.rfind("__buffers__ = ", 0) == 0) cur->buffers = quoted_names(body.substr(14));
  }
}

ClassDecls read_code(const zip::ZipReader& z, const std::string& pre, LoadBudget& budget, size_t* files) {
  ClassDecls decls;
  const std::string dir = pre + "code/";
  for (const auto& e : z.entries()) {
    if (e.name.compare(0, dir.size(), dir) != 0 || e.name.size() < dir.size() + 4 ||
        e.name.compare(e.name.size() - 3, 3, ".py") != 0)
      continue;
    z.check_claim(e);
    budget.charge_bytes(e.uncompressed_size, str("reading '", e.name, "' as text"));
    std::string module = e.name.substr(dir.size(), e.name.size() - dir.size() - 3);
    std::replace(module.begin(), module.end(), '/', '.');
    parse_code_file(module, z.read_string(e), decls);
    ++*files;
  }
  return decls;
}

// `__torch__.torch.nn.modules.linear.___torch_mangle_0.Linear` -> `__torch__.torch.nn.modules.linear.Linear`.
std::string demangle(const std::string& q) {
  std::string out;
  size_t pos = 0;
  while (pos <= q.size()) {
    size_t dot = q.find('.', pos);
    std::string part = q.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    if (part.rfind("___torch_mangle_", 0) != 0) out += (out.empty() ? "" : ".") + part;
    if (dot == std::string::npos) break;
    pos = dot + 1;
  }
  return out;
}

// ---- the module tree -> state dict + pt-shaped tree ------------------------------------------------

class TreeWalk {
 public:
  TreeWalk(const ClassDecls& decls, LoadBudget& budget, std::string where)
      : decls_(decls), budget_(budget), where_(std::move(where)) {}

  /** Appends the module's state entries (dotted under prefix) and returns its pt-shaped tree node. */
  Value module(const Value& obj, const std::string& prefix, int depth) {
    TB_CHECK(depth < 200, FormatError, where_, ": module tree deeper than 200 levels at '", prefix, "'");
    const ValueObject& o = obj.as_object();
    const auto& attrs = o.state->dict_data().items;
    budget_.charge_objects(attrs.size() + 1, str("module '", prefix, "'"));
    auto d = decls_.find(o.cls);
    const ClassDecl* decl = d == decls_.end() ? nullptr : &d->second;
    if (!decl) undeclared.insert(demangle(o.cls));
    auto in = [](const std::vector<std::string>& v, const std::string& s) {
      return std::find(v.begin(), v.end(), s) != v.end();
    };
    Value params = Value::dict("collections.OrderedDict"), buffers = Value::dict("collections.OrderedDict");
    Value mods = Value::dict("collections.OrderedDict"), state = Value::dict();
    std::vector<std::pair<std::string, const Value*>> kids;
    for (const auto& [k, v] : attrs) {
      TB_CHECK(k.is_str(), FormatError, where_, ": module '", prefix, "' (", o.cls, ") has a non-str attribute name ",
               k.repr());
      const std::string& name = k.as_str();
      if (is_module(v)) {
        kids.emplace_back(name, &v);
      } else if (decl ? in(decl->params, name) : v.is_tensor()) {
        params.dict_data().items.emplace_back(k, v);
      } else if (decl && in(decl->buffers, name)) {
        buffers.dict_data().items.emplace_back(k, v);
      } else {
        state.dict_data().items.emplace_back(k, v);
        pending_.emplace_back(prefix + name, v);  // tensors in it go after the state dict
      }
    }
    for (const auto* group : {&params, &buffers})
      for (const auto& [k, v] : group->dict_data().items)
        if (v.is_tensor())
          entries.emplace_back(prefix + k.as_str(), v);
        else
          TB_CHECK(v.is_none(), FormatError, where_, ": ", group == &params ? "parameter" : "buffer", " '",
                   prefix + k.as_str(), "' is ", v.repr(), ", not a tensor");
    for (const auto& [name, v] : kids)
      mods.dict_data().items.emplace_back(Value::string(name), module(*v, prefix + name + ".", depth + 1));
    state.dict_data().items.emplace_back(Value::string("_parameters"), params);
    state.dict_data().items.emplace_back(Value::string("_buffers"), buffers);
    state.dict_data().items.emplace_back(Value::string("_modules"), mods);
    return Value::object(demangle(o.cls), Value(), state);
  }

  /** The tensors inside the attributes that are neither parameter, buffer nor submodule. */
  void collect_outside() {
    for (const auto& [path, v] : pending_) tensors_in(v, path, 0);
  }

  bool is_module(const Value& v) const {
    if (v.kind() != Value::Kind::Object) return false;
    const ValueObject& o = v.as_object();
    if (o.cls.rfind("__torch__.", 0) != 0 || !o.state || !o.state->is_dict()) return false;
    auto d = decls_.find(o.cls);
    return d != decls_.end() ? d->second.module : o.state->get("training") != nullptr;
  }

  std::vector<std::pair<std::string, Value>> entries;  // state_dict() order
  std::vector<std::pair<std::string, Value>> outside;  // tensor attributes outside state_dict()
  std::set<std::string> undeclared;                    // classes code/ does not declare

 private:
  void tensors_in(const Value& v, const std::string& path, int depth) {
    if (depth > 64) return;
    budget_.charge_objects(1, str("attribute '", path, "'"));
    switch (v.kind()) {
      case Value::Kind::Tensor: outside.emplace_back(path, v); return;
      case Value::Kind::List:
      case Value::Kind::Tuple:
        for (size_t i = 0; i < v.items().size(); ++i) tensors_in(v.items()[i], str(path, ".", i), depth + 1);
        return;
      case Value::Kind::Dict:
        for (const auto& [k, x] : v.dict_data().items)
          tensors_in(x, path + "." + (k.is_str() ? k.as_str() : k.repr()), depth + 1);
        return;
      case Value::Kind::Object:
        if (v.as_object().state && v.as_object().state->is_dict()) tensors_in(*v.as_object().state, path, depth + 1);
        return;
      default: return;
    }
  }

  const ClassDecls& decls_;
  LoadBudget& budget_;
  std::string where_;
  std::vector<std::pair<std::string, Value>> pending_;
};

std::string join(const std::vector<std::string>& names, size_t max = 8) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < max; ++i) s += (s.empty() ? "" : ", ") + names[i];
  if (names.size() > max) s += str(", ... (", names.size(), " in all)");
  return s;
}

}  // namespace

bool sniff_torchscript(const Source& src) {
  try {
    if (!src.reader) return false;
    const Reader& r = *src.reader;
    if (r.size() < 30 || !zip::starts_with_member(r)) return false;
    // torch.save writes data.pkl first: a stored data.pkl that does not start by building a
    // `__torch__` class settles it without reading the central directory.
    if (auto first = zip::first_member(r);
        first && torch_storage::is_archive_pickle(first->name) && first->method == 0) {
      const char want[] = "c__torch__";  // after PROTO n: GLOBAL '__torch__...'
      const uint64_t at = first->data_offset;
      if (r.size() < at + 2 + sizeof(want) - 1) return false;
      char b[2 + sizeof(want) - 1];
      r.read_at(at, b, sizeof(b));
      return uint8_t(b[0]) == 0x80 && std::memcmp(b + 2, want, sizeof(want) - 1) == 0;
    }
    zip::ZipReader z(src.reader);
    if (z.entries().empty()) return false;
    const std::string& first = z.entries().front().name;
    size_t slash = first.find('/');
    if (slash == std::string::npos || slash == 0) return false;
    const std::string pre = first.substr(0, slash + 1);
    if (!z.find(pre + "data.pkl")) return false;
    if (z.find(pre + "constants.pkl")) return true;
    for (const auto& e : z.entries())
      if (e.name.compare(0, pre.size() + 5, pre + "code/") == 0) return true;
    return false;
  } catch (...) {
    return false;
  }
}

Checkpoint load_torchscript(const Source& src, const LoadOptions& opts) {
  TB_CHECK(src.reader, IoError, "[torchscript] '", src.label(), "' is a folder, not a TorchScript archive");
  const std::string where = tag(src);
  LoadBudget budget(opts.limits, src.label(), src.reader->size());
  zip::ZipReader z(src.reader);
  TB_CHECK(!z.entries().empty(), FormatError, where, ": empty zip archive, not a TorchScript archive");
  const std::string& first = z.entries().front().name;
  size_t slash = first.find('/');
  TB_CHECK(slash != std::string::npos && slash > 0, FormatError, where, ": first zip entry '", first,
           "' is not inside a folder; torch.jit.save keeps every record under one folder");
  const std::string folder = first.substr(0, slash), pre = folder + "/";
  const zip::Entry* pkl = z.find(pre + "data.pkl");
  TB_CHECK(pkl, FormatError, where, ": no '", pre, "data.pkl' record (the module tree of a TorchScript archive)");

  std::string byteorder = read_record(z, pre + "byteorder");
  std::string version = read_record(z, pre + ".data/version");
  if (version.empty()) version = read_record(z, pre + "version");
  TB_CHECK(byteorder.empty() || byteorder == "little" || byteorder == "big", FormatError, where,
           ": byteorder record is '", byteorder, "' (expected 'little' or 'big')");
  const bool big = byteorder == "big";

  size_t code_files = 0;
  ClassDecls decls = read_code(z, pre, budget, &code_files);

  auto run_pickle = [&](const zip::Entry& e, torch_storage::ZipStorages& storages) {
    pickle::Options po;
    po.tag = "[torchscript]";
    po.allow_unknown_globals = opts.allow_unknown_globals;
    po.allow_torchscript_classes = true;
    po.budget = &budget;
    po.persistent_load = [&](const Value& pid) { return storages.load(pid); };
    if (!e.stored()) budget.charge_bytes(e.uncompressed_size, str("inflating '", e.name, "'"));
    auto pr = z.open(e);
    return pickle::load_one(*pr, 0, pr->size(), po);
  };
  torch_storage::ZipStorages data(z, pre + "data/", big, opts, budget, where);
  pickle::Result res = run_pickle(*pkl, data);
  Value constants;
  torch_storage::ZipStorages const_storages(z, pre + "constants/", big, opts, budget, where);
  if (const zip::Entry* c = z.find(pre + "constants.pkl")) constants = run_pickle(*c, const_storages).value;

  TreeWalk walk(decls, budget, where);
  TB_CHECK(walk.is_module(res.value), FormatError, where, ": data.pkl holds ", res.value.repr(),
           ", not a TorchScript module (an object of a __torch__ class with attributes)");
  Value tree = walk.module(res.value, "", 0);
  walk.collect_outside();

  Checkpoint ck;
  ck.format = "torchscript";
  Value root = Value::dict("collections.OrderedDict");
  auto& items = root.dict_data().items;
  std::unordered_map<std::string, bool> taken;
  for (const auto& [name, t] : walk.entries) {
    items.emplace_back(Value::string(name), t);
    taken[name] = true;
  }
  std::vector<std::string> outside;
  for (const auto& [name, t] : walk.outside) {
    if (!taken.emplace(name, true).second) continue;
    items.emplace_back(Value::string(name), t);
    outside.push_back(name);
  }
  size_t nconst = 0;
  if (!constants.is_none()) {
    TB_CHECK(constants.kind() == Value::Kind::Tuple, FormatError, where, ": constants.pkl holds ", constants.repr(),
             ", expected a tuple of tensors");
    for (size_t i = 0; i < constants.items().size(); ++i) {
      const Value& c = constants.items()[i];
      std::string name = str("constants.c", i);
      if (!c.is_tensor()) {
        ck.info.emplace_back("constant left out", str("c", i, " = ", c.repr(60), " (not a tensor)"));
      } else if (!taken.emplace(name, true).second) {
        ck.info.emplace_back("constant left out", str("c", i, ": the name '", name, "' is a state_dict key"));
      } else {
        items.emplace_back(Value::string(name), c);
        ++nconst;
      }
    }
  }
  root.dict_data().attrs = std::make_shared<ValueDict>();
  root.dict_data().attrs->items.emplace_back(Value::string("__module__"), tree);
  ck.root = root;

  ck.info.emplace_back("container", "zip (TorchScript, torch.jit.save)");
  ck.info.emplace_back("archive", folder);
  if (!version.empty()) ck.info.emplace_back("version", version);
  ck.info.emplace_back("byteorder", byteorder.empty() ? "little (no record)" : byteorder);
  ck.info.emplace_back("pickle protocol", std::to_string(res.protocol));
  ck.info.emplace_back("whole module", str(tree.as_object().cls, " (TorchScript; its code is not run)"));
  ck.info.emplace_back("code", code_files
                                   ? str(decls.size(), " classes in ", code_files, " files (read as text, never run)")
                                   : std::string("absent"));
  if (!walk.undeclared.empty()) {
    ck.info.emplace_back("undeclared classes", join({walk.undeclared.begin(), walk.undeclared.end()}) +
                                                   ": code/ does not list their parameters and buffers; every tensor "
                                                   "attribute counts as state, in attribute order");
  }
  ck.info.emplace_back("state_dict tensors", std::to_string(walk.entries.size()));
  if (!outside.empty()) ck.info.emplace_back("tensor attributes outside state_dict", join(outside));
  ck.info.emplace_back("constants", str(nconst, nconst ? " (constants.c0 ...: CONSTANTS.c<i> of the code)" : ""));
  ck.info.emplace_back("storages", std::to_string(data.count() + const_storages.count()));
  ck.info.emplace_back("storage bytes", std::to_string(data.bytes() + const_storages.bytes()));
  std::vector<std::string> extra;
  for (const auto& e : z.entries())
    if (e.name.rfind(pre + "extra/", 0) == 0) extra.push_back(e.name.substr(pre.size() + 6));
  if (!extra.empty()) ck.info.emplace_back("extra files", join(extra));
  if (z.find(pre + "bytecode.pkl")) ck.info.emplace_back("bytecode.pkl", "present (mobile interpreter; not read)");
  return ck;
}

const FormatAdapter& torchscript_format() {
  static const FormatAdapter a{.name = "torchscript",
                               .description = "TorchScript archive (torch.jit.save; read only, its code is never run)",
                               .extensions = {},  // .pt like torch.save: recognised by content only
                               .sniff = sniff_torchscript,
                               .load = load_torchscript};
  return a;
}

}  // namespace tb
