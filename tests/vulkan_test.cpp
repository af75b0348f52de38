// Vulkan backend: every op against the CPU backend with per-op tolerances, over shapes that cross
// the GEMM/conv tiles, the skinny-GEMM limits and 256-thread workgroups, each GEMM/conv shader
// forced in turn (TB_VK_GEMM, TB_VK_CONV); device residency; f16/bf16 casts bit-exact; f16 GEMMs on
// the cooperative-matrix tiling (its emulated double on lavapipe, the real one where a GPU has it).
// Without a Vulkan device every test reports SKIPPED (exit 77), never a silent pass.
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "compute/backend.h"
#include "tests/support.h"
#ifdef TB_WITH_VULKAN
#include "compute/vulkan/command_stream.h"
#include "compute/vulkan/vk_check.h"
#endif

using namespace tb;
using namespace tb::compute;

namespace {

std::unique_ptr<Backend> vk() {
  if (!vulkan::is_available()) tbtest::skip("no Vulkan device");
  return make_backend("vulkan");
}

Backend& cpu_ref() {
  static auto be = make_backend("cpu");
  return *be;
}

/** Downloads the device result and compares with the CPU result. */
void same(Backend& be, const Tensor& dev, const Tensor& ref, double rtol, double atol, const std::string& what) {
  REQUIRE(be.owns(dev));
  Tensor got = be.download(dev);
  INFO(what << ": got " << got.describe() << " want " << ref.describe());
  REQUIRE(got.shape() == ref.shape());
  REQUIRE(got.dtype() == ref.dtype());
  INFO("max |diff| " << max_abs_diff(got, ref));
  REQUIRE(allclose(got, ref, rtol, atol, true));
}

}  // namespace

TEST_CASE("vulkan: registry, device name and residency", "[vulkan]") {
  auto be = vk();
  auto names = available_backends();
  REQUIRE(std::find(names.begin(), names.end(), "vulkan") != names.end());
  REQUIRE(!vulkan::device_names().empty());
  REQUIRE(be->name().rfind("vulkan:0 (", 0) == 0);
  Tensor h = Tensor::randn({3, 5}, 1);
  Tensor d = be->upload(h);
  REQUIRE(be->owns(d));
  REQUIRE_FALSE(be->owns(h));
  REQUIRE(d.storage()->kind() == Storage::Kind::External);
  REQUIRE(d.storage()->data() == nullptr);  // device memory is never touched through data()
  REQUIRE(equal(be->download(d), h));
  // a chain of ops stays on the device; views of device tensors are device tensors
  Tensor y = be->relu(be->add(d, d));
  REQUIRE(be->owns(y));
  Tensor flat = be->flatten(y, 0);
  REQUIRE(be->owns(flat));
  REQUIRE(flat.shape() == Shape{15});
  REQUIRE(equal(be->download(flat), cpu_ref().flatten(cpu_ref().relu(cpu_ref().add(h, h)), 0)));
  // a non-contiguous view of a device tensor is repacked correctly
  Tensor t = d.transpose(0, 1);
  REQUIRE(equal(be->download(be->relu(t)), cpu_ref().relu(h.transpose(0, 1))));
  // the CPU backend refuses device tensors with a clear error
  REQUIRE_THROWS_WITH(cpu_ref().relu(d), Catch::Contains("download() it from its backend first"));
  REQUIRE_THROWS_AS(make_backend("vulkan:99"), UnsupportedError);
  REQUIRE(make_backend("vulkan:0")->name() == be->name());
  // gemm with beta = 0 ignores C, even NaN
  Tensor nan_c = Tensor::from_vector(DType::F32, {5}, std::vector<float>(5, NAN));
  GemmParams p0{false, false, 1.0f, 0.0f};
  Tensor a = Tensor::randn({3, 3}, 2);
  same(*be, be->gemm(a, h, &nan_c, p0), cpu_ref().gemm(a, h, &nan_c, p0), 1e-5, 1e-5, "gemm beta 0");
}

TEST_CASE("vulkan: recycled buffers never clobber pending work", "[vulkan]") {
  auto be = vk();
  Tensor x1 = Tensor::randn({1000}, 1), x2 = Tensor::randn({1000}, 2);
  Tensor y;
  {
    Tensor d1 = be->upload(x1);
    y = be->relu(d1);          // recorded, not yet run
  }                            // d1's buffer is parked, but the pending relu still reads it
  Tensor d2 = be->upload(x2);  // same size: must not reuse d1's buffer while it is in flight
  REQUIRE(equal(be->download(y), cpu_ref().relu(x1)));
  REQUIRE(equal(be->download(d2), x2));
  for (int i = 0; i < 3; ++i) {  // after the submit the buffer is reused, with fresh contents
    Tensor d = be->upload(x1);
    REQUIRE(equal(be->download(be->relu(d)), cpu_ref().relu(x1)));
  }
}

