// ONNX -> ONNX: the source model kept by load_onnx written again around the (possibly renamed, cast,
// selected) tensors. Nodes, inputs, outputs, value_info, opset imports, metadata, functions,
// subgraphs, doc strings, ir_version and producer stay; only what the caller changed differs:
//  - a renamed weight is renamed wherever the graph refers to it (node inputs/outputs, graph
//    inputs/outputs, value_info, subgraphs); the new name may not clash with any other value name;
//  - a weight whose dtype changed is stored in the new dtype and a Cast node back to the source type
//    is inserted where it is defined, so the graph computes as before (with the rounded weights);
//    a main-graph input or output that is the weight itself takes the new dtype;
//  - a weight left out is refused when the graph uses it, unless it is the default of a graph input;
//  - external data follows the options of save_onnx (every dense initializer, at any depth).
#include <climits>
#include <cstring>
#include <map>
#include <set>

#include "formats/naming.h"
#include "formats/onnx_walk.h"
#include "tensor/byte_size.h"

namespace tb::onnx_detail {

namespace fs = std::filesystem;

namespace {

using Graph = onnx::GraphProto;

template <class F>
void for_each_subgraph(Graph& g, const F& fn) {
  for (auto& node : *g.mutable_node())
    for (auto& a : *node.mutable_attribute()) {
      if (a.has_g()) fn(*a.mutable_g());
      for (auto& sub : *a.mutable_graphs()) fn(sub);
    }
}

/** Where g (or a subgraph of it, which may read outer values) uses the value `name`; "" when nowhere. */
std::string first_use(Graph& g, const std::string& name, bool outputs) {
  for (int i = 0; i < g.node_size(); ++i)
    for (const auto& in : g.node(i).input())
      if (in == name)
        return g.node(i).name().empty() ? str("an input of node ", i, " (", g.node(i).op_type(), ")")
                                        : str("an input of node '", g.node(i).name(), "' (", g.node(i).op_type(), ")");
  if (outputs)
    for (const auto& o : g.output())
      if (o.name() == name) return "a graph output";
  std::string found;
  for_each_subgraph(g, [&](Graph& sub) {
    if (found.empty()) found = first_use(sub, name, true);
  });
  return found;
}

void collect_names(Graph& g, std::set<std::string>& out) {
  for (const auto& node : g.node()) {
    out.insert(node.input().begin(), node.input().end());
    out.insert(node.output().begin(), node.output().end());
  }
  for (const auto& tp : g.initializer()) out.insert(tp.name());
  for (const auto& sp : g.sparse_initializer()) out.insert(sp.values().name());
  for (const auto& v : g.input()) out.insert(v.name());
  for (const auto& v : g.output()) out.insert(v.name());
  for (const auto& v : g.value_info()) out.insert(v.name());
  for_each_subgraph(g, [&](Graph& sub) { collect_names(sub, out); });
}

/** Renames values in g and below (names are unique across scopes in a valid model). */
void rename_refs(Graph& g, const std::map<std::string, std::string>& ren) {
  auto fix = [&](std::string* s) {
    auto it = ren.find(*s);
    if (it != ren.end()) *s = it->second;
  };
  for (auto& node : *g.mutable_node()) {
    for (auto& s : *node.mutable_input()) fix(&s);
    for (auto& s : *node.mutable_output()) fix(&s);
  }
  for (auto& v : *g.mutable_input()) fix(v.mutable_name());
  for (auto& v : *g.mutable_output()) fix(v.mutable_name());
  for (auto& v : *g.mutable_value_info()) fix(v.mutable_name());
  for_each_subgraph(g, [&](Graph& sub) { rename_refs(sub, ren); });
}

/** Points the users of `from` (stored in a new dtype) at `to` (its Cast back). In the main graph,
 *  inputs and outputs that are `from` itself keep their name and take elem_type `stored`. */
void redirect(Graph& g, const std::string& from, const std::string& to, bool top, int stored) {
  for (auto& node : *g.mutable_node())
    for (auto& s : *node.mutable_input())
      if (s == from) s = to;
  for (auto& v : *g.mutable_value_info())
    if (v.name() == from) v.set_name(to);
  for (auto* list : {g.mutable_input(), g.mutable_output()})
    for (auto& v : *list) {
      if (v.name() != from) continue;
      if (top && v.type().has_tensor_type())
        v.mutable_type()->mutable_tensor_type()->set_elem_type(stored);
      else if (!top && list == g.mutable_output())
        v.set_name(to);
    }
  for_each_subgraph(g, [&](Graph& sub) { redirect(sub, from, to, false, stored); });
}

/** The nonzero elements of t as ONNX sparse values + linear int64 indices. */
void fill_sparse(onnx::SparseTensorProto& sp, const std::string& name, const Tensor& t) {
  Tensor c = t.contiguous();
  size_t isz = c.itemsize();
  std::vector<int64_t> idx;
  const uint8_t* p = c.data();
  for (int64_t k = 0; k < c.numel(); ++k) {
    const uint8_t* e = p + size_t(k) * isz;
    for (size_t b = 0; b < isz; ++b)
      if (e[b]) {
        idx.push_back(k);
        break;
      }
  }
  Tensor values = Tensor::zeros(c.dtype(), {int64_t(idx.size())});
  for (size_t i = 0; i < idx.size(); ++i) std::memcpy(values.data() + i * isz, p + size_t(idx[i]) * isz, isz);
  const bool indices_named = sp.indices().has_name();
  const std::string indices_name = sp.indices().name();
  sp.Clear();
  for (int64_t d : t.shape()) sp.add_dims(d);
  fill_tensor_proto(*sp.mutable_values(), name, values);
  fill_tensor_proto(*sp.mutable_indices(), indices_name,
                    Tensor::from_vector<int64_t>(DType::I64, {int64_t(idx.size())}, idx));
  if (!indices_named) sp.mutable_indices()->clear_name();
}

/** tp's data, dims and type replaced by t's; its name (or its absence) and doc string kept. */
void refill(onnx::TensorProto& tp, const Tensor& t) {
  const bool named = tp.has_name();
  const std::string name = tp.name(), doc = tp.doc_string();
  tp.Clear();
  fill_tensor_proto(tp, name, t);
  if (!named) tp.clear_name();
  if (!doc.empty()) tp.set_doc_string(doc);
}

int64_t default_opset(const onnx::ModelProto& m) {
  for (const auto& op : m.opset_import())
    if (op.domain().empty() || op.domain() == "ai.onnx") return op.version();
  return 0;
}

struct Writing {
  const Checkpoint& ckpt;
  const KeptModel& kept;
  const fs::path& path;
  const std::string P;  // path as text, for messages
  onnx::ModelProto m;
  /** loaded name -> (name now, tensor) */
  std::map<std::string, std::pair<std::string, Tensor>> by_loaded;
  std::set<std::string> used_loaded;
  std::set<std::string> all_names;
  bool external = false;
  fs::path data_path;
  std::unique_ptr<AtomicFileWriter> data_w;
  std::vector<Tensor> top_raw;                 // streamed raw_data per main-graph initializer
  std::map<std::string, std::string> renames;  // old local name -> new (all scopes)
  struct CastNeed {
    Graph* g;
    std::string stored;  // the weight's value name (new local name)
    int source_type, stored_type;
    bool top, after_constant;
  };
  std::vector<CastNeed> casts;

