#include "models/onnx_graph.h"

#include "models/onnx_runner.h"

#ifdef TB_MODELS_WITH_ONNX
#include "formats/onnx.h"
#endif

namespace tb::nn {

#ifndef TB_MODELS_WITH_ONNX
bool onnx_graph_support() { return false; }
void save_onnx_model(Module&, const Shape&, const std::filesystem::path& path, const SaveOptions&) {
  throw UnsupportedError(
      str("nn: cannot export '", path.string(), "': built without ONNX support; reconfigure with -DTB_WITH_ONNX=ON"));
}
Module::Ptr module_from_onnx_file(const std::filesystem::path& file) {
  throw UnsupportedError(
      str("nn: '", file.string(), "': built without ONNX support; reconfigure with -DTB_WITH_ONNX=ON"));
}
#else

bool onnx_graph_support() { return true; }

namespace {
using K = OnnxLayer::Kind;

// Appends the ONNX layer for one leaf module; prefix is its state_dict prefix.
void add_layer(Module& m, const std::string& prefix, std::vector<OnnxLayer>& out) {
  OnnxLayer l;
  l.name = prefix;
  if (auto* lin = dynamic_cast<Linear*>(&m)) {
    l.kind = K::Linear;
    l.bias = lin->has_bias;
  } else if (dynamic_cast<ReLU*>(&m)) {
    l.kind = K::ReLU;
  } else if (auto* c = dynamic_cast<Conv2d*>(&m)) {
    l.kind = K::Conv2d;
    l.bias = c->opts.bias;
    l.stride = {c->opts.stride_h, c->opts.stride_w};
    l.padding = {c->opts.pad_h, c->opts.pad_w};
    l.dilation = {c->opts.dil_h, c->opts.dil_w};
    l.groups = c->opts.groups;
  } else if (auto* p = dynamic_cast<MaxPool2d*>(&m)) {
    l.kind = K::MaxPool2d;
    l.kernel = {p->kernel_h, p->kernel_w};
    l.stride = {p->stride_h, p->stride_w};
    l.padding = {p->pad_h, p->pad_w};
    l.dilation = {p->dil_h, p->dil_w};
    l.ceil_mode = p->ceil_mode;
  } else if (auto* f = dynamic_cast<Flatten*>(&m)) {
    TB_CHECK(f->start_dim == 1 && f->end_dim == -1, UnsupportedError,
             "nn: ONNX export supports Flatten(1, -1), not Flatten(", f->start_dim, ", ", f->end_dim, ") at '", prefix,
             "'");
    l.kind = K::Flatten;
  } else if (auto* bn = dynamic_cast<BatchNorm*>(&m)) {
    TB_CHECK(bn->affine && bn->track_running_stats, UnsupportedError,
             "nn: ONNX export needs an affine BatchNorm with running stats at '", prefix, "'");
    l.kind = K::BatchNorm;
    l.eps = bn->eps;
  } else if (dynamic_cast<Sigmoid*>(&m)) {
    l.kind = K::Sigmoid;
  } else if (dynamic_cast<Tanh*>(&m)) {
    l.kind = K::Tanh;
  } else if (auto* lr = dynamic_cast<LeakyReLU*>(&m)) {
    l.kind = K::LeakyReLU;
    l.alpha = lr->negative_slope;
  } else if (auto* sm = dynamic_cast<Softmax*>(&m)) {
    l.kind = K::Softmax;
    l.axis = sm->dim;
  } else if (dynamic_cast<GlobalAvgPool2d*>(&m)) {
    l.kind = K::GlobalAvgPool;
  } else if (dynamic_cast<Dropout*>(&m) || dynamic_cast<Identity*>(&m)) {
    return;  // identity at inference
  } else {
    throw UnsupportedError(str("nn: ONNX export does not support ", m.type_name(), " (at '", prefix, "')"));
  }
  out.push_back(std::move(l));
}

std::string join(const std::string& a, const std::string& b) { return a.empty() ? b : a + "." + b; }

void collect(Module& m, const std::string& prefix, std::vector<OnnxLayer>& out) {
  if (auto* seq = dynamic_cast<Sequential*>(&m)) {
    for (const auto& [name, child] : seq->children()) collect(*child, join(prefix, name), out);
    return;
  }
  if (auto* mlp = dynamic_cast<MLP*>(&m)) {  // out(relu(hidden(x)))
    add_layer(*mlp->hidden, join(prefix, "hidden"), out);
    out.push_back(OnnxLayer{});  // ReLU
    add_layer(*mlp->out, join(prefix, "out"), out);
    return;
  }
  add_layer(m, prefix, out);
}
}  // namespace

void save_onnx_model(Module& model, const Shape& input_shape, const std::filesystem::path& path,
                     const SaveOptions& opts) {
  OnnxGraphSpec spec;
  collect(model, "", spec.layers);
  spec.input_shape = input_shape;
  StateDict sd = model.state_dict();
  save_onnx_graph(spec, sd, path, opts);
}

Module::Ptr module_from_onnx_file(const std::filesystem::path& file) {
  // A chain of layers becomes a Sequential with PyTorch names (fused Linear+ReLU on the backends);
  // any other graph runs node by node as written. The file is read once, for both.
  OnnxGraph graph = read_onnx_graph(Source::from_path(file));
  auto as_graph = [&] { return std::make_shared<OnnxGraphModule>(std::move(graph), file.string()); };
  OnnxImport im;
  try {
    im = import_onnx_graph(graph, file.string());
  } catch (const UnsupportedError&) {
    return as_graph();
  }
  auto seq = std::make_shared<Sequential>();
  StateDict sd;
  size_t rank = im.spec.input_shape.size();
  auto two = [](const std::vector<int64_t>& v, int64_t d) { return v.empty() ? std::vector<int64_t>{d, d} : v; };
  for (size_t i = 0; i < im.spec.layers.size(); ++i) {
    const OnnxLayer& l = im.spec.layers[i];
    auto w = [&](const std::string& p) { return im.weights.at(l.name + "." + p); };
    std::vector<std::string> params;
    switch (l.kind) {
      case K::Linear:
        seq->add(std::make_shared<Linear>(w("weight").shape()[1], w("weight").shape()[0], l.bias));
        params = l.bias ? std::vector<std::string>{"weight", "bias"} : std::vector<std::string>{"weight"};
        rank = 2;
        break;
      case K::ReLU: seq->add(std::make_shared<ReLU>()); break;
      case K::Sigmoid: seq->add(std::make_shared<Sigmoid>()); break;
      case K::Tanh: seq->add(std::make_shared<Tanh>()); break;
      case K::LeakyReLU: seq->add(std::make_shared<LeakyReLU>(l.alpha)); break;
      case K::Softmax: seq->add(std::make_shared<Softmax>(l.axis)); break;
      case K::GlobalAvgPool: seq->add(std::make_shared<GlobalAvgPool2d>()); break;
      case K::Conv2d: {
        Tensor cw = w("weight");
        Conv2d::Options o;
        auto st = two(l.stride, 1), pd = two(l.padding, 0), dl = two(l.dilation, 1);
        o.stride_h = st[0], o.stride_w = st[1], o.pad_h = pd[0], o.pad_w = pd[1], o.dil_h = dl[0], o.dil_w = dl[1];
        o.groups = l.groups;
        o.bias = l.bias;
        seq->add(std::make_shared<Conv2d>(cw.shape()[1] * l.groups, cw.shape()[0], cw.shape()[2], cw.shape()[3], o));
        params = l.bias ? std::vector<std::string>{"weight", "bias"} : std::vector<std::string>{"weight"};
        break;
      }
      case K::MaxPool2d: {
        auto st = l.stride.empty() ? l.kernel : l.stride;
        auto pd = two(l.padding, 0), dl = two(l.dilation, 1);
        auto pool = std::make_shared<MaxPool2d>(l.kernel[0], l.kernel[1], st[0], st[1], pd[0], pd[1]);
        pool->dil_h = dl[0], pool->dil_w = dl[1];
        pool->ceil_mode = l.ceil_mode;
        seq->add(pool);
        break;
      }
      case K::Flatten:  // nn.Flatten is ONNX's Flatten(axis=1) for ranks >= 2 only
        if (rank < 2) return as_graph();
        seq->add(std::make_shared<Flatten>());
        rank = 2;
        break;
      case K::BatchNorm:
        if (rank < 2 || rank > 4) return as_graph();
        seq->add(std::make_shared<BatchNorm>(rank == 4 ? 2 : 1, w("weight").shape()[0], l.eps));
        params = {"weight", "bias", "running_mean", "running_var"};
        break;
      case K::Add:  // a residual block: the graph runner follows the branches
        return as_graph();
    }
    for (const auto& p : params) sd.insert(std::to_string(i) + "." + p, w(p));
  }
  LoadReport rep = seq->load_state_dict(sd, false);
  // ONNX graphs carry no num_batches_tracked; everything else must be there.
  for (const auto& k : rep.missing)
    TB_CHECK(k.find("num_batches_tracked") != std::string::npos, FormatError, "nn: '", file.string(),
             "': the graph gives no value for '", k, "'");
  TB_CHECK(rep.unexpected.empty() && rep.mismatched.empty(), FormatError, "nn: '", file.string(),
           "': imported weights do not fit the rebuilt model");
  return seq;
}
#endif

}  // namespace tb::nn
