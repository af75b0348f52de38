// ONNX graphs of sequential networks: export checked by onnx.checker and run by onnxruntime against
// PyTorch's outputs, import as a layer list, and imported models run in nn and on the compute backends.
#include "tests/support.h"

#include <array>
#include <climits>

#include "compute/backend.h"
#include "formats/onnx.h"
#include "nn/module.h"
#include "tensor/io.h"

using namespace tb;
using tbtest::fixture;
using tbtest::Peer;

namespace {

OnnxLayer layer(OnnxLayer::Kind k, std::string name = {}) {
  OnnxLayer l;
  l.kind = k;
  l.name = std::move(name);
  return l;
}

/** The torch CNN of the fixtures (nn.Sequential names "0", "3", ...) as a layer chain. */
OnnxGraphSpec torch_cnn_spec() {
  using K = OnnxLayer::Kind;
  OnnxGraphSpec cnn;
  cnn.input_shape = {-1, 3, 32, 32};
  OnnxLayer pool = layer(K::MaxPool2d);
  pool.kernel = {2};
  cnn.layers = {layer(K::Conv2d, "0"), layer(K::ReLU),        pool,
                layer(K::Conv2d, "3"), layer(K::ReLU),        pool,
                layer(K::Flatten),     layer(K::Linear, "7"), layer(K::ReLU),
                layer(K::Linear, "9"), layer(K::ReLU),        layer(K::Linear, "11")};
  return cnn;
}

/** Runs an exported graph in onnxruntime on X and compares with Y (PyTorch's output). */
void check_with_ort(const std::filesystem::path& model, const std::string& x, const std::string& y, double atol) {
  auto r = tbtest::python(Peer::Peers, R"(
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])
X, Y = np.load(sys.argv[2]), np.load(sys.argv[3])
out = s.run(None, {s.get_inputs()[0].name: X})[0]
assert out.shape == Y.shape, (out.shape, Y.shape)
d = float(np.abs(out - Y).max())
print('maxdiff', d)
assert d <= float(sys.argv[4]), d
)",
                          {model.string(), fixture(x).string(), fixture(y).string(), std::to_string(atol)});
  INFO(r.output);
  CHECK(r.exit_code == 0);
}

}  // namespace

TEST_CASE("exported MLP, CNN and BatchNorm graphs pass the checker and match PyTorch in onnxruntime", "[onnx]") {
  using K = OnnxLayer::Kind;
  tbtest::TempDir dir;
  // MLP: weights read through ONNX from torch's export.
  OnnxGraphSpec mlp;
  mlp.input_shape = {-1, 20};
  mlp.layers = {layer(K::Linear, "hidden"), layer(K::ReLU), layer(K::Linear, "out")};
  save_onnx_graph(mlp, load(fixture("onnx/mlp.onnx")).state_dict(), dir / "mlp.onnx");
  CHECK_NOTHROW(check_onnx_model(dir / "mlp.onnx"));
  check_with_ort(dir / "mlp.onnx", "torch/mlp_X.npy", "torch/mlp_Y.npy", 1e-5);

  // CNN (nn.Sequential names "0", "3", ...).
  const OnnxGraphSpec cnn = torch_cnn_spec();
  save_onnx_graph(cnn, load(fixture("onnx_extra/cnn_weights.onnx")).state_dict(), dir / "cnn.onnx");
  CHECK_NOTHROW(check_onnx_model(dir / "cnn.onnx"));
  check_with_ort(dir / "cnn.onnx", "torch/cnn_X.npy", "torch/cnn_Y.npy", 1e-5);

  // BatchNorm1d and BatchNorm2d (running stats; num_batches_tracked is not part of the graph).
  OnnxGraphSpec bn1;
  bn1.input_shape = {-1, 20};
  bn1.layers = {layer(K::Linear, "0"), layer(K::BatchNorm, "1"), layer(K::ReLU), layer(K::Linear, "3")};
  save_onnx_graph(bn1, load(fixture("onnx_extra/bn1d_weights.onnx")).state_dict(), dir / "bn1d.onnx");
  check_with_ort(dir / "bn1d.onnx", "torch/bn1d_X.npy", "torch/bn1d_Y.npy", 1e-5);
  OnnxGraphSpec bn2;
  bn2.input_shape = {-1, 3, 8, 8};
  OnnxLayer conv = layer(K::Conv2d, "0");
  conv.padding = {1};
  bn2.layers = {conv, layer(K::BatchNorm, "1"), layer(K::ReLU)};
  save_onnx_graph(bn2, load(fixture("onnx_extra/bn2d_weights.onnx")).state_dict(), dir / "bn2d.onnx");
  check_with_ort(dir / "bn2d.onnx", "torch/bn2d_X.npy", "torch/bn2d_Y.npy", 1e-5);

  // The reference Python checker with full checks and strict shape inference agrees, and shapes are declared.
  std::vector<std::string> files;
  for (const char* n : {"mlp", "cnn", "bn1d", "bn2d"}) files.push_back((dir / (std::string(n) + ".onnx")).string());
  auto r = tbtest::python(Peer::Torch, R"(
import sys, onnx
for p in sys.argv[1:]:
    m = onnx.load(p)
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    out = m.graph.output[0].type.tensor_type.shape.dim
    print(p.split('/')[-1], [d.dim_param or d.dim_value for d in out])
)",
                          files);
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("mlp.onnx ['N', 10]") != std::string::npos);
  CHECK(r.output.find("cnn.onnx ['N', 10]") != std::string::npos);
  CHECK(r.output.find("bn2d.onnx ['N', 8, 8, 8]") != std::string::npos);
}

