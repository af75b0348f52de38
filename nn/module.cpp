#include "nn/module.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <set>
#include <sstream>

#include "nn/host_ops.h"

namespace tb::nn {

const char* version() { return "0.1.0"; }

namespace {

std::string join_dotted(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

std::string fmt_double(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

}  // namespace

std::string LoadReport::describe() const {
  std::ostringstream os;
  auto list = [&](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    os << (os.tellp() > 0 ? "\n" : "") << what << " (" << v.size() << "): ";
    for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << (what[0] == 's' ? v[i] : "'" + v[i] + "'");
  };
  list("missing keys", missing);
  list("unexpected keys", unexpected);
  list("size mismatch", mismatched);
  return os.str();
}

// ---------------------------------------------------------------------------------------------
// Module

Tensor Module::forward(const Tensor&) {
  throw UnsupportedError(str("nn: ", type_name(), " has no forward() for a single input"));
}

Tensor& Module::register_parameter(const std::string& name, Tensor t) {
  TB_CHECK(!name.empty() && name.find('.') == std::string::npos, KeyError, "nn: parameter name '", name,
           "' must be non-empty and contain no '.'");
  Tensor* slot = nullptr;
  for (auto& s : params_)
    if (s.name == name) slot = &(s.tensor = std::move(t));
  if (!slot) {
    params_.push_back({name, std::move(t), true});
    slot = &params_.back().tensor;
  }
  if (backend_) upload_own();
  return *slot;
}

Tensor& Module::register_buffer(const std::string& name, Tensor t, bool persistent) {
  TB_CHECK(!name.empty() && name.find('.') == std::string::npos, KeyError, "nn: buffer name '", name,
           "' must be non-empty and contain no '.'");
  Tensor* slot = nullptr;
  for (auto& s : buffers_)
    if (s.name == name) {
      s.persistent = persistent;
      slot = &(s.tensor = std::move(t));
    }
  if (!slot) {
    buffers_.push_back({name, std::move(t), persistent});
    slot = &buffers_.back().tensor;
  }
  if (backend_) upload_own();
  return *slot;
}

Module::Ptr Module::register_module(const std::string& name, Ptr m) {
  TB_CHECK(!name.empty() && name.find('.') == std::string::npos, KeyError, "nn: child name '", name,
           "' must be non-empty and contain no '.'");
  TB_CHECK(m != nullptr, KeyError, "nn: child '", name, "' is null");
  for (auto& c : children_)
    if (c.first == name) return c.second = std::move(m);
  children_.emplace_back(name, std::move(m));
  return children_.back().second;
}

Tensor& Module::parameter(const std::string& name) {
  for (auto& s : params_)
    if (s.name == name) return s.tensor;
  throw KeyError(str("nn: ", type_name(), " has no parameter '", name, "'"));
}

Tensor& Module::buffer(const std::string& name) {
  for (auto& s : buffers_)
    if (s.name == name) return s.tensor;
  throw KeyError(str("nn: ", type_name(), " has no buffer '", name, "'"));
}

Module::Ptr Module::child(const std::string& name) const {
  for (auto& c : children_)
    if (c.first == name) return c.second;
  throw KeyError(str("nn: ", type_name(), " has no child '", name, "'"));
}

void Module::collect_slots(const std::string& prefix, std::vector<std::pair<std::string, Tensor*>>& out) {
  // torch.nn.Module._save_to_state_dict: parameters (skipping None), then persistent buffers.
  for (auto& s : params_)
    if (s.tensor.defined()) out.emplace_back(join_dotted(prefix, s.name), &s.tensor);
  for (auto& s : buffers_)
    if (s.tensor.defined() && s.persistent) out.emplace_back(join_dotted(prefix, s.name), &s.tensor);
  for (auto& c : children_) c.second->collect_slots(join_dotted(prefix, c.first), out);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  auto self = const_cast<Module*>(this);
  std::vector<std::pair<std::string, Ptr>> mods = self->named_modules();
  for (auto& [path, m] : mods)
    for (auto& s : m->params_)
      if (s.tensor.defined()) out.emplace_back(join_dotted(path, s.name), s.tensor);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  auto self = const_cast<Module*>(this);
  for (auto& [path, m] : self->named_modules())
    for (auto& s : m->buffers_)
      if (s.tensor.defined()) out.emplace_back(join_dotted(path, s.name), s.tensor);
  return out;
}

std::vector<std::pair<std::string, Module::Ptr>> Module::named_modules() {
  std::vector<std::pair<std::string, Ptr>> out;
  // shared_from_this is unavailable for stack objects; use a non-owning alias for the root.
  out.emplace_back("", Ptr(Ptr(), this));
  for (size_t i = 0; i < out.size(); ++i) {
    std::vector<std::pair<std::string, Ptr>> kids;
    for (auto& c : out[i].second->children_) kids.emplace_back(join_dotted(out[i].first, c.first), c.second);
    out.insert(out.begin() + std::ptrdiff_t(i) + 1, kids.begin(), kids.end());
  }
  return out;
}

StateDict Module::state_dict() const {
  std::vector<std::pair<std::string, Tensor*>> slots;
  const_cast<Module*>(this)->collect_slots("", slots);
  StateDict sd;
  for (auto& [k, t] : slots) sd.insert(k, *t);
  return sd;
}

LoadReport Module::load_state_dict(const StateDict& sd, bool strict) {
  std::vector<std::pair<std::string, Tensor*>> slots;
  collect_slots("", slots);
  LoadReport rep;
  std::set<std::string> expected;
  std::vector<std::pair<Tensor*, const Tensor*>> todo;
  for (auto& [key, slot] : slots) {
    expected.insert(key);
    const Tensor* src = sd.find(key);
    if (!src) {
      rep.missing.push_back(key);
      continue;
    }
    if (src->shape() != slot->shape()) {
      rep.mismatched.push_back(str(key, ": checkpoint ", src->describe(), " vs model ", slot->describe()));
      continue;
    }
    todo.emplace_back(slot, src);
    rep.loaded.push_back(key);
  }
  for (auto& [key, t] : sd)
    if (!expected.count(key)) rep.unexpected.push_back(key);
  if (strict && !rep.ok()) {
    std::string msg = str("nn: error(s) loading state_dict for ", type_name(), ":\n  ", rep.describe());
    for (size_t p = 0; (p = msg.find('\n', p + 1)) != std::string::npos && p + 1 < msg.size();) {
      if (msg.compare(p, 3, "\n  ") != 0) msg.insert(p + 1, "  ");
    }
    if (rep.missing.empty() && rep.unexpected.empty()) throw ShapeError(msg);
    throw KeyError(msg);
  }
  for (auto& [slot, src] : todo) *slot = src->to(slot->dtype()).contiguous();
  if (!todo.empty())
    for (auto& [path, m] : named_modules())
      if (m->backend_) m->upload_own();
  return rep;
}

namespace {
compute::Backend& default_backend() {
  thread_local std::unique_ptr<compute::Backend> cpu = compute::cpu::make_backend();
  return *cpu;
}
bool is_float(DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16 || d == DType::F64; }
}  // namespace

compute::Backend& Module::backend() { return backend_ ? *backend_ : default_backend(); }

void Module::upload_own() {
  device_.clear();
  if (!backend_) return;
  auto up = [&](const Slot& s) {
    if (!s.tensor.defined() || !is_float(s.tensor.dtype())) return;
    Tensor t = s.tensor.dtype() == DType::F32 || backend_->supports(compute::Op::Cast, s.tensor.dtype())
                   ? s.tensor
                   : s.tensor.to(DType::F32);
    device_.push_back({s.name, backend_->upload(t.contiguous())});
  };
  for (auto& s : params_) up(s);
  for (auto& s : buffers_) up(s);
}

void Module::to(std::shared_ptr<compute::Backend> backend) {
  for (auto& [path, m] : named_modules()) {
    m->backend_ = backend;
    m->upload_own();
  }
}

const Tensor& Module::device_tensor(const std::string& name) {
  for (auto& d : device_)
    if (d.name == name) return d.tensor;
  for (auto& s : params_)
    if (s.name == name) return s.tensor;
  return buffer(name);
}

const Tensor* Module::device_tensor_opt(const std::string& name) {
  for (auto& d : device_)
    if (d.name == name) return &d.tensor;
  for (auto& s : params_)
    if (s.name == name) return s.tensor.defined() ? &s.tensor : nullptr;
  for (auto& s : buffers_)
    if (s.name == name) return s.tensor.defined() ? &s.tensor : nullptr;
  return nullptr;
}

Tensor Module::operator()(const Tensor& x) {
  compute::Backend& be = backend();
  // float64 (numpy's default) runs as float32, the weights' dtype, on every backend; other dtypes
  // are passed as they are, and an op that cannot compute one refuses it by name.
  Tensor in = x.dtype() == DType::F64 ? x.to(DType::F32) : x;
  Tensor y = forward(be.owns(in) ? in : be.upload(in));
  return be.download(y);
}

std::string Module::repr() const {
  std::string head = type_name() + "(" + extra_repr();
  if (children_.empty()) return head + ")";
  std::string s = head + "\n";
  for (auto& [name, c] : children_) {
    std::string sub = c->repr();
    for (size_t p = 0; (p = sub.find('\n', p)) != std::string::npos; p += 3) sub.insert(p + 1, "  ");
    s += "  (" + name + "): " + sub + "\n";
  }
  return s + ")";
}

// ---------------------------------------------------------------------------------------------
// Layers

Linear::Linear(int64_t in, int64_t out, bool bias) : in_features(in), out_features(out), has_bias(bias) {
  TB_CHECK(in >= 0 && out >= 0, ShapeError, "nn: Linear(", in, ", ", out, ") needs non-negative sizes");
  register_parameter("weight", Tensor::zeros(DType::F32, {out, in}));
  if (bias) register_parameter("bias", Tensor::zeros(DType::F32, {out}));
}

std::string Linear::extra_repr() const {
  return str("in_features=", in_features, ", out_features=", out_features, ", bias=", has_bias ? "True" : "False");
}

Tensor Linear::forward(const Tensor& x) {
  return backend().linear(x, device_tensor("weight"), device_tensor_opt("bias"));
}

Tensor Linear::forward_relu(const Tensor& x) {
  return backend().linear(x, device_tensor("weight"), device_tensor_opt("bias"), /*relu=*/true);
}

Tensor ReLU::forward(const Tensor& x) { return backend().relu(x); }

Conv2d::Conv2d(int64_t in, int64_t out, int64_t k) : Conv2d(in, out, k, k, Options{}) {}

Conv2d::Conv2d(int64_t in, int64_t out, int64_t kh, int64_t kw, Options o)
    : in_channels(in), out_channels(out), kernel_h(kh), kernel_w(kw), opts(o) {
  TB_CHECK(in > 0 && out > 0 && kh > 0 && kw > 0 && o.groups > 0 && in % o.groups == 0 && out % o.groups == 0,
           ShapeError, "nn: Conv2d(", in, ", ", out, ", kernel ", kh, "x", kw, ", groups ", o.groups,
           ") is not a valid convolution");
  register_parameter("weight", Tensor::zeros(DType::F32, {out, in / o.groups, kh, kw}));
  if (o.bias) register_parameter("bias", Tensor::zeros(DType::F32, {out}));
}

std::string Conv2d::extra_repr() const {
  std::string s = str(in_channels, ", ", out_channels, ", kernel_size=(", kernel_h, ", ", kernel_w, "), stride=(",
                      opts.stride_h, ", ", opts.stride_w, ")");
  if (opts.pad_h || opts.pad_w) s += str(", padding=(", opts.pad_h, ", ", opts.pad_w, ")");
  if (opts.dil_h != 1 || opts.dil_w != 1) s += str(", dilation=(", opts.dil_h, ", ", opts.dil_w, ")");
  if (opts.groups != 1) s += str(", groups=", opts.groups);
  if (!opts.bias) s += ", bias=False";
  return s;
}

Tensor Conv2d::forward(const Tensor& x) {
  compute::Conv2dParams p;
  p.stride = {opts.stride_h, opts.stride_w};
  p.padding = {opts.pad_h, opts.pad_w};
  p.dilation = {opts.dil_h, opts.dil_w};
  p.groups = opts.groups;
  return backend().conv2d(x, device_tensor("weight"), device_tensor_opt("bias"), p);
}

MaxPool2d::MaxPool2d(int64_t k, int64_t stride, int64_t padding)
    : MaxPool2d(k, k, stride ? stride : k, stride ? stride : k, padding, padding) {}

MaxPool2d::MaxPool2d(int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw)
    : kernel_h(kh), kernel_w(kw), stride_h(sh), stride_w(sw), pad_h(ph), pad_w(pw) {
  TB_CHECK(kh > 0 && kw > 0 && sh > 0 && sw > 0 && ph >= 0 && pw >= 0, ShapeError, "nn: MaxPool2d kernel ", kh, "x", kw,
           " stride ", sh, "x", sw, " padding ", ph, "x", pw, " is not valid");
}

std::string MaxPool2d::extra_repr() const {
  auto one = [](int64_t a, int64_t b) { return a == b ? str(a) : str("(", a, ", ", b, ")"); };
  return str("kernel_size=", one(kernel_h, kernel_w), ", stride=", one(stride_h, stride_w),
             ", padding=", one(pad_h, pad_w), ", dilation=", one(dil_h, dil_w),
             ", ceil_mode=", ceil_mode ? "True" : "False");
}

Tensor MaxPool2d::forward(const Tensor& x) {
  compute::Pool2dParams p;
  p.kernel = {kernel_h, kernel_w};
  p.stride = {stride_h, stride_w};
  p.padding = {pad_h, pad_w};
  p.dilation = {dil_h, dil_w};
  p.ceil_mode = ceil_mode;
  return backend().max_pool2d(x, p);
}

std::string Flatten::extra_repr() const { return str("start_dim=", start_dim, ", end_dim=", end_dim); }
Tensor Flatten::forward(const Tensor& x) { return backend().flatten(x, start_dim, end_dim); }

BatchNorm::BatchNorm(int d, int64_t n, double e, double m, bool aff, bool track)
    : dims(d), num_features(n), eps(e), momentum(m), affine(aff), track_running_stats(track) {
  TB_CHECK(d == 1 || d == 2, UnsupportedError, "nn: BatchNorm", d, "d is not supported (1d and 2d are)");
  TB_CHECK(n > 0 && e >= 0, ShapeError, "nn: BatchNorm", d, "d(", n, ", eps=", e, ") is not valid");
  if (affine) {
    std::vector<float> ones(size_t(n), 1.f);
    register_parameter("weight", Tensor::from_vector(DType::F32, {n}, ones));
    register_parameter("bias", Tensor::zeros(DType::F32, {n}));
  }
  if (track) {
    std::vector<float> ones(size_t(n), 1.f);
    register_buffer("running_mean", Tensor::zeros(DType::F32, {n}));
    register_buffer("running_var", Tensor::from_vector(DType::F32, {n}, ones));
    register_buffer("num_batches_tracked", Tensor::zeros(DType::I64, {}));
  }
}

std::string BatchNorm::extra_repr() const {
  return str(num_features, ", eps=", fmt_double(eps), ", momentum=", fmt_double(momentum),
             ", affine=", affine ? "True" : "False", ", track_running_stats=", track_running_stats ? "True" : "False");
}

Tensor BatchNorm::forward(const Tensor& x) {
  TB_CHECK(track_running_stats, UnsupportedError, "nn: ", type_name(),
           " without running statistics normalises with batch statistics, which inference here does not do");
  const int64_t want = dims == 1 ? 2 : 4;
  TB_CHECK(x.dim() == want || (dims == 1 && x.dim() == 3), ShapeError, "nn: ", type_name(), " expects ",
           dims == 1 ? "(N, C) or (N, C, L)" : "(N, C, H, W)", " input, got ", x.describe());
  return backend().batch_norm(x, device_tensor("running_mean"), device_tensor("running_var"),
                              device_tensor_opt("weight"), device_tensor_opt("bias"), eps);
}

std::string Dropout::extra_repr() const { return str("p=", fmt_double(p), ", inplace=False"); }

std::string Softmax::extra_repr() const { return str("dim=", dim); }
Tensor Softmax::forward(const Tensor& x) { return backend().softmax(x, dim); }

namespace {
// A host kernel on a (possibly device) tensor: downloaded, computed, uploaded back to where x was.
Tensor on_host(compute::Backend& be, const Tensor& x, const std::function<Tensor(const Tensor&)>& kernel) {
  Tensor y = kernel(be.download(x));
  return be.owns(x) ? be.upload(y) : y;
}
}  // namespace

Tensor Sigmoid::forward(const Tensor& x) {
  return on_host(backend(), x, [](const Tensor& h) {
    return host::map(
        h, [](double v) { return 1.0 / (1.0 + std::exp(-v)); }, "nn: Sigmoid");
  });
}
Tensor Tanh::forward(const Tensor& x) {
  return on_host(backend(), x, [](const Tensor& h) {
    return host::map(
        h, [](double v) { return std::tanh(v); }, "nn: Tanh");
  });
}

std::string LeakyReLU::extra_repr() const { return str("negative_slope=", fmt_double(negative_slope)); }
Tensor LeakyReLU::forward(const Tensor& x) {
  const float slope = float(negative_slope);
  return on_host(backend(), x, [slope](const Tensor& h) {
    return host::map(
        h, [slope](double v) { return v < 0 ? v * double(slope) : v; }, "nn: LeakyReLU");
  });
}

AvgPool2d::AvgPool2d(int64_t k, int64_t s, int64_t p) : kernel(k), stride(s ? s : k), padding(p) {
  TB_CHECK(k > 0 && stride > 0 && p >= 0 && 2 * p <= k, ShapeError, "nn: AvgPool2d kernel ", k, " stride ", stride,
           " padding ", p, " is not valid (padding at most half the kernel)");
}
std::string AvgPool2d::extra_repr() const {
  return str("kernel_size=", kernel, ", stride=", stride, ", padding=", padding);
}
Tensor AvgPool2d::forward(const Tensor& x) {
  TB_CHECK(x.dim() == 4, ShapeError, "nn: AvgPool2d expects (N, C, H, W) input, got ", x.describe());
  host::Window2d w;
  w.kernel = {kernel, kernel}, w.stride = {stride, stride}, w.pads = {padding, padding, padding, padding};
  return on_host(backend(), x, [&w](const Tensor& h) { return host::avg_pool2d(h, w, /*count_include_pad=*/true); });
}

Tensor GlobalAvgPool2d::forward(const Tensor& x) {
  TB_CHECK(x.dim() == 4, ShapeError, "nn: AdaptiveAvgPool2d expects (N, C, H, W) input, got ", x.describe());
  return on_host(backend(), x, [](const Tensor& h) { return host::global_avg_pool(h); });
}

std::string UserModule::type_name() const {
  auto dot = class_name.rfind('.');
  return dot == std::string::npos ? class_name : class_name.substr(dot + 1);
}

Tensor UserModule::forward(const Tensor&) {
  throw UnsupportedError(str("nn: ", class_name,
                             " is a user class: its layers load, but its forward() is Python code "
                             "that the file does not hold; give the architecture as a layer sequence matched by "
                             "structure, e.g. --arch \"",
                             guess_arch_spec(*this),
                             "\" (guessed from the layers in the file: check the class's forward())"));
}

std::vector<std::pair<std::string, const UserModule*>> modules_without_forward(Module& m) {
  std::vector<std::pair<std::string, const UserModule*>> out;
  for (auto& [path, mod] : m.named_modules())
    if (auto* u = dynamic_cast<const UserModule*>(mod.get())) out.emplace_back(path, u);
  return out;
}

std::string guess_arch_spec(Module& m) {
  // Known leaf layers in state_dict order, as spec tokens; activations written in forward() (F.relu) are
  // invisible, so when the tree has no activation module, relu is guessed between weighted layers.
  struct Tok {
    std::string text;
    bool weighted, activation, spatial_out, flat_out;
  };
  std::vector<Tok> toks;
  bool any_activation = false;
  for (auto& [path, mod] : m.named_modules()) {
    Module* p = mod.get();
    if (!p->children().empty()) continue;
    if (auto* l = dynamic_cast<Linear*>(p)) {
      toks.push_back({str("linear:", l->in_features, ",", l->out_features, l->has_bias ? "" : ",nobias"), true, false,
                      false, true});
    } else if (auto* c = dynamic_cast<Conv2d*>(p)) {
      toks.push_back({str("conv2d:", c->in_channels, ",", c->out_channels, ",", c->kernel_h, ",", c->opts.stride_h, ",",
                          c->opts.pad_h, c->opts.bias ? "" : ",nobias"),
                      true, false, true, false});
    } else if (auto* b = dynamic_cast<BatchNorm*>(p)) {
      toks.push_back({str("batchnorm:", b->num_features), false, false, false, false});
    } else if (auto* mp = dynamic_cast<MaxPool2d*>(p)) {
      toks.push_back({str("maxpool:", mp->kernel_h, ",", mp->stride_h, ",", mp->pad_h), false, false, true, false});
    } else if (auto* ap = dynamic_cast<AvgPool2d*>(p)) {
      toks.push_back({str("avgpool:", ap->kernel, ",", ap->stride, ",", ap->padding), false, false, true, false});
    } else if (dynamic_cast<GlobalAvgPool2d*>(p)) {
      toks.push_back({"avgpool", false, false, true, false});
    } else if (dynamic_cast<Flatten*>(p)) {
      toks.push_back({"flatten", false, false, false, true});
    } else if (auto* lr = dynamic_cast<LeakyReLU*>(p)) {
      toks.push_back({str("leakyrelu:", lr->negative_slope), false, true, false, false});
    } else if (auto* sm = dynamic_cast<Softmax*>(p)) {
      toks.push_back({str("softmax:", sm->dim), false, true, false, false});
    } else {
      std::string t = p->type_name();
      for (char& ch : t) ch = char(std::tolower(static_cast<unsigned char>(ch)));
      bool act = t == "relu" || t == "sigmoid" || t == "tanh";
      if (act || t == "dropout" || t == "identity") toks.push_back({t, false, act, false, false});
    }
    any_activation = any_activation || (!toks.empty() && toks.back().activation);
  }
  std::string spec;
  bool seen_weighted = false, spatial = false;
  for (auto& t : toks) {
    auto add = [&](const std::string& x) { spec += (spec.empty() ? "" : " ") + x; };
    if (t.weighted && seen_weighted && !any_activation) add("relu");
    if (t.text.rfind("linear:", 0) == 0 && spatial) add("flatten");
    add(t.text);
    seen_weighted = seen_weighted || t.weighted;
    if (t.spatial_out) spatial = true;
    if (t.flat_out) spatial = false;
  }
  return spec.empty() ? "linear:IN,OUT relu linear:IN,OUT" : spec;
}

std::string Permute::extra_repr() const {
  std::string s;
  for (auto d : dims) s += (s.empty() ? "" : ", ") + std::to_string(d);
  return "dims=(" + s + ")";
}
Tensor Permute::forward(const Tensor& x) {
  compute::Backend& be = backend();
  Tensor y = be.download(x).permute(dims).contiguous();
  return be.owns(x) ? be.upload(y) : y;
}

Sequential::Sequential(std::vector<Ptr> layers) {
  for (auto& l : layers) add(std::move(l));
}

Sequential& Sequential::add(Ptr layer) {
  register_module(std::to_string(children().size()), std::move(layer));
  return *this;
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor y = x;
  const auto& kids = children();
  for (size_t i = 0; i < kids.size(); ++i) {
    const auto& [name, m] = kids[i];
    try {
      // Linear then ReLU: one fused GEMM (the ReLU is applied as the results are stored).
      auto* lin = dynamic_cast<Linear*>(m.get());
      if (lin && i + 1 < kids.size() && dynamic_cast<ReLU*>(kids[i + 1].second.get())) {
        y = lin->forward_relu(y);
        ++i;
        continue;
      }
      y = m->forward(y);
    } catch (Error& e) {
      e.add_context(str("in Sequential layer ", name, " (", m->type_name(), ")"));
      throw;
    }
  }
  return y;
}

// ---------------------------------------------------------------------------------------------
// Seeds

MLP::MLP(int64_t in, int64_t h, int64_t o) {
  hidden = register_module("hidden", std::make_shared<Linear>(in, h));
  out = register_module("out", std::make_shared<Linear>(h, o));
}

Tensor MLP::forward(const Tensor& x) { return out->forward(backend().relu(hidden->forward(x))); }

std::shared_ptr<Sequential> seed_cnn() {
  auto s = std::make_shared<Sequential>();
  s->add(std::make_shared<Conv2d>(3, 16, 5))
      .add(std::make_shared<ReLU>())
      .add(std::make_shared<MaxPool2d>(2, 2))
      .add(std::make_shared<Conv2d>(16, 32, 5))
      .add(std::make_shared<ReLU>())
      .add(std::make_shared<MaxPool2d>(2, 2))
      .add(std::make_shared<Flatten>())
      .add(std::make_shared<Linear>(800, 120))
      .add(std::make_shared<ReLU>())
      .add(std::make_shared<Linear>(120, 84))
      .add(std::make_shared<ReLU>())
      .add(std::make_shared<Linear>(84, 10));
  return s;
}

}  // namespace tb::nn