TEST_CASE("vulkan: gemm and linear match the CPU across tile edges", "[vulkan]") {
  auto be = vk();
  for (int64_t m : {1, 7, 33, 65, 130}) {
    for (int64_t n : {1, 7, 64, 257}) {
      for (int64_t k : {1, 17, 257}) {
        for (int t = 0; t < 4; ++t) {
          bool ta = t & 1, tb = t & 2;
          Tensor a = Tensor::randn(ta ? Shape{k, m} : Shape{m, k}, uint32_t(m * 7 + n * 3 + k + t));
          Tensor b = Tensor::randn(tb ? Shape{n, k} : Shape{k, n}, uint32_t(m + n + k * 5 + t));
          Tensor c = Tensor::randn(t == 3 ? Shape{m, n} : Shape{n}, 9);
          GemmParams p{ta, tb, 0.75f, t == 0 ? 0.0f : 1.25f};
          same(*be, be->gemm(be->upload(a), be->upload(b), &c, p), cpu_ref().gemm(a, b, &c, p), 1e-4, 1e-4,
               "gemm " + std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k));
        }
      }
    }
  }
  Tensor x = Tensor::randn({4, 3, 20}, 1), w = Tensor::randn({33, 20}, 2), bias = Tensor::randn({33}, 3);
  same(*be, be->linear(x, w, &bias), cpu_ref().linear(x, w, &bias), 1e-5, 1e-5, "linear");
  same(*be, be->linear(x, w, &bias, /*relu=*/true), cpu_ref().linear(x, w, &bias, true), 1e-5, 1e-5,
       "linear + fused relu");
  Tensor big = Tensor::randn({130, 257}, 4), wb = Tensor::randn({65, 257}, 5);
  same(*be, be->linear(be->upload(big), wb, nullptr, true), cpu_ref().relu(cpu_ref().linear(big, wb, nullptr)), 1e-4,
       1e-4, "linear + fused relu, no bias, tile edges");
}

// The register-tiled shared-memory kernel (the GPU default; lavapipe defaults to gemm_direct), forced
// through TB_VK_GEMM, on its 32/64/128 tiles' edges, with every transpose and C broadcast form;
// K and N multiples of 4 take the vec4 loads, the others the scalar ones.
TEST_CASE("vulkan: register-tiled gemm matches the CPU on tile edges and transposes", "[vulkan]") {
  ::setenv("TB_VK_GEMM", "tiled", 1);
  auto be = vk();
  ::unsetenv("TB_VK_GEMM");
  std::vector<std::array<int64_t, 3>> shapes = {
      {1, 1, 1},      {2, 3, 5},     {17, 31, 13},  {64, 64, 16}, {65, 63, 17},  {127, 129, 9},   {31, 97, 257},
      {600, 520, 37}, {513, 640, 8}, {1, 700, 600}, {5, 12, 8},   {64, 128, 32}, {130, 260, 100}, {600, 520, 36}};
  for (auto [m, n, k] : shapes) {
    for (int t = 0; t < 4; ++t) {
      bool ta = t & 1, tb = t & 2;
      Tensor a = Tensor::randn(ta ? Shape{k, m} : Shape{m, k}, uint32_t(m * 3 + n + k + t));
      Tensor b = Tensor::randn(tb ? Shape{n, k} : Shape{k, n}, uint32_t(m + n * 7 + k + t));
      Tensor c = Tensor::randn(t == 1 ? Shape{m, 1} : t == 3 ? Shape{m, n} : Shape{n}, 17);
      GemmParams p{ta, tb, 0.5f, t == 0 ? 0.0f : 2.0f, /*relu=*/t == 2};
      same(*be, be->gemm(be->upload(a), be->upload(b), &c, p), cpu_ref().gemm(a, b, &c, p), 1e-4, 1e-4,
           "tiled gemm " + std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) + " t" +
               std::to_string(t));
    }
  }
  Tensor x = Tensor::randn({3, 70, 40}, 31), w = Tensor::randn({3, 40, 90}, 32);
  same(*be, be->matmul(x, w), cpu_ref().matmul(x, w), 1e-4, 1e-4, "tiled batched matmul");
  Tensor x4 = Tensor::randn({3, 70, 40}, 33), w4 = Tensor::randn({1, 40, 92}, 34);
  same(*be, be->matmul(x4, w4), cpu_ref().matmul(x4, w4), 1e-4, 1e-4, "tiled batched matmul, vec4 loads");
}

