#include "nn/arch_match.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>

#include "nn/arch_spec.h"

namespace tb::nn {

namespace {

struct Entry {
  std::string key, leaf;
  Shape shape;
};

/** Tensors owned directly by one dotted prefix, in state dict order. */
struct Group {
  std::string prefix, type;
  std::vector<Entry> entries;
};

using Pairs = std::vector<std::pair<std::string, std::string>>;

std::vector<Group> group_keys(const StateDict& sd) {
  std::vector<Group> out;
  std::map<std::string, size_t> at;
  for (auto& [k, t] : sd) {
    auto dot = k.rfind('.');
    std::string prefix = dot == std::string::npos ? std::string() : k.substr(0, dot);
    auto [it, fresh] = at.emplace(prefix, out.size());
    if (fresh) out.push_back({prefix, {}, {}});
    out[it->second].entries.push_back({k, dot == std::string::npos ? k : k.substr(dot + 1), t.shape()});
  }
  return out;
}

std::vector<Group> model_layers(Module& model) {
  std::vector<Group> layers = group_keys(model.state_dict());
  std::map<std::string, std::string> types;
  for (auto& [path, m] : model.named_modules()) types[path] = m->type_name();
  for (auto& g : layers) g.type = types.count(g.prefix) ? types[g.prefix] : "?";
  return layers;
}

bool optional_slot(const Entry& e) { return e.leaf == "num_batches_tracked" && e.shape.empty(); }

std::string shape_text(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::string group_text(const Group& g, bool with_type) {
  std::string s = g.prefix.empty() ? "(root)" : g.prefix;
  if (with_type) s += " " + g.type;
  s += ":";
  for (size_t i = 0; i < g.entries.size(); ++i)
    s += (i ? ", " : " ") + g.entries[i].leaf + " " + shape_text(g.entries[i].shape);
  return s;
}

/** The key pairs when group g fits layer l (by own names, else by position), else nullopt. */
std::optional<Pairs> fit(const Group& l, const Group& g) {
  Pairs pairs;
  bool by_name = true;
  size_t used = 0;
  for (auto& slot : l.entries) {
    auto it = std::find_if(g.entries.begin(), g.entries.end(), [&](const Entry& e) { return e.leaf == slot.leaf; });
    if (it == g.entries.end()) {
      if (optional_slot(slot)) continue;
      by_name = false;
      break;
    }
    if (it->shape != slot.shape) return std::nullopt;
    pairs.emplace_back(it->key, slot.key);
    ++used;
  }
  if (by_name && used == g.entries.size()) return pairs;
  if (by_name) return std::nullopt;  // the file's layer has tensors the architecture's lacks
  if (g.entries.size() != l.entries.size()) return std::nullopt;
  pairs.clear();
  for (size_t i = 0; i < g.entries.size(); ++i) {
    if (g.entries[i].shape != l.entries[i].shape) return std::nullopt;
    pairs.emplace_back(g.entries[i].key, l.entries[i].key);
  }
  return pairs;
}

/** Natural order of dotted names: numeric components compare as numbers ("2" < "10"). */
bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      size_t i2 = i, j2 = j;
      while (i2 < a.size() && std::isdigit(static_cast<unsigned char>(a[i2]))) ++i2;
      while (j2 < b.size() && std::isdigit(static_cast<unsigned char>(b[j2]))) ++j2;
      std::string x = a.substr(i, i2 - i), y = b.substr(j, j2 - j);
      x.erase(0, std::min(x.find_first_not_of('0'), x.size()));
      y.erase(0, std::min(y.find_first_not_of('0'), y.size()));
      if (x.size() != y.size()) return x.size() < y.size();
      if (x != y) return x < y;
      i = i2, j = j2;
      continue;
    }
    if (a[i] != b[j]) return a[i] < b[j];
    ++i, ++j;
  }
  return a.size() - i < b.size() - j;
}

struct Search {
  const std::vector<std::vector<bool>>& fits;
  std::vector<std::vector<size_t>> found;  // up to two complete assignments: layer -> group
  std::vector<size_t> current;
  std::vector<bool> taken;
  size_t steps = 0;
  bool exhausted = false;

  void run(size_t layer) {
    if (found.size() >= 2 || exhausted) return;
    if (++steps > 200000) {
      exhausted = true;
      return;
    }
    if (layer == fits.size()) {
      found.push_back(current);
      return;
    }
    for (size_t g = 0; g < taken.size(); ++g)
      if (!taken[g] && fits[layer][g]) {
        taken[g] = true;
        current.push_back(g);
        run(layer + 1);
        current.pop_back();
        taken[g] = false;
      }
  }
};