TEST_CASE("a residual Add graph runs in onnxruntime like numpy", "[onnx]") {
  using K = OnnxLayer::Kind;
  tbtest::TempDir dir;
  StateDict w;
  std::vector<float> wv(16), bv(4);
  for (int i = 0; i < 16; ++i) wv[size_t(i)] = float(i % 5) * 0.25f - 0.5f;
  for (int i = 0; i < 4; ++i) bv[size_t(i)] = float(i) * 0.1f;
  w.insert("fc.weight", Tensor::from_vector<float>(DType::F32, {4, 4}, wv));
  w.insert("fc.bias", Tensor::from_vector<float>(DType::F32, {4}, bv));
  OnnxGraphSpec spec;
  spec.input_shape = {-1, 4};
  OnnxLayer add = layer(K::Add);
  add.add_from = -1;
  spec.layers = {layer(K::Linear, "fc"), layer(K::ReLU), add};
  save_onnx_graph(spec, w, dir / "res.onnx");
  auto r = tbtest::python(Peer::Peers, R"(
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])
W = (np.arange(16) % 5 * 0.25 - 0.5).astype(np.float32).reshape(4, 4)
b = (np.arange(4) * 0.1).astype(np.float32)
X = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
out = s.run(None, {'input': X})[0]
ref = np.maximum(X @ W.T + b, 0) + X
assert np.abs(out - ref).max() < 1e-6, out
print('ok')
)",
                          {(dir / "res.onnx").string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
}

TEST_CASE("graph export names the layer and tensor on bad input", "[onnx]") {
  using K = OnnxLayer::Kind;
  StateDict sd = load(fixture("onnx/mlp.onnx")).state_dict();
  OnnxGraphSpec spec;
  spec.input_shape = {-1, 20};
  spec.layers = {layer(K::Linear, "hidden"), layer(K::ReLU), layer(K::Linear, "missing")};
  try {
    export_onnx_graph(spec, sd);
    FAIL("expected KeyError");
  } catch (const KeyError& e) {
    CHECK(std::string(e.what()).find("layer 2 (Linear 'missing') needs tensor 'missing.weight'") != std::string::npos);
  }
  spec.layers = {layer(K::Linear, "out")};  // 256 inputs expected, 20 given
  CHECK_THROWS_AS(export_onnx_graph(spec, sd), ShapeError);
  tbtest::TempDir dir;
  spec.layers = {layer(K::Linear, "hidden")};
  save_onnx_graph(spec, sd, dir / "a.onnx");
  CHECK_THROWS_AS(save_onnx_graph(spec, sd, dir / "a.onnx"), IoError);
}

