// The ONNX backend test data (Debian libonnx-testdata: node/, pytorch-converted/, pytorch-operator/;
// each case a model.onnx with test_data_set_*/input_*.pb and the reference output_*.pb), run through
// the path users get (nn::load_model + nn::run_model, as `tensorbridge run`) on the CPU backend and on
// Vulkan (lavapipe where there is no GPU). Every case whose ops are all ones the graph runner has and
// whose outputs are float32 must give the reference outputs (rtol 1e-4, atol 1e-5) or be one of the
// listed refusals, with its reason; nothing runs to a wrong answer and nothing is skipped unlisted.
#include <cmath>
#include <map>
#include <set>

#include "compute/backend.h"
#include "formats/onnx.h"
#include "formats/registry.h"
#include "models/arch.h"
#include "models/onnx_graph.h"
#include "models/onnx_runner.h"
#include "tests/support.h"

using namespace tb;
namespace fs = std::filesystem;

namespace {

const fs::path kTestData = "/usr/share/libonnx-testdata/data";
constexpr int kFloat = 1, kInt64 = 7, kFloat16 = 10, kDouble = 11, kBFloat16 = 16;  // TensorProto.DataType
bool floating(int t) { return t == kFloat || t == kFloat16 || t == kDouble || t == kBFloat16; }

// Cases of supported ops that are refused, with a part of the reason: a variant the runner does
// not do (3-D windows, training outputs) or an input that does not fit the graph. Each must be refused, not run.
const std::map<std::string, std::string> kRefused = {
    {"node/test_maxpool_3d_default", "only 1-D and 2-D windows"},
    {"node/test_averagepool_3d_default", "only 1-D and 2-D windows"},
    // The test data gives 'like' as [1] where the model declares [3, 4] (onnxruntime refuses it too).
    {"node/test_castlike_BFLOAT16_to_FLOAT_expanded", "input 'like' must have shape [3, 4]"},
    {"node/test_castlike_FLOAT_to_BFLOAT16_expanded", "input 'like' must have shape [3, 4]"},
    {"node/test_batchnorm_epsilon_training_mode", "output 1 ('output_mean') is not supported"},
    {"node/test_batchnorm_example_training_mode", "output 1 ('output_mean') is not supported"},
    {"pytorch-converted/test_Conv3d", "only 1-D and 2-D windows"},
    {"pytorch-converted/test_Conv3d_dilated", "only 1-D and 2-D windows"},
    {"pytorch-converted/test_Conv3d_dilated_strided", "only 1-D and 2-D windows"},
    {"pytorch-converted/test_Conv3d_groups", "only 1-D and 2-D windows"},
    {"pytorch-converted/test_Conv3d_no_bias", "only 1-D and 2-D windows"},
    {"pytorch-converted/test_Conv3d_stride", "only 1-D and 2-D windows"},
    {"pytorch-converted/test_Conv3d_stride_padding", "only 1-D and 2-D windows"},
    {"pytorch-converted/test_AvgPool3d", "only 1-D and 2-D windows"},
    {"pytorch-converted/test_AvgPool3d_stride", "only 1-D and 2-D windows"},
    {"pytorch-converted/test_AvgPool3d_stride1_pad0_gpu_input", "only 1-D and 2-D windows"},
    {"pytorch-converted/test_MaxPool3d", "only 1-D and 2-D windows"},
    {"pytorch-converted/test_MaxPool3d_stride", "only 1-D and 2-D windows"},
    {"pytorch-converted/test_MaxPool3d_stride_padding", "only 1-D and 2-D windows"},
};

/** Whether every node is a runner op and the outputs are float32 (inputs float32 or int64 shapes). */
bool selected(const OnnxGraph& g) {
  const auto& ops = nn::OnnxGraphModule::supported_ops();
  for (const auto& n : g.nodes)
    if (!(n.domain.empty() || n.domain == "ai.onnx") || std::find(ops.begin(), ops.end(), n.op_type) == ops.end())
      return false;
  for (const auto& v : g.inputs)
    if (!floating(v.elem_type) && v.elem_type != kInt64) return false;
  for (const auto& v : g.outputs)
    if (!floating(v.elem_type)) return false;
  return !g.outputs.empty();
}

/** Empty when y matches want within rtol 1e-4 / atol 1e-5, else what differs. ONNX 1.12 made its
 *  bfloat16 references by truncating float32 (the spec and our backends round to nearest even), so
 *  those may differ by one bfloat16 ulp (2^-7 relative). */
std::string compare(const Tensor& y, const Tensor& want) {
  const double rtol = want.dtype() == DType::BF16 ? 1.0 / 128 : 1e-4;
  if (y.dtype() != want.dtype() || y.shape() != want.shape())
    return "got " + y.describe() + ", want " + want.describe();
  Tensor a = y.to(DType::F64), b = want.to(DType::F64);
  const double* pa = a.data_as<double>();
  const double* pb = b.data_as<double>();
  for (int64_t i = 0; i < a.numel(); ++i) {
    bool ok = pa[i] == pb[i] || (std::isnan(pa[i]) && std::isnan(pb[i])) ||
              std::abs(pa[i] - pb[i]) <= 1e-5 + rtol * std::abs(pb[i]);
    if (!ok) return str("element ", i, ": got ", pa[i], ", want ", pb[i]);
  }
  return {};
}

/** The test set's tensors; vs gives the graph's declared types. ONNX 1.12's test data stores
 *  bfloat16 tensors as their uint16 bits: those are viewed as bfloat16 again. */
std::vector<Tensor> read_pbs(const fs::path& dir, const char* stem, const std::vector<OnnxValueInfo>& vs) {
  std::vector<Tensor> out;
  for (size_t i = 0; fs::exists(dir / str(stem, "_", i, ".pb")); ++i) {
    Tensor t = load_onnx_tensor(Source::from_path(dir / str(stem, "_", i, ".pb")));
    if (i < vs.size() && vs[i].elem_type == kBFloat16 && t.dtype() == DType::U16) t = t.view_as_dtype(DType::BF16);
    out.push_back(t);
  }
  return out;
}

void run_suites(const std::string& backend) {
  if (!fs::exists(kTestData)) tbtest::skip("libonnx-testdata is not installed (scripts/setup.sh installs it)");
  std::shared_ptr<compute::Backend> be = compute::make_backend(backend);
  int passed = 0, refused = 0;
  std::vector<std::string> failures;
  std::set<std::string> seen_refusals;
  for (const char* suite : {"node", "pytorch-converted", "pytorch-operator"}) {
    std::vector<fs::path> cases;
    for (const auto& e : fs::directory_iterator(kTestData / suite)) cases.push_back(e.path());
    std::sort(cases.begin(), cases.end());
    for (const auto& dir : cases) {
      const fs::path model = dir / "model.onnx";
      if (!fs::exists(model)) continue;
      const OnnxGraph graph = read_onnx_graph(Source::from_path(model));
      if (!selected(graph)) continue;
      const std::string name = str(suite, "/", dir.filename().string());
      auto expected_refusal = kRefused.find(name);
      try {
        nn::FileModel fm = nn::load_model(model);
        fm.model->to(be);
        std::string why;
        for (const auto& ds : fs::directory_iterator(dir)) {
          if (!ds.is_directory()) continue;
          std::vector<Tensor> want = read_pbs(ds.path(), "output", graph.outputs);
          std::vector<Tensor> got = nn::run_model(*fm.model, read_pbs(ds.path(), "input", graph.inputs));
          if (got.size() != want.size()) why = str(got.size(), " outputs, want ", want.size());
          for (size_t i = 0; why.empty() && i < want.size(); ++i)
            if (std::string d = compare(got[i], want[i]); !d.empty()) why = str("output ", i, ": ", d);
          if (!why.empty()) break;
        }
        if (expected_refusal != kRefused.end()) why = "ran, but is listed as refused: " + expected_refusal->second;
        if (why.empty())
          ++passed;
        else
          failures.push_back(name + ": " + why);
      } catch (const Error& e) {
        std::string msg = e.what();
        if (expected_refusal != kRefused.end() && msg.find(expected_refusal->second) != std::string::npos) {
          ++refused;
          seen_refusals.insert(name);
        } else {
          failures.push_back(name + ": " + msg);
        }
      }
    }
  }
  for (const auto& [name, why] : kRefused)
    if (!seen_refusals.count(name)) failures.push_back(name + ": listed as refused (" + why + ") but was not");
  INFO(backend << ": " << passed << " passed, " << refused << " refused as listed");
  for (const auto& f : failures) UNSCOPED_INFO(f);
  CHECK(failures.empty());
  CHECK(passed >= 150);  // the selection must not silently shrink
  WARN(backend << ": " << passed << " ONNX test cases passed, " << refused << " refused as listed");
}

}  // namespace

TEST_CASE("ONNX backend test data of the runner's ops gives the reference outputs on the CPU", "[onnx_conformance]") {
  if (!nn::onnx_graph_support()) tbtest::skip("built without ONNX");
  run_suites("cpu");
}

TEST_CASE("ONNX backend test data of the runner's ops gives the reference outputs on Vulkan", "[onnx_conformance]") {
  if (!nn::onnx_graph_support()) tbtest::skip("built without ONNX");
  if (!compute::vulkan::is_available()) tbtest::skip("no Vulkan compute device (build or driver)");
  run_suites("vulkan");
}
