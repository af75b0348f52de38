// CPU backend: every op against hand-computed values, against PyTorch outputs (fixtures/compute,
// written by fixtures/gen_compute.py with torch 1.13), and the fast paths against naive loops.
#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <regex>

#include "compute/backend.h"
#include "compute/cpu/blas.h"
#include "tests/support.h"

using namespace tb;
using namespace tb::compute;

namespace {

/** Minimal .npy reader for the little-endian C-order fixtures of this area (<f4, <f2, <u2). */
Tensor npy(const std::string& rel) {
  auto path = tbtest::fixture(rel);
  std::ifstream f(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), {});
  REQUIRE(bytes.size() > 10);
  REQUIRE(bytes.substr(1, 5) == "NUMPY");
  size_t hlen = uint8_t(bytes[8]) | (size_t(uint8_t(bytes[9])) << 8), start = 10;
  std::string header = bytes.substr(start, hlen);
  DType dt = header.find("'<f4'") != std::string::npos   ? DType::F32
             : header.find("'<f2'") != std::string::npos ? DType::F16
             : header.find("'<u2'") != std::string::npos ? DType::U16
                                                         : DType::Bool;
  REQUIRE(dt != DType::Bool);
  REQUIRE(header.find("'fortran_order': False") != std::string::npos);
  std::smatch m;
  REQUIRE(std::regex_search(header, m, std::regex("'shape': \\(([0-9, ]*)\\)")));
  Shape shape;
  std::string dims = m[1];
  const std::regex num("[0-9]+");
  for (std::sregex_iterator it(dims.begin(), dims.end(), num), end; it != end; ++it)
    shape.push_back(std::stoll(it->str()));
  size_t n = size_t(checked_numel(shape)) * dtype_size(dt);
  REQUIRE(bytes.size() == start + hlen + n);
  return Tensor::from_bytes(dt, shape, bytes.data() + start + hlen, n);
}

Tensor f32(Shape shape, std::vector<float> v) { return Tensor::from_vector(DType::F32, std::move(shape), v); }

void check_close(const Tensor& got, const Tensor& want, double rtol = 1e-5, double atol = 1e-5) {
  INFO("got " << got.describe() << " want " << want.describe() << " max diff " << max_abs_diff(got, want));
  REQUIRE(got.shape() == want.shape());
  REQUIRE(allclose(got, want, rtol, atol));
}

float at(const Tensor& t, int64_t i) { return t.data_as<float>()[i]; }

}  // namespace

TEST_CASE("registry lists cpu and creates backends by name", "[compute]") {
  auto names = available_backends();
  REQUIRE(names.front() == "cpu");
  auto be = make_backend("cpu");
  REQUIRE(be->name() == "cpu");
  REQUIRE(be->supports(Op::Conv2d, DType::F32));
  REQUIRE(be->supports(Op::Gemm, DType::BF16));
  REQUIRE_FALSE(be->supports(Op::Gemm, DType::I64));
  REQUIRE_THROWS_WITH(make_backend("tpu"), Catch::Contains("unknown backend 'tpu'"));
  REQUIRE_THROWS_AS(make_backend("vulkan:x"), UnsupportedError);
  REQUIRE(op_name(Op::MaxPool2d) == "max_pool2d");
}