// Shapes on both sides of the skinny-product path's limits (N <= 16, K <= 64): one thread per row.
TEST_CASE("vulkan: skinny gemm (small N and K, large M) matches the CPU", "[vulkan]") {
  auto be = vk();
  for (int64_t m : {1, 63, 65, 4099}) {
    for (int64_t n : {1, 10, 16, 17}) {
      for (int64_t k : {1, 20, 64, 65}) {
        for (int t = 0; t < 4; ++t) {
          bool ta = t & 1, tb = t & 2;
          Tensor a = Tensor::randn(ta ? Shape{k, m} : Shape{m, k}, uint32_t(m + n * 3 + k * 11 + t));
          Tensor b = Tensor::randn(tb ? Shape{n, k} : Shape{k, n}, uint32_t(m * 5 + n + k + t));
          Shape cs = t == 1 ? Shape{m, 1} : t == 3 ? Shape{m, n} : Shape{n};
          Tensor c = Tensor::randn(cs, 13);
          GemmParams p{ta, tb, 1.5f, t == 0 ? 0.0f : 0.5f, /*relu=*/t >= 2};
          same(*be, be->gemm(be->upload(a), be->upload(b), &c, p), cpu_ref().gemm(a, b, &c, p), 1e-4, 1e-4,
               "skinny gemm " + std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) + " t" +
                   std::to_string(t));
        }
      }
    }
  }
  Tensor x = Tensor::randn({2, 3, 20}, 21), b3 = Tensor::randn({2, 20, 10}, 22);
  same(*be, be->matmul(x, b3), cpu_ref().matmul(x, b3), 1e-5, 1e-5, "batched skinny matmul");
}

TEST_CASE("vulkan: batched matmul with broadcast batch dims", "[vulkan]") {
  auto be = vk();
  std::vector<std::pair<Shape, Shape>> cases = {{{5}, {5, 7}},
                                                {{3, 9, 5}, {5}},
                                                {{4, 33, 17}, {4, 17, 65}},
                                                {{2, 1, 7, 3}, {3, 3, 1}},
                                                {{1, 7, 3}, {5, 3, 8}},
                                                {{2, 3, 4, 5}, {1, 3, 5, 2}}};
  for (auto& [sa, sb] : cases) {
    Tensor a = Tensor::randn(sa, 1), b = Tensor::randn(sb, 2);
    same(*be, be->matmul(a, b), cpu_ref().matmul(a, b), 1e-5, 1e-5, "matmul " + shape_str(sa) + " @ " + shape_str(sb));
  }
}

TEST_CASE("vulkan: elementwise, activation, normalisation and softmax match the CPU", "[vulkan]") {
  auto be = vk();
  std::vector<std::pair<Shape, Shape>> shapes = {{{1}, {1}},         {{257}, {1}},
                                                 {{7, 33}, {33}},    {{2, 1, 5}, {3, 1}},
                                                 {{65537}, {65537}}, {{2, 3, 1, 4, 1, 2}, {4, 5, 1}}};
  for (auto& [sa, sb] : shapes) {
    Tensor a = Tensor::randn(sa, 3), b = Tensor::randn(sb, 4);
    same(*be, be->add(a, b), cpu_ref().add(a, b), 0, 0, "add " + shape_str(sa) + " + " + shape_str(sb));
    same(*be, be->mul(a, b), cpu_ref().mul(a, b), 0, 0, "mul " + shape_str(sa) + " * " + shape_str(sb));
    same(*be, be->relu(a), cpu_ref().relu(a), 0, 0, "relu " + shape_str(sa));
  }
  for (Shape s : {Shape{7, 3}, Shape{2, 5, 33}, Shape{2, 3, 7, 9}}) {
    Tensor x = Tensor::randn(s, 1), m = Tensor::randn({s[1]}, 2), w = Tensor::randn({s[1]}, 4),
           b = Tensor::randn({s[1]}, 5);
    Tensor v = cpu_ref().add(cpu_ref().mul(Tensor::randn({s[1]}, 3), Tensor::randn({s[1]}, 3)),
                             Tensor::from_vector(DType::F32, {1}, std::vector<float>{0.1f}));
    same(*be, be->batch_norm(x, m, v, &w, &b, 1e-5), cpu_ref().batch_norm(x, m, v, &w, &b, 1e-5), 1e-5, 1e-5,
         "batch_norm " + shape_str(s));
    same(*be, be->batch_norm(x, m, v, nullptr, nullptr, 1e-3), cpu_ref().batch_norm(x, m, v, nullptr, nullptr, 1e-3),
         1e-5, 1e-5, "batch_norm without affine " + shape_str(s));
  }
  for (auto [s, axis] :
       std::vector<std::pair<Shape, int64_t>>{{{1, 1}, 1}, {{7, 257}, -1}, {{3, 33, 5}, 1}, {{300}, 0}}) {
    Tensor x = cpu_ref().mul(Tensor::randn(s, 6), Tensor::from_vector(DType::F32, {1}, std::vector<float>{5.0f}));
    same(*be, be->softmax(x, axis), cpu_ref().softmax(x, axis), 1e-5, 1e-7, "softmax " + shape_str(s));
  }
}

