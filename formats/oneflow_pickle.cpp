// OneFlow's pickles (flow.save folders and single files): OneFlow's table of globals, and turning the
// loaded objects into tensors and modules into state dicts. Folders and writers: formats/oneflow.cpp.
#include <map>
#include <set>
#include <unordered_map>

#include "formats/detail/pickle.h"
#include "formats/detail/pickle_rules.h"
#include "formats/oneflow.h"
#include "formats/oneflow_internal.h"

namespace tb::oneflow_detail {

namespace {

bool is_oneflow_global(const std::string& g) { return g.rfind("oneflow.", 0) == 0; }

/** OneFlow's table: the default globals (builtins, torch, numpy) and every `oneflow.*` class, kept
 *  as an opaque object with its state (never called); Resolver turns them into tensors. */
const pickle::Globals& oneflow_globals() {
  static const pickle::Globals g = [] {
    pickle::Globals t = pickle::default_globals();
    t.add_prefix("oneflow.");
    return t;
  }();
  return g;
}

/** Runs a OneFlow pickle: OneFlow's own classes come back as opaque objects (nothing is ever called);
 *  any other global outside the table is refused unless the caller opted in. */
Value run_pickle(const Reader& r, const LoadOptions& opts, LoadBudget& budget) {
  TB_CHECK(r.size() <= kMaxPickleBytes, FormatError, kTag, " '", r.label(), "': pickle is ", r.size(),
           " bytes; expected at most ", kMaxPickleBytes);
  std::vector<std::string> unknown;
  for (const auto& g : pickle::globals_in(r, 0, r.size()))  // names as the table spells them
    if (!oneflow_globals().find(g)) unknown.push_back(g);
  if (!unknown.empty() && !opts.allow_unknown_globals) {
    std::string list;
    for (const auto& g : unknown) list += (list.empty() ? "" : ", ") + g;
    throw UnsafeError(str(kTag, " '", r.label(), "': the pickle references ", list,
                          ", which is neither a OneFlow class nor on the allow-list; nothing was run. Pass "
                          "allow_unknown_globals (--allow-unknown-globals) to keep such objects as opaque values"));
  }
  pickle::Options po;
  po.globals = &oneflow_globals();
  po.allow_unknown_globals = opts.allow_unknown_globals;
  po.tag = kTag;
  po.max_depth = kMaxDepth;
  po.budget = &budget;
  return pickle::load(r, 0, r.size(), po);
}

/** Turns OneFlow objects of a loaded pickle into tensors and modules into their state dicts. */
class Resolver {
 public:
  Resolver(const ConfinedFolder* dir, bool mmap, const std::string& label, LoadBudget& budget)
      : dir_(dir), mmap_(mmap), label_(label), budget_(budget) {}

  Value resolve(const Value& v, size_t depth = 0) {
    TB_CHECK(depth < kMaxDepth, FormatError, kTag, " '", label_, "': object nested deeper than ", kMaxDepth);
    const void* id = v.identity();
    if (id) {
      auto it = done_.find(id);
      if (it != done_.end()) return it->second;
    }
    switch (v.kind()) {
      case Value::Kind::List:
      case Value::Kind::Tuple:
      case Value::Kind::Set: {
        done_[id] = v;
        for (auto& item : v.items()) item = resolve(item, depth + 1);
        return v;
      }
      case Value::Kind::Dict: {
        done_[id] = v;
        for (auto& kv : v.dict_data().items) kv.second = resolve(kv.second, depth + 1);
        return v;
      }
      case Value::Kind::Object: {
        Value out = resolve_object(v, depth);
        done_[id] = out;
        return out;
      }
      default: return v;
    }
  }

  std::vector<std::pair<std::string, std::string>> modules;  // path -> class
  size_t tensors = 0;

 private:
  static const Value* state_dict_of(const ValueObject& o) {
    if (o.state && o.state->is_dict()) return o.state.get();
    return nullptr;
  }

