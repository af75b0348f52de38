// One run, three comparisons, printed as ratios at the end:
//   1. CPU backend GEMM GFLOP/s vs raw OpenBLAS cblas_sgemm (same library numpy uses) and vs
//      numpy on /usr/bin/python3, on 1024^3 and on the seed MLP shapes; target >= 0.9x.
//   2. Seed MLP forward (Linear(20,256) -> ReLU -> Linear(256,10), batch 4096) on the CPU backend vs
//      PyTorch on this machine; target <= 1 ms.
//   3. Vulkan backend GEMM GFLOP/s and seed MLP on the first device (lavapipe in CI).
//   4. With TB_BENCH_SWEEP=1 (a GPU: far too slow for lavapipe), issue 19's shapes on Vulkan: square
//      f32 and f16 GEMMs 512-8192 and conv 3x3 32x64x56x56 -> 64 (f16 on cooperative matrices where
//      the device has them), the seed MLP at batch 65536; compare with bench/gpu_torch_ref.py in the
//      same device call (compute/README.md, "Running on a lent GPU").
// Threads: TB_BENCH_THREADS (default 2) for our backend, OpenBLAS, numpy and torch alike.
//   cmake -B build -DTB_BUILD_BENCH=ON && cmake --build build --target bench_compute && build/bench/bench_compute
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>

#include "compute/backend.h"
#include "compute/cpu/sgemm.h"

extern "C" void openblas_set_num_threads(int);

using namespace tb;
using namespace tb::compute;