std::string assignment_text(const std::vector<Group>& layers, const std::vector<Group>& groups,
                            const std::vector<size_t>& a) {
  std::string s;
  for (size_t i = 0; i < a.size(); ++i)
    s += (i ? ", " : "") + (groups[a[i]].prefix.empty() ? std::string("(root)") : groups[a[i]].prefix) + " -> " +
         (layers[i].prefix.empty() ? std::string("(root)") : layers[i].prefix);
  return s;
}

std::string both_sides(const std::vector<Group>& layers, const std::vector<Group>& groups) {
  auto count = [](const std::vector<Group>& v) {
    size_t n = 0;
    for (auto& g : v) n += g.entries.size();
    return n;
  };
  std::string s = str("\n  architecture (", layers.size(), " layers, ", count(layers), " tensors):");
  const size_t kMax = 40;
  for (size_t i = 0; i < layers.size() && i < kMax; ++i) s += "\n    " + group_text(layers[i], true);
  if (layers.size() > kMax) s += str("\n    ... and ", layers.size() - kMax, " more");
  s += str("\n  state dict (", groups.size(), " layers, ", count(groups), " tensors, file order):");
  for (size_t i = 0; i < groups.size() && i < kMax; ++i) s += "\n    " + group_text(groups[i], false);
  if (groups.size() > kMax) s += str("\n    ... and ", groups.size() - kMax, " more");
  return s;
}

/** The first layer where the file's order breaks (layers and groups of equal count). */
std::string first_misfit(const std::vector<Group>& layers, const std::vector<Group>& groups) {
  for (size_t i = 0; i < layers.size() && i < groups.size(); ++i)
    if (!fit(layers[i], groups[i]))
      return str("\n  first misfit in file order: layer ", i + 1, " of the architecture, ", group_text(layers[i], true),
                 "\n    vs the state dict's ", group_text(groups[i], false));
  return {};
}

ArchMapping mapping_from(const std::vector<Group>& layers, const std::vector<Group>& groups,
                         const std::vector<size_t>& a, const std::string& order) {
  ArchMapping m;
  m.order = order;
  for (size_t i = 0; i < a.size(); ++i) {
    LayerMatch lm{groups[a[i]].prefix, layers[i].prefix, layers[i].type, *fit(layers[i], groups[a[i]])};
    m.layers.push_back(std::move(lm));
  }
  return m;
}

std::string render(const std::string& prefix, const std::vector<std::string>& leaves) {
  std::string s = prefix.empty() ? "" : prefix + ".";
  if (leaves.size() == 1) return s + leaves[0];
  s += "{";
  for (size_t i = 0; i < leaves.size(); ++i) s += (i ? "," : "") + leaves[i];
  return s + "}";
}

std::string leaf_of(const std::string& key) {
  auto dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

}  // namespace

bool ArchMapping::renamed() const {
  for (auto& l : layers)
    for (auto& [from, to] : l.keys)
      if (from != to) return true;
  return false;
}

std::string ArchMapping::describe() const {
  if (!renamed()) return {};
  std::string s;
  for (auto& l : layers) {
    std::vector<std::string> a, b;
    bool same_leaves = true;
    for (auto& [from, to] : l.keys) {
      a.push_back(leaf_of(from));
      b.push_back(leaf_of(to));
      same_leaves = same_leaves && a.back() == b.back();
    }
    std::string line;
    if (same_leaves) {
      line = render(l.source, a) + " -> " + render(l.target, b);
    } else {
      for (auto& [from, to] : l.keys) line += (line.empty() ? "" : ", ") + from + " -> " + to;
    }
    s += line + " (" + l.type + ")\n";
  }
  return s;
}

