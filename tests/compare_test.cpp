// The library side of diff and roundtrip (models/compare.h), as a program using the library calls it.
#include "tests/support.h"

#include "models/compare.h"

using namespace tb;

namespace {
StateDict small_dict() {
  StateDict sd;
  sd.insert("hidden.weight", Tensor::from_vector<float>(DType::F32, {2, 3}, {1, 2, 3, 4, 5, 6}));
  sd.insert("hidden.bias", Tensor::from_vector<float>(DType::F32, {2}, {0.5f, -0.5f}));
  sd.insert("steps", Tensor::from_vector<int64_t>(DType::I64, {}, {7}));
  return sd;
}
}  // namespace

TEST_CASE("diff_state_dicts reports names on one side, dtype and value differences") {
  StateDict a = small_dict(), b = small_dict();
  CHECK(diff_state_dicts(a, b, 0, 0).equal());
  StateDict c;
  c.insert("hidden.weight", Tensor::from_vector<float>(DType::F32, {2, 3}, {1, 2, 3, 4, 5, 6.5f}));
  c.insert("extra", Tensor::from_vector<float>(DType::F32, {1}, {0}));
  DiffReport d = diff_state_dicts(a, c, 0, 0);
  CHECK_FALSE(d.equal());
  CHECK(d.only_a == std::vector<std::string>{"hidden.bias", "steps"});
  CHECK(d.only_b == std::vector<std::string>{"extra"});
  REQUIRE(d.tensors.size() == 1);
  CHECK(d.tensors[0].max_abs == 0.5);
  CHECK_FALSE(d.tensors[0].bit_exact);
  CHECK(diff_state_dicts(a, c, 0, 0.5).tensors[0].equal);  // within atol
}

TEST_CASE("round_trip through formats comes back bit-exact or says why not") {
  ScratchDir dir;
  auto rows = round_trip(small_dict(), "safetensors", {"npz", "pt", "safetensors", "oneflow"}, dir.path());
  REQUIRE(rows.size() == 4);
  for (const auto& r : rows) {
    INFO(r.via << ": " << r.status << " " << r.detail);
    CHECK(r.status == "bit-exact");
  }
  CHECK(round_trip_exit_code(rows) == 0);
  // A dtype a format cannot hold is "cannot hold", quoting the writer, and alone checks nothing.
  StateDict c64;
  c64.insert("z", Tensor::zeros(DType::C128, {2}));
  rows = round_trip(c64, "pt", {"safetensors"}, dir.path());
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].status == kCannotHold);
  CHECK(round_trip_exit_code(rows) == 1);
}