namespace {

int threads() {
  const char* e = std::getenv("TB_BENCH_THREADS");
  return e ? std::max(1, std::atoi(e)) : 2;
}

struct GemmShape {
  const char* name;
  int64_t m, n, k;
};
const GemmShape kShapes[] = {
    {"1024^3", 1024, 1024, 1024}, {"mlp_hidden 4096x256x20", 4096, 256, 20}, {"mlp_out 4096x10x256", 4096, 10, 256}};

Backend& cpu_backend() {
  static auto be = cpu::make_backend(threads());
  return *be;
}
Backend* vulkan_backend() {
  static std::unique_ptr<Backend> be = vulkan::is_available() ? make_backend("vulkan") : nullptr;
  return be.get();
}

void set_flops(benchmark::State& st, double flops) {
  st.counters["GFLOP/s"] = benchmark::Counter(flops * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

void BM_openblas_sgemm(benchmark::State& st, GemmShape s) {
  openblas_set_num_threads(threads());
  Tensor a = Tensor::randn({s.m, s.k}, 1), b = Tensor::randn({s.n, s.k}, 2);
  std::vector<float> c(size_t(s.m * s.n));
  for (auto _ : st) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(s.m), int(s.n), int(s.k), 1.0f, a.data_as<float>(),
                int(s.k), b.data_as<float>(), int(s.k), 0.0f, c.data(), int(s.n));
    benchmark::DoNotOptimize(c.data());
  }
  set_flops(st, 2.0 * double(s.m * s.n * s.k));
}

void BM_own_sgemm(benchmark::State& st, GemmShape s) {
  if (!cpu::sgemm_available()) {
    st.SkipWithError("no AVX2/AVX-512 kernel on this CPU");
    return;
  }
  cpu::ThreadPool pool(threads());
  Tensor a = Tensor::randn({s.m, s.k}, 1), b = Tensor::randn({s.n, s.k}, 2);
  std::vector<float> c(size_t(s.m * s.n));
  for (auto _ : st) {
    cpu::sgemm_packed(pool, s.m, s.n, s.k, 1.0f, a.data_as<float>(), b.data_as<float>(), true, false, c.data());
    benchmark::DoNotOptimize(c.data());
  }
  set_flops(st, 2.0 * double(s.m * s.n * s.k));
}

void BM_cpu_gemm(benchmark::State& st, GemmShape s) {
  Backend& be = cpu_backend();
  Tensor a = Tensor::randn({s.m, s.k}, 1), b = Tensor::randn({s.n, s.k}, 2);
  GemmParams p;
  p.trans_b = true;
  for (auto _ : st) benchmark::DoNotOptimize(be.gemm(a, b, nullptr, p));
  set_flops(st, 2.0 * double(s.m * s.n * s.k));
}

void BM_vulkan_gemm(benchmark::State& st, GemmShape s) {
  Backend* be = vulkan_backend();
  if (!be) {
    st.SkipWithError("no Vulkan device");
    return;
  }
  Tensor a = be->upload(Tensor::randn({s.m, s.k}, 1)), b = be->upload(Tensor::randn({s.n, s.k}, 2));
  GemmParams p;
  p.trans_b = true;
  be->gemm(a, b, nullptr, p);  // warm-up: compiles the pipeline
  be->synchronize();
  for (auto _ : st) {
    Tensor y = be->gemm(a, b, nullptr, p);
    be->synchronize();
  }
  set_flops(st, 2.0 * double(s.m * s.n * s.k));
}

/** Square GEMM n^3 on Vulkan in dtype d (f16 operands take the cooperative-matrix shader where the
 *  device has one); the f32/f16 sweep of TB_BENCH_SWEEP. */
void BM_vulkan_square(benchmark::State& st, int64_t n, DType d) {
  Backend* be = vulkan_backend();
  if (!be) {
    st.SkipWithError("no Vulkan device");
    return;
  }
  Tensor a = be->upload(Tensor::randn({n, n}, 1).to(d)), b = be->upload(Tensor::randn({n, n}, 2).to(d));
  be->matmul(a, b);  // warm-up: compiles the pipelines
  be->synchronize();
  for (auto _ : st) {
    Tensor y = be->matmul(a, b);
    be->synchronize();
  }
  set_flops(st, 2.0 * double(n * n * n));
}

/** Conv 3x3, padding 1, 32x64x56x56 -> 64 channels in dtype d (issue 19's cuDNN case; f16 on
 *  cooperative matrices where the device has them). */
void BM_vulkan_conv(benchmark::State& st, DType d) {
  Backend* be = vulkan_backend();
  if (!be) {
    st.SkipWithError("no Vulkan device");
    return;
  }
  Tensor x = be->upload(Tensor::randn({32, 64, 56, 56}, 1).to(d)),
         w = be->upload(Tensor::randn({64, 64, 3, 3}, 2).to(d)), bias = be->upload(Tensor::randn({64}, 3).to(d));
  Conv2dParams p{{1, 1}, {1, 1}, {1, 1}, 1};
  be->conv2d(x, w, &bias, p);
  be->synchronize();
  for (auto _ : st) {
    Tensor y = be->conv2d(x, w, &bias, p);
    be->synchronize();
  }
  set_flops(st, 2.0 * 32 * 64 * 64 * 9 * 56 * 56);
}

struct Mlp {
  Tensor x, w1, b1, w2, b2;
  explicit Mlp(Backend& be, int64_t batch = 4096)
      : x(be.upload(Tensor::randn({batch, 20}, 1))),
        w1(be.upload(Tensor::randn({256, 20}, 2))),
        b1(be.upload(Tensor::randn({256}, 3))),
        w2(be.upload(Tensor::randn({10, 256}, 4))),
        b2(be.upload(Tensor::randn({10}, 5))) {}
  // What nn::Sequential runs for Linear -> ReLU -> Linear: the ReLU fused into the first GEMM.
  Tensor forward(Backend& be) const { return be.linear(be.linear(x, w1, &b1, /*relu=*/true), w2, &b2); }
};

void BM_cpu_mlp(benchmark::State& st) {
  Backend& be = cpu_backend();
  Mlp mlp(be);
  for (auto _ : st) benchmark::DoNotOptimize(mlp.forward(be));
}

void BM_vulkan_mlp(benchmark::State& st, int64_t batch) {
  Backend* be = vulkan_backend();
  if (!be) {
    st.SkipWithError("no Vulkan device");
    return;
  }
  Mlp mlp(*be, batch);
  mlp.forward(*be);  // warm-up: compiles the pipelines
  be->synchronize();
  for (auto _ : st) {
    Tensor y = mlp.forward(*be);
    be->synchronize();
  }
}

/** Keeps the mean time per iteration (seconds) and GFLOP/s of each benchmark for the summary. */
class Collector : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, std::pair<double, double>> results;
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& r : runs) {
      if (r.error_occurred || r.iterations == 0) continue;
      double secs = r.real_accumulated_time / double(r.iterations);
      auto it = r.counters.find("GFLOP/s");
      std::string name = r.benchmark_name();
      if (name.size() > 10 && name.compare(name.size() - 10, 10, "/real_time") == 0) name.resize(name.size() - 10);
      results[name] = {secs, it == r.counters.end() ? 0.0 : double(it->second)};
    }
    ConsoleReporter::ReportRuns(runs);
  }
};

