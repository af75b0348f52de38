#include "models/detail/onnx_ops.h"

#include <cmath>
#include <functional>
#include <limits>
#include <map>

#include "nn/host_ops.h"

namespace tb::nn::onnx_ops {
namespace {

using compute::Op;

/** A node being evaluated: its inputs and the backend. */
struct Ctx {
  const NodeCall& call;
  compute::Backend& be;
  const std::vector<Tensor>& in;

  const OnnxNode& node() const { return call.node; }
  [[noreturn]] void fail(const std::string& why) const { call.fail(why); }
  bool has(size_t i) const { return i < in.size() && in[i].defined(); }
  const Tensor& x(size_t i = 0) const {
    if (!has(i)) fail(str("input ", i, " is missing"));
    return in[i];
  }
  /** Input i on the host (a download for device values; small tensors such as shapes and axes). */
  Tensor host(size_t i) const { return be.download(x(i)); }
  /** Input i as int64 values (shapes, axes). */
  std::vector<int64_t> ints(size_t i) const {
    Tensor t = host(i);
    if (t.dtype() != DType::I64) fail(str("input ", i, " must be int64, got ", t.describe()));
    return t.contiguous().to_vector<int64_t>();
  }
  /** Refuses a dtype the backend cannot compute op in (float32 always runs). */
  const Tensor& floating(size_t i, Op op) const {
    const Tensor& t = x(i);
    if (t.dtype() != DType::F32 && !(is_floating(t.dtype()) && be.supports(op, t.dtype())))
      fail(str(op_name(op), " on ", dtype_name(t.dtype()), " is not supported by the ", be.name(), " backend"));
    return t;
  }
  int64_t axis(int64_t a, int64_t rank) const {
    if (a < -rank || a >= rank) fail(str("axis ", a, " is out of range for rank ", rank));
    return a < 0 ? a + rank : a;
  }
};

using Outs = std::vector<Tensor>;
Outs one(Tensor t) { return {std::move(t)}; }

/** A host kernel on input 0, the result left on the host (backend ops upload it when needed). */
Outs host_map(const Ctx& c, const std::function<double(double)>& fn) {
  return one(host::map(c.host(0), fn, c.node().op_type.c_str()));
}

// ---- convolution and pooling geometry ---------------------------------------------------------

/** The node's window lifted to 2-D: 1-D ops run as 2-D with H = 1. */
struct Geometry {
  bool one_d = false;
  host::Window2d w;
  bool symmetric() const { return w.pads[0] == w.pads[2] && w.pads[1] == w.pads[3]; }
};

Geometry geometry(const Ctx& c, const Shape& xs, std::vector<int64_t> kernel) {
  const OnnxNode& n = c.node();
  const size_t sd = xs.size() >= 2 ? xs.size() - 2 : 0;
  if (sd != 1 && sd != 2) c.fail(str("only 1-D and 2-D windows are supported; the input is ", shape_str(xs)));
  if (kernel.size() != sd) c.fail(str("kernel_shape ", shape_str(kernel), " does not match the input ", shape_str(xs)));
  auto list = [&](const char* name, int64_t dflt, size_t len) {
    std::vector<int64_t> v = n.attr_ints(name);
    if (v.empty()) v.assign(len, dflt);
    if (v.size() != len) c.fail(str(name, " has ", v.size(), " values, expected ", len));
    for (int64_t e : v)
      if (e < 0 || (dflt == 1 && e == 0)) c.fail(str(name, " holds ", e));
    return v;
  };
  std::vector<int64_t> st = list("strides", 1, sd), dl = list("dilations", 1, sd), pads = list("pads", 0, 2 * sd);
  const std::string ap = n.attr_s("auto_pad", "NOTSET");
  for (size_t d = 0; d < sd; ++d) {
    if (ap == "VALID") {
      pads[d] = pads[d + sd] = 0;
    } else if (ap == "SAME_UPPER" || ap == "SAME_LOWER") {
      const int64_t in = xs[2 + d], out = (in + st[d] - 1) / st[d];
      const int64_t total = std::max<int64_t>(0, (out - 1) * st[d] + (kernel[d] - 1) * dl[d] + 1 - in);
      pads[d] = ap == "SAME_UPPER" ? total / 2 : total - total / 2;
      pads[d + sd] = total - pads[d];
    } else if (ap != "NOTSET") {
      c.fail("auto_pad=" + ap + " is not an ONNX value");
    }
  }
  Geometry g;
  g.one_d = sd == 1;
  g.w.ceil_mode = n.attr_i("ceil_mode", 0) != 0;
  if (g.one_d) {
    g.w.kernel = {1, kernel[0]}, g.w.stride = {1, st[0]}, g.w.dilation = {1, dl[0]};
    g.w.pads = {0, pads[0], 0, pads[1]};
  } else {
    g.w.kernel = {kernel[0], kernel[1]}, g.w.stride = {st[0], st[1]}, g.w.dilation = {dl[0], dl[1]};
    g.w.pads = {pads[0], pads[1], pads[2], pads[3]};
  }
  return g;
}

/** x as (N, C, H, W): 1-D inputs (N, C, L) get H = 1. */
Tensor lift(const Ctx& c, const Tensor& x, const Geometry& g) {
  return g.one_d ? c.be.reshape(x, {x.shape()[0], x.shape()[1], 1, x.shape()[2]}) : x;
}
Tensor lower(const Ctx& c, const Tensor& y, const Geometry& g) {
  return g.one_d ? c.be.reshape(y, {y.shape()[0], y.shape()[1], y.shape()[3]}) : y;
}

Outs conv(const Ctx& c) {
  const Tensor& x = c.floating(0, Op::Conv2d);
  const Tensor& w = c.floating(1, Op::Conv2d);
  if (w.dim() != x.dim()) c.fail(str("the weight ", w.describe(), " does not match the input ", x.describe()));
  Geometry g = geometry(c, x.shape(), Shape(w.shape().begin() + std::min<int64_t>(2, w.dim()), w.shape().end()));
  if (auto ks = c.node().attr_ints("kernel_shape"); !ks.empty() && ks != Shape(w.shape().begin() + 2, w.shape().end()))
    c.fail(str("kernel_shape ", shape_str(ks), " does not match the weight ", w.describe()));
  compute::Conv2dParams p;
  p.stride = g.w.stride;
  p.dilation = g.w.dilation;
  p.groups = c.node().attr_i("group", 1);
  Tensor x4 = lift(c, x, g), w4 = g.one_d ? c.be.reshape(w, {w.shape()[0], w.shape()[1], 1, w.shape()[2]}) : w;
  if (g.symmetric()) {
    p.padding = {g.w.pads[0], g.w.pads[1]};
  } else {
    x4 = host::pad2d(c.be.download(x4), g.w.pads, 0.0);
  }
  return one(lower(c, c.be.conv2d(x4, w4, c.has(2) ? &c.in[2] : nullptr, p), g));
}

Outs max_pool(const Ctx& c) {
  const Tensor& x = c.x(0);
  if (!c.be.supports(Op::MaxPool2d, x.dtype()))
    c.fail(str("MaxPool on ", dtype_name(x.dtype()), " is not supported by the ", c.be.name(), " backend"));
  Geometry g = geometry(c, x.shape(), c.node().attr_ints("kernel_shape"));
  compute::Pool2dParams p;
  p.kernel = g.w.kernel, p.stride = g.w.stride, p.dilation = g.w.dilation, p.ceil_mode = g.w.ceil_mode;
  Tensor x4 = lift(c, x, g);
  const int64_t oh = g.w.out_size(0, x4.shape()[2]), ow = g.w.out_size(1, x4.shape()[3]);
  if (g.symmetric()) {
    p.padding = {g.w.pads[0], g.w.pads[1]};
  } else {
    if (!is_floating(x.dtype())) c.fail("asymmetric pads on a " + std::string(dtype_name(x.dtype())) + " input");
    x4 = host::pad2d(c.be.download(x4), g.w.pads, -std::numeric_limits<double>::infinity());
  }
  Tensor y = c.be.max_pool2d(x4, p);
  if (y.shape()[2] != oh || y.shape()[3] != ow)  // a last window starting in the end padding: dropped
    y = c.be.download(y).slice(2, 0, oh).slice(3, 0, ow).contiguous();
  return one(lower(c, y, g));
}

Outs avg_pool(const Ctx& c) {
  const Tensor& x = c.x(0);
  Geometry g = geometry(c, x.shape(), c.node().attr_ints("kernel_shape"));
  Tensor y = host::avg_pool2d(c.be.download(lift(c, x, g)), g.w, c.node().attr_i("count_include_pad", 0) != 0);
  return one(lower(c, y, g));
}

// ---- shapes -----------------------------------------------------------------------------------

Outs reshape(const Ctx& c) {
  const Tensor& x = c.x(0);
  Shape target = c.ints(1);
  const bool allowzero = c.node().attr_i("allowzero", 0) != 0;
  for (size_t i = 0; i < target.size(); ++i)
    if (target[i] == 0 && !allowzero) {
      if (i >= x.shape().size()) c.fail(str("shape ", shape_str(target), " copies dim ", i, " of ", x.describe()));
      target[i] = x.shape()[i];
    }
  return one(c.be.reshape(x, target));
}

Outs flatten(const Ctx& c) {
  const Tensor& x = c.x(0);
  int64_t axis = c.node().attr_i("axis", 1);
  if (axis < -x.dim() || axis > x.dim()) c.fail(str("axis ", axis, " is out of range for ", x.describe()));
  if (axis < 0) axis += x.dim();
  int64_t a = 1, b = 1;
  for (int64_t i = 0; i < x.dim(); ++i) (i < axis ? a : b) *= x.shape()[size_t(i)];
  return one(c.be.reshape(x, {a, b}));
}

std::vector<int64_t> axes_of(const Ctx& c) {
  if (c.call.opset >= 13) return c.has(1) ? c.ints(1) : std::vector<int64_t>{};
  return c.node().attr_ints("axes");
}

Outs squeeze(const Ctx& c) {
  const Tensor& x = c.x(0);
  std::vector<int64_t> axes = axes_of(c);
  std::vector<bool> drop(size_t(x.dim()), false);
  for (int64_t a : axes) {
    int64_t d = c.axis(a, x.dim());
    if (x.shape()[size_t(d)] != 1) c.fail(str("dim ", d, " of ", x.describe(), " is not 1"));
    drop[size_t(d)] = true;
  }
  Shape out;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (!(axes.empty() ? x.shape()[size_t(d)] == 1 : bool(drop[size_t(d)]))) out.push_back(x.shape()[size_t(d)]);
  return one(c.be.reshape(x, out));
}

Outs unsqueeze(const Ctx& c) {
  const Tensor& x = c.x(0);
  std::vector<int64_t> axes = axes_of(c);
  const int64_t rank = x.dim() + int64_t(axes.size());
  std::vector<bool> add(size_t(rank), false);
  for (int64_t a : axes) {
    int64_t d = c.axis(a, rank);
    if (add[size_t(d)]) c.fail(str("axis ", a, " is repeated"));
    add[size_t(d)] = true;
  }
  Shape out;
  size_t k = 0;
  for (int64_t d = 0; d < rank; ++d) out.push_back(add[size_t(d)] ? 1 : x.shape()[k++]);
  return one(c.be.reshape(x, out));
}

Outs transpose(const Ctx& c) {
  Tensor x = c.host(0);
  std::vector<int64_t> perm = c.node().attr_ints("perm");
  if (perm.empty())
    for (int64_t d = x.dim(); d-- > 0;) perm.push_back(d);
  if (int64_t(perm.size()) != x.dim()) c.fail(str("perm ", shape_str(perm), " does not fit ", x.describe()));
  return one(x.permute(perm).contiguous());
}

Outs concat(const Ctx& c) {
  std::vector<Tensor> xs;
  for (size_t i = 0; i < c.in.size(); ++i) xs.push_back(c.host(i));
  return one(host::concat(xs, c.node().attr_i("axis", 0)));
}

// ---- arithmetic and activations ---------------------------------------------------------------

Outs gemm(const Ctx& c) {
  compute::GemmParams p;
  p.trans_a = c.node().attr_i("transA", 0) != 0;
  p.trans_b = c.node().attr_i("transB", 0) != 0;
  p.alpha = float(c.node().attr_f("alpha", 1.0));
  p.beta = float(c.node().attr_f("beta", 1.0));
  const Tensor& a = c.floating(0, Op::Gemm);
  const Tensor& b = c.floating(1, Op::Gemm);
  if (c.has(2)) c.floating(2, Op::Gemm);
  return one(c.be.gemm(a, b, c.has(2) ? &c.in[2] : nullptr, p));
}

Outs softmax(const Ctx& c, bool log) {
  const Tensor& x = log ? c.x(0) : c.floating(0, Op::Softmax);
  const int64_t r = x.dim();
  int64_t axis = c.axis(c.node().attr_i("axis", c.call.opset >= 13 ? -1 : 1), std::max<int64_t>(r, 1));
  auto apply = [&](const Tensor& t, int64_t ax) {
    return log ? host::log_softmax(c.be.download(t), ax) : c.be.softmax(t, ax);
  };
  if (c.call.opset >= 13 || axis == r - 1) return one(apply(x, axis));
  // Before opset 13 the input is seen as 2-D: dims before axis by the dims from axis on.
  int64_t a = 1, b = 1;
  for (int64_t i = 0; i < r; ++i) (i < axis ? a : b) *= x.shape()[size_t(i)];
  return one(c.be.reshape(apply(c.be.reshape(x, {a, b}), 1), x.shape()));
}

Outs clip(const Ctx& c) {
  double lo = -std::numeric_limits<double>::infinity(), hi = std::numeric_limits<double>::infinity();
  if (c.call.opset < 11) {
    lo = c.node().attr_f("min", lo);
    hi = c.node().attr_f("max", hi);
  } else {
    if (c.has(1)) lo = c.host(1).item_as_double();
    if (c.has(2)) hi = c.host(2).item_as_double();
  }
  return host_map(c, [lo, hi](double v) { return v < lo ? lo : (v > hi ? hi : v); });  // NaN stays NaN
}

Outs cast(const Ctx& c) {
  const Tensor& x = c.x(0);
  auto to = dtype_from_onnx(int(c.node().attr_i("to", 0)));
  if (!to) c.fail(str("Cast to ONNX type ", c.node().attr_i("to", 0), " is not supported"));
  auto device_float = [](DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16; };
  if (device_float(x.dtype()) && device_float(*to)) return one(c.be.cast(x, *to));
  return one(c.be.download(x).to(*to));
}

Outs constant(const Ctx& c) {
  const OnnxNode& n = c.node();
  if (const auto* a = n.attr("value"); a && a->t.defined()) return one(a->t);
  if (const auto* a = n.attr("value_float"))
    return one(Tensor::from_vector(DType::F32, {}, std::vector<float>{float(a->f)}));
  if (const auto* a = n.attr("value_int")) return one(Tensor::from_vector(DType::I64, {}, std::vector<int64_t>{a->i}));
  if (const auto* a = n.attr("value_ints"))
    return one(Tensor::from_vector(DType::I64, {int64_t(a->ints.size())}, a->ints));
  if (const auto* a = n.attr("value_floats")) {
    std::vector<float> v(a->floats.begin(), a->floats.end());
    return one(Tensor::from_vector(DType::F32, {int64_t(v.size())}, v));
  }
  c.fail("a Constant needs a tensor, float(s) or int(s) value (sparse and string values are not supported)");
}

Outs dropout(const Ctx& c) {
  if (c.call.opset >= 12 && c.has(2) && c.host(2).item_as_double() != 0) c.fail("training_mode is true");
  Outs out = {c.x(0)};
  if (c.node().outputs.size() > 1) {
    Tensor mask = Tensor::zeros(DType::Bool, c.x(0).shape());
    std::memset(mask.data(), 1, mask.nbytes());
    out.push_back(mask);
  }
  return out;
}

Outs batch_norm(const Ctx& c) {
  const Tensor& x = c.floating(0, Op::BatchNorm);
  if (x.dim() < 2) c.fail(str("input ", x.describe(), " has no channel dim"));
  const double eps = c.node().attr_f("epsilon", 1e-5);
  if (x.dim() <= 4) return one(c.be.batch_norm(x, c.x(3), c.x(4), &c.x(1), &c.x(2), eps));
  // (N, C, D, ...) normalises per channel like (N, C, D*...).
  Tensor y = c.be.batch_norm(c.be.reshape(x, {x.shape()[0], x.shape()[1], -1}), c.x(3), c.x(4), &c.x(1), &c.x(2), eps);
  return one(c.be.reshape(y, x.shape()));
}

Outs arith(const Ctx& c, host::Arith op) {
  const Tensor& a = c.x(0);
  const Tensor& b = c.x(1);
  if (op == host::Arith::Add || op == host::Arith::Mul) {  // on the backend where it has the dtype
    Op o = op == host::Arith::Add ? Op::Add : Op::Mul;
    auto on_device = [&](DType d) { return d == DType::F32 || (is_floating(d) && c.be.supports(o, d)); };
    if (on_device(a.dtype()) && on_device(b.dtype())) return one(o == Op::Add ? c.be.add(a, b) : c.be.mul(a, b));
  }
  if (a.dtype() != b.dtype()) c.fail(str("operands of different dtypes: ", a.describe(), " and ", b.describe()));
  return one(host::arith(c.host(0), c.host(1), op, c.node().op_type.c_str()));
}

using Fn = std::function<Outs(const Ctx&)>;
const std::map<std::string, Fn>& table() {
  static const std::map<std::string, Fn> t = {
      {"Gemm", gemm},
      {"MatMul", [](const Ctx& c) { return one(c.be.matmul(c.floating(0, Op::MatMul), c.floating(1, Op::MatMul))); }},
      {"Add", [](const Ctx& c) { return arith(c, host::Arith::Add); }},
      {"Sub", [](const Ctx& c) { return arith(c, host::Arith::Sub); }},
      {"Mul", [](const Ctx& c) { return arith(c, host::Arith::Mul); }},
      {"Div", [](const Ctx& c) { return arith(c, host::Arith::Div); }},
      {"Relu", [](const Ctx& c) { return one(c.be.relu(c.floating(0, Op::Relu))); }},
      {"LeakyRelu",
       [](const Ctx& c) {
         const float a = float(c.node().attr_f("alpha", 0.01));
         return host_map(c, [a](double v) { return v < 0 ? v * double(a) : v; });
       }},
      {"Sigmoid", [](const Ctx& c) { return host_map(c, [](double v) { return 1.0 / (1.0 + std::exp(-v)); }); }},
      {"Tanh", [](const Ctx& c) { return host_map(c, [](double v) { return std::tanh(v); }); }},
      {"Exp", [](const Ctx& c) { return host_map(c, [](double v) { return std::exp(v); }); }},
      {"Log", [](const Ctx& c) { return host_map(c, [](double v) { return std::log(v); }); }},
      {"Sqrt", [](const Ctx& c) { return host_map(c, [](double v) { return std::sqrt(v); }); }},
      {"Neg", [](const Ctx& c) { return host_map(c, [](double v) { return -v; }); }},
      {"Abs", [](const Ctx& c) { return host_map(c, [](double v) { return std::fabs(v); }); }},
      {"Reciprocal", [](const Ctx& c) { return host_map(c, [](double v) { return 1.0 / v; }); }},
      {"Softmax", [](const Ctx& c) { return softmax(c, false); }},
      {"LogSoftmax", [](const Ctx& c) { return softmax(c, true); }},
      {"Conv", conv},
      {"MaxPool", max_pool},
      {"AveragePool", avg_pool},
      {"GlobalAveragePool", [](const Ctx& c) { return one(host::global_avg_pool(c.host(0))); }},
      {"Flatten", flatten},
      {"Reshape", reshape},
      {"Transpose", transpose},
      {"Concat", concat},
      {"Squeeze", squeeze},
      {"Unsqueeze", unsqueeze},
      {"BatchNormalization", batch_norm},
      {"Cast", cast},
      {"Clip", clip},
      {"Identity", [](const Ctx& c) { return one(c.x(0)); }},
      {"Dropout", dropout},
      {"Constant", constant},
  };
  return t;
}

}  // namespace

void NodeCall::fail(const std::string& why) const {
  const std::string who = node.name.empty() ? str("#", index) : "'" + node.name + "'";
  throw UnsupportedError(str("[onnx] '", label, "': node ", who, " (", node.op_type, ") cannot run: ", why));
}

bool known(const std::string& op_type) { return table().count(op_type) != 0; }

const std::vector<std::string>& op_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& [k, fn] : table()) v.push_back(k);
    return v;
  }();
  return names;
}

