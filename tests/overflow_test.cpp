// Size, stride, offset and element-count overflow: every loader entry point refuses a header whose
// products do not fit in 64 bits with a message naming the file, and the checked-arithmetic helpers
// and the Tensor constructor (the library entry point) refuse the same values directly.
#include <limits>

#include "tensor/checked.h"
#include "tensor/tensor.h"
#include "tests/support.h"

using tbtest::fixture;
using tbtest::run_cli;
namespace fs = std::filesystem;

namespace {
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

// inspect and the given convert targets all refuse the file with exit 1, naming it and the overflow.
void expect_overflow_refused(const std::string& rel, const std::vector<std::string>& targets = {}) {
  INFO(rel);
  const std::string path = fixture("malformed/" + rel).string();
  auto r = run_cli({"inspect", path});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(r.output.find(path) != std::string::npos);
  CHECK(r.output.find("overflows") != std::string::npos);
  tbtest::TempDir dir;
  for (const auto& to : targets) {
    std::vector<std::string> args = {"convert", path, (dir / ("out." + to)).string(), "--to", to};
    if (to == "npy") args.insert(args.end(), {"--option", "object=1"});  // the whole tree as one object array
    auto c = run_cli(args);
    INFO(to << ": " << c.output);
    CHECK(c.exit_code == 1);
    CHECK(c.output.find("overflows") != std::string::npos);
    CHECK(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()) == 0);
  }
}
}  // namespace

TEST_CASE("checked arithmetic returns exact results and throws on overflow, naming what it computed", "[overflow]") {
  CHECK(tb::checked_mul<int64_t>(1 << 20, 1 << 20, "x") == int64_t(1) << 40);
  CHECK(tb::checked_add<uint64_t>(1, 2, "x") == 3);
  CHECK(tb::checked_sub<uint64_t>(5, 2, "x") == 3);
  CHECK_THROWS_WITH(tb::checked_mul<int64_t>(int64_t(1) << 62, 4, "the size of 'w'"),
                    Catch::Contains("the size of 'w' overflows 64 bits (4611686018427387904 * 4)"));
  CHECK_THROWS_AS(tb::checked_add<int64_t>(kMax, 1, "x"), tb::ShapeError);
  CHECK_THROWS_AS(tb::checked_sub<uint64_t>(1, 2, "x"), tb::ShapeError);
  CHECK_THROWS_WITH(tb::checked_cast<int64_t>(uint64_t(1) << 63, "field 'n'"),
                    Catch::Contains("field 'n' is out of range"));
  CHECK_THROWS_AS(tb::checked_cast<size_t>(int64_t(-1), "x"), tb::ShapeError);
  CHECK(tb::checked_nbytes(3, 16, "x") == 48);
  CHECK_THROWS_AS(tb::checked_nbytes(int64_t(1) << 62, 16, "x"), tb::ShapeError);
}

TEST_CASE("the Tensor constructor refuses views whose size or span overflows, before any copy", "[overflow]") {
  auto st = tb::Storage::allocate(16);
  using tb::DType;
  // The hostile .pt view: 2^62+1 complex128 elements, stride 2^62, over 16 bytes.
  CHECK_THROWS_WITH(tb::Tensor(st, DType::C128, {(int64_t(1) << 62) + 1}, {int64_t(1) << 62}),
                    Catch::Contains("overflows 64 bits"));
  // Byte size fits, span does not.
  CHECK_THROWS_WITH(tb::Tensor(st, DType::U8, {int64_t(1) << 31, int64_t(1) << 31}, {int64_t(1) << 40, 1}),
                    Catch::Contains("storage span"));
  // Offset plus span overflows.
  CHECK_THROWS_AS(tb::Tensor(st, DType::U8, {2}, {1}, kMax), tb::ShapeError);
  // Within 64 bits but larger than the storage: refused by the size check.
  CHECK_THROWS_WITH(tb::Tensor(st, DType::F32, {5}, {1}), Catch::Contains("but its storage has 16"));
  CHECK_THROWS_AS(tb::Tensor::zeros(DType::C128, {(int64_t(1) << 62) + 1}), tb::ShapeError);
  CHECK_THROWS_AS(tb::checked_numel({int64_t(1) << 40, int64_t(1) << 40}), tb::ShapeError);
  CHECK(tb::checked_numel({0, int64_t(1) << 40, int64_t(1) << 40}) == 0);
  // A legal broadcast-like view (stride 0) over one element stays legal.
  CHECK(tb::Tensor(st, DType::C128, {int64_t(1) << 40}, {0}).numel() == int64_t(1) << 40);
}

TEST_CASE(".pt: rebuilt views whose size, span or storage offset overflow are refused by inspect and convert",
          "[overflow]") {
  expect_overflow_refused("overflow_pt_span.pt", {"oneflow", "npy", "safetensors"});
  expect_overflow_refused("overflow_pt_span2d.pt", {"npy"});
  expect_overflow_refused("overflow_pt_offset.pt");
}

TEST_CASE("npy, safetensors, ONNX, OneFlow and HDF5 headers whose sizes overflow are refused naming the file",
          "[overflow][needs_hdf5][needs_onnx]") {
  expect_overflow_refused("overflow_npy_shape.npy", {"safetensors"});
  expect_overflow_refused("overflow_npy_fortran.npy");
  expect_overflow_refused("overflow_safetensors_shape.safetensors", {"npy"});
  expect_overflow_refused("overflow_onnx_dims.onnx");
  expect_overflow_refused("overflow_oneflow");
  expect_overflow_refused("overflow_h5_dims.h5");
}
