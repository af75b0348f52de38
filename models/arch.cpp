#include "models/arch.h"
#include "models/keras_graph.h"
#include "models/onnx_graph.h"

#include <algorithm>
#include <array>
#include <map>
#include <optional>

#include <nlohmann/json.hpp>

#include "formats/pt.h"
#include "formats/registry.h"
#include "nn/arch_spec.h"
#include "nn/select.h"
#include "nn/style.h"

namespace tb::nn {

namespace {

using json = nlohmann::json;

// ---- whole-module pickles ----------------------------------------------------------------------

const char* kTorchKnown =
    "Sequential, Linear, Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten, BatchNorm1d, BatchNorm2d, "
    "ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, Dropout, Identity (torch.nn or oneflow.nn)";

struct PtModule {
  const Value& v;
  std::string cls;
  const Value* state;
  std::string path;

  const Value* attr(const char* name) const {
    const Value* a = state ? state->get(name) : nullptr;
    return a && !a->is_none() ? a : nullptr;
  }
  std::string where() const { return str("module '", path.empty() ? "<root>" : path, "' (", cls, ")"); }
  int64_t integer(const char* name, std::optional<int64_t> def = std::nullopt) const {
    const Value* a = attr(name);
    if (!a) {
      TB_CHECK(def.has_value(), FormatError, "nn: pt: ", where(), " has no attribute '", name, "'");
      return *def;
    }
    if (a->is_sequence()) {
      TB_CHECK(!a->items().empty(), FormatError, "nn: pt: ", where(), " attribute '", name, "' is empty");
      return a->items()[0].as_int();
    }
    return a->as_int();
  }
  std::array<int64_t, 2> pair(const char* name, std::optional<int64_t> def = std::nullopt) const {
    const Value* a = attr(name);
    if (!a) {
      TB_CHECK(def.has_value(), FormatError, "nn: pt: ", where(), " has no attribute '", name, "'");
      return {*def, *def};
    }
    if (a->is_sequence()) {
      auto& it = a->items();
      TB_CHECK(it.size() == 2, FormatError, "nn: pt: ", where(), " attribute '", name, "' is ", a->repr(),
               ", expected an int or a pair");
      return {it[0].as_int(), it[1].as_int()};
    }
    TB_CHECK(a->is_int(), UnsupportedError, "nn: pt: ", where(), " attribute '", name, "' = ", a->repr(),
             " is not supported (an int or a pair is)");
    return {a->as_int(), a->as_int()};
  }
  double real(const char* name, double def) const {
    const Value* a = attr(name);
    return a ? a->as_float() : def;
  }
  bool flag(const char* name, bool def) const {
    const Value* a = attr(name);
    return a ? a->as_bool() : def;
  }
  bool has_param(const char* name) const {
    const Value* ps = state ? state->get("_parameters") : nullptr;
    if (!ps || !ps->is_dict()) return false;
    const Value* p = ps->get(name);
    return p && !p->is_none();
  }
  std::vector<std::pair<std::string, const Value*>> children() const {
    std::vector<std::pair<std::string, const Value*>> out;
    const Value* ms = state ? state->get("_modules") : nullptr;
    if (!ms || !ms->is_dict()) return out;
    for (auto& [k, c] : ms->dict_data().items)
      if (!c.is_none()) out.emplace_back(k.is_str() ? k.as_str() : k.repr(), &c);
    return out;
  }
};

// A user class (or any class outside torch.nn / oneflow.nn): its children, parameters and buffers
// load; its forward() is Python code, so the module cannot run by itself.
Module::Ptr build_user_module(const PtModule& m, const std::string& path, int depth);

Module::Ptr build_pt(const Value& v, const std::string& path, int depth) {
  TB_CHECK(depth < 64, UnsupportedError, "nn: pt: module tree deeper than 64 levels at '", path, "'");
  TB_CHECK(v.kind() == Value::Kind::Object, FormatError, "nn: pt: module '", path, "' is ", v.repr(),
           ", not a pickled nn.Module");
  const ValueObject& o = v.as_object();
  PtModule m{v, o.cls, o.state ? o.state.get() : nullptr, path};
  TB_CHECK(m.state && m.state->is_dict(), FormatError, "nn: pt: ", m.where(), " has no __dict__ state");
  const std::string base = o.cls.substr(o.cls.rfind('.') == std::string::npos ? 0 : o.cls.rfind('.') + 1);
  const bool torch_nn = o.cls.rfind("torch.nn.", 0) == 0 || o.cls.rfind("oneflow.nn.", 0) == 0;
  auto kids = m.children();
  if (torch_nn && base == "Sequential") {
    auto s = std::make_shared<Sequential>();
    for (auto& [name, c] : kids) {
      Module::Ptr child = build_pt(*c, path.empty() ? name : path + "." + name, depth + 1);
      s->register_module(name, child);  // keep the file's names ("0", "fc1", ...)
    }
    return s;
  }
  if (torch_nn && base == "Linear")
    return std::make_shared<Linear>(m.integer("in_features"), m.integer("out_features"), m.has_param("bias"));
  if (torch_nn && base == "Conv2d") {
    Conv2d::Options co;
    auto st = m.pair("stride", 1), pd = m.pair("padding", 0), dl = m.pair("dilation", 1);
    auto ks = m.pair("kernel_size");
    co.stride_h = st[0], co.stride_w = st[1], co.pad_h = pd[0], co.pad_w = pd[1], co.dil_h = dl[0], co.dil_w = dl[1];
    co.groups = m.integer("groups", 1);
    co.bias = m.has_param("bias");
    if (const Value* pm = m.attr("padding_mode"))
      TB_CHECK(pm->as_str() == "zeros", UnsupportedError, "nn: pt: ", m.where(), " padding_mode '", pm->as_str(),
               "' is not supported (zeros is)");
    if (const Value* cp = m.attr("channel_pos"); cp && cp->is_str())  // OneFlow's data layout
      TB_CHECK(cp->as_str() == "channels_first", UnsupportedError, "nn: pt: ", m.where(), " channel_pos '",
               cp->as_str(), "' is not supported (channels_first is)");
    return std::make_shared<Conv2d>(m.integer("in_channels"), m.integer("out_channels"), ks[0], ks[1], co);
  }
  if (torch_nn && base == "MaxPool2d") {
    auto ks = m.pair("kernel_size");
    auto st = m.attr("stride") ? m.pair("stride") : ks;
    auto pd = m.pair("padding", 0), dl = m.pair("dilation", 1);
    TB_CHECK(!m.flag("return_indices", false), UnsupportedError, "nn: pt: ", m.where(),
             " uses return_indices, which MaxPool2d here does not support");
    auto pool = std::make_shared<MaxPool2d>(ks[0], ks[1], st[0], st[1], pd[0], pd[1]);
    pool->dil_h = dl[0], pool->dil_w = dl[1];
    pool->ceil_mode = m.flag("ceil_mode", false);
    return pool;
  }
  if (torch_nn && base == "Flatten")
    return std::make_shared<Flatten>(m.integer("start_dim", 1), m.integer("end_dim", -1));
  if (torch_nn && (base == "BatchNorm1d" || base == "BatchNorm2d"))
    return std::make_shared<BatchNorm>(base == "BatchNorm1d" ? 1 : 2, m.integer("num_features"), m.real("eps", 1e-5),
                                       m.real("momentum", 0.1), m.flag("affine", true),
                                       m.flag("track_running_stats", true));
  if (torch_nn && base == "AvgPool2d") {
    auto ks = m.pair("kernel_size");
    auto st = m.attr("stride") ? m.pair("stride") : ks;
    auto pd = m.pair("padding", 0);
    TB_CHECK(ks[0] == ks[1] && st[0] == st[1] && pd[0] == pd[1] && !m.flag("ceil_mode", false) &&
                 m.flag("count_include_pad", true) && !m.attr("divisor_override"),
             UnsupportedError, "nn: pt: ", m.where(),
             " uses a non-square window, ceil_mode, count_include_pad=False or divisor_override, which AvgPool2d here "
             "does not support");
    return std::make_shared<AvgPool2d>(ks[0], st[0], pd[0]);
  }
  if (torch_nn && base == "AdaptiveAvgPool2d") {
    auto os = m.pair("output_size");
    TB_CHECK(os[0] == 1 && os[1] == 1, UnsupportedError, "nn: pt: ", m.where(), " output_size (", os[0], ", ", os[1],
             ") is not supported (1 is: a global average)");
    return std::make_shared<GlobalAvgPool2d>();
  }
  if (torch_nn && base == "LeakyReLU") return std::make_shared<LeakyReLU>(m.real("negative_slope", 0.01));
  if (torch_nn && base == "ReLU") return std::make_shared<ReLU>();
  if (torch_nn && base == "Sigmoid") return std::make_shared<Sigmoid>();
  if (torch_nn && base == "Tanh") return std::make_shared<Tanh>();
  if (torch_nn && base == "Identity") return std::make_shared<Identity>();
  if (torch_nn && (base == "Dropout" || base == "Dropout2d" || base == "AlphaDropout"))
    return std::make_shared<Dropout>(m.real("p", 0.5));
  if (torch_nn && base == "Softmax") {
    // dim=None (old pickles): torch's legacy choice, 0 for 0-, 1- and 3-D inputs, else 1; the
    // models here take (N, features), so 1.
    return std::make_shared<Softmax>(m.attr("dim") ? m.integer("dim") : 1);
  }
  if (!torch_nn) return build_user_module(m, path, depth);
  throw UnsupportedError(str("nn: pt: ", m.where(), " is not a known layer type; known: ", kTorchKnown));
}

Module::Ptr build_user_module(const PtModule& m, const std::string& path, int depth) {
  auto u = std::make_shared<UserModule>(m.cls);
  auto names = [&](const char* group, std::vector<std::string>& out) {
    const Value* g = m.state ? m.state->get(group) : nullptr;
    if (!g || !g->is_dict()) return;
    std::vector<std::string> skip;
    if (const Value* np = m.attr("_non_persistent_buffers_set");
        np && (np->is_sequence() || np->kind() == Value::Kind::Set))
      for (auto& x : np->items())
        if (x.is_str()) skip.push_back(x.as_str());
    for (auto& [k, v] : g->dict_data().items)
      if (k.is_str() && !v.is_none() && std::find(skip.begin(), skip.end(), k.as_str()) == skip.end())
        out.push_back(k.as_str());
  };
  names("_parameters", u->param_names);
  names("_buffers", u->buffer_names);
  for (auto& [name, c] : m.children())
    u->register_module(name, build_pt(*c, path.empty() ? name : path + "." + name, depth + 1));
  return u;
}

// ---- Keras model_config ------------------------------------------------------------------------

const char* kKerasKnown = "InputLayer, Dense, Activation, Conv2D, MaxPooling2D, Flatten, Dropout, BatchNormalization";

struct KerasBuild {
  std::shared_ptr<Sequential> seq = std::make_shared<Sequential>();
  bool spatial = false;         // activations are an NCHW feature map
  bool input_permuted = false;  // a Permute(0,3,1,2) was inserted for the NHWC input
  int64_t H = -1, W = -1;       // known spatial size (-1 unknown)
  std::vector<int64_t> flatten_hw;
  std::map<std::string, double> bn_eps;
  std::vector<std::string> layer_names;
};

void add_activation(KerasBuild& b, const std::string& act, const std::string& layer) {
  if (act.empty() || act == "linear") return;
  if (act == "relu")
    b.seq->add(std::make_shared<ReLU>());
  else if (act == "sigmoid")
    b.seq->add(std::make_shared<Sigmoid>());
  else if (act == "tanh")
    b.seq->add(std::make_shared<Tanh>());
  else if (act == "softmax")
    b.seq->add(std::make_shared<Softmax>(b.spatial ? 1 : -1));
  else
    throw UnsupportedError(str("nn: keras: layer '", layer, "' activation '", act,
                               "' is not supported (linear, relu, sigmoid, tanh, softmax are)"));
}

std::array<int64_t, 2> json_pair(const json& c, const char* name, int64_t def) {
  if (!c.contains(name) || c[name].is_null()) return {def, def};
  const json& v = c[name];
  if (v.is_number_integer()) return {v.get<int64_t>(), v.get<int64_t>()};
  TB_CHECK(v.is_array() && v.size() == 2, FormatError, "nn: keras: '", name, "' is ", v.dump(), ", expected a pair");
  return {v[0].get<int64_t>(), v[1].get<int64_t>()};
}

void keras_input_shape(KerasBuild& b, const json& c) {
  const char* keys[] = {"batch_input_shape", "batch_shape"};
  for (const char* k : keys)
    if (c.contains(k) && c[k].is_array() && c[k].size() == 4) {
      const json& s = c[k];
      b.H = s[1].is_number_integer() ? s[1].get<int64_t>() : -1;
      b.W = s[2].is_number_integer() ? s[2].get<int64_t>() : -1;
    }
}

void keras_layer(KerasBuild& b, const std::string& cls, const json& c) {
  const std::string name = c.value("name", std::string("?"));
  b.layer_names.push_back(name);
  keras_input_shape(b, c);
  auto check_channels_last = [&] {
    std::string df = c.value("data_format", std::string("channels_last"));
    TB_CHECK(df == "channels_last", UnsupportedError, "nn: keras: layer '", name, "' (", cls, ") data_format '", df,
             "' is not supported (channels_last is)");
  };
  if (cls == "InputLayer") return;
  if (cls == "Dense") {
    TB_CHECK(!b.spatial, UnsupportedError, "nn: keras: Dense layer '", name,
             "' on a 4-D feature map (no Flatten before it) is not supported");
    int64_t units = c.at("units").get<int64_t>();
    // in_features is fixed by the weights: start with 1 and let load_state_dict's shape report speak.
    b.seq->add(std::make_shared<Linear>(1, units, c.value("use_bias", true)));
    add_activation(b, c.value("activation", std::string("linear")), name);
    return;
  }
  if (cls == "Activation") return add_activation(b, c.value("activation", std::string("linear")), name);
  if (cls == "Dropout") {
    b.seq->add(std::make_shared<Dropout>(c.value("rate", 0.5)));
    return;
  }
  if (cls == "Flatten") {
    if (b.spatial) {
      if (b.H > 0 && b.W > 0) b.flatten_hw = {b.H, b.W};
      b.spatial = false;
    }
    b.seq->add(std::make_shared<Flatten>());
    return;
  }
  if (cls == "Conv2D") {
    check_channels_last();
    if (!b.spatial) {
      TB_CHECK(!b.input_permuted, UnsupportedError, "nn: keras: Conv2D layer '", name,
               "' after a Flatten is not supported");
      b.seq->add(std::make_shared<Permute>(std::vector<int64_t>{0, 3, 1, 2}));  // NHWC -> NCHW
      b.input_permuted = b.spatial = true;
    }
    auto ks = json_pair(c, "kernel_size", 1), st = json_pair(c, "strides", 1), dl = json_pair(c, "dilation_rate", 1);
    std::string pad = c.value("padding", std::string("valid"));
    Conv2d::Options o;
    o.stride_h = st[0], o.stride_w = st[1], o.dil_h = dl[0], o.dil_w = dl[1];
    o.groups = c.value("groups", int64_t(1));
    o.bias = c.value("use_bias", true);
    if (pad == "same") {
      TB_CHECK(st[0] == 1 && st[1] == 1 && ks[0] % 2 == 1 && ks[1] % 2 == 1, UnsupportedError, "nn: keras: Conv2D '",
               name, "' padding 'same' needs stride 1 and an odd kernel here");
      o.pad_h = dl[0] * (ks[0] - 1) / 2, o.pad_w = dl[1] * (ks[1] - 1) / 2;
    } else {
      TB_CHECK(pad == "valid", UnsupportedError, "nn: keras: Conv2D '", name, "' padding '", pad, "' is not supported");
    }
    // in_channels comes from the weights (see Dense); 1 * groups until loaded.
    b.seq->add(std::make_shared<Conv2d>(o.groups, c.at("filters").get<int64_t>(), ks[0], ks[1], o));
    if (b.H > 0) b.H = (b.H + 2 * o.pad_h - dl[0] * (ks[0] - 1) - 1) / st[0] + 1;
    if (b.W > 0) b.W = (b.W + 2 * o.pad_w - dl[1] * (ks[1] - 1) - 1) / st[1] + 1;
    add_activation(b, c.value("activation", std::string("linear")), name);
    return;
  }
  if (cls == "MaxPooling2D") {
    check_channels_last();
    TB_CHECK(b.spatial, UnsupportedError, "nn: keras: MaxPooling2D '", name, "' needs a Conv2D before it here");
    auto ps = json_pair(c, "pool_size", 2);
    auto st = c.contains("strides") && !c["strides"].is_null() ? json_pair(c, "strides", 2) : ps;
    TB_CHECK(c.value("padding", std::string("valid")) == "valid", UnsupportedError, "nn: keras: MaxPooling2D '", name,
             "' padding 'same' is not supported");
    b.seq->add(std::make_shared<MaxPool2d>(ps[0], ps[1], st[0], st[1], 0, 0));
    if (b.H > 0) b.H = (b.H - ps[0]) / st[0] + 1;
    if (b.W > 0) b.W = (b.W - ps[1]) / st[1] + 1;
    return;
  }
  if (cls == "BatchNormalization") {
    const json& ax = c.contains("axis") ? c["axis"] : json(-1);
    int64_t axis = ax.is_array() ? (ax.size() == 1 ? ax[0].get<int64_t>() : 99) : ax.get<int64_t>();
    TB_CHECK(axis == -1 || (b.spatial && axis == 3) || (!b.spatial && axis == 1), UnsupportedError,
             "nn: keras: BatchNormalization '", name, "' over axis ", ax.dump(),
             " is not supported (the channel axis is)");
    TB_CHECK(c.value("center", true) && c.value("scale", true), UnsupportedError, "nn: keras: BatchNormalization '",
             name, "' without center/scale is not supported");
    double eps = c.value("epsilon", 1e-3);
    b.bn_eps[name] = eps;
    b.seq->add(std::make_shared<BatchNorm>(b.spatial ? 2 : 1, 1, eps));
    return;
  }
  throw UnsupportedError(
      str("nn: keras: layer '", name, "' of type '", cls, "' is not supported; known: ", kKerasKnown));
}

json parse_json(const std::string& text, const std::string& what) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw FormatError(str("nn: keras: ", what, " is not valid JSON: ", e.what()));
  }
}