// Both conv2d shaders (implicit GEMM and direct, forced through TB_VK_CONV) over groups, depthwise,
// strides, padding, dilation, 1x1, and output-channel / pixel / reduction counts across the tiles.
TEST_CASE("vulkan: implicit-GEMM and direct conv2d match the CPU", "[vulkan]") {
  struct Case {
    Shape x, w;
    Conv2dParams p;
  };
  std::vector<Case> convs = {{{1, 1, 1, 1}, {1, 1, 1, 1}, {}},
                             {{2, 3, 17, 19}, {9, 3, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, 1}},
                             {{1, 4, 9, 11}, {6, 2, 3, 3}, {{2, 1}, {1, 2}, {1, 2}, 2}},
                             {{2, 8, 7, 7}, {8, 1, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, 8}},
                             {{1, 6, 13, 8}, {12, 1, 5, 3}, {{2, 3}, {2, 1}, {2, 3}, 6}},
                             {{1, 33, 5, 6}, {70, 33, 1, 1}, {}},
                             {{3, 16, 12, 12}, {130, 8, 3, 3}, {{1, 2}, {0, 1}, {1, 1}, 2}},
                             {{1, 32, 24, 24}, {64, 32, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, 1}}};
  for (const char* mode : {"igemm", "direct"}) {
    ::setenv("TB_VK_CONV", mode, 1);
    auto be = vk();
    for (auto& c : convs) {
      Tensor x = Tensor::randn(c.x, 4), w = Tensor::randn(c.w, 5), b = Tensor::randn({c.w[0]}, 6);
      std::string what = std::string(mode) + " conv2d " + shape_str(c.x) + " * " + shape_str(c.w);
      same(*be, be->conv2d(x, w, &b, c.p), cpu_ref().conv2d(x, w, &b, c.p), 1e-4, 1e-4, what);
      same(*be, be->conv2d(x, w, nullptr, c.p), cpu_ref().conv2d(x, w, nullptr, c.p), 1e-4, 1e-4, what + " no bias");
    }
    ::unsetenv("TB_VK_CONV");
  }
}

TEST_CASE("vulkan: conv2d and max_pool2d match the CPU", "[vulkan]") {
  auto be = vk();
  struct Case {
    Shape x, w;
    Conv2dParams p;
  };
  std::vector<Case> convs = {{{1, 1, 1, 1}, {1, 1, 1, 1}, {}},
                             {{2, 3, 32, 32}, {6, 3, 5, 5}, {}},
                             {{1, 4, 9, 11}, {6, 2, 3, 3}, {{2, 1}, {1, 2}, {1, 2}, 2}},
                             {{2, 8, 7, 7}, {8, 1, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, 8}},
                             {{1, 33, 5, 6}, {7, 33, 1, 1}, {}}};
  for (auto& c : convs) {
    Tensor x = Tensor::randn(c.x, 1), w = Tensor::randn(c.w, 2), b = Tensor::randn({c.w[0]}, 3);
    same(*be, be->conv2d(x, w, &b, c.p), cpu_ref().conv2d(x, w, &b, c.p), 1e-4, 1e-4, "conv2d " + shape_str(c.x));
    same(*be, be->conv2d(x, w, nullptr, c.p), cpu_ref().conv2d(x, w, nullptr, c.p), 1e-4, 1e-4,
         "conv2d without bias " + shape_str(c.x));
  }
  std::vector<Pool2dParams> pools(4);
  pools[0].kernel = {2, 2};
  pools[1].kernel = {3, 3}, pools[1].stride = {2, 2}, pools[1].padding = {1, 1}, pools[1].ceil_mode = true;
  pools[2].kernel = {2, 3}, pools[2].stride = {1, 2}, pools[2].padding = {1, 0}, pools[2].dilation = {2, 2};
  pools[3].kernel = {3, 2}, pools[3].ceil_mode = true;
  for (Shape s : {Shape{1, 1, 7, 7}, Shape{2, 3, 10, 9}, Shape{2, 6, 33, 17}}) {
    Tensor x = Tensor::randn(s, 7);
    for (const auto& p : pools)
      same(*be, be->max_pool2d(x, p), cpu_ref().max_pool2d(x, p), 0, 0, "max_pool2d " + shape_str(s));
  }
}

