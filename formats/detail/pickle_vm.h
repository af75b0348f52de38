// The framework-neutral pickle VM behind pickle.h: opcodes, stack, memo and the checks of the
// finished tree. What a global means comes from the caller's Globals table (pickle_rules.h).
#pragma once

#include <string>
#include <vector>

#include "formats/detail/pickle.h"
#include "formats/detail/pickle_rules.h"

namespace tb::pickle {

/** Runs the pickle at [offset, offset+size) with the globals of table. scan_only: nothing is built
 *  or called, only the globals are collected into globals_seen (in order of first use). */
Result run_vm(const Reader& reader, uint64_t offset, uint64_t size, const Options& opts, const Globals& table,
              bool scan_only, std::vector<std::string>* globals_seen = nullptr);

/** The memo indices a pickle reads back (BINGET, LONG_BINGET, GET), found by a pass over its opcodes
 *  before it runs. torch.save memoizes every value it writes, tuples of each tensor's rebuild call
 *  included, but reads few of them again: the VM keeps only the entries that are read, so the
 *  others are freed as soon as the stack lets go of them. */
class MemoReads {
 public:
  /** Every index counts as read (no scan). */
  MemoReads() = default;
  /** The indices read by the pickle at [offset, offset+size) up to its STOP, or up to the first
   *  opcode the VM would refuse (nothing after it runs). Never throws on malformed input. */
  static MemoReads scan(const Reader& r, uint64_t offset, uint64_t size);
  /** Whether a GET of idx appears in the pickle. */
  bool read(uint64_t idx) const {
    if (all_) return true;
    if (idx < dense_.size()) return dense_[size_t(idx)] != 0;
    return read_far(idx);
  }

 private:
  bool read_far(uint64_t idx) const;
  bool all_ = true;
  std::vector<uint8_t> dense_;  // by index (1: read), for indices below the pickle's size + 1024
  std::vector<uint64_t> far_;   // sorted: the others
};

/** "module.name" with Python 2 and numpy 2 module names mapped to the ones the tables use
 *  (__builtin__ -> builtins, copy_reg -> copyreg, numpy._core -> numpy.core). */
std::string qualify(const std::string& module, const std::string& name);

/** The bytes of a protocol-0 STRING line ('...' or "..." with backslash escapes); FormatError
 *  prefixed by at when malformed. */
std::string decode_string_literal(const std::string& line, const std::string& at);
/** The UTF-8 text of a protocol-0 UNICODE line (raw-unicode-escape: \uXXXX, \UXXXXXXXX, latin-1). */
std::string decode_raw_unicode(const std::string& line, const std::string& at);

/** What check_tree needs to know. */
struct TreeCheck {
  size_t max_depth;
  bool allow_back_references;  // an Object reached again below itself becomes a placeholder string
  LoadBudget* budget;
  std::string where;
};

/** Depth limit, cycle check and cost of the finished tree (iterative). The cost is what walking the
 *  tree costs, a shared value counted at every place it appears; it is charged to tc.budget. */
void check_tree(const Value& root, const TreeCheck& tc);

/** Breaks every container reachable from work iteratively, so that destroying a hostile deep or
 *  cyclic structure cannot overflow the C++ stack or leak. */
void dismantle(std::vector<Value> work);

}  // namespace tb::pickle
