// The walk over every graph of an ONNX model and the reading of its weights at every depth
// (naming rule in formats/onnx_walk.h).
#include "formats/onnx_walk.h"

#include "formats/naming.h"

#include <map>

namespace tb::onnx_detail {

namespace {

bool holds_graphs(const onnx::NodeProto& node) {
  for (const auto& a : node.attribute())
    if (a.has_g() || a.graphs_size() > 0) return true;
  return false;
}

void walk(onnx::GraphProto& g, const std::string& label, const std::string& scope, int depth,
          const std::function<void(onnx::GraphProto&, const std::string&)>& fn) {
  fn(g, scope);
  std::vector<std::string> owners;
  for (int i = 0; i < g.node_size(); ++i) {
    onnx::NodeProto& node = *g.mutable_node(i);
    if (!holds_graphs(node)) continue;
    if (owners.empty()) owners = owner_names(g);
    for (auto& a : *node.mutable_attribute()) {
      if (!a.has_g() && a.graphs_size() == 0) continue;
      std::string base = scope + owners[size_t(i)] + "/" + a.name() + "/";
      TB_CHECK(depth < kMaxGraphDepth, FormatError, "[onnx] '", label, "': subgraphs nest more than ", kMaxGraphDepth,
               " levels deep (at '", base, "'); such a file is refused");
      if (a.has_g()) walk(*a.mutable_g(), label, base, depth + 1, fn);
      for (int k = 0; k < a.graphs_size(); ++k)
        walk(*a.mutable_graphs(k), label, base + std::to_string(k) + "/", depth + 1, fn);
    }
  }
}

/** Keeps the protobuf holders whose raw_data the tensors view. */
struct Vault {
  std::vector<std::unique_ptr<google::protobuf::Message>> held;
};

struct WeightReader {
  Decoder& dec;
  Vault& vault;
  StateDict& sd;
  std::map<std::string, std::string> where;  // name -> what it is, for the duplicate message
  const std::string& label;
  std::set<std::string>* untouched;

  void add(const std::string& name, Tensor t, const std::string& what) {
    auto it = where.find(name);
    TB_CHECK(it == where.end(), FormatError, "[onnx] '", label, "': two weights have the name '", name, "' (",
             it->second, " and ", what,
             "); the file breaks ONNX's single-assignment rule or the subgraph naming rule collides");
    where[name] = what;
    // The state dict holds names as the user knows them (the naming rule's '%' escapes undone);
    // the kept graph keeps them as stored.
    if (t.defined())
      sd.insert(naming::decode_name(name, naming::Target::Onnx), std::move(t));
    else if (untouched)
      untouched->insert(name);
  }

  /** Moves tp's content into a holder, leaves its header (name, type, dims, doc string) in place and
   *  decodes the holder. An unreadable tensor is put back whole. */
  Tensor take(onnx::TensorProto& tp, const std::string& name) {
    auto h = std::make_unique<onnx::TensorProto>();
    h->Swap(&tp);
    Tensor t;
    try {
      t = dec.tensor(*h, name);
    } catch (Error& e) {
      e.add_context(str("while reading '", name, "'"));
      throw;
    }
    if (!t.defined()) {
      tp.Swap(h.get());
      return t;
    }
    tp.set_name(h->name());
    tp.set_data_type(h->data_type());
    *tp.mutable_dims() = h->dims();
    if (h->has_doc_string()) tp.set_doc_string(h->doc_string());
    if (h->has_raw_data() && h->data_location() != onnx::TensorProto::EXTERNAL) vault.held.push_back(std::move(h));
    return t;
  }

  Tensor take_sparse(onnx::SparseTensorProto& sp, const std::string& name) {
    auto h = std::make_unique<onnx::SparseTensorProto>();
    h->Swap(&sp);
    Tensor t = dec.sparse(*h, name);
    if (!t.defined()) {
      sp.Swap(h.get());
      return t;
    }
    *sp.mutable_dims() = h->dims();
    sp.mutable_values()->set_name(h->values().name());
    sp.mutable_values()->set_data_type(h->values().data_type());
    return t;
  }