KerasBuild build_keras(const std::string& text) {
  json j = parse_json(text, "model_config");
  TB_CHECK(j.is_object() && j.contains("class_name"), FormatError, "nn: keras: model_config has no class_name");
  std::string mcls = j["class_name"].get<std::string>();
  TB_CHECK(mcls == "Sequential" || mcls == "Functional" || mcls == "Model", UnsupportedError,
           "nn: keras: model class '", mcls, "' is not supported (Sequential, Functional are)");
  const json& cfg = j.at("config");
  const json& layers = cfg.is_array() ? cfg : cfg.at("layers");
  KerasBuild b;
  std::string prev;
  for (const json& L : layers) {
    std::string cls = L.at("class_name").get<std::string>();
    const json& c = L.at("config");
    keras_layer(b, cls, c);  // unknown types are named first
    if (mcls != "Sequential") {
      // A Functional model must be a chain: each layer fed by exactly the previous one.
      const json* in = L.contains("inbound_nodes") ? &L["inbound_nodes"] : nullptr;
      size_t n_in = 0;
      std::string src;
      if (in && in->is_array())
        for (const json& node : *in) {
          const json& args = node.is_object() ? node.value("args", json::array()) : node;
          std::string d = args.dump();
          for (const json& e : node.is_array() ? node : json::array()) {
            ++n_in;
            if (e.is_array() && !e.empty() && e[0].is_string()) src = e[0].get<std::string>();
          }
          if (node.is_object()) n_in += d.find("keras_history") != std::string::npos ? 1 : 0;
        }
      TB_CHECK(n_in <= 1 && (prev.empty() || src.empty() || src == prev), UnsupportedError, "nn: keras: layer '",
               c.value("name", std::string("?")), "' (", cls, ") is not fed by the previous layer alone; only ",
               "chains of layers are supported");
    }
    prev = L.value("name", c.value("name", std::string()));
  }
  if (b.spatial) b.seq->add(std::make_shared<Permute>(std::vector<int64_t>{0, 2, 3, 1}));  // back to NHWC
  return b;
}

