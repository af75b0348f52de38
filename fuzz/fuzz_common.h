// Shared by the harnesses: run a parser on fuzzer bytes, accept tb::Error (the documented way to
// refuse input) and let anything else escape, so that libFuzzer reports it as a finding: a crash,
// a sanitizer report, std::bad_alloc (allocating what a header claims), another exception type, a
// timeout (-timeout) or running past the memory limit (-rss_limit_mb / -malloc_limit_mb).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "formats/format.h"
#include "tensor/error.h"
#include "tensor/io.h"
#include "tensor/limits.h"

namespace tbfuzz {

/** A load may legitimately materialise up to its budget (1 GiB by default: a sparse tensor densified,
 *  typed fields copied), which is what -malloc_limit_mb=1024 calls a finding. The harnesses load under
 *  a 256 MiB budget, so only an allocation the budget did not see trips the fuzzer's limit. */
inline const bool kFuzzBudget = [] {
  tb::LoadLimits limits;
  limits.max_bytes = uint64_t(256) << 20;
  tb::set_default_load_limits(limits);
  return true;
}();

inline std::shared_ptr<tb::Reader> reader(const uint8_t* data, size_t size, const char* label) {
  return tb::memory_reader(std::vector<uint8_t>(data, data + size), label);
}

inline tb::Source source(const uint8_t* data, size_t size, const char* label) {
  tb::Source s;
  s.reader = reader(data, size, label);
  return s;
}

/** Reads every tensor's bytes so that views pointing outside their storage are caught by ASan. */
inline void touch(const tb::Checkpoint& c) {
  std::vector<tb::NonTensor> skipped;
  tb::StateDict sd = c.state_dict({}, &skipped);
  volatile uint8_t sink = 0;
  for (const auto& [name, t] : sd) {
    tb::Tensor packed = t.contiguous();
    const auto* p = static_cast<const uint8_t*>(packed.data());
    size_t n = packed.nbytes();
    for (size_t i = 0; i < n; i += 61) sink = sink ^ p[i];
    if (n) sink = sink ^ p[n - 1];
  }
  (void)sink;
}

template <class F>
int guarded(F&& f) {
  try {
    f();
  } catch (const tb::Error&) {}
  return 0;
}

}  // namespace tbfuzz
