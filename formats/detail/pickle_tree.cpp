// The finished tree of a pickle: depth, cycle and cost checks, and iterative destruction; see
// pickle_vm.h.
#include "formats/detail/pickle_vm.h"

#include <unordered_map>
#include <unordered_set>

namespace tb::pickle {

namespace {
void charge_tree(LoadBudget& budget, uint64_t nodes, uint64_t leaves, uint64_t name_bytes) {
  // What flattening costs per leaf besides its name: an entry (name + value) and a short rendering.
  constexpr uint64_t kLeafBytes = 128;
  budget.charge_objects(nodes, "the pickle's tree, counting a shared value at every place it appears,");
  budget.charge_bytes(LoadBudget::sat_add(name_bytes, LoadBudget::sat_mul(leaves, kLeafBytes)),
                      "flattening the pickle's tree to dotted names");
}

}  // namespace

// Depth limit, cycle check and cost of the result (iterative). The cost is what walking the tree
// costs, a shared value counted at every place it appears (each container is visited once here):
// a pickle may hand one list out twice (tied weights), but 40 levels of lists that each hold the
// level below twice stand for 2^40 values in a few hundred bytes.
void check_tree(const Value& root, const TreeCheck& tc) {
  std::unordered_set<const void*> on_path;
  auto children = [](const Value& v, std::vector<const Value*>& out) {
    out.clear();
    switch (v.kind()) {
      case Value::Kind::List:
      case Value::Kind::Tuple:
      case Value::Kind::Set:
        for (const auto& x : v.items()) out.push_back(&x);
        break;
      case Value::Kind::Dict:
        for (const auto& kv : v.dict_data().items) {
          out.push_back(&kv.first);
          out.push_back(&kv.second);
        }
        if (v.dict_data().attrs)
          for (const auto& kv : v.dict_data().attrs->items) out.push_back(&kv.second);
        break;
      case Value::Kind::Object: {
        const auto& o = v.as_object();
        for (const auto* p : {&o.args, &o.state, &o.items})
          if (*p) out.push_back(p->get());
        break;
      }
      default: break;
    }
  };
  auto is_container = [](const Value& v) {
    return v.kind() == Value::Kind::List || v.kind() == Value::Kind::Tuple || v.kind() == Value::Kind::Set ||
           v.kind() == Value::Kind::Dict || v.kind() == Value::Kind::Object;
  };
  // Per finished container: the values under it (itself included), the leaves flattening reaches
  // (objects and sets are walked too: module state dicts are flattened later) and the bytes of
  // their dotted names below it. Saturating sums: a bomb's counts exceed 64 bits.
  struct Cost {
    uint64_t nodes = 1, leaves = 1, names = 0;
  };
  std::unordered_map<const void*, Cost> done;
  auto cost_of = [&](const Value& v) {
    if (!is_container(v)) return Cost{};
    return done.at(v.identity());
  };
  auto finish = [&](const Value& v) {
    Cost c{1, 0, 0};
    auto add = [&c](const Cost& k, uint64_t name_len) {
      c.nodes = LoadBudget::sat_add(c.nodes, k.nodes);
      c.leaves = LoadBudget::sat_add(c.leaves, k.leaves);
      c.names = LoadBudget::sat_add(c.names, LoadBudget::sat_add(k.names, LoadBudget::sat_mul(k.leaves, name_len + 1)));
    };
    auto key_len = [](const Value& k) -> uint64_t { return k.is_str() ? k.as_str().size() : 80; };
    switch (v.kind()) {
      case Value::Kind::List:
      case Value::Kind::Tuple:
      case Value::Kind::Set: {
        const auto& items = v.items();
        uint64_t digits = 1;
        for (size_t i = 0, next = 10; i < items.size(); ++i) {
          if (i == next) ++digits, next *= 10;
          add(cost_of(items[i]), digits);
        }
        break;
      }
      case Value::Kind::Dict:
        for (const auto& [k, x] : v.dict_data().items) {
          c.nodes = LoadBudget::sat_add(c.nodes, cost_of(k).nodes);
          add(cost_of(x), key_len(k));
        }
        if (v.dict_data().attrs)
          for (const auto& [k, x] : v.dict_data().attrs->items) add(cost_of(x), key_len(k));
        break;
      case Value::Kind::Object: {
        const auto& o = v.as_object();
        for (const auto* p : {&o.args, &o.state, &o.items})
          if (*p) add(cost_of(**p), 0);
        break;
      }
      default: break;
    }
    c.leaves = std::max<uint64_t>(c.leaves, 1);
    done[v.identity()] = c;
  };
  struct Node {
    const Value* v;
    std::vector<const Value*> kids;
    size_t i;
  };
  std::vector<Node> path;
  auto enter = [&](const Value* v) {
    if (!is_container(*v)) return;
    const void* id = v->identity();
    if (on_path.count(id)) {
      // Opaque objects kept by allow_unknown_globals may point back at an ancestor (a config node's
      // parent, as OmegaConf keeps it): that reference becomes a placeholder, which breaks the cycle
      // for everything that walks the tree later. Plain containers that contain themselves are refused.
      TB_CHECK(tc.allow_back_references && v->kind() == Value::Kind::Object, FormatError, tc.where,
               ": the pickle builds a recursive structure (a ", v->kind_name(),
               " that contains itself); weight files never do");
      *const_cast<Value*>(v) = Value::string("<recursive reference to a " + v->as_object().cls + " object>");
      return;
    }
    if (done.count(id)) return;  // shared: its cost is known
    TB_CHECK(path.size() < tc.max_depth, FormatError, tc.where, ": objects nested deeper than ", tc.max_depth,
             " levels (limit Options::max_depth)");
    Node n{v, {}, 0};
    children(*v, n.kids);
    on_path.insert(id);
    path.push_back(std::move(n));
  };
  enter(&root);
  while (!path.empty()) {
    tc.budget->tick("checking the pickle's objects");
    Node& n = path.back();
    if (n.i < n.kids.size()) {
      const Value* c = n.kids[n.i++];
      enter(c);
    } else {
      on_path.erase(n.v->identity());
      finish(*n.v);
      path.pop_back();
    }
  }
  if (is_container(root)) {
    Cost c = done.at(root.identity());
    charge_tree(*tc.budget, c.nodes, c.leaves, c.names);
  }
}

// Breaks every container reachable from work iteratively, so that destroying a hostile deep or
// cyclic structure cannot overflow the C++ stack or leak.
void dismantle(std::vector<Value> work) {
  while (!work.empty()) {
    Value v = std::move(work.back());
    work.pop_back();
    switch (v.kind()) {
      case Value::Kind::List:
      case Value::Kind::Tuple:
      case Value::Kind::Set: {
        auto& it = v.items();
        for (auto& x : it) work.push_back(std::move(x));
        it.clear();
        break;
      }
      case Value::Kind::Dict: {
        auto& d = v.dict_data();
        for (auto& kv : d.items) {
          work.push_back(std::move(kv.first));
          work.push_back(std::move(kv.second));
        }
        d.items.clear();
        if (d.attrs) {
          for (auto& kv : d.attrs->items) work.push_back(std::move(kv.second));
          d.attrs->items.clear();
        }
        break;
      }
      case Value::Kind::Object: {
        auto& o = v.as_object();
        for (auto* p : {&o.args, &o.state, &o.items})
          if (*p) {
            work.push_back(std::move(**p));
            **p = Value();
          }
        break;
      }
      default: break;
    }
  }
}

}  // namespace tb::pickle
