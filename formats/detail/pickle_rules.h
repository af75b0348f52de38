// How a framework tells the pickle VM which globals a pickle may name and what each one means.
//
// The VM (pickle_vm.cpp) knows no framework: a GLOBAL pushes a class reference, Object{cls "global",
// args Str "module.name"}, and when the pickle calls it (REDUCE), instantiates it (NEWOBJ, OBJ, INST)
// or BUILDs an object of a class, the VM looks the name up in the caller's Globals table. A name not
// in the table is refused (UnsafeError naming every such global) or, when the caller opts in, kept as
// an opaque Object{cls, args, state}. Nothing is ever imported or called: a rule interprets the call.
// Tables: builtins (pickle_builtins.cpp), torch (pickle_torch.h), numpy (pickle_numpy.h); OneFlow and
// TorchScript add their own names (formats/oneflow.cpp, pickle_torch.h).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "tensor/error.h"
#include "tensor/value.h"

namespace tb::pickle {

/** What a rule may ask of the running VM. */
class Context {
 public:
  virtual ~Context() = default;
  /** "[tag] 'label' at byte N": the start of every message about the opcode being run. */
  virtual std::string at() const = 0;
  /** Charges the load budget for copying n values / n bytes the input does not account for. */
  virtual void charge_values(uint64_t n) = 0;
  virtual void charge_bytes(uint64_t n, const char* what) = 0;
  /** Calls / instantiates another callable the way REDUCE / NEWOBJ would (rules that nest). */
  virtual Value call(const Value& callable, Value args) = 0;
  virtual Value instantiate(const Value& cls, Value args) = 0;
  /** Throws FormatError unless lo <= a.size() <= hi ("q takes lo..hi arguments but ..."). */
  void nargs(const std::string& q, const ValueList& a, size_t lo, size_t hi) const;
};

/** A call of global q: args is the argument tuple (or None), a its items. */
using CallRule = std::function<Value(Context& c, const std::string& q, Value args, const ValueList& a)>;
/** BUILD of an object of a class: returns the value that replaces the object everywhere (a numpy
 *  array becomes a tensor) or nothing when obj was updated in place. */
using BuildRule = std::function<std::optional<Value>(Context& c, Value& obj, const Value& state)>;

/** What one allowed global does. Unset call: calling it gives an opaque Object{q, args} (dtypes,
 *  layouts). Unset make: instantiating it gives Object{q, args} (module classes). */
struct Rule {
  Rule() = default;
  Rule(CallRule c, CallRule m = {}) : call(std::move(c)), make(std::move(m)) {}  // NOLINT: implicit on purpose
  CallRule call;
  CallRule make;
};

/** A table of allowed globals ("module.name", module normalised: builtins, copyreg, numpy.core). */
class Globals {
 public:
  /** Allows q with rule r (replacing an earlier rule for q). */
  void add(const std::string& q, Rule r = {}) { exact_[q] = std::move(r); }
  /** Allows every global that starts with prefix ("torch.nn.modules."). */
  void add_prefix(const std::string& prefix, Rule r = {}) { prefixes_.emplace_back(prefix, std::move(r)); }
  /** BUILD on an Object of class cls goes to r (else the state is kept as the object's state). */
  void on_build(const std::string& cls, BuildRule r) { builds_[cls] = std::move(r); }
  /** Adds every entry of other. */
  void merge(const Globals& other);
  /** The rule of q, or nullptr when q is not allowed. */
  const Rule* find(const std::string& q) const;
  const BuildRule* build_rule(const std::string& cls) const;

 private:
  std::unordered_map<std::string, Rule> exact_;
  std::vector<std::pair<std::string, Rule>> prefixes_;
  std::unordered_map<std::string, BuildRule> builds_;
};

/** Python's builtins, collections, copyreg and _codecs as the VM interprets them (containers,
 *  complex, slice, bytes, range, OrderedDict, _codecs.encode, copyreg._reconstructor). */
void add_builtin_rules(Globals& g);

// ---- helpers for rules --------------------------------------------------------------------------

/** The "module.name" of a class reference pushed by GLOBAL, or nullptr for any other value. */
const std::string* global_name(const Value& v);
/** One-line description that never recurses (safe on hostile deep values). */
std::string brief(const Value& v);
/** The ints of a tuple/list as a Shape; FormatError "<where()>: <what> must be a tuple of ints ...".
 *  where() is called only on failure (this runs for every tensor). */
template <class Where>
Shape shape_of(const Value& v, const Where& where, const char* what) {
  TB_CHECK(v.is_sequence(), FormatError, where(), ": ", what, " must be a tuple of ints but is ", brief(v));
  Shape s;
  s.reserve(v.items().size());
  for (const auto& x : v.items()) {
    TB_CHECK(x.is_int(), FormatError, where(), ": ", what, " must hold ints but holds ", brief(x));
    s.push_back(x.as_int());
  }
  return s;
}
/** latin-1 bytes of a UTF-8 string (what _codecs.encode(s, 'latin1') gives). */
std::string utf8_to_latin1(const std::string& s, const std::string& where);

}  // namespace tb::pickle
