// bench_io: the C++ side of the I/O benchmarks, driven by bench/run.sh -> bench/bench_io.py.
// One measurement per process, so the driver reads the peak RSS of each from the OS (wait4).
//
//   bench_io load <file> owned   tb::load with LoadOptions::mmap = false: every tensor in owned heap memory
//   bench_io load <file> mmap    tb::load with mmap = true: zero-copy open (views into the mapping)
//   bench_io memcpy <bytes>      memcpy of that many bytes between two touched buffers (the floor)
//
// Each prints one line "seconds=<s> tensors=<n> bytes=<b> mapped=<m>" (mapped = tensors whose
// storage is a file mapping, which proves the open was zero-copy).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "formats/registry.h"

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

int usage() {
  std::fprintf(stderr, "usage: bench_io load <file> owned|mmap\n       bench_io memcpy <bytes>\n");
  return 2;
}

int run_load(const std::string& path, const std::string& mode) {
  if (mode != "owned" && mode != "mmap") return usage();
  tb::LoadOptions opts;
  opts.mmap = mode == "mmap";
  // TB_BENCH_REPEAT=n: load n times in this process and report the last (first-call costs excluded).
  int repeat = std::max(1, std::atoi(std::getenv("TB_BENCH_REPEAT") ? std::getenv("TB_BENCH_REPEAT") : "1"));
  double t0 = 0, t1 = 0;
  tb::StateDict sd;
  for (int i = 0; i < repeat; ++i) {
    sd = {};
    t0 = now();
    tb::Checkpoint ck = tb::load(path, opts);
    sd = ck.state_dict();
    t1 = now();
  }
  size_t mapped = 0;
  for (const auto& [k, t] : sd)
    if (t.storage() && t.storage()->kind() == tb::Storage::Kind::Mapped) ++mapped;
  std::printf("seconds=%.6f tensors=%zu bytes=%zu mapped=%zu\n", t1 - t0, sd.size(), sd.total_bytes(), mapped);
  return 0;
}

int run_memcpy(size_t n) {
  std::vector<unsigned char> src(n, 1), dst(n, 0);  // both touched: no page faults in the timed copy
  double best = 1e30;
  for (int i = 0; i < 3; ++i) {
    double t0 = now();
    std::memcpy(dst.data(), src.data(), n);
    double t1 = now();
    best = std::min(best, t1 - t0);
    src[size_t(i) % n] = dst[(size_t(i) * 7919) % n];  // keep the copies observable
  }
  std::printf("seconds=%.6f tensors=0 bytes=%zu mapped=0\n", best, n);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 4 && std::string(argv[1]) == "load") return run_load(argv[2], argv[3]);
    if (argc == 3 && std::string(argv[1]) == "memcpy") return run_memcpy(std::strtoull(argv[2], nullptr, 10));
    return usage();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_io: %s\n", e.what());
    return 1;
  }
}