TEST_CASE("more than 2 GiB never goes into one protobuf message", "[onnx]") {
  tbtest::TempDir dir;
  // 600M float32 elements viewing one stored value: 2.4 GB of tensor data without allocating it.
  auto one = Storage::allocate(4);
  StateDict sd;
  sd.insert("big", Tensor(one, DType::F32, {600000000}, {0}));
  SaveOptions o;
  o.options["external_data"] = "never";
  try {
    save(Checkpoint::from_state_dict(sd), dir / "big.onnx", "onnx", o);
    FAIL("expected UnsupportedError");
  } catch (const UnsupportedError& e) {
    CHECK(std::string(e.what()).find("2400000000 bytes of tensors do not fit in one protobuf message (2 GiB limit)") !=
          std::string::npos);
  }
  CHECK_FALSE(std::filesystem::exists(dir / "big.onnx"));

  // Tensors that fit (2 GiB - 64 MiB - 4 bytes) but 65 MiB of metadata beside them do not: refused
  // from the computed size, before any tensor byte is written (and without holding them).
  StateDict fits;
  fits.insert("almost", Tensor(one, DType::F32, {(int64_t(INT_MAX) - (64 << 20)) / 4}, {0}));
  Checkpoint ck = Checkpoint::from_state_dict(fits);
  ck.metadata["padding"] = std::string(65u << 20, 'x');
  try {
    save(ck, dir / "big.onnx", "onnx", o);
    FAIL("expected UnsupportedError");
  } catch (const UnsupportedError& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find("bytes, over protobuf's 2 GiB limit for one message; use external_data=always") !=
          std::string::npos);
  }
  CHECK_FALSE(std::filesystem::exists(dir / "big.onnx"));
}

TEST_CASE("ONNX graphs of supported ops import as a layer list with PyTorch-named weights", "[onnx]") {
  using K = OnnxLayer::Kind;
  auto kinds = [](const OnnxGraphSpec& s) {
    std::vector<K> k;
    for (const auto& l : s.layers) k.push_back(l.kind);
    return k;
  };
  auto npy = [](const char* k) {
    return tbtest::read_npy_minimal(fixture(std::string("torch/mlp_weights/") + k + ".npy"));
  };
  tbtest::TempDir dir;
  {
    OnnxImport im = import_onnx_graph(Source::from_path(fixture("onnx/mlp.onnx")));
    CHECK(kinds(im.spec) == std::vector<K>{K::Linear, K::ReLU, K::Linear});
    CHECK(im.spec.layers[0].name == "hidden");
    CHECK(im.spec.layers[2].name == "out");
    CHECK(im.spec.input_name == "X");
    CHECK(im.spec.output_name == "Y");
    CHECK(im.spec.input_shape == Shape{2, 20});
    for (const char* k : {"hidden.weight", "hidden.bias", "out.weight", "out.bias"})
      CHECK(equal(im.weights.at(k), npy(k)));
    im.spec.input_shape = {-1, 20};
    save_onnx_graph(im.spec, im.weights, dir / "mlp_again.onnx");
    check_with_ort(dir / "mlp_again.onnx", "torch/mlp_X.npy", "torch/mlp_Y.npy", 1e-5);
  }
  {
    // MatMul + Add with a renamed, transposed weight: one Linear named from its bias.
    OnnxImport im = import_onnx_graph(Source::from_path(fixture("onnx_extra/mlp3d.onnx")));
    CHECK(kinds(im.spec) == std::vector<K>{K::Linear, K::ReLU, K::Linear});
    CHECK(im.weights.keys() == std::vector<std::string>{"hidden.weight", "hidden.bias", "out.weight", "out.bias"});
    for (const char* k : {"hidden.weight", "hidden.bias", "out.weight", "out.bias"})
      CHECK(equal(im.weights.at(k), npy(k)));
    CHECK_FALSE(im.notes.empty());
  }
  {
    // Our own CNN export imports back to the same layers and runs the same.
    const OnnxGraphSpec cnn = torch_cnn_spec();
    StateDict w = load(fixture("onnx_extra/cnn_weights.onnx")).state_dict();
    save_onnx_graph(cnn, w, dir / "cnn.onnx");
    OnnxImport im = import_onnx_graph(Source::from_path(dir / "cnn.onnx"));
    CHECK(kinds(im.spec) == kinds(cnn));
    CHECK(im.spec.layers[2].kernel == std::vector<int64_t>{2, 2});
    CHECK(im.spec.layers[2].stride == std::vector<int64_t>{2, 2});
    CHECK(im.spec.input_shape == Shape{-1, 3, 32, 32});
    for (const auto& [k, t] : im.weights) CHECK(equal(t, w.at(k)));
    save_onnx_graph(im.spec, im.weights, dir / "cnn_again.onnx");
    check_with_ort(dir / "cnn_again.onnx", "torch/cnn_X.npy", "torch/cnn_Y.npy", 1e-5);
  }
  {
    // burn's conv2d_asymmetric_padding: PyTorch padding cannot express it, so it is refused by name.
    CHECK_THROWS_WITH(import_onnx_graph(Source::from_path(fixture("shared/onnx/pytorch291_conv2d_dynamo.onnx"))),
                      Catch::Contains("node 'node_conv2d' (Conv) cannot be imported as a sequential layer: only "
                                      "symmetric 2-D pads are supported"));
  }
  try {
    import_onnx_graph(Source::from_path(fixture("shared/onnx/onnxmltools122_keras_conv2d.onnx")));
    FAIL("expected UnsupportedError");
  } catch (const UnsupportedError& e) {
    CHECK(std::string(e.what()).find("(Transpose) cannot be imported as a sequential layer") != std::string::npos);
  }
}