TEST_CASE("cpu: hand-computed values for every op", "[compute]") {
  auto be = make_backend("cpu");
  SECTION("gemm with transposes, alpha, beta and a broadcast bias") {
    Tensor a = f32({2, 2}, {1, 2, 3, 4}), b = f32({2, 2}, {5, 6, 7, 8});
    Tensor y = be->gemm(a, b, nullptr, {});
    REQUIRE(y.to_vector<float>() == std::vector<float>{19, 22, 43, 50});
    GemmParams p{true, true, 2.0f, 0.5f};
    Tensor c = f32({2}, {10, 20});
    // A^T = [[1,3],[2,4]], B^T = [[5,7],[6,8]]: A^T B^T = [[23,31],[34,46]]
    y = be->gemm(a, b, &c, p);
    REQUIRE(y.to_vector<float>() == std::vector<float>{51, 72, 73, 102});
  }
  SECTION("linear is x @ w^T + b over leading dims") {
    Tensor x = f32({1, 2, 3}, {1, 2, 3, 4, 5, 6}), w = f32({2, 3}, {1, 0, -1, 0.5, 0.5, 0.5}), b = f32({2}, {1, -1});
    Tensor y = be->linear(x, w, &b);
    REQUIRE(y.shape() == Shape{1, 2, 2});
    REQUIRE(y.to_vector<float>() == std::vector<float>{-1, 2, -1, 6.5});
  }
  SECTION("matmul with 1-D operands") {
    Tensor a = f32({3}, {1, 2, 3}), b = f32({3, 2}, {1, 2, 3, 4, 5, 6});
    Tensor y = be->matmul(a, b);
    REQUIRE(y.shape() == Shape{2});
    REQUIRE(y.to_vector<float>() == std::vector<float>{22, 28});
    REQUIRE(be->matmul(a, a).shape() == Shape{});
    REQUIRE(be->matmul(a, a).to_vector<float>() == std::vector<float>{14});
  }
  SECTION("add/mul broadcast") {
    Tensor a = f32({2, 1}, {1, 2}), b = f32({3}, {10, 20, 30});
    REQUIRE(be->add(a, b).to_vector<float>() == std::vector<float>{11, 21, 31, 12, 22, 32});
    REQUIRE(be->mul(a, b).to_vector<float>() == std::vector<float>{10, 20, 30, 20, 40, 60});
    REQUIRE_THROWS_WITH(be->add(f32({2}, {1, 2}), b), Catch::Contains("do not broadcast"));
  }
  SECTION("relu keeps NaN") {
    Tensor y = be->relu(f32({4}, {-1, 0, 2, NAN}));
    REQUIRE(at(y, 0) == 0);
    REQUIRE(at(y, 2) == 2);
    REQUIRE(std::isnan(at(y, 3)));
  }
  SECTION("conv2d with padding and bias") {
    Tensor x = f32({1, 1, 2, 2}, {1, 2, 3, 4}), w = f32({1, 1, 2, 2}, {1, 1, 1, 1}), b = f32({1}, {0.5});
    Conv2dParams p;
    p.padding = {1, 1};
    Tensor y = be->conv2d(x, w, &b, p);
    REQUIRE(y.shape() == Shape{1, 1, 3, 3});
    REQUIRE(y.to_vector<float>() == std::vector<float>{1.5, 3.5, 2.5, 4.5, 10.5, 6.5, 3.5, 7.5, 4.5});
    REQUIRE_THROWS_WITH(be->conv2d(x, f32({1, 2, 1, 1}, {1, 1}), nullptr, {}),
                        Catch::Contains("expects 2 input channels"));
  }
  SECTION("max_pool2d ceil mode") {
    Tensor x = f32({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
    Pool2dParams p;
    p.kernel = {2, 2};
    REQUIRE(be->max_pool2d(x, p).to_vector<float>() == std::vector<float>{5});
    p.ceil_mode = true;
    REQUIRE(be->max_pool2d(x, p).to_vector<float>() == std::vector<float>{5, 6, 8, 9});
  }
  SECTION("batch_norm inference") {
    Tensor x = f32({2, 2}, {1, 2, 3, 4}), m = f32({2}, {1, 2}), v = f32({2}, {4, 1}), w = f32({2}, {2, 1}),
           b = f32({2}, {0, 1});
    Tensor y = be->batch_norm(x, m, v, &w, &b, 0.0);
    REQUIRE(y.to_vector<float>() == std::vector<float>{0, 1, 2, 3});
    y = be->batch_norm(x, m, v, nullptr, nullptr, 0.0);
    REQUIRE(y.to_vector<float>() == std::vector<float>{0, 0, 1, 2});
  }
  SECTION("softmax") {
    Tensor y = be->softmax(f32({2, 2}, {0, 0, 0, std::log(3.0f)}), -1);
    check_close(y, f32({2, 2}, {0.5, 0.5, 0.25, 0.75}), 1e-6, 1e-7);
    y = be->softmax(f32({1, 2}, {1000, 1000}), 1);  // max-subtracted: no overflow
    check_close(y, f32({1, 2}, {0.5, 0.5}));
  }
  SECTION("flatten and reshape") {
    Tensor x = Tensor::zeros(DType::F32, {2, 3, 4, 5});
    REQUIRE(be->flatten(x).shape() == Shape{2, 60});
    REQUIRE(be->flatten(x, 0, 1).shape() == Shape{6, 4, 5});
    REQUIRE(be->reshape(x, {-1, 10}).shape() == Shape{12, 10});
    REQUIRE(be->reshape(x, {4, 30}).shares_storage(x));
    REQUIRE_THROWS_AS(be->reshape(x, {7, -1}), ShapeError);
  }
}

TEST_CASE("cpu: every op matches PyTorch outputs (fixtures/compute)", "[compute]") {
  auto be = make_backend("cpu");
  auto F = [](const std::string& n) { return npy("compute/" + n + ".npy"); };
  {
    Tensor c = F("gemm_C");
    check_close(be->gemm(F("gemm_A"), F("gemm_B"), &c, {true, true, 0.5f, 2.0f}), F("gemm_Y"));
  }
  check_close(be->matmul(F("matmul_A"), F("matmul_B")), F("matmul_Y"));
  check_close(be->add(F("add_A"), F("add_B")), F("add_Y"));
  check_close(be->mul(F("mul_A"), F("mul_B")), F("mul_Y"));
  check_close(be->relu(F("relu_X")), F("relu_Y"));
  {
    Conv2dParams p;
    p.stride = {2, 1}, p.padding = {1, 2}, p.dilation = {1, 2}, p.groups = 2;
    Tensor b = F("conv_B");
    check_close(be->conv2d(F("conv_X"), F("conv_W"), &b, p), F("conv_Y"), 1e-4, 1e-5);
  }
  {
    Pool2dParams p;
    p.kernel = {3, 3}, p.stride = {2, 2}, p.padding = {1, 1}, p.ceil_mode = true;
    check_close(be->max_pool2d(F("pool_X"), p), F("pool_Y"), 0, 0);
    Pool2dParams q;
    q.kernel = {2, 3}, q.stride = {1, 2}, q.padding = {1, 0}, q.dilation = {2, 2};
    check_close(be->max_pool2d(F("pooldil_X"), q), F("pooldil_Y"), 0, 0);
  }
  {
    Tensor w = F("bn_W"), b = F("bn_B");
    check_close(be->batch_norm(F("bn_X"), F("bn_M"), F("bn_V"), &w, &b, 1e-5), F("bn_Y"));
  }
  check_close(be->softmax(F("softmax_X"), 1), F("softmax_Y"), 1e-5, 1e-7);
}

TEST_CASE("cpu: the seed MLP forward matches PyTorch", "[compute]") {
  auto be = make_backend("cpu");
  Tensor w1 = npy("torch/mlp_weights/hidden.weight.npy"), b1 = npy("torch/mlp_weights/hidden.bias.npy");
  Tensor w2 = npy("torch/mlp_weights/out.weight.npy"), b2 = npy("torch/mlp_weights/out.bias.npy");
  Tensor y = be->linear(be->relu(be->linear(npy("torch/mlp_X.npy"), w1, &b1)), w2, &b2);
  check_close(y, npy("torch/mlp_Y.npy"), 1e-5, 1e-6);
}

TEST_CASE("cpu: fast paths agree with naive loops over odd shapes", "[compute]") {
  auto be = make_backend("cpu");
  for (int64_t m : {1, 7, 33}) {
    for (int64_t n : {1, 17, 65}) {
      for (int64_t k : {1, 9, 257}) {
        for (int t = 0; t < 4; ++t) {
          bool ta = t & 1, tb = t & 2;
          Tensor a = Tensor::randn(ta ? Shape{k, m} : Shape{m, k}, uint32_t(m * 131 + n * 7 + k + t));
          Tensor b = Tensor::randn(tb ? Shape{n, k} : Shape{k, n}, uint32_t(m + n * 13 + k * 3 + t));
          Tensor c = (t & 1) ? Tensor::randn({m, 1}, 5) : Tensor::randn({n}, 6);  // column or row (Linear) bias
          Tensor y = be->gemm(a, b, &c, {ta, tb, 1.5f, -0.5f});
          std::vector<float> ref(size_t(m * n));
          const float* A = a.data_as<float>();
          const float* B = b.data_as<float>();
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
              double s = 0;
              for (int64_t q = 0; q < k; ++q)
                s += double(ta ? A[q * m + i] : A[i * k + q]) * (tb ? B[j * k + q] : B[q * n + j]);
              ref[size_t(i * n + j)] = float(1.5 * s - 0.5 * at(c, (t & 1) ? i : j));
            }
          check_close(y, f32({m, n}, ref), 1e-4, 1e-4);
        }
      }
    }
  }
  // conv2d (im2col + gemm, and the 1x1 direct path) against a direct loop
  struct Case {
    Shape x, w;
    Conv2dParams p;
  };
  std::vector<Case> cases = {{{2, 3, 7, 9}, {4, 3, 3, 3}, {}},
                             {{1, 4, 8, 8}, {6, 2, 3, 2}, {{2, 1}, {1, 0}, {1, 2}, 2}},
                             {{1, 5, 6, 5}, {7, 5, 1, 1}, {}},
                             {{2, 4, 5, 5}, {4, 1, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, 4}}};
  for (const auto& cs : cases) {
    Tensor x = Tensor::randn(cs.x, 1), w = Tensor::randn(cs.w, 2), b = Tensor::randn({cs.w[0]}, 3);
    Tensor y = be->conv2d(x, w, &b, cs.p);
    int64_t N = cs.x[0], C = cs.x[1], H = cs.x[2], W = cs.x[3], O = cs.w[0], KH = cs.w[2], KW = cs.w[3];
    int64_t OH = y.shape()[2], OW = y.shape()[3], G = cs.p.groups, cg = C / G, og = O / G;
    std::vector<float> ref(size_t(y.numel()));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < O; ++o)
        for (int64_t oy = 0; oy < OH; ++oy)
          for (int64_t ox = 0; ox < OW; ++ox) {
            double s = at(b, o);
            for (int64_t ci = 0; ci < cg; ++ci)
              for (int64_t ky = 0; ky < KH; ++ky)
                for (int64_t kx = 0; kx < KW; ++kx) {
                  int64_t iy = oy * cs.p.stride[0] - cs.p.padding[0] + ky * cs.p.dilation[0];
                  int64_t ix = ox * cs.p.stride[1] - cs.p.padding[1] + kx * cs.p.dilation[1];
                  if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                  s += double(at(x, ((n * C + (o / og) * cg + ci) * H + iy) * W + ix)) *
                       at(w, ((o * cg + ci) * KH + ky) * KW + kx);
                }
            ref[size_t(((n * O + o) * OH + oy) * OW + ox)] = float(s);
          }
    check_close(y, f32(y.shape(), ref), 1e-4, 1e-4);
  }
}

