#include "tests/support.h"

#include <cmath>
#include <cstring>

using namespace tb;

namespace {
float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace

TEST_CASE("the dtype table spells every format's names", "[dtype]") {
  CHECK(all_dtypes().size() == 17);
  CHECK(dtype_from_name("float32") == DType::F32);
  CHECK(dtype_from_name("bfloat16") == DType::BF16);
  CHECK(dtype_from_name("fp16") == DType::F16);
  CHECK_FALSE(dtype_from_name("float128").has_value());
  CHECK(dtype_from_torch_storage("FloatStorage") == DType::F32);
  CHECK(dtype_from_torch_storage("BFloat16Storage") == DType::BF16);
  CHECK(dtype_from_torch_storage("LongStorage") == DType::I64);
  CHECK_FALSE(dtype_from_torch_storage("UntypedStorage").has_value());
  CHECK(dtype_from_torch_dtype("float8_e4m3fn") == DType::F8E4M3FN);
  CHECK(dtype_from_torch_dtype("half") == DType::F16);
  CHECK(dtype_from_safetensors("F8_E5M2") == DType::F8E5M2);
  CHECK(dtype_from_safetensors("BOOL") == DType::Bool);
  CHECK_FALSE(dtype_from_safetensors("f32").has_value());  // tokens are exact upper case
  CHECK(dtype_from_onnx(16) == DType::BF16);
  CHECK(dtype_from_onnx(13) == DType::U64);
  auto be = dtype_from_npy_descr(">f8");
  REQUIRE(be);
  CHECK(be->dtype == DType::F64);
  CHECK(be->big_endian);
  auto b = dtype_from_npy_descr("|b1");
  REQUIRE(b);
  CHECK(b->dtype == DType::Bool);
  CHECK(dtype_from_npy_descr("<c16")->dtype == DType::C128);
  CHECK_FALSE(dtype_from_npy_descr("<f3").has_value());
  CHECK_FALSE(dtype_from_npy_descr("|O").has_value());
  CHECK(npy_descr(DType::BF16).empty());
  for (const auto& d : all_dtypes()) {
    CHECK(dtype_from_name(d.name) == d.dtype);
    if (!d.npy_descr.empty()) CHECK(dtype_from_npy_descr(d.npy_descr)->dtype == d.dtype);
    if (!d.safetensors.empty()) CHECK(dtype_from_safetensors(d.safetensors) == d.dtype);
    CHECK(dtype_from_onnx(d.onnx) == d.dtype);
  }
}

TEST_CASE("all 65,536 float16 patterns survive f16 -> f32 -> f16", "[dtype]") {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = f16_bits_to_f32(uint16_t(h));
    uint16_t back = f32_to_f16_bits(f);
    if (back != h) FAIL("f16 pattern " << h << " came back as " << back);
  }
  CHECK(f16_bits_to_f32(0x3c00) == 1.0f);
  CHECK(f16_bits_to_f32(0x7bff) == 65504.0f);
  CHECK(f16_bits_to_f32(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(std::isinf(f16_bits_to_f32(0xfc00)));
  CHECK(f32_to_f16_bits(65519.0f) == 0x7bff);               // below the halfway point to Inf
  CHECK(f32_to_f16_bits(65520.0f) == 0x7c00);               // ties to even: Inf
  CHECK(f32_to_f16_bits(std::ldexp(1.0f, -25)) == 0x0000);  // halfway to the smallest subnormal: even -> 0
  CHECK(f32_to_f16_bits(std::ldexp(1.5f, -25)) == 0x0001);
  CHECK(f32_to_f16_bits(-0.0f) == 0x8000);
}

TEST_CASE("all 65,536 bfloat16 patterns survive bf16 -> f32 -> bf16", "[dtype]") {
  for (uint32_t b = 0; b < 65536; ++b) {
    float f = bf16_bits_to_f32(uint16_t(b));
    uint16_t back = f32_to_bf16_bits(f);
    if (std::isnan(f)) {
      if (!std::isnan(bf16_bits_to_f32(back))) FAIL("bf16 NaN pattern " << b << " lost its NaN");
    } else if (back != b) {
      FAIL("bf16 pattern " << b << " came back as " << back);
    }
  }
  CHECK(f32_to_bf16_bits(bits_to_float(0x3f808000)) == 0x3f80);  // tie, even stays
  CHECK(f32_to_bf16_bits(bits_to_float(0x3f818000)) == 0x3f82);  // tie, odd rounds up
  CHECK(f32_to_bf16_bits(bits_to_float(0x7f7fffff)) == 0x7f80);  // max float rounds to Inf
}

TEST_CASE("float8 e4m3fn and e5m2 encode every pattern and round to nearest even", "[dtype]") {
  for (uint32_t b = 0; b < 256; ++b) {
    float f = f8e4m3fn_bits_to_f32(uint8_t(b));
    if (std::isnan(f)) {
      CHECK((b & 0x7f) == 0x7f);
      CHECK(std::isnan(f8e4m3fn_bits_to_f32(f32_to_f8e4m3fn_bits(f))));
    } else {
      CHECK(f32_to_f8e4m3fn_bits(f) == b);
    }
    float g = f8e5m2_bits_to_f32(uint8_t(b));
    if (std::isnan(g)) {
      CHECK(std::isnan(f8e5m2_bits_to_f32(f32_to_f8e5m2_bits(g))));
    } else {
      CHECK(f32_to_f8e5m2_bits(g) == b);
    }
  }
  CHECK(f8e4m3fn_bits_to_f32(0x7e) == 448.0f);                            // largest finite e4m3fn
  CHECK(f32_to_f8e4m3fn_bits(460.0f) == 0x7e);                            // rounds down to 448
  CHECK(std::isnan(f8e4m3fn_bits_to_f32(f32_to_f8e4m3fn_bits(470.0f))));  // no Inf: overflow is NaN
  CHECK(f8e5m2_bits_to_f32(0x7b) == 57344.0f);
  CHECK(std::isinf(f8e5m2_bits_to_f32(f32_to_f8e5m2_bits(1e6f))));
  CHECK(f8e4m3fn_bits_to_f32(0x01) == std::ldexp(1.0f, -9));  // smallest subnormal
}

TEST_CASE("float32 -> float16/bfloat16 match numpy and torch on the fixture sweep", "[dtype]") {
  Tensor src = tbtest::load_npy_tensor(tbtest::fixture("dtypes/f32_sweep.npy"));
  Tensor f16 = tbtest::load_npy_tensor(tbtest::fixture("dtypes/f32_sweep_to_f16.npy"));
  Tensor bf16 = tbtest::load_npy_tensor(tbtest::fixture("dtypes/f32_sweep_to_bf16_bits.npy"));
  REQUIRE(src.dtype() == DType::F32);
  REQUIRE(f16.dtype() == DType::F16);
  REQUIRE(bf16.dtype() == DType::U16);
  REQUIRE(src.numel() == f16.numel());
  REQUIRE(src.numel() == bf16.numel());
  auto xs = src.to_vector<float>();
  auto want16 = f16.to_vector<uint16_t>();
  auto wantbf = bf16.to_vector<uint16_t>();
  // Our cast through the tensor API as well as the scalar functions.
  auto got16 = src.to(DType::F16).to_vector<uint16_t>();
  size_t nans = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (std::isnan(xs[i])) {
      ++nans;
      CHECK(std::isnan(f16_bits_to_f32(got16[i])));
      CHECK(got16[i] == want16[i]);  // numpy keeps sign and top payload bits; so do we
      CHECK(std::isnan(bf16_bits_to_f32(f32_to_bf16_bits(xs[i]))));
      continue;
    }
    if (got16[i] != want16[i]) FAIL("f16 of " << xs[i] << ": got " << got16[i] << ", numpy " << want16[i]);
    if (f32_to_bf16_bits(xs[i]) != wantbf[i])
      FAIL("bf16 of " << xs[i] << ": got " << f32_to_bf16_bits(xs[i]) << ", torch " << wantbf[i]);
  }
  CHECK(nans > 0);
}

TEST_CASE("casts follow numpy's astype rules", "[dtype]") {
  Tensor t = Tensor::from_vector<float>(DType::F32, {5}, {-2.7f, -0.5f, 0.0f, 1.9f, 3e10f});
  CHECK(t.to(DType::I32).to_vector<int32_t>() == std::vector<int32_t>{-2, 0, 0, 1, 2147483647});
  auto b = t.to(DType::Bool).to_vector<uint8_t>();
  CHECK(b == std::vector<uint8_t>{1, 1, 0, 1, 1});
  Tensor c = t.to(DType::C64);
  CHECK(c.item_as_double(3) == Approx(1.9));
  CHECK(c.to(DType::F64).to_vector<double>()[0] == Approx(-2.7));
  Tensor big = Tensor::from_vector<uint64_t>(DType::U64, {1}, {18446744073709551615ull});
  CHECK(big.to(DType::I64).to(DType::U64).to_vector<uint64_t>()[0] == 18446744073709551615ull);
}

TEST_CASE("byteswap handles complex halves", "[dtype]") {
  std::vector<uint8_t> c64 = {1, 2, 3, 4, 5, 6, 7, 8};
  byteswap_elements(c64.data(), DType::C64, 1);
  CHECK(c64 == std::vector<uint8_t>{4, 3, 2, 1, 8, 7, 6, 5});
}