TEST_CASE("vulkan: f16/bf16 casts are bit-exact and ops widen to f32", "[vulkan]") {
  auto be = vk();
  std::vector<float> vals = {0.0f,     -0.0f,     1.0f,  -2.5f,          65504.0f,      65520.0f,
                             1e-8f,    6e-8f,     3e-5f, 1.00048828125f, 1.0009765625f, 3.14159265f,
                             INFINITY, -INFINITY, 1e30f, 1.17e-38f,      1e-40f};
  Tensor r = Tensor::randn({1001}, 11);
  vals.insert(vals.end(), r.data_as<float>(), r.data_as<float>() + r.numel());
  Tensor x = Tensor::from_vector(DType::F32, {int64_t(vals.size())}, vals);
  for (DType d : {DType::F16, DType::BF16}) {
    Tensor dev = be->cast(be->upload(x), d);
    Tensor got = be->download(dev);
    REQUIRE(got.dtype() == d);
    REQUIRE(equal(got, x.to(d)));
    Tensor back = be->download(be->cast(dev, DType::F32));
    REQUIRE(equal(back, x.to(d).to(DType::F32)));
    // odd element counts pack correctly into 32-bit words
    Tensor odd = x.slice(0, 0, 7).contiguous();
    REQUIRE(equal(be->download(be->cast(odd, d)), odd.to(d)));
  }
  Tensor nan = Tensor::from_vector(DType::F32, {2}, std::vector<float>{NAN, -NAN});
  Tensor nan16 = be->download(be->cast(nan, DType::F16));
  REQUIRE(std::isnan(nan16.to(DType::F32).data_as<float>()[0]));
  REQUIRE(std::isnan(be->download(be->cast(nan, DType::BF16)).to(DType::F32).data_as<float>()[1]));
  // f16 -> bf16 goes through f32
  Tensor h = x.to(DType::F16);
  REQUIRE(equal(be->download(be->cast(h, DType::BF16)), h.to(DType::F32).to(DType::BF16)));

  Tensor a = Tensor::randn({9, 70}, 1), b = Tensor::randn({70, 5}, 2);
  for (DType d : {DType::F16, DType::BF16}) {
    REQUIRE(be->supports(Op::MatMul, d));
    Tensor y = be->download(be->matmul(a.to(d), b.to(d)));
    Tensor ref = cpu_ref().matmul(a.to(d), b.to(d));
    REQUIRE(y.dtype() == d);
    REQUIRE(allclose(y.to(DType::F32), ref.to(DType::F32), d == DType::F16 ? 2e-3 : 1e-2, 1e-3));
  }
  REQUIRE_THROWS_AS(be->relu(Tensor::zeros(DType::I32, {3})), UnsupportedError);
}

// f16/bf16 inputs widen to f32 before every GEMM/conv shader: skinny, register-tiled (vec4 and
// scalar loads) and implicit-GEMM conv, within the tolerances of the test above.
TEST_CASE("vulkan: f16/bf16 inputs through the skinny, tiled and implicit-GEMM shaders", "[vulkan]") {
  ::setenv("TB_VK_CONV", "igemm", 1);
  auto be = vk();
  ::setenv("TB_VK_GEMM", "tiled", 1);
  auto tiled = vk();
  ::unsetenv("TB_VK_GEMM");
  ::unsetenv("TB_VK_CONV");
  Tensor a = Tensor::randn({300, 20}, 41), b = Tensor::randn({20, 10}, 42), a2 = Tensor::randn({70, 64}, 43),
         b2 = Tensor::randn({64, 36}, 44), b3 = Tensor::randn({64, 37}, 45), x = Tensor::randn({2, 4, 9, 9}, 46),
         w = Tensor::randn({16, 2, 3, 3}, 47);
  Conv2dParams cp{{2, 1}, {1, 1}, {1, 2}, 2};
  for (DType d : {DType::F16, DType::BF16}) {
    double rtol = d == DType::F16 ? 2e-3 : 1e-2;
    auto check = [&](const Tensor& got, const Tensor& ref, const std::string& what) {
      INFO(what << " " << dtype_name(d));
      REQUIRE(got.dtype() == d);
      REQUIRE(allclose(got.to(DType::F32), ref.to(DType::F32), rtol, 1e-3));
    };
    check(be->download(be->matmul(a.to(d), b.to(d))), cpu_ref().matmul(a.to(d), b.to(d)), "skinny matmul");
    check(tiled->download(tiled->matmul(a2.to(d), b2.to(d))), cpu_ref().matmul(a2.to(d), b2.to(d)),
          "tiled matmul, vec4 loads");
    check(tiled->download(tiled->matmul(a2.to(d), b3.to(d))), cpu_ref().matmul(a2.to(d), b3.to(d)),
          "tiled matmul, scalar B loads");
    check(be->download(be->conv2d(x.to(d), w.to(d), nullptr, cp)), cpu_ref().conv2d(x.to(d), w.to(d), nullptr, cp),
          "implicit-GEMM conv2d");
  }
}