namespace {

/** nn::Sequential from an imported graph; weights renamed to Sequential's "<index>.<param>". */
std::shared_ptr<nn::Sequential> build_sequential(const OnnxImport& im, StateDict& sd) {
  using K = OnnxLayer::Kind;
  auto seq = std::make_shared<nn::Sequential>();
  size_t rank = im.spec.input_shape.size();
  for (size_t i = 0; i < im.spec.layers.size(); ++i) {
    const OnnxLayer& l = im.spec.layers[i];
    auto w = [&](const std::string& p) { return im.weights.at(l.name + "." + p); };
    std::vector<std::string> params;
    auto two = [](const std::vector<int64_t>& v, int64_t d) { return v.empty() ? std::vector<int64_t>{d, d} : v; };
    switch (l.kind) {
      case K::Linear:
        seq->add(std::make_shared<nn::Linear>(w("weight").shape()[1], w("weight").shape()[0], l.bias));
        params = l.bias ? std::vector<std::string>{"weight", "bias"} : std::vector<std::string>{"weight"};
        rank = 2;
        break;
      case K::ReLU: seq->add(std::make_shared<nn::ReLU>()); break;
      case K::Conv2d: {
        Tensor cw = w("weight");
        nn::Conv2d::Options o;
        auto st = two(l.stride, 1), pd = two(l.padding, 0), dl = two(l.dilation, 1);
        o.stride_h = st[0], o.stride_w = st[1], o.pad_h = pd[0], o.pad_w = pd[1], o.dil_h = dl[0], o.dil_w = dl[1];
        o.groups = l.groups;
        o.bias = l.bias;
        seq->add(
            std::make_shared<nn::Conv2d>(cw.shape()[1] * l.groups, cw.shape()[0], cw.shape()[2], cw.shape()[3], o));
        params = l.bias ? std::vector<std::string>{"weight", "bias"} : std::vector<std::string>{"weight"};
        break;
      }
      case K::MaxPool2d: {
        auto st = l.stride.empty() ? l.kernel : l.stride;
        auto pd = two(l.padding, 0);
        seq->add(std::make_shared<nn::MaxPool2d>(l.kernel[0], l.kernel[1], st[0], st[1], pd[0], pd[1]));
        break;
      }
      case K::Flatten:
        seq->add(std::make_shared<nn::Flatten>());
        rank = 2;
        break;
      case K::BatchNorm:
        seq->add(std::make_shared<nn::BatchNorm>(rank == 4 ? 2 : 1, w("weight").shape()[0], l.eps));
        params = {"weight", "bias", "running_mean", "running_var"};
        break;
      case K::Add: FAIL("nn::Sequential has no residual Add"); break;
      default: FAIL("layer kind not used by these graphs");
    }
    for (const auto& p : params) sd.insert(std::to_string(i) + "." + p, w(p));
  }
  return seq;
}

/** Runs the imported layers with a compute backend's ops (weights uploaded once). */
Tensor run_on_backend(compute::Backend& be, const OnnxImport& im, const Tensor& x) {
  using K = OnnxLayer::Kind;
  std::vector<Tensor> outs;
  Tensor cur = be.upload(x), input = cur;
  auto w = [&](const OnnxLayer& l, const char* p) { return be.upload(im.weights.at(l.name + "." + p)); };
  auto arr = [](const std::vector<int64_t>& v, int64_t d) {
    return v.empty() ? std::array<int64_t, 2>{d, d} : std::array<int64_t, 2>{v[0], v[1]};
  };
  for (const auto& l : im.spec.layers) {
    switch (l.kind) {
      case K::Linear: {
        Tensor b = l.bias ? w(l, "bias") : Tensor();
        compute::GemmParams gp;
        gp.trans_b = true;
        cur = be.gemm(cur, w(l, "weight"), l.bias ? &b : nullptr, gp);
        break;
      }
      case K::ReLU: cur = be.relu(cur); break;
      case K::Conv2d: {
        compute::Conv2dParams cp;
        cp.stride = arr(l.stride, 1), cp.padding = arr(l.padding, 0), cp.dilation = arr(l.dilation, 1);
        cp.groups = l.groups;
        Tensor b = l.bias ? w(l, "bias") : Tensor();
        cur = be.conv2d(cur, w(l, "weight"), l.bias ? &b : nullptr, cp);
        break;
      }
      case K::MaxPool2d: {
        compute::Pool2dParams pp;
        pp.kernel = arr(l.kernel, 1), pp.stride = arr(l.stride, 0), pp.padding = arr(l.padding, 0);
        pp.dilation = arr(l.dilation, 1);
        pp.ceil_mode = l.ceil_mode;
        cur = be.max_pool2d(cur, pp);
        break;
      }
      case K::Flatten: cur = be.flatten(cur, 1, -1); break;
      case K::BatchNorm: {
        Tensor g = w(l, "weight"), b = w(l, "bias");
        cur = be.batch_norm(cur, w(l, "running_mean"), w(l, "running_var"), &g, &b, l.eps);
        break;
      }
      case K::Add: cur = be.add(cur, l.add_from < 0 ? input : outs[size_t(l.add_from)]); break;
      case K::Softmax: cur = be.softmax(cur, l.axis); break;
      default: FAIL("layer kind without a backend op");
    }
    outs.push_back(cur);
  }
  return be.download(cur);
}

}  // namespace

