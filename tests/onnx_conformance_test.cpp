// The ONNX backend node tests (Debian libonnx-testdata: each a one-node model.onnx with input_0.pb
// and the reference output_0.pb) for the ops nn runs, on the CPU backend and on Vulkan (lavapipe
// where there is no GPU). Every listed test either gives the reference output (bit for bit for ops
// that only select or scale values, within 1e-5 relative otherwise) or is refused with the listed
// reason; nothing runs to a wrong answer.
#include <cmath>

#include "compute/backend.h"
#include "formats/registry.h"
#include "nn/arch.h"
#include "nn/onnx_graph.h"
#include "tests/support.h"

using namespace tb;
namespace fs = std::filesystem;

namespace {

const fs::path kNodeTests = "/usr/share/libonnx-testdata/data/node";

enum class Expect { Exact, Close, Refused };
struct Case {
  const char* name;
  Expect expect;
  const char* reason = "";  // for Refused: a part of the message
};

// Every one-input test of the op families nn runs (the multi-input ones need a graph runner).
const Case kCases[] = {
    {"test_relu", Expect::Exact},
    {"test_leakyrelu", Expect::Exact},
    {"test_leakyrelu_default", Expect::Exact},
    {"test_leakyrelu_example", Expect::Exact},
    {"test_sigmoid", Expect::Close},
    {"test_sigmoid_example", Expect::Close},
    {"test_tanh", Expect::Close},
    {"test_tanh_example", Expect::Close},
    {"test_softmax_axis_0", Expect::Close},
    {"test_softmax_axis_1", Expect::Close},
    {"test_softmax_axis_2", Expect::Close},
    {"test_softmax_default_axis", Expect::Close},
    {"test_softmax_example", Expect::Close},
    {"test_softmax_large_number", Expect::Close},
    {"test_softmax_negative_axis", Expect::Close},
    {"test_globalaveragepool", Expect::Close},
    {"test_globalaveragepool_precomputed", Expect::Close},
    {"test_flatten_axis1", Expect::Exact},
    {"test_flatten_default_axis", Expect::Exact},
    {"test_flatten_axis0", Expect::Refused, "only axis=1 maps to nn.Flatten()"},
    {"test_flatten_axis2", Expect::Refused, "only axis=1 maps to nn.Flatten()"},
    {"test_maxpool_2d_default", Expect::Exact},
    {"test_maxpool_2d_ceil", Expect::Exact},
    {"test_maxpool_2d_dilations", Expect::Exact},
    {"test_maxpool_2d_pads", Expect::Exact},
    {"test_maxpool_2d_precomputed_pads", Expect::Exact},
    {"test_maxpool_2d_precomputed_strides", Expect::Exact},
    {"test_maxpool_2d_strides", Expect::Exact},
    {"test_maxpool_2d_uint8", Expect::Exact},
    {"test_maxpool_1d_default", Expect::Refused, "only 2-D pooling is supported"},
    {"test_maxpool_3d_default", Expect::Refused, "only 2-D pooling is supported"},
    {"test_maxpool_2d_same_upper", Expect::Refused, "auto_pad=SAME_UPPER"},
    {"test_maxpool_2d_same_lower", Expect::Refused, "auto_pad=SAME_LOWER"},
    {"test_maxpool_with_argmax_2d_precomputed_pads", Expect::Refused, "the graph has 2 outputs"},
    {"test_averagepool_2d_default", Expect::Refused, "(AveragePool) cannot be imported"},
    {"test_cast_FLOAT_to_FLOAT16", Expect::Refused, "(Cast) cannot be imported"},
};

Tensor read_pb(const fs::path& p) {
  StateDict sd = load(p).state_dict();
  REQUIRE(sd.size() == 1);
  return sd.entries().front().second.contiguous();
}

/** Empty when y matches want under the case's rule, else what differs. */
std::string compare(const Tensor& y, const Tensor& want, Expect e) {
  if (y.dtype() != want.dtype() || y.shape() != want.shape()) return "got " + y.describe() + ", want " + want.describe();
  Tensor a = y.to(DType::F64), b = want.to(DType::F64);
  const double* pa = a.data_as<double>();
  const double* pb = b.data_as<double>();
  for (int64_t i = 0; i < a.numel(); ++i) {
    bool ok = e == Expect::Exact ? (pa[i] == pb[i] || (std::isnan(pa[i]) && std::isnan(pb[i])))
                                 : std::abs(pa[i] - pb[i]) <= 1e-7 + 1e-5 * std::abs(pb[i]);
    if (!ok) return str("element ", i, ": got ", pa[i], ", want ", pb[i]);
  }
  return {};
}

void run_cases(const std::string& backend) {
  if (!fs::exists(kNodeTests)) tbtest::skip("libonnx-testdata is not installed (scripts/setup.sh installs it)");
  std::shared_ptr<compute::Backend> be = compute::make_backend(backend);
  for (const Case& c : kCases) {
    const fs::path dir = kNodeTests / c.name;
    INFO(c.name << " on " << backend);
    REQUIRE(fs::exists(dir / "model.onnx"));
    if (c.expect == Expect::Refused) {
      std::string err = tbtest::error_of<tb::Error>([&] { nn::load_model(dir / "model.onnx"); });
      CHECK_THAT(err, Catch::Matchers::Contains(c.reason));
      continue;
    }
    nn::FileModel fm = nn::load_model(dir / "model.onnx");
    fm.model->to(be);
    Tensor y = (*fm.model)(read_pb(dir / "test_data_set_0" / "input_0.pb"));
    CHECK(compare(y, read_pb(dir / "test_data_set_0" / "output_0.pb"), c.expect) == "");
  }
}

}  // namespace

TEST_CASE("ONNX node tests of the ops nn runs give the reference outputs on the CPU", "[onnx_conformance]") {
  if (!nn::onnx_graph_support()) tbtest::skip("built without ONNX");
  run_cases("cpu");
}

TEST_CASE("ONNX node tests of the ops nn runs give the reference outputs on Vulkan", "[onnx_conformance]") {
  if (!nn::onnx_graph_support()) tbtest::skip("built without ONNX");
  if (!compute::vulkan::is_available()) tbtest::skip("no Vulkan compute device (build or driver)");
  run_cases("vulkan");
}