#ifdef TB_WITH_VULKAN
namespace {

/** f16 GEMMs, matmuls and convolutions through `be`, which must run each on the cooperative-matrix
 *  shaders `<op>_coopmat<suffix>` (counted), against the CPU: tile edges of the 64- and 128-wide
 *  tiles, every transpose, C broadcast forms, fused ReLU, batched and broadcast matmul; conv2d with
 *  stride, padding, dilation, groups and bias. One f16 rounding of an f32 sum taken in another
 *  order: 1 ulp. */
void coopmat_sweep(Backend& be, const std::string& suffix) {
  std::string shader = "gemm_coopmat" + suffix, conv_shader = "conv2d_coopmat" + suffix;
  uint64_t conv_before = vulkan::dispatches_of(conv_shader);
  struct ConvCase {
    Shape x, w;
    Conv2dParams p;
  };
  std::vector<ConvCase> convs = {{{2, 5, 9, 11}, {16, 5, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, 1}},
                                 {{1, 8, 13, 7}, {24, 4, 3, 2}, {{2, 1}, {1, 0}, {1, 2}, 2}},
                                 {{3, 3, 20, 20}, {65, 3, 5, 5}, {{1, 2}, {2, 2}, {2, 1}, 1}},
                                 {{1, 16, 6, 6}, {16, 8, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, 2}}};
  for (size_t i = 0; i < convs.size(); ++i) {
    const auto& cc = convs[i];
    Tensor x = Tensor::randn(cc.x, uint32_t(50 + i)).to(DType::F16),
           w = Tensor::randn(cc.w, uint32_t(60 + i)).to(DType::F16);
    Tensor bias = Tensor::randn({cc.w[0]}, uint32_t(70 + i)).to(DType::F16);
    const Tensor* bp = i % 2 == 0 ? &bias : nullptr;
    Tensor got = be.download(be.conv2d(x, w, bp, cc.p)), ref = cpu_ref().conv2d(x, w, bp, cc.p);
    INFO(conv_shader << " conv " << shape_str(cc.x) << " * " << shape_str(cc.w) << " max |diff| "
                     << max_abs_diff(got.to(DType::F32), ref.to(DType::F32)));
    REQUIRE(got.dtype() == DType::F16);
    REQUIRE(allclose(got.to(DType::F32), ref.to(DType::F32), 1e-3, 1e-3));
  }
  REQUIRE(vulkan::dispatches_of(conv_shader) - conv_before >= convs.size());
  uint64_t before = vulkan::dispatches_of(shader);
  int runs = 0;
  std::vector<std::array<int64_t, 3>> shapes = {{1, 1, 1},      {16, 16, 16},   {17, 33, 15},  {64, 64, 32},
                                                {65, 63, 33},   {127, 129, 47}, {3, 200, 100}, {600, 520, 37},
                                                {513, 640, 16}, {5, 12, 8}};
  for (auto [m, n, k] : shapes) {
    for (int t = 0; t < 4; ++t) {
      bool ta = t & 1, tb = t & 2;
      Tensor a = Tensor::randn(ta ? Shape{k, m} : Shape{m, k}, uint32_t(m * 3 + n + k + t)).to(DType::F16);
      Tensor b = Tensor::randn(tb ? Shape{n, k} : Shape{k, n}, uint32_t(m + n * 7 + k + t)).to(DType::F16);
      Tensor c = Tensor::randn(t == 1 ? Shape{m, 1} : t == 3 ? Shape{m, n} : Shape{n}, 17).to(DType::F16);
      GemmParams p{ta, tb, 0.5f, t == 0 ? 0.0f : 2.0f, /*relu=*/t == 2};
      Tensor got = be.download(be.gemm(be.upload(a), be.upload(b), &c, p));
      Tensor ref = cpu_ref().gemm(a, b, &c, p);
      INFO(shader << " gemm " << m << "x" << n << "x" << k << " t" << t << " max |diff| "
                  << max_abs_diff(got.to(DType::F32), ref.to(DType::F32)));
      REQUIRE(got.dtype() == DType::F16);
      REQUIRE(allclose(got.to(DType::F32), ref.to(DType::F32), 1e-3, 1e-3));
      ++runs;
    }
  }
  std::vector<std::pair<Shape, Shape>> mm = {
      {{3, 70, 40}, {3, 40, 90}}, {{3, 70, 40}, {1, 40, 92}}, {{2, 1, 33, 20}, {3, 20, 17}}};
  for (auto& [sa, sb] : mm) {
    Tensor a = Tensor::randn(sa, 31).to(DType::F16), b = Tensor::randn(sb, 32).to(DType::F16);
    Tensor got = be.download(be.matmul(a, b)), ref = cpu_ref().matmul(a, b);
    INFO(shader << " matmul " << shape_str(sa) << " @ " << shape_str(sb));
    REQUIRE(allclose(got.to(DType::F32), ref.to(DType::F32), 1e-3, 1e-3));
    ++runs;
  }
  REQUIRE(vulkan::dispatches_of(shader) - before >= uint64_t(runs));
}

}  // namespace

