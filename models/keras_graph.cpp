#include "models/keras_graph.h"

#include <cctype>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "nn/style.h"

namespace tb::nn {

namespace {

using json = nlohmann::json;
constexpr int kOnnxFloat = 1;

json parse_config(const std::string& text) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw FormatError(str("nn: keras: model_config is not valid JSON: ", e.what()));
  }
}

/** A Keras tensor reference: the layer that made it (node and tensor index 0 for single-use layers). */
struct Ref {
  std::string layer;
  int64_t node = 0, tensor = 0;
};

Ref ref_of(const json& h, const std::string& where) {
  TB_CHECK(h.is_array() && !h.empty() && h[0].is_string(), FormatError, "nn: keras: ", where, " refers to ", h.dump(),
           ", expected [layer, node, tensor]");
  Ref r{h[0].get<std::string>()};
  if (h.size() > 1 && h[1].is_number_integer()) r.node = h[1].get<int64_t>();
  if (h.size() > 2 && h[2].is_number_integer()) r.tensor = h[2].get<int64_t>();
  return r;
}

/** Keras 3 call arguments: every __keras_tensor__ in args, in order (lists of them for merges). */
void collect_tensors(const json& j, std::vector<Ref>& out, const std::string& where) {
  if (j.is_object()) {
    if (j.value("class_name", std::string()) == "__keras_tensor__" && j.contains("config")) {
      out.push_back(ref_of(j["config"].at("keras_history"), where));
      return;
    }
    for (const auto& [k, v] : j.items()) collect_tensors(v, out, where);
  } else if (j.is_array()) {
    for (const json& e : j) collect_tensors(e, out, where);
  }
}

/** One layer of the config with the tensors it is called on. */
struct Layer {
  std::string cls, name;
  json config;
  std::vector<Ref> inputs;
};

struct Model {
  std::vector<Layer> layers;
  std::vector<Ref> inputs, outputs;
  bool sequential = false;
};

std::vector<Ref> endpoints(const json& cfg, const char* key) {
  std::vector<Ref> out;
  const json& v = cfg.at(key);
  TB_CHECK(v.is_array(), UnsupportedError, "nn: keras: model ", key, " ", v.dump(),
           " is not a list (dict inputs are not supported)");
  if (!v.empty() && v[0].is_string()) return {ref_of(v, key)};
  for (const json& e : v) out.push_back(ref_of(e, key));
  return out;
}

Model parse_model(const std::string& text) {
  json j = parse_config(text);
  TB_CHECK(j.is_object() && j.contains("class_name"), FormatError, "nn: keras: model_config has no class_name");
  const std::string mcls = j["class_name"].get<std::string>();
  TB_CHECK(mcls == "Sequential" || mcls == "Functional" || mcls == "Model", UnsupportedError,
           "nn: keras: model class '", mcls, "' is not supported (Sequential, Functional are)");
  const json& cfg = j.at("config");
  const json& layers = cfg.is_array() ? cfg : cfg.at("layers");
  Model m;
  m.sequential = mcls == "Sequential";
  for (const json& L : layers) {
    Layer l;
    l.cls = L.at("class_name").get<std::string>();
    l.config = L.at("config");
    l.name = L.value("name", l.config.value("name", std::string()));
    TB_CHECK(!l.name.empty(), FormatError, "nn: keras: a layer of class ", l.cls, " has no name");
    if (!m.sequential) {
      const json* in = L.contains("inbound_nodes") ? &L["inbound_nodes"] : nullptr;
      if (in && !in->empty()) {
        TB_CHECK(in->size() == 1, UnsupportedError, "nn: keras: layer '", l.name, "' (", l.cls, ") is called ",
                 in->size(), " times (a shared layer); only layers called once are supported");
        const json& node = (*in)[0];
        const std::string where = "layer '" + l.name + "'";
        if (node.is_object())
          collect_tensors(node.value("args", json::array()), l.inputs, where);  // Keras 3
        else
          for (const json& e : node) l.inputs.push_back(ref_of(e, where));  // Keras 2: [[layer, node, tensor, kwargs]]
      }
    }
    m.layers.push_back(std::move(l));
  }
  if (m.sequential) {
    // A chain: each layer takes the previous one; the input is an InputLayer or the first layer's shape.
    for (size_t i = 1; i < m.layers.size(); ++i) m.layers[i].inputs = {Ref{m.layers[i - 1].name}};
    if (!m.layers.empty() && m.layers[0].cls != "InputLayer") {
      Layer in{"InputLayer", "input", m.layers[0].config, {}};
      m.layers[0].inputs = {Ref{in.name}};
      m.layers.insert(m.layers.begin(), in);
    }
    if (!m.layers.empty()) m.inputs = {Ref{m.layers.front().name}}, m.outputs = {Ref{m.layers.back().name}};
  } else {
    m.inputs = endpoints(cfg, "input_layers");
    m.outputs = endpoints(cfg, "output_layers");
  }
  for (const Layer& l : m.layers)
    for (const Ref& r : l.inputs)
      TB_CHECK(r.node == 0 && r.tensor == 0, UnsupportedError, "nn: keras: layer '", l.name, "' takes output ",
               r.tensor, " of call ", r.node, " of layer '", r.layer,
               "'; only layers with one output, called once, are supported");
  return m;
}

