#include "nn/style.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>

namespace tb::nn {
namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i)
    if (i == s.size() || s[i] == sep) {
      if (i > start) out.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  return out;
}

std::string strip_colon_index(const std::string& w) {
  size_t c = w.rfind(':');
  if (c != std::string::npos && c + 1 < w.size() &&
      std::all_of(w.begin() + std::ptrdiff_t(c) + 1, w.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
    return w.substr(0, c);
  return w;
}

std::string fmt_eps(double e) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", e);
  return buf;
}

// (H, W) of the activations entering a Flatten that produce `features` = C*H*W values.
std::pair<int64_t, int64_t> flatten_hw(int64_t features, int64_t channels, const StyleOptions& opts,
                                       const std::string& layer) {
  TB_CHECK(channels > 0 && features % channels == 0, ShapeError, "nn: style: layer '", layer, "' has ", features,
           " input features, not a multiple of the previous conv's ", channels, " channels");
  const int64_t hw = features / channels;
  if (!opts.flatten_hw.empty()) {
    TB_CHECK(opts.flatten_hw.size() == 2 && opts.flatten_hw[0] * opts.flatten_hw[1] == hw, ShapeError,
             "nn: style: flatten size ",
             opts.flatten_hw.size() == 2 ? str(opts.flatten_hw[0], "x", opts.flatten_hw[1]) : "?", " does not give ",
             hw, " = ", features, " / ", channels, " positions for layer '", layer, "'");
    return {opts.flatten_hw[0], opts.flatten_hw[1]};
  }
  int64_t s = int64_t(std::llround(std::sqrt(double(hw))));
  TB_CHECK(s * s == hw, ShapeError, "nn: style: layer '", layer, "' flattens ", hw,
           " positions, not a square; give the flatten size (H, W) explicitly");
  return {s, s};
}

Tensor owned(const Tensor& t) { return t.contiguous().clone(); }

}  // namespace

const Tensor* KerasLayer::weight(const std::string& n) const {
  for (auto& [k, t] : weights)
    if (k == n) return &t;
  return nullptr;
}