TEST_CASE("cpu: OpenBLAS is loaded by the first large GEMM only, and computes it", "[compute]") {
  // CTest runs each test case in a process of its own: nothing multiplied before this one.
  CHECK_FALSE(compute::cpu::blas_loaded());
  auto be = make_backend("cpu");
  Tensor small_a = Tensor::randn({4, 20}, 1), small_b = Tensor::randn({20, 8}, 2);
  (void)be->gemm(small_a, small_b, nullptr, {});
  CHECK_FALSE(compute::cpu::blas_loaded());  // skinny shapes run on the packed kernel
  const int64_t n = 300;
  Tensor a = Tensor::randn({n, n}, 3), b = Tensor::randn({n, n}, 4);
  Tensor y = be->gemm(a, b, nullptr, {});
  CHECK(compute::cpu::blas_loaded());
  const float* A = a.data_as<float>();
  const float* B = b.data_as<float>();
  const float* Y = y.data_as<float>();
  for (int64_t i : {int64_t(0), n / 2, n - 1})
    for (int64_t j : {int64_t(0), n / 3, n - 1}) {
      double s = 0;
      for (int64_t q = 0; q < n; ++q) s += double(A[i * n + q]) * double(B[q * n + j]);
      CHECK(std::abs(Y[i * n + j] - s) <= 1e-3 * (1 + std::abs(s)));
    }
}

