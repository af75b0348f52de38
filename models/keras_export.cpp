#include "models/keras_export.h"

#include <nlohmann/json.hpp>

#include <set>

#include "formats/registry.h"
#include "nn/style.h"

namespace tb::nn {
namespace {

using json = nlohmann::json;

/** Builds the Keras layer list while following the activation shape (PyTorch layout). */
struct KerasBuilder {
  json layers = json::array();
  Shape shape;                        // current activation shape, NCHW or (N, F)
  std::vector<std::string> weighted;  // Keras names of the layers with weights, in state_dict order
  std::vector<int64_t> flatten_hw;    // (H, W) entering the first Flatten after a conv
  std::set<std::string> names;

  [[noreturn]] void refuse(const std::string& prefix, const Module& m, const std::string& why) const {
    throw UnsupportedError(
        str("nn: .keras export: ", m.type_name(), " at '", prefix.empty() ? "(model)" : prefix, "' ", why));
  }
  std::string unique(std::string base) {
    for (char& c : base)
      if (c == '.' || c == '/') c = '_';
    if (base.empty() || std::isdigit(uint8_t(base[0]))) base = "layer_" + base;
    std::string n = base;
    for (int i = 1; names.count(n); ++i) n = str(base, "_", i);
    names.insert(n);
    return n;
  }
  void add(const std::string& cls, json config, const std::string& name) {
    config["name"] = name;
    config["trainable"] = true;
    config["dtype"] = "float32";
    layers.push_back(
        {{"module", "keras.layers"}, {"class_name", cls}, {"config", config}, {"registered_name", nullptr}});
  }
  void need_rank(const std::string& prefix, const Module& m, size_t rank) const {
    if (shape.size() != rank)
      refuse(prefix, m,
             str("needs a ", rank == 4 ? "(N, C, H, W)" : "(N, features)", " input here, the model gives ",
                 shape_str(shape)));
  }
  /** Output length of a window over n (floor mode). */
  int64_t window(const std::string& prefix, const Module& m, int64_t n, int64_t k, int64_t s, int64_t p,
                 int64_t d) const {
    const int64_t span = d * (k - 1) + 1;
    if (n + 2 * p < span) refuse(prefix, m, str("has a window of ", span, " over an input of ", n + 2 * p));
    return (n + 2 * p - span) / s + 1;
  }
  void zero_pad(int64_t ph, int64_t pw, const std::string& prefix) {
    if (ph == 0 && pw == 0) return;
    add("ZeroPadding2D", {{"padding", {{ph, ph}, {pw, pw}}}, {"data_format", "channels_last"}},
        unique(prefix + "_pad"));
  }