/** Runs a Python snippet with Debian's interpreter and reads "name value" lines. */
std::map<std::string, double> python_timings(const std::string& code) {
  std::map<std::string, double> out;
  std::string path = "/tmp/tb_bench_" + std::to_string(::getpid()) + ".py";
  if (FILE* f = std::fopen(path.c_str(), "w")) {
    std::fputs(code.c_str(), f);
    std::fclose(f);
  }
  std::string t = std::to_string(threads());
  std::string cmd =
      "OMP_NUM_THREADS=" + t + " OPENBLAS_NUM_THREADS=" + t + " " + TB_TORCH_PYTHON + " " + path + " " + t;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char name[128];
    double v;
    while (std::fscanf(p, "%127s %lf", name, &v) == 2) out[name] = v;
    ::pclose(p);
  }
  std::remove(path.c_str());
  return out;
}

const char* kPython = R"PY(
import sys, time
import numpy as np
n = int(sys.argv[1])
def best(f, reps):
    f()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]
rng = np.random.default_rng(0)
for name, m, nn_, k in (("1024^3", 1024, 1024, 1024), ("mlp_hidden", 4096, 256, 20), ("mlp_out", 4096, 10, 256)):
    a = rng.standard_normal((m, k), dtype=np.float32); b = rng.standard_normal((nn_, k), dtype=np.float32)
    s = best(lambda: a @ b.T, 20 if m * nn_ * k > 1e8 else 200)
    print("numpy_" + name, 2.0 * m * nn_ * k / s / 1e9)
try:
    import torch
    torch.set_num_threads(n)
    net = torch.nn.Sequential(torch.nn.Linear(20, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
    x = torch.rand(4096, 20)
    with torch.no_grad():
        print("torch_mlp_ms", best(lambda: net(x), 200) * 1e3)
except ImportError:
    pass
)PY";

}  // namespace

