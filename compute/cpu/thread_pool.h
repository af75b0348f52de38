// A fixed pool of std::threads running parallel_for ranges (the caller takes part).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tb::compute::cpu {

/** Workers started once and reused by every parallel_for; not reentrant: one parallel_for at a time. */
class ThreadPool {
 public:
  /** threads = total workers including the calling thread (>= 1). */
  explicit ThreadPool(int threads);
  /** Not copyable; the destructor stops and joins the workers. */
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  /** Total workers including the calling thread. */
  int size() const { return int(workers_.size()) + 1; }
  /** Calls fn(begin, end) over [0, n) split in contiguous chunks; runs inline when n < 2 * grain. */
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  /** Worker index's loop: waits for a job and runs its chunk index until stop_. */
  void worker(int index);
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  /** The running job, owned by the parallel_for caller, which waits until every worker is done. */
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t n_ = 0;
  int64_t chunks_ = 0;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

}  // namespace tb::compute::cpu