  void leaf(Module& m, const std::string& prefix) {
    if (auto* lin = dynamic_cast<Linear*>(&m)) {
      need_rank(prefix, m, 2);
      if (shape[1] != lin->in_features)
        refuse(prefix, m, str("takes ", lin->in_features, " features, the model gives ", shape[1]));
      std::string name = unique(prefix);
      add("Dense", {{"units", lin->out_features}, {"activation", "linear"}, {"use_bias", lin->has_bias}}, name);
      weighted.push_back(name);
      shape[1] = lin->out_features;
    } else if (auto* c = dynamic_cast<Conv2d*>(&m)) {
      need_rank(prefix, m, 4);
      const auto& o = c->opts;
      zero_pad(o.pad_h, o.pad_w, prefix);
      std::string name = unique(prefix);
      add("Conv2D",
          {{"filters", c->out_channels},
           {"kernel_size", {c->kernel_h, c->kernel_w}},
           {"strides", {o.stride_h, o.stride_w}},
           {"padding", "valid"},
           {"data_format", "channels_last"},
           {"dilation_rate", {o.dil_h, o.dil_w}},
           {"groups", o.groups},
           {"activation", "linear"},
           {"use_bias", o.bias}},
          name);
      weighted.push_back(name);
      shape = {shape[0], c->out_channels, window(prefix, m, shape[2], c->kernel_h, o.stride_h, o.pad_h, o.dil_h),
               window(prefix, m, shape[3], c->kernel_w, o.stride_w, o.pad_w, o.dil_w)};
    } else if (auto* p = dynamic_cast<MaxPool2d*>(&m)) {
      need_rank(prefix, m, 4);
      if (p->pad_h || p->pad_w || p->ceil_mode || p->dil_h != 1 || p->dil_w != 1)
        refuse(prefix, m, "uses padding, ceil_mode or dilation, which Keras's MaxPooling2D does not have");
      add("MaxPooling2D",
          {{"pool_size", {p->kernel_h, p->kernel_w}},
           {"strides", {p->stride_h, p->stride_w}},
           {"padding", "valid"},
           {"data_format", "channels_last"}},
          unique(prefix));
      shape[2] = window(prefix, m, shape[2], p->kernel_h, p->stride_h, 0, 1);
      shape[3] = window(prefix, m, shape[3], p->kernel_w, p->stride_w, 0, 1);
    } else if (auto* a = dynamic_cast<AvgPool2d*>(&m)) {
      need_rank(prefix, m, 4);
      zero_pad(a->padding, a->padding, prefix);  // count_include_pad=True: the zeros count, as in torch
      add("AveragePooling2D",
          {{"pool_size", {a->kernel, a->kernel}},
           {"strides", {a->stride, a->stride}},
           {"padding", "valid"},
           {"data_format", "channels_last"}},
          unique(prefix));
      shape[2] = window(prefix, m, shape[2], a->kernel, a->stride, a->padding, 1);
      shape[3] = window(prefix, m, shape[3], a->kernel, a->stride, a->padding, 1);
    } else if (dynamic_cast<GlobalAvgPool2d*>(&m)) {
      need_rank(prefix, m, 4);
      add("GlobalAveragePooling2D", {{"data_format", "channels_last"}, {"keepdims", true}}, unique(prefix));
      shape[2] = shape[3] = 1;
    } else if (auto* bn = dynamic_cast<BatchNorm*>(&m)) {
      if (!bn->affine || !bn->track_running_stats) refuse(prefix, m, "needs affine=True and running statistics");
      need_rank(prefix, m, bn->dims == 2 ? 4 : 2);
      std::string name = unique(prefix);
      add("BatchNormalization",
          {{"axis", -1}, {"momentum", 1.0 - bn->momentum}, {"epsilon", bn->eps}, {"center", true}, {"scale", true}},
          name);
      weighted.push_back(name);
    } else if (auto* f = dynamic_cast<Flatten*>(&m)) {
      if (f->start_dim != 1 || f->end_dim != -1) refuse(prefix, m, "is not Flatten(1, -1)");
      if (shape.size() == 4 && flatten_hw.empty()) flatten_hw = {shape[2], shape[3]};
      int64_t n = 1;
      for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
      add("Flatten", {{"data_format", "channels_last"}}, unique(prefix.empty() ? "flatten" : prefix));
      shape = {shape[0], n};
    } else if (dynamic_cast<ReLU*>(&m) || dynamic_cast<Sigmoid*>(&m) || dynamic_cast<Tanh*>(&m)) {
      std::string act = dynamic_cast<ReLU*>(&m) ? "relu" : dynamic_cast<Sigmoid*>(&m) ? "sigmoid" : "tanh";
      add("Activation", {{"activation", act}}, unique(prefix.empty() ? act : prefix));
    } else if (auto* lr = dynamic_cast<LeakyReLU*>(&m)) {
      add("LeakyReLU", {{"negative_slope", lr->negative_slope}}, unique(prefix));
    } else if (auto* sm = dynamic_cast<Softmax*>(&m)) {
      const int64_t r = int64_t(shape.size());
      int64_t d = sm->dim < 0 ? sm->dim + r : sm->dim;
      if (d < 0 || d >= r) refuse(prefix, m, str("dim ", sm->dim, " is out of range for ", shape_str(shape)));
      const int64_t nhwc[] = {0, 3, 1, 2};  // torch NCHW dim -> Keras NHWC axis
      add("Softmax", {{"axis", r == 4 ? nhwc[d] : d}}, unique(prefix));
    } else if (auto* dr = dynamic_cast<Dropout*>(&m)) {
      add("Dropout", {{"rate", dr->p}}, unique(prefix));
    } else if (dynamic_cast<Identity*>(&m)) {
      return;
    } else {
      refuse(prefix, m, "has no Keras layer here");
    }
  }

  void collect(Module& m, const std::string& prefix) {
    auto join = [&](const std::string& n) { return prefix.empty() ? n : prefix + "." + n; };
    if (dynamic_cast<Sequential*>(&m)) {
      for (const auto& [name, child] : m.children()) collect(*child, join(name));
    } else if (auto* mlp = dynamic_cast<MLP*>(&m)) {  // out(relu(hidden(x)))
      leaf(*mlp->hidden, join("hidden"));
      ReLU relu;
      leaf(relu, join("relu"));
      leaf(*mlp->out, join("out"));
    } else {
      leaf(m, prefix);
    }
  }
};

}  // namespace

void save_keras_model(Module& model, const Shape& input_shape, const std::filesystem::path& path,
                      const SaveOptions& opts) {
  TB_CHECK(input_shape.size() == 2 || input_shape.size() == 4, UnsupportedError, "nn: .keras export: --input-shape ",
           shape_str(input_shape), " must be (N, features) or (N, C, H, W)");
  KerasBuilder b;
  b.shape = input_shape;
  b.collect(model, "");
  json batch = json::array({nullptr});
  if (input_shape.size() == 4)
    batch.insert(batch.end(), {input_shape[2], input_shape[3], input_shape[1]});
  else
    batch.push_back(input_shape[1]);
  json input = {{"module", "keras.layers"},
                {"class_name", "InputLayer"},
                {"config", {{"batch_shape", batch}, {"dtype", "float32"}, {"sparse", false}, {"name", "input_layer"}}},
                {"registered_name", nullptr}};
  b.layers.insert(b.layers.begin(), input);
  json config = {{"module", "keras"},
                 {"class_name", "Sequential"},
                 {"config", {{"name", "sequential"}, {"trainable", true}, {"dtype", "float32"}, {"layers", b.layers}}},
                 {"registered_name", nullptr},
                 {"build_config", {{"input_shape", batch}}}};

  StyleOptions style;
  style.names = b.weighted;
  style.flatten_hw = b.flatten_hw;
  StateDict sd = keras_layers_to_state_dict(torch_to_keras(model.state_dict(), style));
  Checkpoint ck = Checkpoint::from_state_dict(sd);
  ck.metadata["model_config"] = config.dump();
  save(ck, path, "keras", opts);
}

}  // namespace tb::nn