  [[noreturn]] void refuse(const std::string& why) const {
    throw UnsupportedError(str("[onnx] cannot write '", P, "' with the source model's graph: ", why));
  }

  /** The checkpoint's entry for the weight `local` of the graph at `scope`, or nullptr; sets loaded. */
  const std::pair<std::string, Tensor>* lookup(const std::string& scope, const std::string& local,
                                               std::string& loaded) {
    loaded = scope + local;
    if (scope.empty()) {
      auto t = kept.transposed.find(local);
      if (t != kept.transposed.end()) loaded = t->second;
    }
    auto it = by_loaded.find(loaded);
    if (it == by_loaded.end()) return nullptr;
    used_loaded.insert(loaded);
    return &it->second;
  }

  Tensor as_stored(const std::string& scope, const std::string& local, const Tensor& t) const {
    return scope.empty() && kept.transposed.count(local) ? t.transpose(0, 1) : t;
  }

  /** The weight's name in its graph after renaming (its own when not renamed). */
  std::string new_local(const std::string& scope, const std::string& local, const std::string& loaded,
                        const std::string& now) {
    if (now == loaded) return local;
    if (now.size() <= scope.size() || now.compare(0, scope.size(), scope) != 0)
      refuse(str("'", scope + local, "' lives in subgraph '", scope.substr(0, scope.size() - 1),
                 "' and can be renamed only within it (the new name must start with '", scope, "'), not to '", now,
                 "'"));
    std::string nl = now.substr(scope.size());
    if (nl != local) renames[local] = nl;
    return nl;
  }