ArchMapping match_structure(Module& model, const StateDict& sd) {
  std::vector<Group> layers = model_layers(model), groups = group_keys(sd);
  // Exact names (what a strict load would accept) win over any order.
  {
    StateDict mine = model.state_dict();
    bool same = mine.size() == sd.size();
    for (auto& [k, t] : mine) {
      const Tensor* o = sd.find(k);
      same = same && o && o->shape() == t.shape();
    }
    if (same) {
      ArchMapping m;
      m.order = "names";
      for (auto& l : layers) {
        LayerMatch lm{l.prefix, l.prefix, l.type, {}};
        for (auto& e : l.entries) lm.keys.emplace_back(e.key, e.key);
        m.layers.push_back(std::move(lm));
      }
      return m;
    }
  }
  const size_t n = layers.size();
  std::vector<size_t> file_order(groups.size());
  for (size_t i = 0; i < file_order.size(); ++i) file_order[i] = i;
  auto fits_in = [&](const std::vector<size_t>& order) {
    if (order.size() != n) return false;
    for (size_t i = 0; i < n; ++i)
      if (!fit(layers[i], groups[order[i]])) return false;
    return true;
  };
  std::vector<size_t> natural = file_order;
  std::stable_sort(natural.begin(), natural.end(),
                   [&](size_t a, size_t b) { return natural_less(groups[a].prefix, groups[b].prefix); });
  // Keys in byte order ("l.0", "l.10", "l.2") were sorted by a writer (safetensors does): the natural
  // order of the names is then closer to the module order than the file's.
  std::vector<std::string> keys = sd.keys();
  const bool writer_sorted = std::is_sorted(keys.begin(), keys.end()) && natural != file_order;
  if (writer_sorted && fits_in(natural))
    return mapping_from(layers, groups, natural, "natural name order; the file's keys are sorted");
  if (fits_in(file_order)) return mapping_from(layers, groups, file_order, "file order");
  if (!writer_sorted && natural != file_order && fits_in(natural))
    return mapping_from(layers, groups, natural, "natural name order");

  const std::string head = "nn: the state dict does not fit the architecture by structure";
  const std::string tail = "\n  (--strict-names loads by exact names only; --select/--key pick part of a file)";
  if (groups.size() != n) {
    // Which layers of the file (or of the architecture) have no counterpart with their shapes?
    std::string lonely;
    for (auto& g : groups) {
      bool any = false;
      for (auto& l : layers) any = any || fit(l, g).has_value();
      if (!any) lonely += "\n  no layer of the architecture fits the state dict's " + group_text(g, false);
    }
    for (auto& l : layers) {
      bool any = false;
      for (auto& g : groups) any = any || fit(l, g).has_value();
      if (!any) lonely += "\n  nothing in the state dict fits the architecture's " + group_text(l, true);
    }
    throw KeyError(str(head, ": the state dict has ", groups.size(), " layers with tensors, the architecture ", n,
                       both_sides(layers, groups), lonely, tail));
  }
  // Searching orders by shape is quadratic in the layers: bounded for very large files.
  TB_CHECK(n <= 2000, KeyError, head, ": neither the file's order nor the names' fits, and with ", n,
           " layers the orders allowed by shape are not searched", first_misfit(layers, groups), tail);
  std::vector<std::vector<bool>> fits(n, std::vector<bool>(n));
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) fits[i][j] = fit(layers[i], groups[j]).has_value();
  Search search{fits, {}, {}, std::vector<bool>(n, false)};
  search.run(0);
  if (search.found.size() == 1 && !search.exhausted)
    return mapping_from(layers, groups, search.found[0], "shapes (the only order that fits)");
  if (!search.found.empty())
    throw KeyError(str(head, ": the file's order does not fit and several orders do; candidates:\n  (1) ",
                       assignment_text(layers, groups, search.found[0]), "\n  (2) ",
                       assignment_text(layers, groups, search.found[1]),
                       search.exhausted ? "\n  (and possibly more)" : "", both_sides(layers, groups),
                       "\n  (rename the keys to the architecture's names with --rename, or use --strict-names)"));
  // No order fits: name the first layer where the file's order breaks.
  std::string first = first_misfit(layers, groups);
  bool names_pair = true;  // every layer pairs up by tensor names: the difference is in the shapes
  for (size_t i = 0; i < n; ++i) {
    std::vector<std::string> a, b;
    for (auto& e : layers[i].entries) a.push_back(e.leaf);
    for (auto& e : groups[i].entries) b.push_back(e.leaf);
    names_pair = names_pair && a == b;
  }
  std::string msg = str(head, ": no order of the file's layers has the architecture's shapes", first,
                        both_sides(layers, groups), tail);
  if (names_pair) throw ShapeError(msg);
  throw KeyError(msg);
}

StateDict apply_mapping(const StateDict& sd, const ArchMapping& mapping) {
  StateDict out;
  out.metadata = sd.metadata;
  for (auto& l : mapping.layers)
    for (auto& [from, to] : l.keys) out.insert(to, sd.at(from));
  return out;
}

ArchMapping load_by_structure(Module& model, const StateDict& sd, const ArchOptions& opts) {
  if (opts.strict_names) {
    model.load_state_dict(sd, true);
    ArchMapping m;
    m.order = "names";
    return m;
  }
  ArchMapping m = match_structure(model, sd);
  StateDict renamed = apply_mapping(sd, m);
  for (auto& [k, t] : model.state_dict())  // optional buffers the file lacks keep the model's value
    if (!renamed.contains(k)) renamed.insert(k, t);
  model.load_state_dict(renamed, true);
  return m;
}

BuiltArch build_arch(const std::string& spec, const StateDict& sd, const ArchOptions& opts) {
  Module::Ptr model = builtin_model(spec);
  ArchMapping m = load_by_structure(*model, sd, opts);
  return {model, std::move(m)};
}

}  // namespace tb::nn