  Value resolve_object(const Value& v, size_t depth) {
    ValueObject& o = v.as_object();
    const Value* st = state_dict_of(o);
    if (is_oneflow_global(o.cls) && st) {
      if (const Value* p = st->get("path")) return Value::tensor(tensor_from_path(*p));
      if (const Value* d = st->get("data")) return Value::tensor(tensor_from_data(*d, st->get("dtype")));
    }
    // A module (OneFlow's, or a user class kept by allow_unknown_globals): its state dict, with the
    // module tree beside it (like formats/pt.cpp, read by pt_module_tree()).
    if (st && (is_oneflow_global(o.cls) ? st->get("_parameters") || st->get("_modules")
                                        : st->get("_parameters") && st->get("_modules"))) {
      Value sd = Value::dict("collections.OrderedDict");
      module_state(v, "", sd, depth);
      sd.dict_data().attrs = std::make_shared<ValueDict>();
      sd.dict_data().attrs->items.emplace_back(Value::string("__module__"), v);
      return sd;
    }
    // Keep other objects, resolving what they hold (so tensors inside stay reachable for writers).
    if (o.args) *o.args = resolve(*o.args, depth + 1);
    if (o.state) *o.state = resolve(*o.state, depth + 1);
    if (o.items) *o.items = resolve(*o.items, depth + 1);
    return v;
  }

  Tensor tensor_from_path(const Value& p) {
    TB_CHECK(p.is_str(), FormatError, kTag, " '", label_, "': tensor state 'path' is ", p.repr(),
             ", expected a string");
    const std::string& rel = p.as_str();
    TB_CHECK(dir_, FormatError, kTag, " '", label_, "': tensor refers to external folder '", rel,
             "' but this is a single-file pickle");
    TB_CHECK(is_single_component(rel), UnsafeError, kTag, " '", label_, "': tensor folder '", rel,
             "' is not a plain name inside the checkpoint folder; refusing to leave it");
    auto it = by_path_.find(rel);
    if (it != by_path_.end()) return it->second;
    Tensor t;
    try {
      t = load_variable(dir_->open_folder(rel, str(kTag, " '", label_, "': tensor folder")), mmap_);
    } catch (Error& e) {
      e.add_context(str("while loading tensor folder '", rel, "' referenced by pickled_data"));
      throw;
    }
    ++tensors;
    by_path_[rel] = t;
    return t;
  }

  Tensor tensor_from_data(const Value& d, const Value* dtype) {
    TB_CHECK(d.is_tensor(), FormatError, kTag, " '", label_, "': tensor state 'data' is ", d.repr(),
             ", expected a numpy array");
    Tensor t = d.as_tensor();
    if (dtype) {
      std::optional<DType> want;
      if (dtype->kind() == Value::Kind::Object) {
        const ValueObject& dobj = dtype->as_object();
        if (dobj.state && dobj.state->is_int()) want = dtype_from_oneflow(std::to_string(dobj.state->as_int()));
        if (!want && dobj.args && dobj.args->is_sequence() && dobj.args->items().size() == 1 &&
            dobj.args->items()[0].is_int())
          want = dtype_from_oneflow(std::to_string(dobj.args->items()[0].as_int()));
        if (!want) {
          auto dot = dobj.cls.rfind('.');
          want = dtype_from_name(dot == std::string::npos ? dobj.cls : dobj.cls.substr(dot + 1));
        }
      } else if (dtype->is_int()) {
        want = dtype_from_oneflow(std::to_string(dtype->as_int()));
      }
      if (want && *want != t.dtype()) {
        budget_.charge_bytes(LoadBudget::sat_mul(uint64_t(t.numel()), dtype_size(*want)),
                             "converting a tensor's dtype");
        t = t.to(*want);
      }
    }
    ++tensors;
    return t;
  }

