#include "compute/backend.h"

#include "compute/shape_infer.h"

namespace tb::compute {

std::string_view op_name(Op op) {
  switch (op) {
    case Op::Gemm: return "gemm";
    case Op::MatMul: return "matmul";
    case Op::Add: return "add";
    case Op::Mul: return "mul";
    case Op::Relu: return "relu";
    case Op::Conv2d: return "conv2d";
    case Op::MaxPool2d: return "max_pool2d";
    case Op::BatchNorm: return "batch_norm";
    case Op::Softmax: return "softmax";
    case Op::Reshape: return "reshape";
    case Op::Cast: return "cast";
  }
  return "?";
}

Tensor Backend::reshape(const Tensor& x, Shape shape) {
  Shape out = detail::reshape_shape(x.shape(), std::move(shape));
  if (x.is_contiguous()) return x.view(out);
  return upload(download(x)).view(out);
}

Tensor Backend::flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  if (x.dim() == 0) return reshape(x, {1});
  int64_t s = detail::normalize_axis(start_dim, x.dim(), "flatten");
  int64_t e = detail::normalize_axis(end_dim, x.dim(), "flatten");
  TB_CHECK(s <= e, ShapeError, "flatten: start_dim ", start_dim, " after end_dim ", end_dim);
  Shape out(x.shape().begin(), x.shape().begin() + s);
  int64_t prod = 1;
  for (int64_t i = s; i <= e; ++i) prod *= x.shape()[size_t(i)];
  out.push_back(prod);
  out.insert(out.end(), x.shape().begin() + e + 1, x.shape().end());
  return reshape(x, out);
}

Tensor Backend::linear(const Tensor& x, const Tensor& w, const Tensor* bias, bool relu) {
  TB_CHECK(w.dim() == 2, ShapeError, "linear: weight must be [out, in], got ", shape_str(w.shape()));
  TB_CHECK(x.dim() >= 1 && x.shape().back() == w.shape()[1], ShapeError, "linear: input ", shape_str(x.shape()),
           " does not end in in_features ", w.shape()[1], " of weight ", shape_str(w.shape()));
  if (bias) {
    TB_CHECK(bias->dim() == 1 && bias->shape()[0] == w.shape()[0], ShapeError, "linear: bias must be [", w.shape()[0],
             "], got ", shape_str(bias->shape()));
  }
  Shape out = x.shape();
  out.back() = w.shape()[0];
  Tensor x2 = reshape(x, {-1, w.shape()[1]});
  GemmParams p;
  p.trans_b = true;
  p.relu = relu;
  return reshape(gemm(x2, w, bias, p), out);
}

// Explicit registry (no static initialisers): the CPU backend always, Vulkan when built and found.
std::vector<std::string> available_backends() {
  std::vector<std::string> out{"cpu"};
  if (vulkan::is_available()) out.push_back("vulkan");
  return out;
}

std::unique_ptr<Backend> make_backend(std::string_view name) {
  if (name == "cpu") return cpu::make_backend();
  if (name == "vulkan") return vulkan::make_backend(0);
  if (name.substr(0, 7) == "vulkan:") {
    std::string idx(name.substr(7));
    TB_CHECK(!idx.empty() && idx.find_first_not_of("0123456789") == std::string::npos && idx.size() < 6,
             UnsupportedError, "unknown backend '", name, "': expected cpu, vulkan or vulkan:N");
    return vulkan::make_backend(std::stoi(idx));
  }
  throw UnsupportedError(str("unknown backend '", name, "': expected cpu, vulkan or vulkan:N"));
}

}  // namespace tb::compute