// The cooperative-matrix GEMM and conv2d: tiling, f16 staging, subgroup blocks and epilogues, with
// plain arithmetic standing in for the matrix instructions (lavapipe has none): *_coopmat_emu.comp.
TEST_CASE("vulkan: f16 gemm and conv2d on the cooperative-matrix tiling (emulated) match the CPU", "[vulkan]") {
  ::setenv("TB_VK_GEMM", "coopmat-emulated", 1);
  auto be = vk();
  ::unsetenv("TB_VK_GEMM");
  {  // the first f16 product of a backend runs the self-check first (one more dispatch), later ones not
    ::setenv("TB_VK_GEMM", "coopmat-emulated", 1);
    auto fresh = vk();
    ::unsetenv("TB_VK_GEMM");
    Tensor a = Tensor::randn({64, 48}, 5).to(DType::F16);
    uint64_t before = vulkan::dispatches_of("gemm_coopmat_emu");
    fresh->download(fresh->matmul(a, a.transpose(0, 1)));
    REQUIRE(vulkan::dispatches_of("gemm_coopmat_emu") == before + 2);
    fresh->download(fresh->matmul(a, a.transpose(0, 1)));
    REQUIRE(vulkan::dispatches_of("gemm_coopmat_emu") == before + 3);
  }
  coopmat_sweep(*be, "_emu");
  // an uneven tile through TB_VK_COOPMAT_TILE: 1x2 subgroups of 3x1 blocks (48x32), K steps of 32
  ::setenv("TB_VK_GEMM", "coopmat-emulated", 1);
  ::setenv("TB_VK_COOPMAT_TILE", "1,2,3,1,32", 1);
  auto uneven = vk();
  ::setenv("TB_VK_COOPMAT_TILE", "2,2,2,2,24", 1);
  REQUIRE_THROWS_WITH(make_backend("vulkan"), Catch::Contains("TB_VK_COOPMAT_TILE=\"2,2,2,2,24\": want WGM,WGN"));
  ::unsetenv("TB_VK_COOPMAT_TILE");
  ::unsetenv("TB_VK_GEMM");
  coopmat_sweep(*uneven, "_emu");
  // f32 and mixed products stay on the plain shaders
  uint64_t before = vulkan::dispatches_of("gemm_coopmat_emu");
  Tensor a = Tensor::randn({40, 30}, 1), b = Tensor::randn({30, 50}, 2);
  same(*be, be->matmul(a, b), cpu_ref().matmul(a, b), 1e-4, 1e-4, "f32 matmul");
  be->download(be->matmul(a.to(DType::F16), b));
  be->download(be->matmul(a.to(DType::BF16), b.to(DType::BF16)));
  REQUIRE(vulkan::dispatches_of("gemm_coopmat_emu") == before);
}