// Module with shapes taken from the weights (Keras configs do not give in_features / in_channels).
void resize_to(Module& m, const StateDict& sd) {
  for (auto& [path, mod] : m.named_modules()) {
    auto p = [&](const char* n) { return path.empty() ? std::string(n) : path + "." + n; };
    if (auto* l = dynamic_cast<Linear*>(mod.get())) {
      if (const Tensor* w = sd.find(p("weight")); w && w->dim() == 2 && w->shape()[0] == l->out_features) {
        l->in_features = w->shape()[1];
        l->register_parameter("weight", Tensor::zeros(DType::F32, w->shape()));
      }
    } else if (auto* c = dynamic_cast<Conv2d*>(mod.get())) {
      if (const Tensor* w = sd.find(p("weight")); w && w->dim() == 4 && w->shape()[0] == c->out_channels) {
        c->in_channels = w->shape()[1] * c->opts.groups;
        c->register_parameter("weight", Tensor::zeros(DType::F32, w->shape()));
      }
    } else if (auto* bn = dynamic_cast<BatchNorm*>(mod.get())) {
      if (const Tensor* mean = sd.find(p("running_mean")); mean && mean->dim() == 1) {
        int64_t n = mean->shape()[0];
        bn->num_features = n;
        std::vector<float> ones(size_t(n), 1.f);
        bn->register_parameter("weight", Tensor::from_vector(DType::F32, {n}, ones));
        bn->register_parameter("bias", Tensor::zeros(DType::F32, {n}));
        bn->register_buffer("running_mean", Tensor::zeros(DType::F32, {n}));
        bn->register_buffer("running_var", Tensor::from_vector(DType::F32, {n}, ones));
      }
    }
  }
}