int main(int argc, char** argv) {
  for (const auto& s : kShapes) {
    benchmark::RegisterBenchmark((std::string("openblas_sgemm/") + s.name).c_str(), BM_openblas_sgemm, s)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark((std::string("own_sgemm/") + s.name).c_str(), BM_own_sgemm, s)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark((std::string("cpu_gemm/") + s.name).c_str(), BM_cpu_gemm, s)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark((std::string("vulkan_gemm/") + s.name).c_str(), BM_vulkan_gemm, s)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  benchmark::RegisterBenchmark("cpu_mlp/batch4096", BM_cpu_mlp)->Unit(benchmark::kMillisecond)->UseRealTime();
  benchmark::RegisterBenchmark("vulkan_mlp/batch4096", BM_vulkan_mlp, 4096)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
  const char* sweep_env = std::getenv("TB_BENCH_SWEEP");
  bool sweep = sweep_env && std::string(sweep_env) == "1";
  const int64_t kSquare[] = {512, 1024, 2048, 4096, 8192};
  if (sweep) {
    for (int64_t n : kSquare) {
      for (DType d : {DType::F32, DType::F16}) {
        std::string name = "vulkan_square_" + std::string(dtype_name(d)) + "/" + std::to_string(n);
        benchmark::RegisterBenchmark(name.c_str(), BM_vulkan_square, n, d)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      }
    }
    for (DType d : {DType::F32, DType::F16}) {
      std::string name = "vulkan_conv3x3_" + std::string(dtype_name(d)) + "/32x64x56x56";
      benchmark::RegisterBenchmark(name.c_str(), BM_vulkan_conv, d)->Unit(benchmark::kMillisecond)->UseRealTime();
    }
    benchmark::RegisterBenchmark("vulkan_mlp/batch65536", BM_vulkan_mlp, 65536)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  benchmark::Initialize(&argc, argv);
  Collector rep;
  benchmark::RunSpecifiedBenchmarks(&rep);

  auto py = python_timings(kPython);
  auto get = [&](const std::string& k) {
    auto it = rep.results.find(k);
    return it == rep.results.end() ? std::pair<double, double>{0, 0} : it->second;
  };
  std::printf("\n== summary (%d threads) ==\n", threads());
  const char* pykeys[] = {"numpy_1024^3", "numpy_mlp_hidden", "numpy_mlp_out"};
  int i = 0;
  for (const auto& s : kShapes) {
    double ours = get(std::string("cpu_gemm/") + s.name).second;
    double blas = get(std::string("openblas_sgemm/") + s.name).second;
    double np = py.count(pykeys[i]) ? py[pykeys[i]] : 0.0;
    double vk = get(std::string("vulkan_gemm/") + s.name).second;
    double own = get(std::string("own_sgemm/") + s.name).second;
    std::printf("GEMM %-24s own kernel %7.1f GFLOP/s vs OpenBLAS: %.2fx\n", s.name, own, blas > 0 ? own / blas : 0.0);
    std::printf(
        "GEMM %-24s cpu %7.1f GFLOP/s | OpenBLAS %7.1f (ratio %.2fx, target >= 0.9) | numpy %7.1f (ratio %.2fx) | "
        "vulkan %7.1f\n",
        s.name, ours, blas, blas > 0 ? ours / blas : 0.0, np, np > 0 ? ours / np : 0.0, vk);
    ++i;
  }
  double mlp_ms = get("cpu_mlp/batch4096").first * 1e3;
  double torch_ms = py.count("torch_mlp_ms") ? py["torch_mlp_ms"] : 0.0;
  std::printf(
      "seed MLP batch 4096: cpu %.3f ms (target <= 1 ms) | PyTorch %.3f ms (ratio torch/ours %.2fx) | vulkan %.3f ms\n",
      mlp_ms, torch_ms, mlp_ms > 0 ? torch_ms / mlp_ms : 0.0, get("vulkan_mlp/batch4096").first * 1e3);
  if (Backend* vk = vulkan_backend()) std::printf("vulkan device: %s\n", vk->name().c_str());
  if (sweep) {  // lines in bench/gpu_torch_ref.py's format: name,shape,ms,GFLOP/s
    for (int64_t n : kSquare) {
      for (const char* d : {"float32", "float16"}) {
        auto r = get("vulkan_square_" + std::string(d) + "/" + std::to_string(n));
        std::printf("vulkan_%s_gemm,%lldx%lldx%lld,%.4f,%.1f\n", d, (long long)n, (long long)n, (long long)n,
                    r.first * 1e3, r.second);
      }
    }
    for (const char* d : {"float32", "float16"}) {
      auto c = get("vulkan_conv3x3_" + std::string(d) + "/32x64x56x56");
      std::printf("vulkan_%s_conv3x3,32x64x56x56,%.4f,%.1f\n", d, c.first * 1e3, c.second);
    }
    for (const char* b : {"4096", "65536"}) {
      double ms = get(std::string("vulkan_mlp/batch") + b).first * 1e3;
      double flops = 2.0 * std::atof(b) * (20 * 256 + 256 * 10);
      std::printf("vulkan_float32_mlp,batch%s,%.4f,%.1f\n", b, ms, ms > 0 ? flops / ms / 1e6 : 0.0);
    }
  }
  benchmark::Shutdown();
  return 0;
}