TEST_CASE("cpu: inspect and convert never start OpenBLAS: they finish in 150 MB of address space", "[compute]") {
  // OpenBLAS's constructor reserves buffers for its worker threads; under a small address-space limit
  // the process hung at exit when the library was linked. Now only a large GEMM loads it.
  tbtest::TempDir dir;
  std::string script = "ulimit -v 153600 && exec \"$0\" \"$@\"";
  auto r = tbtest::run({"/usr/bin/timeout", "20", "/bin/sh", "-c", script, TB_CLI_PATH, "convert",
                        tbtest::fixture("torch/mlp.params").string(), (dir / "m.safetensors").string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(std::filesystem::exists(dir / "m.safetensors"));
}

TEST_CASE("cpu: Linear with fused ReLU is bit-identical to relu(linear) on every GEMM path", "[compute]") {
  auto be = make_backend("cpu");
  // skinny shapes take the own kernel (bias and ReLU in its store), square ones OpenBLAS + a pass
  for (auto [m, n, k] :
       {std::array<int64_t, 3>{4096, 256, 20}, {33, 17, 9}, {1, 1, 1}, {300, 300, 300}, {130, 65, 257}}) {
    Tensor x = Tensor::randn({m, k}, uint32_t(m + n + k)), w = Tensor::randn({n, k}, 2), b = Tensor::randn({n}, 3);
    float* xp = x.data_as<float>();
    xp[0] = NAN;  // row 0 becomes NaN: ReLU keeps NaN, as torch does
    Tensor fused = be->linear(x, w, &b, /*relu=*/true);
    Tensor ref = be->relu(be->linear(x, w, &b));
    REQUIRE(fused.shape() == ref.shape());
    REQUIRE(std::memcmp(fused.data(), ref.data(), size_t(ref.nbytes())) == 0);
    REQUIRE(std::isnan(fused.data_as<float>()[0]));
    Tensor nobias = be->linear(x, w, nullptr, true);
    Tensor ref2 = be->relu(be->linear(x, w, nullptr));
    REQUIRE(std::memcmp(nobias.data(), ref2.data(), size_t(ref2.nbytes())) == 0);
  }
  // -0 comes out as +0 from both
  Tensor x = f32({1, 1}, {-0.0f}), w = f32({1, 1}, {1.0f});
  REQUIRE(!std::signbit(be->linear(x, w, nullptr, true).data_as<float>()[0]));
}

TEST_CASE("cpu: f16/bf16 storage with f32 accumulation, and casts", "[compute]") {
  auto be = make_backend("cpu");
  Tensor sweep = npy("dtypes/f32_sweep.npy");
  Tensor h = be->cast(sweep, DType::F16);
  REQUIRE(h.dtype() == DType::F16);
  REQUIRE(equal(h, sweep.to(DType::F16)));
  Tensor bf = be->cast(sweep, DType::BF16);
  REQUIRE(equal(bf, sweep.to(DType::BF16)));
  REQUIRE(equal(be->cast(bf, DType::F32), bf.to(DType::F32)));

  // against numpy astype(float16) and torch .to(bfloat16): bit-exact, NaN-ness only for NaN inputs
  auto h_np = npy("dtypes/f32_sweep_to_f16.npy").to_vector<uint16_t>();
  auto bf_torch = npy("dtypes/f32_sweep_to_bf16_bits.npy").to_vector<uint16_t>();
  auto h_ours = h.to_vector<uint16_t>(), bf_ours = bf.to_vector<uint16_t>();
  auto in = sweep.to_vector<float>();
  for (size_t i = 0; i < in.size(); ++i) {
    INFO("element " << i << " = " << in[i]);
    if (std::isnan(in[i])) {
      REQUIRE(std::isnan(f16_bits_to_f32(h_ours[i])));
      REQUIRE(std::isnan(bf16_bits_to_f32(bf_ours[i])));
    } else {
      REQUIRE(h_ours[i] == h_np[i]);
      REQUIRE(bf_ours[i] == bf_torch[i]);
    }
  }

  Tensor a = Tensor::randn({5, 64}, 1), b = Tensor::randn({64, 3}, 2);
  Tensor y16 = be->matmul(a.to(DType::F16), b.to(DType::F16));
  REQUIRE(y16.dtype() == DType::F16);
  Tensor y32 = be->matmul(a.to(DType::F16).to(DType::F32), b.to(DType::F16).to(DType::F32));
  REQUIRE(equal(y16, y32.to(DType::F16)));  // exactly the f32 result rounded once
  Tensor ybf = be->relu(a.to(DType::BF16));
  REQUIRE(ybf.dtype() == DType::BF16);
  REQUIRE_THROWS_AS(be->relu(Tensor::zeros(DType::I32, {2})), UnsupportedError);
  REQUIRE_THROWS_AS(be->cast(a, DType::I8), UnsupportedError);
}

TEST_CASE("cpu: shape errors name the op and the shapes", "[compute]") {
  auto be = make_backend("cpu");
  Tensor a = Tensor::zeros(DType::F32, {2, 3});
  REQUIRE_THROWS_WITH(be->gemm(a, a, nullptr, {}), Catch::Contains("gemm: inner dimensions differ: A [2, 3]"));
  REQUIRE_THROWS_WITH(be->matmul(a, a), Catch::Contains("matmul: inner dimensions differ"));
  REQUIRE_THROWS_WITH(be->linear(a, Tensor::zeros(DType::F32, {4, 2}), nullptr),
                      Catch::Contains("does not end in in_features 2"));
  REQUIRE_THROWS_WITH(be->max_pool2d(a, {}), Catch::Contains("max_pool2d: input must be"));
  REQUIRE_THROWS_WITH(be->softmax(a, 2), Catch::Contains("softmax: axis 2 out of range"));
  Tensor m = Tensor::zeros(DType::F32, {4});
  REQUIRE_THROWS_WITH(be->batch_norm(a, m, m, nullptr, nullptr, 1e-5), Catch::Contains("running_mean must be [3]"));
}