// The real tensor-core shader runs only where the device lists 16x16x16 f16 -> f32 cooperative
// matrices (a lent GPU; docs in compute/README.md); elsewhere forcing it is a clear error, and f16
// GEMMs keep the plain shaders.
TEST_CASE("vulkan: f16 gemm and conv2d on cooperative matrices, or a clear error without them", "[vulkan]") {
  vk();
  ::setenv("TB_VK_GEMM", "coopmat", 1);
  std::unique_ptr<Backend> be;
  std::string error;
  try {
    be = make_backend("vulkan");
  } catch (const UnsupportedError& e) {
    error = e.what();
  }
  ::unsetenv("TB_VK_GEMM");
  if (!be) {
    REQUIRE_THAT(error, Catch::Contains("TB_VK_GEMM=coopmat") && Catch::Contains("no 16x16x16 f16 -> f32 cooperative"));
    auto plain = vk();
    uint64_t before = vulkan::dispatches_of("gemm_coopmat");
    Tensor a = Tensor::randn({70, 64}, 1).to(DType::F16), b = Tensor::randn({64, 36}, 2).to(DType::F16);
    REQUIRE(allclose(plain->download(plain->matmul(a, b)).to(DType::F32), cpu_ref().matmul(a, b).to(DType::F32), 1e-3,
                     1e-3));
    Tensor x = Tensor::randn({1, 4, 8, 8}, 3).to(DType::F16), w = Tensor::randn({8, 4, 3, 3}, 4).to(DType::F16);
    Conv2dParams cp{{1, 1}, {1, 1}, {1, 1}, 1};
    REQUIRE(allclose(plain->download(plain->conv2d(x, w, nullptr, cp)).to(DType::F32),
                     cpu_ref().conv2d(x, w, nullptr, cp).to(DType::F32), 1e-3, 1e-3));
    REQUIRE(vulkan::dispatches_of("gemm_coopmat") == before);
    REQUIRE(vulkan::dispatches_of("conv2d_coopmat") == 0);
    WARN("no cooperative matrices on " << vulkan::device_names()[0] << ": the tensor-core shader is untested here");
    return;
  }
  coopmat_sweep(*be, "");
  auto dflt = vk();  // the default picks it for f16 too
  uint64_t before = vulkan::dispatches_of("gemm_coopmat");
  Tensor a = Tensor::randn({256, 256}, 3).to(DType::F16);
  dflt->download(dflt->matmul(a, a));
  REQUIRE(vulkan::dispatches_of("gemm_coopmat") == before + 1);
}
#endif

TEST_CASE("vulkan: the seed MLP and a small CNN run on the device without round trips", "[vulkan]") {
  auto be = vk();
  Tensor x = Tensor::randn({4096, 20}, 1), w1 = Tensor::randn({256, 20}, 2), b1 = Tensor::randn({256}, 3),
         w2 = Tensor::randn({10, 256}, 4), b2 = Tensor::randn({10}, 5);
  Tensor dw1 = be->upload(w1), db1 = be->upload(b1), dw2 = be->upload(w2), db2 = be->upload(b2);
  Tensor y = be->linear(be->relu(be->linear(be->upload(x), dw1, &db1)), dw2, &db2);
  same(*be, y, cpu_ref().linear(cpu_ref().relu(cpu_ref().linear(x, w1, &b1)), w2, &b2), 1e-4, 1e-4, "seed MLP");

  // LeNet-like: conv -> relu -> pool -> conv -> relu -> pool -> flatten -> linear -> softmax
  Tensor img = Tensor::randn({2, 3, 32, 32}, 6), c1 = Tensor::randn({6, 3, 5, 5}, 7),
         c2 = Tensor::randn({16, 6, 5, 5}, 8), fw = Tensor::randn({10, 400}, 9);
  Pool2dParams pool;
  auto net = [&](Backend& b) {
    Tensor h = b.max_pool2d(b.relu(b.conv2d(b.upload(img), c1, nullptr, {})), pool);
    h = b.max_pool2d(b.relu(b.conv2d(h, c2, nullptr, {})), pool);
    return b.softmax(b.linear(b.flatten(h), fw, nullptr), 1);
  };
  same(*be, net(*be), net(cpu_ref()), 1e-3, 1e-5, "cnn");
}

TEST_CASE("vulkan: errors carry the VkResult name", "[vulkan]") {
#ifdef TB_WITH_VULKAN
  REQUIRE(std::string(vulkan::vk_result_name(VK_ERROR_DEVICE_LOST)) == "VK_ERROR_DEVICE_LOST");
  REQUIRE(std::string(vulkan::vk_result_name(VkResult(-12345))) == "VkResult(-12345)");
  auto fails = [] { TB_VK_CHECK(VK_ERROR_OUT_OF_DEVICE_MEMORY); };
  REQUIRE_THROWS_AS(fails(), BackendError);
  REQUIRE_THROWS_WITH(fails(), Catch::Contains("VK_ERROR_OUT_OF_DEVICE_MEMORY"));
#endif
  auto be = vk();
  // A device tensor handed to another backend instance is rejected, not misread.
  auto other = make_backend("vulkan");
  Tensor d = be->upload(Tensor::randn({4}, 1));
  REQUIRE_FALSE(other->owns(d));
  REQUIRE_THROWS_WITH(other->relu(d), Catch::Contains("lives on another device"));
}