  /** A weight missing from the checkpoint: fine when nothing uses it or (main graph) it is an input's default. */
  void check_droppable(Graph& g, const std::string& scope, const std::string& local, bool is_input_default) {
    if (is_input_default) return;
    std::string use = first_use(g, local, true);
    if (!use.empty())
      refuse(str("the graph needs '", scope + local, "' (", use,
                 ") but it is not among the tensors to write; a graph "
                 "that references a missing initializer is broken. Keep it (check --select) or write the weights only "
                 "with --option graph=drop"));
  }

  void place_dense(onnx::TensorProto& tp, const std::string& name, const Tensor& t, bool top) {
    std::string doc = tp.doc_string();
    tp.Clear();
    if (external && t.nbytes() > 0) {
      fill_tensor_header(tp, name, t);
      uint64_t pad = (4096 - data_w->tell() % 4096) % 4096;
      data_w->write_zeros(size_t(pad));
      uint64_t offset = data_w->tell();
      data_w->write_tensor(t);
      tp.set_data_location(onnx::TensorProto::EXTERNAL);
      for (auto [k, v] : {std::pair<const char*, std::string>{"location", data_path.filename().string()},
                          {"offset", std::to_string(offset)},
                          {"length", std::to_string(t.nbytes())}}) {
        auto* e = tp.add_external_data();
        e->set_key(k);
        e->set_value(v);
      }
      if (top) top_raw.emplace_back();
    } else if (top && t.nbytes() > 0) {
      fill_tensor_header(tp, name, t);
      top_raw.push_back(t);
    } else {
      fill_tensor_proto(tp, name, t);
      if (top) top_raw.emplace_back();
    }
    if (!doc.empty()) tp.set_doc_string(doc);
  }

  void note_cast(Graph& g, const std::string& stored, int source_type, const Tensor& t, bool top, bool constant) {
    int now = info(t.dtype()).onnx;
    if (now != source_type) casts.push_back({&g, stored, source_type, now, top, constant});
  }

  /** What initializer `local` of scope becomes: the loaded tensor, its new local name in nl; nullptr
   *  when the checkpoint no longer has it (after checking that it may be dropped). */
  const std::pair<std::string, Tensor>* replacement(Graph& g, const std::string& scope, const std::string& local,
                                                    bool is_input, std::string& nl) {
    std::string loaded;
    const auto* p = lookup(scope, local, loaded);
    if (!p) {
      check_droppable(g, scope, local, is_input);
      return nullptr;
    }
    nl = new_local(scope, local, loaded, p->first);
    return p;
  }

  void initializers(Graph& g, const std::string& scope) {
    const bool top = scope.empty();
    std::set<std::string> inputs;
    if (top)
      for (const auto& v : g.input()) inputs.insert(v.name());
    google::protobuf::RepeatedPtrField<onnx::TensorProto> old;
    old.Swap(g.mutable_initializer());
    for (auto& tp : old) {
      const std::string local = tp.name();
      if (kept.untouched.count(scope + local)) {
        g.add_initializer()->Swap(&tp);
        if (top) top_raw.emplace_back();
        continue;
      }
      std::string nl;
      const auto* p = replacement(g, scope, local, inputs.count(local) > 0, nl);
      if (!p) continue;
      Tensor t = as_stored(scope, local, p->second);
      int source_type = tp.data_type();
      auto* out = g.add_initializer();
      out->Swap(&tp);
      place_dense(*out, nl, t, top);
      note_cast(g, nl, source_type, t, top, false);
    }
    google::protobuf::RepeatedPtrField<onnx::SparseTensorProto> old_sparse;
    old_sparse.Swap(g.mutable_sparse_initializer());
    for (auto& sp : old_sparse) {
      const std::string local = sp.values().name();
      if (kept.untouched.count(scope + local)) {
        g.add_sparse_initializer()->Swap(&sp);
        continue;
      }
      std::string nl;
      const auto* p = replacement(g, scope, local, inputs.count(local) > 0, nl);
      if (!p) continue;
      int source_type = sp.values().data_type();
      auto* out = g.add_sparse_initializer();
      fill_sparse(*out, nl, p->second);
      note_cast(g, nl, source_type, p->second, top, false);
    }
  }

