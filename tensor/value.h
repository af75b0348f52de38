// Value: a tree for whole checkpoints ({'epoch': 7, 'model_state_dict': {...}, ...}).
// Containers have reference semantics like Python objects: copying a Value copies a handle, so a
// pickle memo can hand out the same list/dict/tensor twice (tied weights stay tied).
#pragma once

#include <complex>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "tensor/state_dict.h"

namespace tb {

class Value;
using ValueList = std::vector<Value>;

/** Ordered dict; keys are Values (usually str, sometimes int as in optimizer state). */
struct ValueDict {
  std::vector<std::pair<Value, Value>> items;
  /** Python class of a dict subclass ("collections.OrderedDict"); empty for plain dict. */
  std::string cls;
  /** Attributes set on the dict object (pickle BUILD on an OrderedDict, e.g. _metadata). */
  std::shared_ptr<ValueDict> attrs;
  /** Position in items of each string key, kept by Value::set_item so that building a dict of n keys
   *  costs O(n), not O(n^2); rebuilt when items changed size elsewhere (indexed != items.size()). */
  std::unordered_map<std::string, size_t> str_pos;
  size_t indexed = 0;
};

/** An object we do not (or must not) construct: its class name, constructor args and state. */
struct ValueObject {
  std::string cls;               // "module.qualname"
  std::shared_ptr<Value> args;   // tuple or none
  std::shared_ptr<Value> state;  // BUILD / __setstate__ argument or none
  /** Items appended / set on the object after creation (list or dict subclasses). */
  std::shared_ptr<Value> items;
};

/** A Python value from a checkpoint: a scalar, text, a shared container, a tensor or an unconstructed
 *  object. Copies share containers (see the file comment). */
class Value {
 public:
  /** Python's kinds of value (Str is text, Bytes raw bytes; Object is an unconstructed class instance). */
  enum class Kind { None, Bool, Int, Float, Complex, Str, Bytes, List, Tuple, Set, Dict, Tensor, Object };

  /** None. */
  Value() noexcept : kind_(Kind::None) {}
  /** None, spelled out. */
  static Value none() { return Value(); }
  /** Scalars: bool, int (64-bit), float (double), complex. */
  static Value boolean(bool b);
  /** A Python int (64-bit signed). */
  static Value integer(int64_t i);
  /** A Python float. */
  static Value real(double d);
  /** A Python complex. */
  static Value complex(std::complex<double> c);
  /** Text (UTF-8) and raw bytes. */
  static Value string(std::string s);
  /** Python bytes, held in a std::string. */
  static Value bytes(std::string b);
  /** Containers (shared like Python objects): list, tuple, set, and a dict (cls: its dict subclass). */
  static Value list(ValueList items = {});
  /** A tuple; items() returns its elements (mutable here, unlike Python). */
  static Value tuple(ValueList items = {});
  /** A set, kept as a list in insertion order (no deduplication). */
  static Value set(ValueList items = {});
  /** An empty dict; cls names a dict subclass ("collections.OrderedDict"), empty for a plain dict. */
  static Value dict(std::string cls = {});
  /** A tensor leaf. */
  static Value tensor(Tensor t);
  /** An object of class cls ("module.qualname") with its constructor args and state, never constructed. */
  static Value object(std::string cls, Value args = {}, Value state = {});
  /** A Dict of name -> tensor, metadata dropped (the flat view every format can write). */
  static Value from_state_dict(const StateDict& sd);

  /** The kind, and its Python-like name for messages ("dict", "tensor"). */
  Kind kind() const { return kind_; }
  /** "None", "bool", "int", "float", "complex", "str", "bytes", "list", "tuple", "set", "dict",
   *  "tensor" or "object". */
  const char* kind_name() const;
  /** Kind tests. */
  bool is_none() const { return kind_ == Kind::None; }
  /** Str only (Bytes is not). */
  bool is_str() const { return kind_ == Kind::Str; }
  /** Int only (Bool is not). */
  bool is_int() const { return kind_ == Kind::Int; }
  /** Dict (of any dict subclass). */
  bool is_dict() const { return kind_ == Kind::Dict; }
  /** A tensor leaf. */
  bool is_tensor() const { return kind_ == Kind::Tensor; }
  /** List or Tuple (not Set). */
  bool is_sequence() const { return kind_ == Kind::List || kind_ == Kind::Tuple; }

  /** Accessors; each throws FormatError naming the expected and the actual kind. as_bool: Bool, or Int
   *  (non-zero is true). */
  bool as_bool() const;
  /** Int, or Bool as 0 / 1. */
  int64_t as_int() const;
  double as_float() const;  // ints convert
  /** Complex, or an Int / Float with zero imaginary part. */
  std::complex<double> as_complex() const;
  const std::string& as_str() const;  // Str or Bytes
  ValueList& items() const;           // List, Tuple or Set
  /** The shared ValueDict of a Dict; changes are seen through every copy of this Value. */
  ValueDict& dict_data() const;
  /** The tensor of a Tensor leaf. */
  const Tensor& as_tensor() const;
  /** The shared ValueObject of an Object. */
  ValueObject& as_object() const;

  /** Dict lookup by string key; nullptr when absent or not a dict. */
  const Value* get(std::string_view key) const;
  /** d[key] = value on a Dict: replaces the value of an equal str or int key in place, else appends;
   *  FormatError when this is not a dict. */
  void set_item(Value key, Value value) const;
  /** Identity of the shared container (for memo/alias detection); nullptr for scalars. */
  const void* identity() const;

  /** Short one-line rendering for messages and `inspect` ("7", "'abc'", "dict(3)"). */
  std::string repr(size_t max_len = 80) const;

 private:
  /** A List, Tuple or Set (k) holding items. */
  static Value seq(Kind k, ValueList items);
  Kind kind_;
  std::variant<std::monostate, bool, int64_t, double, std::complex<double>, std::shared_ptr<std::string>,
               std::shared_ptr<ValueList>, std::shared_ptr<ValueDict>, std::shared_ptr<Tensor>,
               std::shared_ptr<ValueObject>>
      v_;
};

/** A non-tensor leaf met while flattening: its dotted path and a short rendering. */
struct NonTensor {
  std::string path;  // "epoch", "optimizer.param_groups.0.lr"
  std::string repr;  // Value::repr()
};

/** Flattens nested dicts/lists/tuples into dotted keys ("model_state_dict.hidden.weight", "0.weight").
 *  Tensors appearing twice (same object) are inserted under each path and share storage.
 *  Non-tensor leaves (epoch, loss, strings, objects) are skipped and reported in skipped. */
StateDict flatten(const Value& root, std::vector<NonTensor>* skipped = nullptr, const std::string& prefix = {});

/** A copy of the tree with every tensor replaced by fn(tensor); containers are copied, scalars and
 *  objects kept. A container or tensor met twice is mapped once, so sharing is preserved. */
Value map_tensors(const Value& root, const std::function<Tensor(const Tensor&)>& fn);

/** Follows a dotted path ("model_state_dict" or "a.0.b") into dicts and lists; throws KeyError. */
const Value& value_at_path(const Value& root, const std::string& path);

}  // namespace tb