// Registers the own parameters and buffers of user-class modules from the file's state dict (their
// shapes are known only from the tensors).
void fill_user_modules(Module& m, const StateDict& sd) {
  for (auto& [path, mod] : m.named_modules()) {
    auto* u = dynamic_cast<UserModule*>(mod.get());
    if (!u) continue;
    auto key = [&](const std::string& n) { return path.empty() ? n : path + "." + n; };
    for (auto& n : u->param_names)
      if (const Tensor* t = sd.find(key(n))) u->register_parameter(n, *t);
    for (auto& n : u->buffer_names)
      if (const Tensor* t = sd.find(key(n))) u->register_buffer(n, *t);
  }
}

std::string metadata_or(const Metadata& md, const std::string& key) {
  auto it = md.find(key);
  return it == md.end() ? std::string() : it->second;
}

}  // namespace

Module::Ptr module_from_pt_tree(const Value& module) { return build_pt(module, "", 0); }

Module::Ptr module_from_keras_config(const std::string& model_config_json) {
  return build_keras(model_config_json).seq;
}

FileModel load_model(const std::filesystem::path& file, const LoadOptions& lo) {
  if (detect_format(Source::from_path(file)).name == "onnx") return {module_from_onnx_file(file), "onnx graph", {}};
  Checkpoint ck = load(file, lo);
  Value tree = pt_module_tree(ck);  // torch.save(model) and OneFlow's flow.save(model) folders
  if (!tree.is_none()) {
    Module::Ptr m = module_from_pt_tree(tree);
    StateDict sd = ck.state_dict();
    fill_user_modules(*m, sd);
    m->load_state_dict(sd, true);
    return {m, ck.format + " module tree", {}};
  }
  TB_CHECK(ck.format != "pt", UnsupportedError, "nn: '", file.string(),
           "' holds only weights (a state dict), not a pickled module; give the architecture (--arch)");
  std::string cfg = metadata_or(ck.metadata, "model_config");
  TB_CHECK(!cfg.empty(), UnsupportedError, "nn: '", file.string(), "' (", ck.format,
           ") holds no architecture (no whole-module pickle, Keras model_config or ONNX graph); give --arch");
  // A Functional model that is not one chain runs as a graph; so does a chain of layers the
  // Sequential builder lacks (SeparableConv2D, GlobalAveragePooling2D, ...).
  auto graph = [&] {
    return FileModel{
        keras_graph_module(cfg, ck.state_dict(), ck.metadata, file.string()), "keras model_config graph", {}};
  };
  if (!keras_config_is_chain(cfg)) return graph();
  KerasBuild b;
  try {
    b = build_keras(cfg);
  } catch (const UnsupportedError&) {
    try {
      return graph();
    } catch (const UnsupportedError&) {}
    throw;
  }
  // Keras 3 files (.keras, .weights.h5) name a layer's group after its class ("layers/dense_1") and
  // keep the layer's own name in the group's vars/name attribute: map the config's names onto groups.
  std::map<std::string, std::string> group_of;
  const std::string head = "layers/", tail = "/vars/name";
  for (const auto& [k, v] : ck.metadata)
    if (k.size() > head.size() + tail.size() && k.compare(0, head.size(), head) == 0 &&
        k.compare(k.size() - tail.size(), tail.size(), tail) == 0)
      group_of[v] = k.substr(head.size(), k.size() - head.size() - tail.size());
  for (auto& n : b.layer_names)
    if (auto it = group_of.find(n); it != group_of.end()) {
      if (auto e = b.bn_eps.find(n); e != b.bn_eps.end()) b.bn_eps[it->second] = e->second;
      n = it->second;
    }
  StateDict sd = ck.state_dict();
  std::vector<KerasLayer> layers = keras_layers_from_state_dict(sd, b.layer_names);
  for (auto& L : layers)
    if (auto it = b.bn_eps.find(L.name); it != b.bn_eps.end()) L.epsilon = it->second;
  StyleOptions opts;
  opts.names = weighted_layer_prefixes(*b.seq);
  opts.flatten_hw = b.flatten_hw;
  StateDict torch_sd = keras_to_torch(layers, opts);
  resize_to(*b.seq, torch_sd);
  b.seq->load_state_dict(torch_sd, true);
  apply_style_metadata(*b.seq, torch_sd.metadata);
  return {b.seq, "keras model_config", {}};
}