  void constants(Graph& g, const std::string& scope) {
    // Constants left out go with their node, when nothing uses them (checked on the whole node list).
    std::set<int> dropped;
    for (int i = 0; i < g.node_size(); ++i) {
      const auto& node = g.node(i);
      if (!is_constant_node(node) || kept.untouched.count(scope + node.output(0))) continue;
      if (by_loaded.count(scope + node.output(0))) continue;
      check_droppable(g, scope, node.output(0), false);
      dropped.insert(i);
    }
    google::protobuf::RepeatedPtrField<onnx::NodeProto> old;
    old.Swap(g.mutable_node());
    for (int i = 0; i < old.size(); ++i) {
      auto& node = *old.Mutable(i);
      if (dropped.count(i)) continue;
      if (!is_constant_node(node) || kept.untouched.count(scope + node.output(0))) {
        g.add_node()->Swap(&node);
        continue;
      }
      const std::string local = node.output(0);
      std::string loaded;
      const auto* p = lookup(scope, local, loaded);
      new_local(scope, local, loaded, p->first);  // the output is renamed with the other references
      const Tensor& t = p->second;
      int source_type = 0;
      for (auto& a : *node.mutable_attribute()) {
        const std::string& an = a.name();
        if (an == "value") {
          source_type = a.t().data_type();
          refill(*a.mutable_t(), t);
        } else if (an == "sparse_value") {
          source_type = a.sparse_tensor().values().data_type();
          fill_sparse(*a.mutable_sparse_tensor(), a.sparse_tensor().values().name(), t);
        } else if (an == "value_float" || an == "value_floats" || an == "value_int" || an == "value_ints") {
          const bool is_float = an == "value_float" || an == "value_floats";
          const bool list = an == "value_floats" || an == "value_ints";
          source_type = is_float ? int(onnx::TensorProto::FLOAT) : int(onnx::TensorProto::INT64);
          if (t.dtype() == (is_float ? DType::F32 : DType::I64) && t.dim() == (list ? 1 : 0)) {
            if (is_float) {
              auto v = t.to_vector<float>();
              if (list) {
                a.clear_floats();
                for (float x : v) a.add_floats(x);
              } else {
                a.set_f(v[0]);
              }
            } else {
              auto v = t.to_vector<int64_t>();
              if (list) {
                a.clear_ints();
                for (int64_t x : v) a.add_ints(x);
              } else {
                a.set_i(v[0]);
              }
            }
          } else {  // another dtype or shape: a plain tensor value
            a.Clear();
            a.set_name("value");
            a.set_type(onnx::AttributeProto::TENSOR);
            refill(*a.mutable_t(), t);
          }
        }
      }
      auto* out = g.add_node();
      out->Swap(&node);
      note_cast(g, renames.count(local) ? renames[local] : local, source_type, t, scope.empty(), true);
    }
  }

  void check_renames() {
    std::set<std::string> freed, taken;
    for (const auto& [from, to] : renames) freed.insert(from);
    for (const auto& [from, to] : renames) {
      if (all_names.count(to) && !freed.count(to))
        refuse(str("renaming '", from, "' to '", to, "' clashes with another value of the graph named '", to, "'"));
      if (!taken.insert(to).second) refuse(str("two values would be named '", to, "'"));
    }
    for (const auto& [from, to] : renames) all_names.insert(to);
  }

  std::string unique_name(const std::string& base) {
    std::string n = base;
    for (int k = 2; all_names.count(n); ++k) n = str(base, "_", k);
    all_names.insert(n);
    return n;
  }

