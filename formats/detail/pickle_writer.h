// The one pickle writer: protocols 2-5, as torch.save, np.save and flow.save write them.
//
// Two dialects, picked by the protocol:
//  - 2 and 3 (torch.save, np.save of object arrays): GLOBAL opcodes, BINPUT only for containers and
//    tensors (what the reader needs to keep shared values shared), bytes as _codecs.encode at 2.
//  - 4 and 5 (flow.save): the bytes CPython's pickle.dumps(obj, protocol) gives: 64 KiB frames,
//    MEMOIZE after every object CPython memoises, SHORT_BINUNICODE, STACK_GLOBAL, strings memoised by
//    value (CPython by identity; identifiers and dict keys are interned in practice).
// Framework rules (how a tensor is written) come from the caller through on_tensor, built from the
// primitives below; formats/detail/pickle_numpy.h writes numpy arrays for either dialect.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "tensor/value.h"

namespace tb::pickle {

class Pickler {
 public:
  /** Emits a tensor; unset -> writing a tree with a tensor throws UnsupportedError. At protocol 4+
   *  it must memoise the object it creates under &t (newobj() or reduce(), then memo_last(&t)); at
   *  2-3 value() memoises the finished tensor itself. */
  std::function<void(Pickler&, const Tensor&)> on_tensor;
  /** Prefix of the writer's messages, and the name of what is written (protocol 4+ messages). */
  std::string tag = "[pickle] writer:";
  std::string target = "the pickle";

  explicit Pickler(int protocol = 2) : protocol_(protocol), cpython_(protocol >= 4) {}

  /** PROTO, the value, STOP (framed at protocol 4+). Containers met twice are memoised and re-emitted
   *  with a memo get, so shared lists/dicts/tensors stay shared. */
  void dump(const Value& root);
  /** The bytes so far (dump() leaves the whole pickle here). */
  const std::vector<uint8_t>& bytes() const { return out_; }
  std::vector<uint8_t>& bytes() { return out_; }
  int protocol() const { return protocol_; }

  // ---- primitives (opcodes) ----
  void value(const Value& v);                                        // any Value (tensors via on_tensor)
  void global_(const std::string& module, const std::string& name);  // GLOBAL / STACK_GLOBAL, memoised
  void mark();
  void tuple();            // TUPLE (after mark); memoised at 4+
  void tuple_n(size_t n);  // EMPTY_TUPLE / TUPLE1..3 for n <= 3; memoised at 4+ when n > 0
  void reduce();           // REDUCE; memoised at 4+
  void newobj();           // NEWOBJ; memoised at 4+
  void build();
  void binpersid();
  void setitems();    // SETITEMS (after mark)
  void empty_dict();  // memoised at 4+
  void empty_list();  // memoised at 4+
  void appends();
  void none();
  void boolean(bool b);
  void integer(int64_t i);
  void real(double d);
  void string(const std::string& s);  // BINUNICODE (2-3); memoised by value at 4+
  void bytes_(const std::string& b);  // 2: _codecs.encode(str, 'latin1'); 3+: BINBYTES; memoised at 4+
  /** Memoises the top of stack under identity key (non-null) and returns its memo index. */
  uint32_t memoize(const void* key);
  /** Memo get of an identity memoised earlier; false when not memoised. */
  bool get_memo(const void* key);
  /** 4+: binds key to the object memoised last (auto-memoised by the opcode before). 2-3: nothing. */
  void memo_last(const void* key);
  /** 4+: memo get of a value memoised under a name (a numpy dtype, b'b'); false when none (always
   *  at 2-3, where such values are written again each time). */
  bool get_keyed(const std::string& key);
  /** 4+: names the object memoised last, for get_keyed(). 2-3: nothing. */
  void key_last(const std::string& key);
  /** 4+: ends the current frame when it has reached its target size, as CPython does when it starts
   *  saving an object. 2-3: nothing. */
  void commit();
  void raw(const void* p, size_t n);

 private:
  void put(uint8_t b) { (cpython_ ? frame_ : out_).push_back(b); }
  void put_u32(uint32_t v);
  /** op1 with a one-byte memo index below 256, else op4 with a four-byte one. */
  void put_memo_index(uint8_t op1, uint8_t op4, uint32_t idx);
  void get(uint32_t idx);
  uint32_t memo_op();  // MEMOIZE (4+)
  void commit_frame(bool force);
  void put_sized(uint8_t op1, uint8_t op4, uint8_t op8, const std::string& s);
  void legacy_value(const Value& v);
  void legacy_dict(const Value& v);
  void cpython_value(const Value& v, size_t depth);
  void cpython_tuple(const Value& v, size_t depth);
  void cpython_dict(const Value& v, size_t depth);
  void batch(const ValueList& items, size_t depth, uint8_t single, uint8_t multi, bool always_mark);
  void pairs(const std::vector<std::pair<Value, Value>>& items, size_t depth);

  int protocol_;
  bool cpython_;
  std::vector<uint8_t> out_, frame_;
  std::unordered_map<const void*, uint32_t> memo_keys_;
  std::unordered_map<std::string, uint32_t> keyed_, strings_, globals_;
  std::vector<Value> keep_;  // 4+: every object saved, so no address is reused (as CPython's memo)
  uint32_t next_memo_ = 0;
  size_t depth_ = 0;
};

}  // namespace tb::pickle
