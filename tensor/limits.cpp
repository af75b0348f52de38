#include "tensor/limits.h"

#include <cstdio>
#include <limits>

namespace tb {

namespace {
LoadLimits& default_limits() {
  static LoadLimits l;
  return l;
}
}  // namespace

LoadLimits LoadLimits::unlimited() {
  LoadLimits l;
  l.max_bytes = std::numeric_limits<uint64_t>::max();
  l.max_objects = std::numeric_limits<uint64_t>::max();
  l.max_seconds = 0;
  return l;
}

const LoadLimits& default_load_limits() { return default_limits(); }
void set_default_load_limits(const LoadLimits& limits) { default_limits() = limits; }

std::string human_size(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = double(n);
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  if (u == 0) return std::to_string(n) + " B";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

LoadBudget::LoadBudget(const LoadLimits& limits, std::string label, uint64_t input_bytes)
    : limits_(limits), label_(std::move(label)), input_bytes_(input_bytes), start_(std::chrono::steady_clock::now()) {}

void LoadBudget::fail_bytes(uint64_t n, std::string_view what) const {
  uint64_t total = sat_add(bytes_, n);
  throw LimitError(str("'", label_, "': ", what, " needs ", human_size(n),
                       ", which brings the memory this load "
                       "builds to ",
                       human_size(total), ", more than the input's own ", human_size(input_bytes_),
                       " plus the limit of ", human_size(limits_.max_bytes),
                       " (LoadLimits::max_bytes). If you trust this file, raise the limit with --max-memory SIZE "
                       "(or --trust-large)"));
}

void LoadBudget::fail_objects(uint64_t n, std::string_view what) const {
  throw LimitError(str("'", label_, "': ", what, " amounts to ",
                       n == UINT64_MAX ? std::string("2^64 or more") : std::to_string(n),
                       " values, which brings this load past the limit of ", limits_.max_objects,
                       " (LoadLimits::max_objects). If you trust this file, raise the limit with --max-objects N "
                       "(or --trust-large)"));
}

void LoadBudget::check_depth(uint64_t depth, std::string_view what) const {
  if (depth > limits_.max_depth)
    throw LimitError(str("'", label_, "': ", what, " nests deeper than ", limits_.max_depth,
                         " levels (LoadLimits::max_depth); weight files nest a few dozen"));
}

void LoadBudget::check_time(std::string_view what) const {
  if (limits_.max_seconds <= 0) return;
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (s > limits_.max_seconds)
    throw LimitError(str("'", label_, "': still ", what, " after ", limits_.max_seconds,
                         " s (LoadLimits::max_seconds). If you trust this file, raise the limit with --max-seconds S "
                         "(or --trust-large)"));
}

}  // namespace tb