  void insert_casts() {
    if (casts.empty()) return;
    int64_t opset = default_opset(m);
    for (const auto& c : casts) {
      const bool bf16 = c.source_type == onnx::TensorProto::BFLOAT16 || c.stored_type == onnx::TensorProto::BFLOAT16;
      int64_t need = bf16 ? 13 : 6;
      if (c.stored_type >= 17 || c.source_type >= 17) need = 19;  // float8 and later
      if (opset < need)
        refuse(str("storing '", c.stored, "' as ", onnx_type_name(c.stored_type), " needs a Cast back to ",
                   onnx_type_name(c.source_type), ", which opset ", opset, " lacks (needs ", need, ")"));
      std::string cast_out = unique_name(c.stored + "_cast_to_" + onnx_type_name(c.source_type));
      redirect(*c.g, c.stored, cast_out, c.top, c.stored_type);
      onnx::NodeProto cast;
      cast.set_name(cast_out);
      cast.set_op_type("Cast");
      cast.add_input(c.stored);
      cast.add_output(cast_out);
      auto* a = cast.add_attribute();
      a->set_name("to");
      a->set_type(onnx::AttributeProto::INT);
      a->set_i(c.source_type);
      // Right after the Constant that defines the value, or first for an initializer.
      auto* nodes = c.g->mutable_node();
      int at = 0;
      if (c.after_constant)
        for (int i = 0; i < nodes->size(); ++i)
          if (is_constant_node(nodes->Get(i)) && nodes->Get(i).output(0) == c.stored) at = i + 1;
      *nodes->Add() = std::move(cast);
      for (int i = nodes->size() - 1; i > at; --i) nodes->SwapElements(i, i - 1);
    }
  }
};

}  // namespace

bool keeps_graph(const Checkpoint& ckpt, const OnnxWriteOptions& opts) {
  return opts.graph == "keep" && ckpt.native.format == "onnx" && ckpt.native.data != nullptr;
}

void save_kept_graph(const Checkpoint& ckpt, const fs::path& path, const OnnxWriteOptions& opts) {
  const auto& kept = *static_cast<const KeptModel*>(ckpt.native.data.get());
  Writing W{ckpt, kept, path, path.string(), *kept.skeleton, {}, {}, {}, false, {}, {}, {}, {}, {}};
  StateDict sd = ckpt.state_dict();
  uint64_t total = 0;
  for (const auto& [name, t] : sd) {
    auto it = ckpt.native.renamed_from.find(name);
    std::string loaded = it == ckpt.native.renamed_from.end() ? name : it->second;
    // Keyed by the name as the source graph stores it (the state dict has it decoded).
    loaded = naming::encode_name(loaded, naming::Target::Onnx);
    TB_CHECK(W.by_loaded.emplace(loaded, std::make_pair(name, t)).second, UnsupportedError, "[onnx] cannot write '",
             W.P, "': two tensors come from '", loaded, "'");
    total += t.nbytes();
  }

  const std::string& mode = opts.external_data;
  const uint64_t threshold = opts.external_data_threshold;
  W.external = mode == "always" || (mode == "auto" && total > threshold) || total > uint64_t(INT_MAX) - (64u << 20);
  TB_CHECK(
      !(W.external && mode == "never"), UnsupportedError, "[onnx] cannot write '", W.P, "': ", total,
      " bytes of tensors do not fit in one protobuf message (2 GiB limit); allow external data (external_data=auto)");
  W.data_path = path;
  W.data_path += ".data";
  if (W.external) W.data_w = std::make_unique<AtomicFileWriter>(W.data_path, opts.overwrite);
  AtomicFileWriter w(path, opts.overwrite);

  collect_names(*W.m.mutable_graph(), W.all_names);
  for_each_graph(*W.m.mutable_graph(), W.P, [&](Graph& g, const std::string& scope) {
    W.initializers(g, scope);
    W.constants(g, scope);
  });
  // Tensors the source did not have become initializers of the main graph that nothing uses.
  for (const auto& [loaded, entry] : W.by_loaded) {
    if (W.used_loaded.count(loaded)) continue;
    if (W.all_names.count(entry.first))
      W.refuse(str("the new tensor '", entry.first, "' has the name of a value of the graph"));
    W.all_names.insert(entry.first);
    W.place_dense(*W.m.mutable_graph()->add_initializer(), entry.first, entry.second, true);
  }
  W.check_renames();
  if (!W.renames.empty()) rename_refs(*W.m.mutable_graph(), W.renames);
  W.insert_casts();
  if (ckpt.metadata != kept.metadata) {
    W.m.clear_metadata_props();
    for (const auto& [k, v] : ckpt.metadata) {
      auto* p = W.m.add_metadata_props();
      p->set_key(k);
      p->set_value(v);
    }
  }
  stream_model_to(W.m, W.top_raw, w, path);
  if (W.data_w) W.data_w->commit();
  w.commit();
}

}  // namespace tb::onnx_detail