TEST_CASE("models imported from torch.onnx.export run in nn and on the compute backends like PyTorch", "[onnx]") {
  struct Case {
    const char* file;
    const char* io;
  };
  std::vector<std::unique_ptr<compute::Backend>> backends;
  backends.push_back(compute::make_backend("cpu"));
  if (compute::vulkan::is_available())
    backends.push_back(compute::make_backend("vulkan"));
  else
    WARN("no Vulkan device: the imported models run on the CPU backend only");
  for (const Case& c : {Case{"onnx/mlp.onnx", "mlp"}, Case{"onnx_extra/cnn_torch.onnx", "cnn"},
                        Case{"onnx_extra/bn1d_torch.onnx", "bn1d"}, Case{"onnx_extra/bn2d_torch.onnx", "bn2d"}}) {
    INFO(c.file);
    OnnxImport im = import_onnx_graph(Source::from_path(fixture(c.file)));
    Tensor x = tbtest::read_npy_minimal(fixture(str("torch/", c.io, "_X.npy")));
    Tensor y = tbtest::read_npy_minimal(fixture(str("torch/", c.io, "_Y.npy")));
    StateDict sd;
    auto seq = build_sequential(im, sd);
    nn::LoadReport rep = seq->load_state_dict(sd, false);
    CHECK(rep.unexpected.empty());
    CHECK(rep.mismatched.empty());
    for (const auto& k : rep.missing) CHECK(k.find("num_batches_tracked") != std::string::npos);
    Tensor out = seq->forward(x);
    REQUIRE(out.shape() == y.shape());
    CHECK(max_abs_diff(out, y) < 1e-4);
    for (auto& be : backends) {
      INFO(be->name());
      Tensor o = run_on_backend(*be, im, x);
      REQUIRE(o.shape() == y.shape());
      CHECK(max_abs_diff(o, y) < 1e-4);
    }
  }
}