  void module_state(const Value& mod, const std::string& prefix, Value& out, size_t depth) {
    TB_CHECK(depth < kMaxDepth, FormatError, kTag, " '", label_, "': modules nested deeper than ", kMaxDepth);
    const ValueObject& o = mod.as_object();
    modules.emplace_back(prefix.empty() ? std::string("(root)") : prefix.substr(0, prefix.size() - 1), o.cls);
    const Value* st = state_dict_of(o);
    if (!st) return;
    std::set<std::string> non_persistent;
    if (const Value* np = st->get("_non_persistent_buffers_set");
        np && (np->is_sequence() || np->kind() == Value::Kind::Set))
      for (const auto& x : np->items())
        if (x.is_str()) non_persistent.insert(x.as_str());
    for (const char* group : {"_parameters", "_buffers"}) {
      const Value* g = st->get(group);
      if (!g || !g->is_dict()) continue;
      for (const auto& [k, val] : g->dict_data().items) {
        if (!k.is_str() || val.is_none()) continue;
        if (std::string(group) == "_buffers" && non_persistent.count(k.as_str())) continue;
        Value t = resolve(val, depth + 1);
        if (t.is_tensor()) out.set_item(Value::string(prefix + k.as_str()), t);
      }
    }
    if (const Value* m = st->get("_modules"); m && m->is_dict()) {
      for (const auto& [k, child] : m->dict_data().items) {
        if (!k.is_str() || child.kind() != Value::Kind::Object) continue;
        module_state(child, prefix + k.as_str() + ".", out, depth + 1);
      }
    }
  }

  const ConfinedFolder* dir_;
  bool mmap_;
  std::string label_;
  LoadBudget& budget_;
  std::unordered_map<const void*, Value> done_;
  std::map<std::string, Tensor> by_path_;
};

Checkpoint finish_pickle(const Value& top, Resolver& res, const std::string& label, bool single_file) {
  TB_CHECK(top.is_dict(), FormatError, kTag, " '", label,
           "': expected the flow.save wrapper dict "
           "{'protocol_version': 1, 'data': ...} but the pickle holds ",
           top.repr());
  const Value* ver = top.get("protocol_version");
  const Value* data = top.get("data");
  TB_CHECK(ver && data, FormatError, kTag, " '", label,
           "': the pickle is a dict without the flow.save keys "
           "'protocol_version' and 'data' (keys found: ",
           top.repr(), ")");
  TB_CHECK(ver->is_int() && ver->as_int() == 1, UnsupportedError, kTag, " '", label, "': flow.save protocol_version ",
           ver->repr(), "; only version 1 is known");
  Checkpoint c;
  c.format = "oneflow";
  c.root = res.resolve(*data);
  c.info.emplace_back("layout", single_file ? "flow.save single file (pickle with numpy arrays)"
                                            : "flow.save directory (pickled_data + tensor folders)");
  c.info.emplace_back("protocol_version", "1");
  if (top.get("oneflow")) c.info.emplace_back("magic key", "oneflow");
  if (top.get("__oneflow__")) c.info.emplace_back("magic key", "__oneflow__");
  c.info.emplace_back("tensors", std::to_string(res.tensors));
  for (const auto& [path, cls] : res.modules) c.info.emplace_back(str("module ", path), cls);
  return c;
}

}  // namespace

Checkpoint load_pickle_dir(const ConfinedFolder& dir, const LoadOptions& opts) {
  auto r = dir.open_file("pickled_data", folder_context(dir), false);
  LoadBudget budget(opts.limits, r->label(), r->size());
  Value top = run_pickle(*r, opts, budget);
  Resolver res(&dir, opts.mmap, r->label(), budget);
  return finish_pickle(top, res, r->label(), false);
}

Checkpoint load_single_file(const Reader& r, const LoadOptions& opts) {
  LoadBudget budget(opts.limits, r.label(), r.size());
  Value top = run_pickle(r, opts, budget);
  TB_CHECK(top.is_dict() && (top.get("oneflow") || top.get("__oneflow__")), FormatError, kTag, " '", r.label(),
           "': not a flow.save file: expected a dict with the key 'oneflow' or '__oneflow__' but found ", top.repr());
  Resolver res(nullptr, false, r.label(), budget);
  return finish_pickle(top, res, r.label(), true);
}

}  // namespace tb::oneflow_detail