FileModel load_model(const std::filesystem::path& file, const std::string& arch, const ArchLoad& how) {
  Module::Ptr model = builtin_model(arch);
  StateDict sd = load(file, how.load).state_dict(how.key);
  if (how.strip) sd = strip_prefixes(sd);
  // Keras-style keys ("hidden/hidden/kernel:0", "layers/dense/vars/0"): convert by position.
  bool keras = !sd.empty() &&
               std::all_of(sd.begin(), sd.end(), [](auto& kv) { return kv.first.find('/') != std::string::npos; });
  if (keras) {
    StyleOptions opts;
    opts.names = weighted_layer_prefixes(*model);
    sd = keras_to_torch(keras_layers_from_state_dict(sd), opts);
  }
  FileModel fm{model, "built-in " + arch, {}};
  try {
    fm.mapping = load_by_structure(*model, sd, how.arch);
  } catch (Error& e) {
    e.add_context(str("loading '", file.string(), "' into --arch '", arch, "'"));
    throw;
  }
  apply_style_metadata(*model, sd.metadata);
  return fm;
}

FileModel load_model(const std::filesystem::path& file, const std::string& arch, const std::string& key, bool strip) {
  ArchLoad how;
  how.key = key;
  how.strip = strip;
  return load_model(file, arch, how);
}

void require_forward(Module& m, const std::string& file) {
  auto users = modules_without_forward(m);
  if (users.empty()) return;
  std::string layers;
  for (auto& [path, mod] : m.named_modules())
    if (!dynamic_cast<UserModule*>(mod.get()) && !dynamic_cast<Sequential*>(mod.get()) && !path.empty())
      layers += str(layers.empty() ? "" : ", ", path, ": ", mod->type_name(), "(", mod->extra_repr(), ")");
  const std::string& cls = users.front().second->class_name;
  throw UnsupportedError(str("'", file, "' holds a whole module of the user class ", cls,
                             users.front().first.empty() ? "" : " (at '" + users.front().first + "')",
                             ": its layers load (", layers.empty() ? "none" : layers,
                             ") but its forward() is Python code that the file does not hold. Run it with the "
                             "architecture, matched by structure: --arch \"",
                             guess_arch_spec(m), "\" (guessed from the layers in the file: check ", cls, ".forward)"));
}

}  // namespace tb::nn
