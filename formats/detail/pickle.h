// Reading pickles written for weight files (the writer is pickle_writer.h, included below).
//
// The reader runs protocols 0-5 (the binary opcodes of 2-5 plus the text opcodes Python 2 files use)
// and builds a Value tree. It NEVER imports or calls anything: every GLOBAL / STACK_GLOBAL / INST /
// OBJ / NEWOBJ / REDUCE names a callable that is either in the caller's table of allowed globals
// (pickle_rules.h; by default builtins, torch and numpy: pickle_builtins.cpp, pickle_torch.h,
// pickle_numpy.h) and interpreted by its rule, or refused with an UnsafeError naming every offending
// global in the pickle (or, when the caller opts in, kept as an opaque ValueObject {cls, args, state}).
// The VM itself (pickle_vm.h) knows no framework.
//
// Mapping to Values with the default table:
//   None/bool/int/float/str/bytes -> scalars (ints beyond 64 bits -> FormatError)
//   list/tuple/dict/set/frozenset -> List/Tuple/Dict/Set (reference semantics through the memo)
//   collections.OrderedDict        -> Dict with cls "collections.OrderedDict"; a BUILD state
//                                     ({'_metadata': ...}) goes to ValueDict::attrs, never into items
//   torch._utils._rebuild_tensor(_v2/_v3), _rebuild_parameter(_with_state), _rebuild_from_type_v2
//                                  -> Tensor views (offset/stride in elements) over the storage that
//                                     Options::persistent_load returns for the BINPERSID: a 1-d
//                                     Value::tensor of the storage dtype (U8 for UntypedStorage)
//                                     spanning the whole storage; views of one storage share it.
//                                     A None storage (dry run) makes the rebuild return None.
//   torch.Size                     -> Tuple;  torch.device -> Str ("cpu")
//   torch.<dtype> (torch.float32)  -> Object cls "torch.dtype", args = Str "float32"
//   torch.<X>Storage               -> Object cls "torch.<X>Storage" (a class reference)
//   numpy _reconstruct/ndarray     -> Tensor (big-endian swapped, Fortran order made C order);
//                                     object ndarrays -> List (1-d) or their single element (0-d)
//   numpy.dtype                    -> Object cls "numpy.dtype", args = Str descr ("<f4")
//   numpy.core.multiarray.scalar   -> 0-d Tensor
//   complex(re, im)                -> Complex; set/frozenset -> Set; slice -> Tuple (start, stop, step)
//   range/xrange(...)              -> List of ints (up to 65536 items; else Object "builtins.range")
//   a class/function reference that is never called (e.g. xrange in an object array)
//                                  -> Object cls "global", args = Str "module.name"
//   torch.nn.modules.* instances   -> Object {cls, args, state = the module's __dict__} (allowed: never
//                                     called, only their state is recorded)
//   __torch__.* (TorchScript, opt-in) -> Object {cls, args, state}; torch.jit._pickle.* -> the value
//   anything else                  -> UnsafeError, or (allow_unknown_globals) Object {cls, args, state};
//                                     such an object reached again below itself (a config node's
//                                     parent) -> Str "<recursive reference to a CLS object>"
//   a list/tuple/set/dict containing itself -> FormatError
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "formats/detail/pickle_writer.h"  // the writer, for callers that include this header
#include "tensor/io.h"
#include "tensor/limits.h"
#include "tensor/value.h"

namespace tb::pickle {

class Globals;  // pickle_rules.h

struct Options {
  size_t max_depth = 1000;             // nesting limit (stack/mark depth); deeper input -> FormatError
  size_t max_memo = 1u << 24;          // memo entries
  bool allow_unknown_globals = false;  // false: any global outside the allow-list -> UnsafeError naming ALL
  /** TorchScript pickles (torch.jit.save): `__torch__.*` classes become Objects {cls, state = the
   *  BUILD dict of attributes} and torch.jit._pickle's typed-container markers (build_intlist,
   *  restore_type_tag, ...) return their first argument. Nothing is called either way. Used when
   *  globals is unset. */
  bool allow_torchscript_classes = false;
  /** The allowed globals and what each means (pickle_rules.h). Unset: default_globals(). */
  const Globals* globals = nullptr;
  /** Called for BINPERSID/PERSID (torch storages). Unset: persistent ids -> FormatError.
   *  For torch, the returned Value is a Tensor (1-d, the storage's dtype, whole storage). */
  std::function<Value(const Value& pid)> persistent_load;
  /** Prefix for messages, e.g. "[pt]"; the label of the reader follows. */
  std::string tag = "[pickle]";
  /** The load's budget (tensor/limits.h), shared with the caller's other work. Unset: a budget of
   *  default_load_limits() for this pickle alone. The VM charges the copies it makes, numpy array
   *  bytes, and the size of the finished tree with shared values counted at every place they
   *  appear (what walking or flattening it costs), so a few shared lists cannot stand for 2^40. */
  LoadBudget* budget = nullptr;
};

/** Python's builtins, torch's and numpy's rules (pickle_rules.h, pickle_torch.h, pickle_numpy.h): the
 *  table load() uses unless Options::globals names another. */
const Globals& default_globals();

/** Runs the pickle at [offset, offset+size) of reader; returns the top object. Never imports or calls
 *  anything: known globals are interpreted; others are refused or (opt-in) kept as opaque objects. */
Value load(const Reader& reader, uint64_t offset, uint64_t size, const Options& opts = {});
Value load(const std::vector<uint8_t>& bytes, const std::string& label, const Options& opts = {});

/** Like load(), for several pickles back to back (torch legacy stream): also returns where STOP was. */
struct Result {
  Value value;
  uint64_t end = 0;  // offset just after the STOP opcode
  int protocol = 0;  // PROTO argument (0 when absent)
};
Result load_one(const Reader& reader, uint64_t offset, uint64_t size, const Options& opts = {});

/** Every global (module.name) a pickle references, without running it (like
 *  torch.serialization.get_unsafe_globals_in_checkpoint). Throws FormatError on malformed input. */
std::vector<std::string> globals_in(const Reader& reader, uint64_t offset, uint64_t size);

/** True when module.name is in default_globals(). */
bool is_allowed_global(const std::string& module, const std::string& name);

}  // namespace tb::pickle
