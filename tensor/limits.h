// The load budget: what loading one input may cost, whatever its headers claim.
//
// A small hostile file can describe far more than it holds: a pickle whose lists share each other
// (2^40 paths in 1 KB), a header that claims 10^12 empty strings, an HDF5 dataset of fill values,
// an ONNX sparse tensor without values. LoadLimits caps four costs, and every loader charges what it
// builds to one LoadBudget per load before it builds it:
//   bytes    memory materialised beyond the input's own size (copies, inflated and densified data,
//            fill values, the names a tree flattens to); zero-copy views of a mapped file are free
//   objects  values built, a shared value counted at every place it is reachable (what walking or
//            flattening the tree visits), elements of object and text arrays, header entries
//   depth    nesting of containers
//   time     wall-clock seconds spent parsing structure
// Exceeding one throws LimitError naming the input, the cost, the limit and the CLI flag that raises it.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "tensor/error.h"

namespace tb {

/** Caps on the cost of one load. The defaults fit any real checkpoint we know of; raise them for
 *  trusted huge files (CLI: --max-memory, --max-objects, --max-seconds, --trust-large). */
struct LoadLimits {
  /** Bytes a load may materialise beyond the input's own size (input = every file it opens). */
  uint64_t max_bytes = uint64_t(1) << 30;
  /** Values a load may build, shared values counted at every place they appear. */
  uint64_t max_objects = 10'000'000;
  /** Nesting depth of containers. Not lifted by unlimited(): deeper trees would overflow the stack. */
  uint64_t max_depth = 1000;
  /** Wall-clock seconds a load may spend parsing structure; 0 means no limit. */
  double max_seconds = 120;

  /** No caps on bytes, objects or time (depth kept): for files the user trusts. */
  static LoadLimits unlimited();
};

/** The limits LoadOptions start from; LoadLimits{} unless set_default_load_limits changed them. */
const LoadLimits& default_load_limits();
/** Sets the process-wide default (the CLI does, once, from its flags). Not thread-safe. */
void set_default_load_limits(const LoadLimits& limits);

/** Loading would cost more than LoadLimits allow; the input may be valid (raise the limit). */
class LimitError : public Error {
 public:
  using Error::Error;
};

/** "1.5 GiB", "512 MiB", "900 B": byte counts in messages. */
std::string human_size(uint64_t n);

/** The running costs of one load, checked against its LoadLimits. Loaders that read several files
 *  (an archive's members, a folder) share one budget. Not thread-safe. */
class LoadBudget {
 public:
  /** input_bytes: the size of the input file (0 for a folder; add_input() each file read). */
  LoadBudget(const LoadLimits& limits, std::string label, uint64_t input_bytes = 0);

  /** Another file of the same load: its size joins what may be materialised. */
  void add_input(uint64_t nbytes) { input_bytes_ = sat_add(input_bytes_, nbytes); }
  /** Charges n bytes about to be materialised for `what` (a tensor, "fill values of 'w'"). */
  void charge_bytes(uint64_t n, std::string_view what) {
    if (sat_add(bytes_, n) > sat_add(input_bytes_, limits_.max_bytes)) fail_bytes(n, what);
    bytes_ += n;
  }
  /** Charges n values about to be built for `what`. */
  void charge_objects(uint64_t n, std::string_view what) {
    if (sat_add(objects_, n) > limits_.max_objects) fail_objects(n, what);
    objects_ += n;
  }
  /** As above, with the description built (by what()) only when the charge fails. */
  template <class What>
  void charge_bytes_lazy(uint64_t n, const What& what) {
    if (sat_add(bytes_, n) > sat_add(input_bytes_, limits_.max_bytes)) fail_bytes(n, what());
    bytes_ += n;
  }
  template <class What>
  void charge_objects_lazy(uint64_t n, const What& what) {
    if (sat_add(objects_, n) > limits_.max_objects) fail_objects(n, what());
    objects_ += n;
  }
  /** Throws when depth exceeds max_depth. */
  void check_depth(uint64_t depth, std::string_view what) const;
  /** Throws when more than max_seconds have passed since the budget was created. */
  void check_time(std::string_view what) const;
  /** check_time() on every 4096th call: for loops over opcodes, entries and tree nodes. */
  void tick(std::string_view what) {
    if ((++ticks_ & 4095) == 0) check_time(what);
  }

  /** The limits this budget enforces. */
  const LoadLimits& limits() const { return limits_; }
  /** The input's name, quoted in every LimitError. */
  const std::string& label() const { return label_; }
  /** Bytes charged so far (saturating). */
  uint64_t bytes_charged() const { return bytes_; }
  /** Objects charged so far. */
  uint64_t objects_charged() const { return objects_; }

  /** a + b, or UINT64_MAX when it overflows (costs saturate instead of wrapping). */
  static uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }
  /** a * b, saturating likewise. */
  static uint64_t sat_mul(uint64_t a, uint64_t b) { return b != 0 && a > UINT64_MAX / b ? UINT64_MAX : a * b; }

 private:
  /** Throws LimitError for a charge of n bytes, naming what, the total reached and the flag (--max-memory) that raises
   * the limit. */
  [[noreturn]] void fail_bytes(uint64_t n, std::string_view what) const;
  /** Throws LimitError for a charge of n objects, naming what and the flag (--max-objects) that raises the limit. */
  [[noreturn]] void fail_objects(uint64_t n, std::string_view what) const;

  LoadLimits limits_;
  std::string label_;
  uint64_t input_bytes_;
  uint64_t bytes_ = 0, objects_ = 0, ticks_ = 0;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace tb