/** Keras's object name for a class (keras.src.utils.naming.to_snake_case): Conv2D -> conv2d. */
std::string snake_case(const std::string& cls) {
  std::string out;
  for (size_t i = 0; i < cls.size(); ++i) {
    const char c = cls[i];
    const bool upper = std::isupper(static_cast<unsigned char>(c)) != 0;
    const bool next_lower = i + 1 < cls.size() && std::islower(static_cast<unsigned char>(cls[i + 1])) != 0;
    const bool prev_lower = i > 0 && std::islower(static_cast<unsigned char>(cls[i - 1])) != 0;
    if (upper && i > 0 && (next_lower || prev_lower)) out += '_';
    out += char(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

/** Each layer's weights in Keras's order, by layer name. Keras 3 objects ("layers/dense_1") are
 *  matched by their vars/name attribute, else by Keras's class-based object names in layer order. */
std::map<std::string, std::vector<Tensor>> layer_weights(const Model& m, const StateDict& sd0, const Metadata& md) {
  StateDict sd;
  for (const auto& [k, t] : sd0) {
    const std::string first = k.substr(0, k.find('/'));
    if (first != "optimizer" && first != "optimizer_weights" && first != "vars" && first != "metrics") sd.insert(k, t);
  }
  std::map<std::string, std::string> group_of;  // layer name -> Keras 3 object
  const std::string head = "layers/", tail = "/vars/name";
  for (const auto& [k, v] : md)
    if (k.size() > head.size() + tail.size() && k.compare(0, head.size(), head) == 0 &&
        k.compare(k.size() - tail.size(), tail.size(), tail) == 0)
      group_of[v] = k.substr(head.size(), k.size() - head.size() - tail.size());
  bool keras3 = false;
  for (const auto& [k, t] : sd) keras3 = keras3 || k.rfind("layers/", 0) == 0;
  std::map<std::string, int> counters;
  std::vector<std::string> order;
  for (const Layer& l : m.layers) {
    std::string object = snake_case(l.cls);
    int n = counters[object]++;
    if (n > 0) object += "_" + std::to_string(n);
    if (auto it = group_of.find(l.name); it != group_of.end())
      order.push_back(it->second);
    else
      order.push_back(keras3 ? object : l.name);
  }
  std::vector<KerasLayer> layers = keras_layers_from_state_dict(sd, order);
  std::map<std::string, std::vector<Tensor>> out;
  for (size_t i = 0; i < m.layers.size() && i < layers.size(); ++i)
    for (const auto& [name, t] : layers[i].weights) out[m.layers[i].name].push_back(t);
  return out;
}

OnnxAttribute attr_int(const char* name, int64_t v) {
  OnnxAttribute a;
  a.name = name, a.type = OnnxAttribute::Type::Int, a.i = v;
  return a;
}
OnnxAttribute attr_float(const char* name, double v) {
  OnnxAttribute a;
  a.name = name, a.type = OnnxAttribute::Type::Float, a.f = v;
  return a;
}
OnnxAttribute attr_ints(const char* name, std::vector<int64_t> v) {
  OnnxAttribute a;
  a.name = name, a.type = OnnxAttribute::Type::Ints, a.ints = std::move(v);
  return a;
}
OnnxAttribute attr_str(const char* name, std::string v) {
  OnnxAttribute a;
  a.name = name, a.type = OnnxAttribute::Type::String, a.s = std::move(v);
  return a;
}

std::vector<int64_t> json_pair(const json& c, const char* name, int64_t def) {
  if (!c.contains(name) || c[name].is_null()) return {def, def};
  const json& v = c[name];
  if (v.is_number_integer()) return {v.get<int64_t>(), v.get<int64_t>()};
  TB_CHECK(v.is_array() && v.size() == 2, FormatError, "nn: keras: '", name, "' is ", v.dump(), ", expected a pair");
  return {v[0].get<int64_t>(), v[1].get<int64_t>()};
}

/** The layer classes the graph builder knows (besides the inference identities below). */
constexpr const char* kLayers[] = {"InputLayer",
                                   "Dense",
                                   "Activation",
                                   "ReLU",
                                   "LeakyReLU",
                                   "Softmax",
                                   "Conv2D",
                                   "DepthwiseConv2D",
                                   "SeparableConv2D",
                                   "MaxPooling2D",
                                   "AveragePooling2D",
                                   "GlobalAveragePooling2D",
                                   "Flatten",
                                   "BatchNormalization",
                                   "Add",
                                   "Subtract",
                                   "Multiply",
                                   "Average",
                                   "Concatenate"};
/** Layers that are the identity at inference. */
const std::set<std::string> kIdentities = {"Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
                                           "AlphaDropout"};

/** Builds the graph layer by layer; values are Keras's (NHWC), named after the layer that makes them. */
class GraphBuilder {
 public:
  explicit GraphBuilder(std::string label) : label_(std::move(label)) { g_.opset = 13; }

  void layer(const Layer& l, const std::vector<Tensor>& w) {
    layer_ = &l;
    weights_ = &w;
    static const std::set<std::string> known(std::begin(kLayers), std::end(kLayers));
    if (!known.count(l.cls) && !kIdentities.count(l.cls)) unsupported();
    std::vector<std::string> x;
    for (const Ref& r : l.inputs) {
      TB_CHECK(rank_.count(r.layer), UnsupportedError, where(), " takes the output of '", r.layer,
               "', which no earlier layer makes");
      x.push_back(r.layer);
    }
    const json& c = l.config;
    const std::string& cls = l.cls;
    if (cls == "InputLayer") return input(c);
    TB_CHECK(!x.empty(), FormatError, where(), " is called on no tensor");
    if (cls == "Add" || cls == "Subtract" || cls == "Multiply" || cls == "Average") return merge(x);
    if (cls == "Concatenate") {
      int64_t axis = c.value("axis", int64_t(-1)), r = rank_.at(x[0]);
      if (axis < 0 && r > 0) axis += r;
      return finish(node("Concat", x, {attr_int("axis", axis)}), r);
    }
    TB_CHECK(x.size() == 1, UnsupportedError, where(), " takes ", x.size(), " tensors; only merge layers take several");
    const std::string in = x[0];
    const int64_t r = rank_.at(in);
    if (cls == "Dense") {
      need_weights(c.value("use_bias", true) ? 2 : 1);
      std::string y = node("MatMul", {in, init("kernel", w[0])});
      if (w.size() > 1) y = node("Add", {y, init("bias", w[1])});
      return finish(activation(y, c.value("activation", std::string("linear"))), r);
    }
    if (cls == "Activation") return finish(activation(in, c.value("activation", std::string("linear"))), r);
    if (cls == "ReLU") {
      TB_CHECK(c.value("max_value", json()).is_null() && c.value("negative_slope", 0.0) == 0 &&
                   c.value("threshold", 0.0) == 0,
               UnsupportedError, where(), " uses max_value, negative_slope or threshold, which are not supported");
      return finish(node("Relu", {in}), r);
    }
    if (cls == "LeakyReLU")
      return finish(node("LeakyRelu", {in}, {attr_float("alpha", c.value("negative_slope", c.value("alpha", 0.3)))}),
                    r);
    if (cls == "Softmax") {
      TB_CHECK(!c.contains("axis") || c["axis"].is_number_integer(), UnsupportedError, where(),
               " softmax over several axes");
      return finish(node("Softmax", {in}, {attr_int("axis", c.value("axis", int64_t(-1)))}), r);
    }
    if (kIdentities.count(cls)) return finish(node("Identity", {in}), r);  // inference: the identity
    if (cls == "Flatten") return finish(node("Flatten", {in}, {attr_int("axis", 1)}), 2);
    if (cls == "BatchNormalization") return batch_norm(in, r, c);
    if (cls == "Conv2D" || cls == "DepthwiseConv2D" || cls == "SeparableConv2D") return conv(in, r, c);
    if (cls == "MaxPooling2D" || cls == "AveragePooling2D") {
      channels_last(c, r);
      auto ps = json_pair(c, "pool_size", 2);
      auto st = c.contains("strides") && !c["strides"].is_null() ? json_pair(c, "strides", 2) : ps;
      std::string y = node(cls == "MaxPooling2D" ? "MaxPool" : "AveragePool", {to_nchw(in)},
                           {attr_ints("kernel_shape", ps), attr_ints("strides", st), padding(c)});
      return finish(to_nhwc(y), 4);
    }
    if (cls == "GlobalAveragePooling2D") {
      channels_last(c, r);
      std::string y = node("GlobalAveragePool", {to_nchw(in)});
      if (c.value("keepdims", false)) return finish(to_nhwc(y), 4);
      return finish(node("Flatten", {y}, {attr_int("axis", 1)}), 2);
    }
    unsupported();
  }

  void outputs(const std::vector<Ref>& refs) {
    for (const Ref& r : refs) {
      TB_CHECK(rank_.count(r.layer), FormatError, "nn: keras: the model output '", r.layer, "' is made by no layer");
      g_.outputs.push_back({r.layer, kOnnxFloat, {}});
    }
  }
  /** Graph inputs in the model's order (InputLayers are met in layer order). */
  void order_inputs(const std::vector<Ref>& refs) {
    std::vector<OnnxValueInfo> ordered;
    for (const Ref& r : refs) {
      bool found = false;
      for (const auto& v : g_.inputs)
        if (v.name == r.layer) ordered.push_back(v), found = true;
      TB_CHECK(found, FormatError, "nn: keras: the model input '", r.layer, "' is not an InputLayer");
    }
    TB_CHECK(ordered.size() == g_.inputs.size(), UnsupportedError,
             "nn: keras: the model has InputLayers that are not its inputs");
    g_.inputs = std::move(ordered);
  }
  OnnxGraph take() { return std::move(g_); }

 private:
  std::string where() const { return str("nn: keras: layer '", layer_->name, "' (", layer_->cls, ")"); }
  [[noreturn]] void unsupported() const {
    std::string names;
    for (const char* n : kLayers) names += str(names.empty() ? "" : ", ", n);
    throw UnsupportedError(str("nn: keras: layer '", layer_->name, "' of type '", layer_->cls,
                               "' is not supported in a Keras graph; supported: ", names, ", Dropout"));
  }
  void need_weights(size_t n) const {
    TB_CHECK(weights_->size() == n, FormatError, where(), " has ", weights_->size(), " weights in the file, expected ",
             n);
  }
  std::string node(const std::string& op, std::vector<std::string> in, std::vector<OnnxAttribute> attrs = {}) {
    OnnxNode n;
    n.op_type = op;
    n.name = str(layer_->name, "/", op, "_", g_.nodes.size());
    n.inputs = std::move(in);
    n.outputs = {n.name};
    n.attributes = std::move(attrs);
    g_.nodes.push_back(std::move(n));
    return g_.nodes.back().outputs[0];
  }
  std::string init(const std::string& what, const Tensor& t) {
    std::string name = str(layer_->name, "/", what);
    g_.initializers.insert(name, t.contiguous());
    return name;
  }
  /** The last node's value becomes the layer's (named after it), of the given rank. */
  void finish(const std::string& value, int64_t rank) {
    g_.nodes.push_back(OnnxNode{"Identity", "", layer_->name + "/out", {value}, {layer_->name}, {}});
    rank_[layer_->name] = rank;
  }
  std::string to_nchw(const std::string& x) { return node("Transpose", {x}, {attr_ints("perm", {0, 3, 1, 2})}); }
  std::string to_nhwc(const std::string& x) { return node("Transpose", {x}, {attr_ints("perm", {0, 2, 3, 1})}); }
  void channels_last(const json& c, int64_t r) const {
    const std::string df = c.value("data_format", std::string("channels_last"));
    TB_CHECK(df == "channels_last", UnsupportedError, where(), " data_format '", df,
             "' is not supported (channels_last is)");
    TB_CHECK(r == 4, UnsupportedError, where(), " needs a 4-D (N, H, W, C) input, got rank ", r);
  }
  OnnxAttribute padding(const json& c) const {
    const std::string p = c.value("padding", std::string("valid"));
    TB_CHECK(p == "valid" || p == "same", UnsupportedError, where(), " padding '", p,
             "' is not supported (valid, same are)");
    return attr_str("auto_pad", p == "same" ? "SAME_UPPER" : "VALID");  // TF's "same" pads the end more
  }
  std::string activation(const std::string& x, const std::string& act) {
    if (act == "linear") return x;
    if (act == "relu") return node("Relu", {x});
    if (act == "sigmoid") return node("Sigmoid", {x});
    if (act == "tanh") return node("Tanh", {x});
    if (act == "softmax") return node("Softmax", {x}, {attr_int("axis", -1)});
    throw UnsupportedError(
        str(where(), " activation '", act, "' is not supported (linear, relu, sigmoid, tanh, softmax are)"));
  }

  void input(const json& c) {
    const json* s = nullptr;
    for (const char* k : {"batch_shape", "batch_input_shape"})
      if (c.contains(k) && c[k].is_array()) s = &c[k];
    TB_CHECK(s, UnsupportedError, where(), " gives no input shape (batch_shape or batch_input_shape)");
    Shape shape;
    for (const json& d : *s) shape.push_back(d.is_number_integer() ? d.get<int64_t>() : -1);
    const std::string dt = c.value("dtype", std::string("float32"));
    TB_CHECK(dt == "float32", UnsupportedError, where(), " dtype '", dt, "' is not supported (float32 is)");
    g_.inputs.push_back({layer_->name, kOnnxFloat, shape});
    rank_[layer_->name] = int64_t(shape.size());
  }

  void merge(const std::vector<std::string>& x) {
    const std::string& cls = layer_->cls;
    TB_CHECK(x.size() >= 2 && (cls != "Subtract" || x.size() == 2), UnsupportedError, where(), " takes ", x.size(),
             " tensors");
    const char* op = cls == "Subtract" ? "Sub" : cls == "Multiply" ? "Mul" : "Add";
    std::string y = x[0];
    for (size_t i = 1; i < x.size(); ++i) y = node(op, {y, x[i]});
    if (cls == "Average")
      y = node("Mul", {y, init("scale", Tensor::from_vector<float>(DType::F32, {}, {1.0f / float(x.size())}))});
    finish(y, rank_.at(x[0]));
  }

  void batch_norm(const std::string& in, int64_t r, const json& c) {
    const json ax = c.contains("axis") ? c["axis"] : json(-1);
    int64_t axis = ax.is_array() && ax.size() == 1 ? ax[0].get<int64_t>()
                   : ax.is_number_integer()        ? ax.get<int64_t>()
                                                   : 99;
    TB_CHECK(r >= 2 && r <= 4 && (axis == -1 || axis == r - 1), UnsupportedError, where(), " over axis ", ax.dump(),
             " of a rank-", r, " input is not supported (the last axis is)");
    const bool scale = c.value("scale", true), center = c.value("center", true);
    need_weights(2 + size_t(scale) + size_t(center));
    const auto& w = *weights_;
    const int64_t n = w.back().numel();
    size_t i = 0;
    Tensor gamma = scale ? w[i++] : Tensor::from_vector(DType::F32, {n}, std::vector<float>(size_t(n), 1.f));
    Tensor beta = center ? w[i++] : Tensor::zeros(DType::F32, {n});
    std::vector<std::string> args = {"", init("gamma", gamma), init("beta", beta), init("moving_mean", w[i]),
                                     init("moving_variance", w[i + 1])};
    const OnnxAttribute eps = attr_float("epsilon", c.value("epsilon", 1e-3));
    if (r == 2) {
      args[0] = in;
      return finish(node("BatchNormalization", args, {eps}), r);
    }
    const std::vector<int64_t> there = r == 4 ? std::vector<int64_t>{0, 3, 1, 2} : std::vector<int64_t>{0, 2, 1};
    const std::vector<int64_t> back = r == 4 ? std::vector<int64_t>{0, 2, 3, 1} : std::vector<int64_t>{0, 2, 1};
    args[0] = node("Transpose", {in}, {attr_ints("perm", there)});
    std::string y = node("BatchNormalization", args, {eps});
    finish(node("Transpose", {y}, {attr_ints("perm", back)}), r);
  }

  void conv(const std::string& in, int64_t r, const json& c) {
    const std::string& cls = layer_->cls;
    channels_last(c, r);
    const bool bias = c.value("use_bias", true);
    const bool separable = cls == "SeparableConv2D", depthwise = cls == "DepthwiseConv2D" || separable;
    need_weights((separable ? 2 : 1) + size_t(bias));
    const auto& w = *weights_;
    auto ks = json_pair(c, "kernel_size", 1), st = json_pair(c, "strides", 1), dl = json_pair(c, "dilation_rate", 1);
    TB_CHECK(w[0].dim() == 4, FormatError, where(), " kernel is ", w[0].describe(), ", expected 4-D");
    std::vector<OnnxAttribute> attrs = {attr_ints("kernel_shape", ks), attr_ints("strides", st),
                                        attr_ints("dilations", dl), padding(c)};
    std::string x = to_nchw(in), y;
    if (!depthwise) {  // HWIO -> OIHW
      attrs.push_back(attr_int("group", c.value("groups", int64_t(1))));
      std::vector<std::string> args = {x, init("kernel", w[0].permute({3, 2, 0, 1}))};
      if (bias) args.push_back(init("bias", w[1]));
      y = node("Conv", args, attrs);
    } else {  // (kh, kw, in, multiplier) -> (in * multiplier, 1, kh, kw), one group per input channel
      const Shape& k = w[0].shape();
      Tensor dw = w[0].permute({2, 3, 0, 1}).contiguous().reshape({k[2] * k[3], 1, k[0], k[1]});
      attrs.push_back(attr_int("group", k[2]));
      std::vector<std::string> args = {x, init("depthwise_kernel", dw)};
      if (bias && !separable) args.push_back(init("bias", w[1]));
      y = node("Conv", args, attrs);
      if (separable) {  // then a 1x1 convolution: (1, 1, in, out) -> (out, in, 1, 1)
        std::vector<std::string> pw = {y, init("pointwise_kernel", w[1].permute({3, 2, 0, 1}))};
        if (bias) pw.push_back(init("bias", w[2]));
        y = node("Conv", pw, {attr_ints("kernel_shape", {1, 1})});
      }
    }
    finish(activation(to_nhwc(y), c.value("activation", std::string("linear"))), 4);
  }

  std::string label_;
  OnnxGraph g_;
  std::map<std::string, int64_t> rank_;  // value (layer name) -> rank
  const Layer* layer_ = nullptr;
  const std::vector<Tensor>* weights_ = nullptr;
};

}  // namespace

bool keras_config_is_chain(const std::string& model_config_json) {
  Model m;
  try {
    m = parse_model(model_config_json);
  } catch (const Error&) {
    return true;  // the chain builder reports what is wrong with it
  }
  if (m.sequential) return true;
  if (m.inputs.size() != 1 || m.outputs.size() != 1) return false;
  std::string prev;
  for (const Layer& l : m.layers) {
    if (l.cls == "InputLayer") {
      if (!prev.empty()) return false;
    } else if (l.inputs.size() != 1 || l.inputs[0].layer != prev) {
      return false;
    }
    prev = l.name;
  }
  return m.outputs[0].layer == prev;
}

std::shared_ptr<OnnxGraphModule> keras_graph_module(const std::string& model_config_json, const StateDict& sd,
                                                    const Metadata& md, const std::string& label) {
  Model m = parse_model(model_config_json);
  auto weights = layer_weights(m, sd, md);
  GraphBuilder b(label);
  // Layers in an order where every input is made first (Keras lists them so; checked anyway).
  std::set<std::string> done;
  std::vector<const Layer*> pending;
  for (const Layer& l : m.layers) pending.push_back(&l);
  while (!pending.empty()) {
    std::vector<const Layer*> later;
    for (const Layer* l : pending) {
      bool ready = true;
      for (const Ref& r : l->inputs) ready = ready && done.count(r.layer);
      if (!ready) {
        later.push_back(l);
        continue;
      }
      b.layer(*l, weights[l->name]);
      done.insert(l->name);
    }
    TB_CHECK(later.size() < pending.size(), UnsupportedError, "nn: keras: layer '", later.front()->name,
             "' takes a tensor no layer makes (or the layers form a cycle)");
    pending = std::move(later);
  }
  b.order_inputs(m.inputs);
  b.outputs(m.outputs);
  return std::make_shared<OnnxGraphModule>(b.take(), label);
}

}  // namespace tb::nn
