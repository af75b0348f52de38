// Comparing state dicts and running round trips (the library side of `diff`, `roundtrip` and `demo`).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "formats/registry.h"

namespace tb {

/** How one tensor present in both state dicts compares (see diff_state_dicts). */
struct TensorDiff {
  std::string name;
  std::string problem;  // empty when values were compared
  double max_abs = 0, max_rel = 0;
  bool equal = false;  // within tolerance
  bool bit_exact = false;
};

/** Result of diff_state_dicts: names on one side only and a TensorDiff per common name. */
struct DiffReport {
  std::vector<std::string> only_a, only_b;
  std::vector<TensorDiff> tensors;  // names present in both, in A's order
  bool equal() const;               // nothing only on one side and every tensor equal
};

/** Compares two state dicts: names, dtypes, shapes, then values within atol + rtol * |b|. A lone
 *  unnamed tensor and a lone tensor named naming::kUnnamedTensor are the same tensor. */
DiffReport diff_state_dicts(const StateDict& a, const StateDict& b, double rtol, double atol);

/** One leg of a round trip: original -> via format -> back to the original's format -> compare. */
struct RoundTripRow {
  std::string via;
  std::string status;  // "bit-exact", "DIFFERENT", kCannotHold, "error"
  std::string detail;
};

/** Verdict of a format that refuses the content (a writer's UnsupportedError, quoted as the detail). */
inline constexpr const char* kCannotHold = "cannot hold";

/** Exit status of a round trip: 0 when at least one format held the content and every format that
 *  held it came back bit-exact; 1 otherwise (a difference, an error, or nothing checked at all). */
int round_trip_exit_code(const std::vector<RoundTripRow>& rows);

/** Runs original through each format in vias (writing temporary files under work_dir) and back to
 *  source_format (a .keras source: its weights layout, keras3-h5), comparing bit for bit with original. */
std::vector<RoundTripRow> round_trip(const StateDict& original, const std::string& source_format,
                                     const std::vector<std::string>& vias, const std::filesystem::path& work_dir);

/** A temporary folder removed on destruction. */
class ScratchDir {
 public:
  /** Creates "tensorbridge-<pid>-<random>" under the system temp folder; throws filesystem_error on failure. */
  ScratchDir();
  /** Removes the folder and everything in it, ignoring errors. */
  ~ScratchDir();
  /** The folder's path. */
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

/** True when no key contains '/' or ':' (PyTorch's dotted names, not Keras dataset paths). */
bool looks_torch_style(const StateDict& sd);

/** Names of formats that can be written. */
std::vector<std::string> writable_formats();

}  // namespace tb