void check(const NodeCall& call) {
  const OnnxNode& n = call.node;
  const std::string& op = n.op_type;
  auto extra_outputs = [&](size_t keep) {
    for (size_t i = keep; i < n.outputs.size(); ++i)
      if (!n.outputs[i].empty()) call.fail(str("output ", i, " ('", n.outputs[i], "') is not supported"));
  };
  if (op == "MaxPool") {
    extra_outputs(1);  // the Indices output
    if (n.attr_i("storage_order", 0) != 0) call.fail("storage_order=1");
    if (n.attr_ints("kernel_shape").empty()) call.fail("kernel_shape is required");
  } else if (op == "AveragePool") {
    if (n.attr_ints("kernel_shape").empty()) call.fail("kernel_shape is required");
  } else if (op == "BatchNormalization") {
    extra_outputs(1);  // running statistics of training mode
    if (n.attr_i("training_mode", 0) != 0) call.fail("training_mode=1");
    if (call.opset < 9 && n.attr_i("spatial", 1) == 0) call.fail("spatial=0");
  } else if (op == "Constant") {
    if (!n.attr("value") && !n.attr("value_float") && !n.attr("value_floats") && !n.attr("value_int") &&
        !n.attr("value_ints"))
      call.fail("a Constant needs a tensor, float(s) or int(s) value (sparse and string values are not supported)");
    if (const auto* a = n.attr("value"); a && !a->t.defined()) call.fail("its value tensor could not be read");
  } else if (op == "Cast") {
    if (!dtype_from_onnx(int(n.attr_i("to", 0))))
      call.fail(str("Cast to ONNX type ", n.attr_i("to", 0), " is not supported"));
  } else if (op == "Concat") {
    if (!n.attr("axis")) call.fail("axis is required");
  } else if (op == "Dropout") {
    extra_outputs(2);
  } else {
    extra_outputs(1);
  }
  if (op == "Conv" || op == "MaxPool" || op == "AveragePool") {
    auto ks = n.attr_ints("kernel_shape");
    if (ks.size() > 2) call.fail(str("only 1-D and 2-D windows are supported, not kernel_shape ", shape_str(ks)));
  }
}

std::vector<Tensor> run(const NodeCall& call, compute::Backend& be, const std::vector<Tensor>& in) {
  auto it = table().find(call.node.op_type);
  if (it == table().end()) call.fail("the op is not supported");
  Ctx c{call, be, in};
  return it->second(c);
}

}  // namespace tb::nn::onnx_ops