std::vector<KerasLayer> keras_layers_from_state_dict(const StateDict& sd, const std::vector<std::string>& layer_order) {
  bool slash = false;
  for (auto& [k, t] : sd)
    if (k.find('/') != std::string::npos) slash = true;
  std::vector<KerasLayer> layers;
  std::map<std::string, size_t> index;
  std::map<std::string, std::vector<std::pair<int, Tensor>>> numbered;  // Keras 3 vars/<i>
  auto layer_for = [&](const std::string& name) -> KerasLayer& {
    auto it = index.find(name);
    if (it != index.end()) return layers[it->second];
    index[name] = layers.size();
    layers.push_back({name, "", {}, 1e-3, {}});
    return layers.back();
  };
  std::vector<std::pair<std::string, std::pair<std::string, Tensor>>> torch_only;  // layer -> (leaf, value)
  for (auto& [key, t] : sd) {
    std::vector<std::string> parts = split(key, slash ? '/' : '.');
    if (!parts.empty() && parts[0] == "model_weights") parts.erase(parts.begin());
    if (parts.size() == 3 && parts[0] == kTorchOnlyGroup) {
      torch_only.push_back({parts[1], {parts[2], t}});
      continue;
    }
    if (parts.empty() || parts[0] == "optimizer_weights" || parts[0] == "top_level_model_weights") continue;
    if (parts[0] == "layers" || parts[0] == "_layer_checkpoint_dependencies") {
      // Keras 3: layers/<name>/vars/<i> (nested models: the innermost layer's name).
      TB_CHECK(parts.size() >= 4 && parts[parts.size() - 2] == "vars", FormatError, "nn: style: Keras 3 key '", key,
               "' is not layers/<name>/vars/<i>");
      const std::string& lname = parts[parts.size() - 3];
      char* end = nullptr;
      long i = std::strtol(parts.back().c_str(), &end, 10);
      TB_CHECK(end && *end == 0 && i >= 0 && i < 64, FormatError, "nn: style: Keras 3 key '", key,
               "' has a bad variable index");
      layer_for(lname);
      numbered[lname].emplace_back(int(i), t);
      continue;
    }
    if (parts.size() >= 3 && parts[parts.size() - 2] == "vars") {
      // Keras 3 subclassed models: <attribute>[/<attribute>...]/vars/<i>, layers named by the
      // attribute path ("hidden", "encoder.dense"), classes found from the variables' shapes below.
      char* end = nullptr;
      long i = std::strtol(parts.back().c_str(), &end, 10);
      TB_CHECK(end && *end == 0 && i >= 0 && i < 64, FormatError, "nn: style: Keras 3 key '", key,
               "' has a bad variable index");
      std::string lname;
      for (size_t p = 0; p + 2 < parts.size(); ++p)
        if (parts[p] != "layers") lname += (lname.empty() ? "" : ".") + parts[p];
      layer_for(lname);
      numbered[lname].emplace_back(int(i), t);
      continue;
    }
    TB_CHECK(parts.size() >= 2, FormatError, "nn: style: key '", key,
             "' is not a Keras weight path <layer>/.../<weight>");
    layer_for(parts[0]).weights.emplace_back(strip_colon_index(parts.back()), t);
  }
  // Keras 3 numbered variables: name them by shape.
  for (auto& [lname, vars] : numbered) {
    std::sort(vars.begin(), vars.end(), [](auto& a, auto& b) { return a.first < b.first; });
    KerasLayer& L = layer_for(lname);
    if (vars.size() == 4 && std::all_of(vars.begin(), vars.end(), [](auto& v) { return v.second.dim() == 1; })) {
      const char* names[] = {"gamma", "beta", "moving_mean", "moving_variance"};
      for (size_t i = 0; i < 4; ++i) L.weights.emplace_back(names[i], vars[i].second);
    } else {
      for (size_t i = 0; i < vars.size(); ++i)
        L.weights.emplace_back(i == 0 ? "kernel" : i == 1 ? "bias" : str("var", i), vars[i].second);
    }
  }
  for (auto& L : layers) {
    const Tensor* k = L.weight("kernel");
    if (L.weight("gamma") || L.weight("moving_mean"))
      L.class_name = "BatchNormalization";
    else if (k && k->dim() == 2)
      L.class_name = "Dense";
    else if (k && k->dim() == 4)
      L.class_name = "Conv2D";
  }
  // Keras 3 objects are named by class ("batch_normalization"); our writer keeps the layer name in
  // the attribute layers/<object>/vars/name.
  std::map<std::string, std::string> object_of;
  for (const auto& [k, v] : sd.metadata) {
    const std::string suffix = "/vars/name";
    if (k.rfind("layers/", 0) != 0 || k.size() <= suffix.size() ||
        k.compare(k.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    std::string obj = k.substr(0, k.size() - suffix.size());
    object_of[v] = obj.substr(obj.rfind('/') + 1);
  }
  for (auto& [lname, value] : torch_only) {
    auto it = index.find(lname);
    if (it == index.end() && object_of.count(lname)) it = index.find(object_of[lname]);
    TB_CHECK(it != index.end(), KeyError, "nn: style: '", kTorchOnlyGroup, "/", lname, "/", value.first,
             "' belongs to no Keras layer with weights");
    layers[it->second].torch_only.push_back(value);
  }
  if (!layer_order.empty()) {
    std::vector<KerasLayer> ordered;
    for (auto& n : layer_order) {
      auto it = index.find(n);
      if (it != index.end())
        ordered.push_back(layers[it->second]);
      else
        ordered.push_back({n, "", {}, 1e-3, {}});  // weightless layer named in the list (Flatten, Dropout)
    }
    for (auto& L : layers)
      TB_CHECK(std::find(layer_order.begin(), layer_order.end(), L.name) != layer_order.end(), KeyError,
               "nn: style: Keras layer '", L.name, "' holds weights but is not in the layer list");
    layers = std::move(ordered);
  } else if (!object_of.empty()) {
    // Without a layer list, a Keras 3 layer goes by its own name (vars/name: "hidden"), not its
    // class-based object name ("dense"), when those names are unique and clash with no object.
    std::map<std::string, std::string> name_of;  // object -> layer name
    std::set<std::string> taken;
    bool unique = true;
    for (const auto& [name, obj] : object_of) {
      unique = unique && name_of.emplace(obj, name).second && taken.insert(name).second;
    }
    for (const auto& L : layers)
      if (!name_of.count(L.name)) unique = unique && taken.insert(L.name).second;
    if (unique)
      for (auto& L : layers)
        if (auto it = name_of.find(L.name); it != name_of.end()) L.name = it->second;
  }
  return layers;
}

StateDict keras_to_torch(const std::vector<KerasLayer>& layers, const StyleOptions& opts) {
  StateDict out;
  size_t k = 0;
  int64_t last_conv_channels = 0;  // > 0 while the activations are a conv feature map
  for (const KerasLayer& L : layers) {
    if (L.weights.empty()) {
      if (L.class_name == "GlobalAveragePooling2D" || L.class_name == "GlobalMaxPooling2D") last_conv_channels = 0;
      continue;
    }
    TB_CHECK(opts.names.empty() || k < opts.names.size(), KeyError, "nn: style: ", opts.names.size(),
             " torch names given but Keras layer '", L.name, "' is weighted layer number ", k + 1);
    const std::string prefix = opts.names.empty() ? L.name : opts.names[k];
    ++k;
    auto key = [&](const char* w) { return prefix.empty() ? std::string(w) : prefix + "." + w; };
    auto need = [&](const char* w) -> const Tensor& {
      const Tensor* t = L.weight(w);
      TB_CHECK(t, KeyError, "nn: style: Keras ", L.class_name, " layer '", L.name, "' has no '", w, "' weight");
      return *t;
    };
    if (L.class_name == "Dense") {
      const Tensor& kern = need("kernel");
      TB_CHECK(kern.dim() == 2, ShapeError, "nn: style: Dense '", L.name, "' kernel ", kern.describe(), " is not 2-D");
      Tensor w = kern.transpose(0, 1);  // (out, in)
      const int64_t in = kern.shape()[0], outf = kern.shape()[1];
      if (last_conv_channels > 0) {
        auto [H, W] = flatten_hw(in, last_conv_channels, opts, L.name);
        // rows (h, w, c) -> columns (c, h, w)
        w = kern.reshape({H, W, last_conv_channels, outf}).permute({3, 2, 0, 1}).reshape({outf, in});
        last_conv_channels = 0;
      }
      out.insert(key("weight"), owned(w));
      if (const Tensor* b = L.weight("bias")) out.insert(key("bias"), owned(*b));
    } else if (L.class_name == "Conv2D") {
      const Tensor& kern = need("kernel");
      out.insert(key("weight"), owned(kern.permute({3, 2, 0, 1})));
      if (const Tensor* b = L.weight("bias")) out.insert(key("bias"), owned(*b));
      last_conv_channels = kern.shape()[3];
    } else if (L.class_name == "BatchNormalization") {
      const Tensor& mean = need("moving_mean");
      if (const Tensor* g = L.weight("gamma")) out.insert(key("weight"), owned(*g));
      if (const Tensor* b = L.weight("beta")) out.insert(key("bias"), owned(*b));
      out.insert(key("running_mean"), owned(mean));
      out.insert(key("running_var"), owned(need("moving_variance")));
      bool kept = false;
      for (auto& [leaf, t] : L.torch_only) kept = kept || leaf == "num_batches_tracked";
      if (opts.synthesize_num_batches_tracked && !kept)
        out.insert(key("num_batches_tracked"), Tensor::zeros(DType::I64, {}));
      out.metadata[key("eps")] = fmt_eps(L.epsilon);
    } else {
      std::string names;
      for (auto& [n, t] : L.weights) names += (names.empty() ? "" : ", ") + n + " " + t.describe();
      throw UnsupportedError(str("nn: style: Keras layer '", L.name, "' (",
                                 L.class_name.empty() ? "unknown class" : L.class_name, ", weights ", names,
                                 ") has no PyTorch mapping; supported: Dense, Conv2D, BatchNormalization"));
    }
    for (auto& [leaf, t] : L.torch_only) out.set(key(leaf.c_str()), owned(t));
  }
  TB_CHECK(opts.names.empty() || k == opts.names.size(), KeyError, "nn: style: ", opts.names.size(),
           " torch names given for ", k, " Keras layers with weights");
  return out;
}

std::vector<KerasLayer> torch_to_keras(const StateDict& sd, const StyleOptions& opts) {
  // Group keys by module prefix, in order.
  std::vector<std::pair<std::string, std::vector<std::pair<std::string, Tensor>>>> groups;
  for (auto& [key, t] : sd) {
    size_t dot = key.rfind('.');
    std::string prefix = dot == std::string::npos ? "" : key.substr(0, dot);
    std::string leaf = dot == std::string::npos ? key : key.substr(dot + 1);
    if (groups.empty() || groups.back().first != prefix) groups.push_back({prefix, {}});
    groups.back().second.emplace_back(leaf, t);
  }
  std::vector<KerasLayer> out;
  int64_t last_conv_channels = 0;
  size_t k = 0;
  for (auto& [prefix, ws] : groups) {
    auto get = [&](const char* n) -> const Tensor* {
      for (auto& [l, t] : ws)
        if (l == n) return &t;
      return nullptr;
    };
    TB_CHECK(opts.names.empty() || k < opts.names.size(), KeyError, "nn: style: ", opts.names.size(),
             " Keras names given but torch module '", prefix, "' is weighted module number ", k + 1);
    KerasLayer L;
    L.name = !opts.names.empty() ? opts.names[k] : prefix.empty() ? "layer" : prefix;
    if (opts.names.empty() && !L.name.empty() && std::isdigit(uint8_t(L.name[0]))) L.name = "layer_" + L.name;
    std::replace(L.name.begin(), L.name.end(), '.', '_');
    ++k;
    const Tensor* w = get("weight");
    const Tensor* b = get("bias");
    std::string what;
    for (auto& [l, t] : ws) what += (what.empty() ? "" : ", ") + l + " " + t.describe();
    if (get("running_mean")) {
      L.class_name = "BatchNormalization";
      if (w) L.weights.emplace_back("gamma", owned(*w));
      if (b) L.weights.emplace_back("beta", owned(*b));
      const Tensor* var = get("running_var");
      TB_CHECK(var, KeyError, "nn: style: BatchNorm '", prefix, "' has running_mean but no running_var");
      L.weights.emplace_back("moving_mean", owned(*get("running_mean")));
      L.weights.emplace_back("moving_variance", owned(*var));
      if (const Tensor* n = get("num_batches_tracked")) L.torch_only.emplace_back("num_batches_tracked", owned(*n));
      L.epsilon = opts.torch_bn_eps;
      auto it = sd.metadata.find(prefix.empty() ? "eps" : prefix + ".eps");
      if (it != sd.metadata.end()) L.epsilon = std::strtod(it->second.c_str(), nullptr);
    } else if (w && w->dim() == 2) {
      L.class_name = "Dense";
      const int64_t outf = w->shape()[0], in = w->shape()[1];
      Tensor kern = w->transpose(0, 1);
      if (last_conv_channels > 0) {
        auto [H, W] = flatten_hw(in, last_conv_channels, opts, prefix);
        // columns (c, h, w) -> rows (h, w, c)
        kern = w->reshape({outf, last_conv_channels, H, W}).permute({2, 3, 1, 0}).reshape({in, outf});
        last_conv_channels = 0;
      }
      L.weights.emplace_back("kernel", owned(kern));
      if (b) L.weights.emplace_back("bias", owned(*b));
    } else if (w && w->dim() == 4) {
      L.class_name = "Conv2D";
      L.weights.emplace_back("kernel", owned(w->permute({2, 3, 1, 0})));
      if (b) L.weights.emplace_back("bias", owned(*b));
      last_conv_channels = w->shape()[0];
    } else {
      throw UnsupportedError(str("nn: style: torch module '", prefix, "' (", what,
                                 ") has no Keras mapping; supported: Linear, Conv2d, BatchNorm1d/2d"));
    }
    for (auto& [l, t] : ws)
      TB_CHECK(l == "weight" || l == "bias" || l == "running_mean" || l == "running_var" || l == "num_batches_tracked",
               UnsupportedError, "nn: style: torch key '", prefix, ".", l, "' of a ", L.class_name,
               " has no Keras counterpart");
    out.push_back(std::move(L));
  }
  TB_CHECK(opts.names.empty() || k == opts.names.size(), KeyError, "nn: style: ", opts.names.size(),
           " Keras names given for ", k, " torch modules with weights");
  return out;
}

StateDict keras_layers_to_state_dict(const std::vector<KerasLayer>& layers) {
  StateDict out;
  std::string names;
  for (auto& L : layers) {
    names += (names.empty() ? "" : ",") + L.name;
    for (auto& [n, t] : L.weights) out.insert(L.name + "/" + L.name + "/" + n + ":0", t);
    if (L.class_name == "BatchNormalization") out.metadata["keras.epsilon." + L.name] = fmt_eps(L.epsilon);
  }
  for (auto& L : layers)
    for (auto& [leaf, t] : L.torch_only) out.insert(str(kTorchOnlyGroup, "/", L.name, "/", leaf), t);
  out.metadata["keras.layer_names"] = names;
  return out;
}

StateDict convert_style(const StateDict& sd, const std::string& to_style, const StyleOptions& opts) {
  if (to_style == "torch" || to_style == "pytorch") {
    std::vector<std::string> order;
    auto it = sd.metadata.find("keras.layer_names");
    if (it != sd.metadata.end()) order = split(it->second, ',');
    std::vector<KerasLayer> layers = keras_layers_from_state_dict(sd, order);
    for (auto& L : layers) {
      auto e = sd.metadata.find("keras.epsilon." + L.name);
      if (e != sd.metadata.end()) L.epsilon = std::strtod(e->second.c_str(), nullptr);
    }
    return keras_to_torch(layers, opts);
  }
  if (to_style == "keras") return keras_layers_to_state_dict(torch_to_keras(sd, opts));
  throw UnsupportedError(str("nn: unknown style '", to_style, "'; choices: torch, keras"));
}

std::vector<std::string> weighted_layer_prefixes(Module& m) {
  std::vector<std::string> out;
  for (auto& [path, mod] : m.named_modules()) {
    bool own = false;
    for (auto& [k, t] : mod->state_dict())
      if (k.find('.') == std::string::npos) own = true;
    if (own) out.push_back(path);
  }
  return out;
}

int apply_style_metadata(Module& m, const Metadata& md) {
  int n = 0;
  for (auto& [path, mod] : m.named_modules())
    if (auto* bn = dynamic_cast<BatchNorm*>(mod.get())) {
      auto it = md.find(path.empty() ? "eps" : path + ".eps");
      if (it != md.end()) {
        bn->eps = std::strtod(it->second.c_str(), nullptr);
        ++n;
      }
    }
  return n;
}

}  // namespace tb::nn