  Tensor take_constant(onnx::NodeProto& node, const std::string& name) {
    for (auto& a : *node.mutable_attribute()) {
      if (a.name() == "value" && a.has_t()) return take(*a.mutable_t(), name);
      if (a.name() == "sparse_value" && a.has_sparse_tensor()) return take_sparse(*a.mutable_sparse_tensor(), name);
    }
    return dec.constant(node, name);  // value_float(s) / value_int(s): small, left in the node
  }
};

}  // namespace

bool is_constant_node(const onnx::NodeProto& node) {
  return node.op_type() == "Constant" && (node.domain().empty() || node.domain() == "ai.onnx") &&
         node.output_size() == 1 && !node.output(0).empty();
}

std::vector<std::string> owner_names(const onnx::GraphProto& g) {
  std::vector<std::string> names(size_t(g.node_size()));
  std::vector<int> holders;
  auto fallback = [&](int i) { return str(g.node(i).op_type(), "#", i); };
  for (int i = 0; i < g.node_size(); ++i) {
    if (!holds_graphs(g.node(i))) continue;
    holders.push_back(i);
    names[size_t(i)] = g.node(i).name().empty() ? fallback(i) : g.node(i).name();
  }
  // A name two holders share (a repeated node name, or a name equal to another's fallback) gives way
  // to the fallback, which is unique by its index; repeat until no name is shared.
  for (bool changed = true; changed;) {
    changed = false;
    std::map<std::string, int> count;
    for (int i : holders) ++count[names[size_t(i)]];
    for (int i : holders)
      if (count[names[size_t(i)]] > 1 && names[size_t(i)] != fallback(i)) {
        names[size_t(i)] = fallback(i);
        changed = true;
      }
  }
  return names;
}

void for_each_graph(onnx::GraphProto& g, const std::string& label,
                    const std::function<void(onnx::GraphProto&, const std::string&)>& fn) {
  walk(g, label, "", 0, fn);
}

StateDict read_all_weights(const Source& src, const LoadOptions& opts, onnx::ModelProto& model,
                           std::vector<std::pair<std::string, std::string>>* skipped, WeightCounts* counts,
                           std::set<std::string>* untouched) {
  auto vault = std::make_shared<Vault>();
  Decoder dec(src, opts, vault);
  StateDict sd;
  WeightCounts n;
  WeightReader r{dec, *vault, sd, {}, src.label(), untouched};
  for_each_graph(*model.mutable_graph(), src.label(), [&](onnx::GraphProto& g, const std::string& scope) {
    const std::string in = scope.empty() ? "" : " of subgraph '" + scope.substr(0, scope.size() - 1) + "'";
    int before = int(sd.size());
    for (auto& tp : *g.mutable_initializer()) {
      std::string name = scope + tp.name();
      r.add(name, r.take(tp, name), "initializer '" + tp.name() + "'" + in);
      ++n.initializers;
    }
    for (auto& sp : *g.mutable_sparse_initializer()) {
      std::string name = scope + sp.values().name();
      r.add(name, r.take_sparse(sp, name), "sparse initializer '" + sp.values().name() + "'" + in);
      ++n.sparse;
    }
    for (int i = 0; i < g.node_size(); ++i) {
      onnx::NodeProto& node = *g.mutable_node(i);
      if (!is_constant_node(node)) continue;
      std::string name = scope + node.output(0);
      r.add(name, r.take_constant(node, name), str("Constant node ", i, " '", node.output(0), "'", in));
      ++n.constants;
    }
    if (!scope.empty()) n.in_subgraphs += int(sd.size()) - before;
  });
  if (skipped) *skipped = dec.skipped();
  if (counts) *counts = n;
  return sd;
}

}  // namespace tb::onnx_detail
