// Keras HDF5 layouts: every real Keras file reads with the right layers and values, and what we write
// in the keras-h5 / keras3-h5 layouts is accepted by Keras itself and predicts exactly the original.
#include "tests/support.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "formats/h5.h"
#include "tensor/io.h"

using namespace tb;
using namespace tbtest;

namespace {

Checkpoint load_file(const fs::path& p) { return load_h5(Source::from_path(p)); }

/** "hidden/kernel:0" -> "kernel" */
std::string leaf(const std::string& name) {
  std::string s = name.substr(name.rfind('/') + 1);
  return s.substr(0, s.find(':'));
}

std::string info_of(const Checkpoint& c, const std::string& k) {
  for (const auto& [a, b] : c.info)
    if (a == k) return b;
  return {};
}

/** Our view of a file: one line per tensor and per Keras layer, in the same format as kReference. */
std::vector<std::string> our_lines(const Checkpoint& c) {
  std::vector<std::string> out;
  std::set<std::string> tensors;
  for (const auto& [k, t] : c.state_dict()) {
    Tensor x = t.contiguous();
    tensors.insert(
        str("T ", k, "|", dtype_name(t.dtype()), "|", py_shape(t.shape()), "|", crc32(x.data(), x.nbytes())));
  }
  out.assign(tensors.begin(), tensors.end());
  std::string layout = info_of(c, "layout");
  std::vector<std::string> layers;
  if (layout != "plain") {
    for (const auto& l : keras_layers(c)) {
      std::string names;
      for (const auto& w : l.weights) names += (names.empty() ? "" : ",") + w.name;
      layers.push_back("L " + l.name + "|" + names);
    }
  }
  if (layout == "keras3") std::sort(layers.begin(), layers.end());
  out.insert(out.end(), layers.begin(), layers.end());
  return out;
}

// h5py (Debian h5py 3.7) view of the same files: every numeric dataset, then the Keras layers as Keras'
// own loaders find them (layer_names / weight_names with the split-attribute rule; Keras 3 vars groups).
const char* kReference = R"PY(
import sys, zlib, h5py, numpy as np
def strs(a):
    return [x.decode('utf8') if isinstance(x, bytes) else str(x) for x in np.atleast_1d(a)] if np.asarray(a).dtype.kind in 'SUO' else []
def attr(g, name):
    if name in g.attrs:
        return strs(g.attrs[name])
    out, i = [], 0
    while '%s%d' % (name, i) in g.attrs:
        out += strs(g.attrs['%s%d' % (name, i)]); i += 1
    return out
for fn in sys.argv[1:]:
    print('FILE ' + fn)
    with h5py.File(fn, 'r') as f:
        t = []
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind not in 'SUO':
                x = np.ascontiguousarray(obj[()])
                dt = obj.attrs.get('dtype')
                dn = dt if dt == 'bfloat16' else x.dtype.name
                t.append('T %s|%s|%s|%d' % (name, dn, tuple(obj.shape), zlib.crc32(x.tobytes())))
        f.visititems(visit)
        for l in sorted(t): print(l)
        g = f if 'layer_names' in f.attrs else (f['model_weights'] if 'model_weights' in f and 'layer_names' in f['model_weights'].attrs else None)
        if g is not None:
            for ln in attr(g, 'layer_names'):
                print('L %s|%s' % (ln, ','.join(attr(g[ln], 'weight_names'))))
        elif 'layers' in f:
            ls = []
            def v3(name, obj):
                if isinstance(obj, h5py.Group) and name.startswith('layers/') and name.endswith('/vars') and len(obj):
                    ls.append('L %s|%s' % (name[:-5], ','.join(sorted(obj.keys(), key=int))))
            f.visititems(v3)
            for l in sorted(ls): print(l)
)PY";

std::map<std::string, std::vector<std::string>> reference(const std::vector<std::string>& files) {
  return python_lines_by_file(Peer::Torch, kReference, files);
}

/** Minimal .npy reader for little-endian float32 C-order arrays (expected values). */
Tensor read_npy_f32(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(bytes.size() > 10);
  size_t hlen = uint8_t(bytes[8]) | (size_t(uint8_t(bytes[9])) << 8);
  std::string header = bytes.substr(10, hlen);
  REQUIRE(header.find("'<f4'") != std::string::npos);
  REQUIRE(header.find("'fortran_order': False") != std::string::npos);
  auto open = header.find('(', header.find("'shape'"));
  auto close = header.find(')', open);
  Shape shape;
  std::stringstream ss(header.substr(open + 1, close - open - 1));
  std::string item;
  while (std::getline(ss, item, ','))
    if (item.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(item));
  size_t n = size_t(checked_numel(shape)) * 4;
  REQUIRE(bytes.size() == 10 + hlen + n);
  return Tensor::from_bytes(DType::F32, shape, bytes.data() + 10 + hlen, n);
}

// Runs Keras on files we wrote: "<arch>=<path>" with arch mlp or cnn; prints EXACT when the model
// predicts exactly the output Keras itself produced from the original weights.
const char* kPredict = R"PY(
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3"); os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0"); os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
import numpy as np
fx, kind, files = sys.argv[1], sys.argv[2], sys.argv[3:]
if kind == "keras2":
    import tf_keras as K
else:
    import keras as K
def build(arch):
    if arch == "mlp":
        return K.Sequential([K.Input(shape=(20,)), K.layers.Dense(256, activation="relu", name="hidden"),
                             K.layers.Dense(10, name="out")], name="mlp")
    if arch == "bf16":
        return K.Sequential([K.Input(shape=(2,)), K.layers.Dense(3, dtype="bfloat16", name="d")], name="b")
    return K.Sequential([K.Input(shape=(8, 8, 3)), K.layers.Conv2D(4, 3, name="conv"), K.layers.BatchNormalization(name="bn"),
                         K.layers.Flatten(name="flat"), K.layers.Dense(5, name="fc")], name="cnn")
for spec in files:
    arch, path = spec.split("=", 1)
    m = build(arch)
    m.load_weights(path)
    if arch == "bf16":
        ref = build(arch); ref.load_weights(os.path.join(fx, "h5_extra/bf16.weights.h5"))
        same = all(np.array_equal(np.asarray(a).view(np.uint16), np.asarray(b).view(np.uint16)) for a, b in zip(m.get_weights(), ref.get_weights()))
        print(spec, "EXACT" if same else "DIFF")
        continue
    X = np.load(os.path.join(fx, "keras/mlp_X.npy" if arch == "mlp" else "h5_extra/cnn_X.npy"))
    Y = np.load(os.path.join(fx, "keras/mlp_%s_Y.npy" % kind if arch == "mlp" else "h5_extra/cnn_%s_Y.npy" % kind))
    out = np.asarray(m(X, training=False))
    print(spec, "EXACT" if np.array_equal(out, Y) else "DIFF max %g" % np.abs(out - Y).max())
)PY";

void expect_exact(const std::string& kind, const std::vector<std::string>& specs) {
  std::vector<std::string> argv{fixture(".").string(), kind};
  argv.insert(argv.end(), specs.begin(), specs.end());
  RunResult r = python(Peer::Peers, kPredict, argv);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  for (const auto& s : specs) CHECK(r.output.find(s + " EXACT") != std::string::npos);
}

// Group/attribute/dataset structure as h5py sees it (attribute type details included), one line each.
const char* kStructure = R"PY(
import sys, h5py, numpy as np
def tinfo(obj_id, name):
    a = h5py.h5a.open(obj_id, name.encode())
    t = a.get_type(); s = a.get_space()
    if isinstance(t, h5py.h5t.TypeStringID):
        d = 'str vlen=%s cset=%d pad=%d' % (t.is_variable_str(), t.get_cset(), t.get_strpad())
    else:
        d = 'class=%d size=%d' % (t.get_class(), t.get_size())
    return '%s shape=%s' % (d, s.shape)
def dump(fn, skip):
    out = []
    with h5py.File(fn, 'r') as f:
        def skipped(name):
            return any(name == s or name.startswith(s + '/') for s in skip)
        def visit(name, obj):
            if skipped(name):
                return
            kind = 'D %s %s' % (obj.dtype.str, obj.shape) if isinstance(obj, h5py.Dataset) else 'G'
            out.append('%s %s' % (name, kind))
            for a in obj.attrs:
                if (name + '@' + a) not in skip and not skipped(name):
                    out.append('%s@%s %s = %r' % (name, a, tinfo(obj.id, a), obj.attrs[a].tolist() if hasattr(obj.attrs[a], 'tolist') else obj.attrs[a]))
        for a in f.attrs:
            out.append('/@%s %s = %r' % (a, tinfo(f.id, a), f.attrs[a].tolist() if hasattr(f.attrs[a], 'tolist') else f.attrs[a]))
        f.visititems(visit)
    return sorted(out)
ours, theirs, skip = sys.argv[1], sys.argv[2], set(sys.argv[3:])
a, b = dump(ours, skip), dump(theirs, skip)
if a != b:
    print('DIFFERENT'); print('\n'.join(sorted(set(a) ^ set(b)))); sys.exit(1)
print('SAME %d lines' % len(a))
)PY";

void expect_same_structure(const fs::path& ours, const fs::path& theirs, const std::vector<std::string>& skip = {}) {
  std::vector<std::string> argv{ours.string(), theirs.string()};
  argv.insert(argv.end(), skip.begin(), skip.end());
  RunResult r = python(Peer::Torch, kStructure, argv);
  INFO(ours.string() << " vs " << theirs.string() << "\n" << r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("SAME") != std::string::npos);
}

}  // namespace

TEST_CASE("every Keras fixture reads with the layers, names, shapes, dtypes and values Keras and h5py see", "[keras]") {
  std::vector<std::string> files;
  for (const char* dir : {"shared/keras_h5", "shared/keras3_weights_h5", "keras", "h5_extra"})
    for (const auto& e : fs::directory_iterator(fixture(dir))) {
      std::string name = e.path().filename().string();
      bool h5 = name.find(".h5") != std::string::npos || name.find(".hdf5") != std::string::npos ||
                name.find(".keras") != std::string::npos;
      if (h5 && name.rfind("hostile", 0) != 0) files.push_back(e.path().string());
    }
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 20);
  auto ref = reference(files);
  for (const auto& f : files) {
    INFO(f);
    Checkpoint c = load_file(f);
    CHECK(our_lines(c) == ref[f]);
    CHECK(c.state_dict().size() > 0);
  }
}

TEST_CASE("Keras layouts are detected and the writer details reach info and metadata", "[keras]") {
  struct Case {
    const char* file;
    const char* layout;
    const char* version;
    const char* backend;
  };
  for (const Case& k :
       {Case{"shared/keras_h5/keras1_weights_only_cnn_W_b_naming.h5", "keras", "", ""},
        Case{"shared/keras_h5/keras213_theano_backend_conv2d.h5", "keras-full", "2.1.3", "theano"},
        Case{"shared/keras_h5/tfkeras2110_h5_with_dot_keras_extension.keras", "keras-full", "2.11.0", "tensorflow"},
        Case{"shared/keras_h5/tfkeras240_weights_only_lstm.h5", "keras", "2.4.0", "tensorflow"},
        Case{"shared/keras3_weights_h5/keras3_conv2d_dense_with_optimizer.weights.h5", "keras3", "", ""},
        Case{"keras/mlp_keras3_legacy_full.h5", "keras-full", "3.", "tensorflow"},
        Case{"h5/plain.h5", "plain", "", ""}}) {
    INFO(k.file);
    Checkpoint c = load_file(fixture(k.file));
    CHECK(info_of(c, "layout") == k.layout);
    CHECK(info_of(c, "keras_version").substr(0, std::string(k.version).size()) == k.version);
    CHECK(info_of(c, "backend") == k.backend);
  }
  // Keras 1 names, Theano names without ":0", nested LSTM cell names: all resolved through weight_names.
  auto k1 = keras_layers(load_file(fixture("shared/keras_h5/keras1_weights_only_cnn_W_b_naming.h5")));
  REQUIRE(!k1.empty());
  CHECK(k1[0].name == "convolution2d_1");
  CHECK(k1[0].weights.at(0).name == "convolution2d_1_W:0");
  auto th = keras_layers(load_file(fixture("shared/keras_h5/keras213_theano_backend_conv2d.h5")));
  CHECK(th.at(0).weights.at(0).key == "model_weights/conv2d_1/conv2d_1/kernel");
  auto lstm = keras_layers(load_file(fixture("shared/keras_h5/tfkeras240_weights_only_lstm.h5")));
  bool nested = false;
  for (const auto& l : lstm)
    for (const auto& w : l.weights) nested |= w.name.find("lstm_cell") != std::string::npos;
  CHECK(nested);
  // Weightless layers stay in the structure (Keras counts only layers with weights when loading).
  auto res = keras_layers(load_file(fixture("shared/keras_h5/tfkeras224_weights_only_toyresnet.h5")));
  CHECK(std::any_of(res.begin(), res.end(), [](const KerasLayer& l) { return l.weights.empty(); }));
  // Optimizer state of a full model is readable; model_config is kept as JSON text.
  Checkpoint adam = load_file(fixture("shared/keras_h5/tfkeras240_full_model_with_adam_optimizer.hdf5"));
  Tensor iter = adam.state_dict().at("optimizer_weights/Adam/iter:0");
  CHECK(iter.dtype() == DType::I64);
  CHECK(iter.dim() == 0);
  CHECK(adam.metadata.at("model_config").rfind("{\"class_name\": \"Functional\"", 0) == 0);
  // Keras 3 bfloat16 variables come back as bfloat16 (dtype attribute honoured).
  Checkpoint bf = load_file(fixture("h5_extra/bf16.weights.h5"));
  Tensor k = bf.state_dict().at("layers/dense/vars/0");
  CHECK(k.dtype() == DType::BF16);
  CHECK(k.to(DType::F32).to_vector<float>() ==
        std::vector<float>{1, 2, 3, -0.5f, 0.25f, bf16_bits_to_f32(f32_to_bf16_bits(1e-3f))});
}

TEST_CASE("seed MLP written by tf_keras: layer structure and kernels = torch weights transposed", "[keras]") {
  Checkpoint c = load_file(fixture("keras/mlp_keras2.h5"));
  auto layers = keras_layers(c);
  REQUIRE(layers.size() == 2);
  CHECK(layers[0].name == "hidden");
  CHECK(layers[1].name == "out");
  REQUIRE(layers[0].weights.size() == 2);
  CHECK(layers[0].weights[0].name == "hidden/kernel:0");
  CHECK(layers[0].weights[0].key == "hidden/hidden/kernel:0");
  CHECK(layers[0].weights[1].name == "hidden/bias:0");
  CHECK(equal(layers[0].weights[0].tensor,
              read_npy_f32(fixture("torch/mlp_weights/hidden.weight.npy")).transpose(0, 1).contiguous()));
  CHECK(equal(layers[1].weights[0].tensor,
              read_npy_f32(fixture("torch/mlp_weights/out.weight.npy")).transpose(0, 1).contiguous()));
  CHECK(equal(layers[1].weights[1].tensor, read_npy_f32(fixture("torch/mlp_weights/out.bias.npy"))));
  // The same weights in the full model and in Keras 3's file.
  auto full = keras_layers(load_file(fixture("keras/mlp_keras2_full.h5")));
  REQUIRE(full.size() == 2);
  CHECK(equal(full[0].weights[0].tensor, layers[0].weights[0].tensor));
  auto k3 = keras_layers(load_file(fixture("keras/mlp.weights.h5")));
  REQUIRE(k3.size() == 2);
  CHECK(k3[0].name == "layers/dense");
  CHECK(equal(k3[1].weights[0].tensor, layers[1].weights[0].tensor));
  // Keras 3 object names say nothing about order; the file's creation order does.
  auto cnn3 = keras_layers(load_file(fixture("h5_extra/cnn.weights.h5")));
  REQUIRE(cnn3.size() == 3);
  CHECK(cnn3[0].name == "layers/conv2d");
  CHECK(cnn3[1].name == "layers/batch_normalization");
  CHECK(cnn3[2].name == "layers/dense");
}

TEST_CASE("keras_layers from plain names: layer.weight and layer/weight, in dict order", "[keras]") {
  StateDict sd;
  sd.insert("features.0.kernel", Tensor::zeros(DType::F32, {2, 2}));
  sd.insert("features.0.bias", Tensor::zeros(DType::F32, {2}));
  sd.insert("fc/fc/kernel:0", Tensor::zeros(DType::F32, {2, 1}));
  auto layers = keras_layers(Checkpoint::from_state_dict(sd));
  REQUIRE(layers.size() == 2);
  CHECK(layers[0].name == "features_0");
  CHECK(layers[0].weights[1].name == "bias");
  CHECK(layers[1].name == "fc");
  CHECK(layers[1].weights[0].name == "fc/kernel:0");
  StateDict bad;
  bad.insert("lonely", Tensor::zeros(DType::F32, {1}));
  CHECK_THROWS_AS(keras_layers(Checkpoint::from_state_dict(bad)), UnsupportedError);  // roundtrip: "cannot hold"
}

TEST_CASE("keras-h5 we write: tf_keras load_weights predicts exactly, structure equals tf_keras's file", "[keras]") {
  TempDir dir;
  auto write = [&](const Checkpoint& c, const std::string& name, const char* fmt) {
    save(c, dir / name, fmt);
    return (dir / name).string();
  };
  Checkpoint mlp = load_file(fixture("keras/mlp_keras2.h5"));
  std::string a = write(mlp, "mlp.h5", "keras-h5");
  std::string b = write(load_file(fixture("h5_extra/cnn_keras2_full.h5")), "cnn_from_full.h5", "keras-h5");
  std::string c = write(load_file(fixture("h5_extra/cnn.weights.h5")), "cnn_from_keras3.h5", "keras-h5");
  std::string d = write(load_file(fixture("h5_extra/cnn_keras2.h5")), "cnn.h5", "keras-h5");
  // Plain "<layer>.<weight>" names (Keras-layout tensors, e.g. after the torch -> Keras style conversion).
  StateDict sd;
  auto layers = keras_layers(mlp);
  for (const auto& l : layers)
    for (const auto& w : l.weights) sd.insert(l.name + "." + leaf(w.name), w.tensor);
  std::string e = write(Checkpoint::from_state_dict(sd), "from_dotted.h5", "keras-h5");
  expect_exact("keras2", {"mlp=" + a, "cnn=" + b, "cnn=" + c, "cnn=" + d, "mlp=" + e});

  expect_same_structure(a, fixture("keras/mlp_keras2.h5"));
  expect_same_structure(e, fixture("keras/mlp_keras2.h5"),
                        {"tensorbridge"});  // the dotted names, kept for reading back
  expect_same_structure(d, fixture("h5_extra/cnn_keras2.h5"));
  // And the values are what we had (h5py reads them back bit-exact).
  auto ref = reference({a, d});
  CHECK(our_lines(mlp) == ref[a]);
  CHECK(our_lines(load_file(fixture("h5_extra/cnn_keras2.h5"))) == ref[d]);
}

TEST_CASE("keras3-h5 we write: keras 3 load_weights predicts exactly, structure equals Keras 3's file", "[keras]") {
  TempDir dir;
  auto write = [&](const Checkpoint& c, const std::string& name, const char* fmt) {
    save(c, dir / name, fmt);
    return (dir / name).string();
  };
  std::string a = write(load_file(fixture("keras/mlp_keras2.h5")), "from_keras2.weights.h5", "keras3-h5");
  std::string b = write(load_file(fixture("keras/mlp.weights.h5")), "mlp.weights.h5", "keras3-h5");
  std::string c = write(load_file(fixture("h5_extra/cnn_keras2.h5")), "cnn.weights.h5", "keras3-h5");
  std::string d = write(load_file(fixture("h5_extra/bf16.weights.h5")), "bf16.weights.h5", "keras3-h5");
  // The plain "h5" writer picks the Keras 3 layout for a ".weights.h5" name.
  std::string e = write(load_file(fixture("h5_extra/cnn_keras2_full.h5")), "plain_named.weights.h5", "h5");
  expect_exact("keras3", {"mlp=" + a, "mlp=" + b, "cnn=" + c, "bf16=" + d, "cnn=" + e});

  expect_same_structure(b, fixture("keras/mlp.weights.h5"));
  // A Keras 2 file has neither the model name nor the weightless layers' classes; /tensorbridge
  // (which Keras does not read) holds its tensor names and metadata.
  expect_same_structure(c, fixture("h5_extra/cnn.weights.h5"), {"vars@name", "layers/flatten", "tensorbridge"});
  expect_same_structure(d, fixture("h5_extra/bf16.weights.h5"));
}

TEST_CASE("keras-h5 splits long weight_names like Keras and reads them back in order", "[keras]") {
  StateDict sd;
  const int n = 1500;  // 1500 names of ~60 bytes > 64512 bytes: split into weight_names0, weight_names1
  for (int i = 0; i < n; ++i)
    sd.insert(str("big/big/a_rather_long_weight_name_to_overflow_the_object_header_", 1000 + i, ":0"),
              Tensor::from_vector<float>(DType::F32, {1}, {float(i)}));
  TempDir dir;
  save(Checkpoint::from_state_dict(sd), dir / "big.h5", "keras-h5");
  Checkpoint c = load_file(dir / "big.h5");
  RunResult split = python(Peer::Torch, "import sys, h5py\nprint(sorted(h5py.File(sys.argv[1], 'r')['big'].attrs))",
                           {(dir / "big.h5").string()});
  CHECK(split.output.find("['weight_names0', 'weight_names1']") != std::string::npos);
  auto layers = keras_layers(c);
  REQUIRE(layers.size() == 1);
  REQUIRE(layers[0].weights.size() == size_t(n));
  for (int i = 0; i < n; i += 97) CHECK(layers[0].weights[size_t(i)].tensor.item_as_double() == double(i));
  auto ref = reference({(dir / "big.h5").string()});
  CHECK(our_lines(c) == ref[(dir / "big.h5").string()]);
}

TEST_CASE("a Keras 2 model with trained optimizer state keeps every tensor through keras3-h5; Keras 3 loads it",
          "[keras]") {
  // Adam's step and 12 moment slots beside 8 model weights (fixtures/gen_keras_optimizer.py).
  const fs::path src = fixture("keras_optimizer/adam_full.h5");
  Checkpoint c = load_file(src);
  StateDict sd = c.state_dict();
  REQUIRE(sd.size() == 21);
  TempDir dir;
  save(c, dir / "adam.weights.h5", "keras3-h5");
  // Read back: the source's names, order, bytes and metadata (model_config, optimizer weight_names).
  Checkpoint k3 = load_file(dir / "adam.weights.h5");
  CHECK(info_of(k3, "layout") == "keras3");
  StateDict back = k3.state_dict();
  REQUIRE(back.keys() == sd.keys());
  for (const auto& [k, t] : sd) CHECK(equal(t, back.at(k)));
  CHECK(back.at("optimizer_weights/iteration:0").dtype() == DType::I64);
  CHECK(k3.metadata == c.metadata);
  // The Keras 3 layers hold the 8 model weights; the 13 optimizer tensors sit in /tensorbridge.
  RunResult h = python(Peer::Torch, R"PY(
import sys, h5py
f = h5py.File(sys.argv[1], 'r')
n = []
f.visititems(lambda k, o: n.append(k.split('/')[0]) if isinstance(o, h5py.Dataset) else None)
print('layers', n.count('layers'), 'side', n.count('tensorbridge'), 'root attrs', len(f.attrs))
)PY",
                       {(dir / "adam.weights.h5").string()});
  CHECK(h.output.find("layers 8 side 13 root attrs 0") != std::string::npos);
  // And back to the Keras 2 layout: the original full model, optimizer state included.
  save(k3, dir / "adam_back.h5", "keras-h5");
  RunResult r = python(Peer::Peers, R"PY(
import os, sys
os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
import numpy as np, keras, tf_keras
src, k3, k2 = sys.argv[1:4]
m = keras.models.load_model(src, compile=False)
ref = [np.asarray(w) for w in m.get_weights()]
for v in m.weights:
    v.assign(np.zeros(v.shape, v.dtype))
m.load_weights(k3)
print('keras3 weights', len(ref), all(np.array_equal(a, np.asarray(b)) for a, b in zip(ref, m.get_weights())))
a, b = tf_keras.models.load_model(src), tf_keras.models.load_model(k2)
ov = lambda x: [np.asarray(v) for v in x.optimizer.variables()]
print('tf_keras optimizer', len(ov(a)), all(np.array_equal(p, q) for p, q in zip(ov(a), ov(b))))
print('tf_keras weights', all(np.array_equal(p, q) for p, q in zip(a.get_weights(), b.get_weights())))
)PY",
                       {src.string(), (dir / "adam.weights.h5").string(), (dir / "adam_back.h5").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("keras3 weights 8 True") != std::string::npos);
  CHECK(r.output.find("tf_keras optimizer 13 True") != std::string::npos);
  CHECK(r.output.find("tf_keras weights True") != std::string::npos);
}

TEST_CASE("a /tensorbridge record that does not fit its file is refused, naming the file and dataset", "[keras]") {
  TempDir dir;
  save(load_file(fixture("keras_optimizer/adam_full.h5")), dir / "ok.weights.h5", "keras3-h5");
  // Three edits of our own output, as a hostile or damaged file would have them.
  RunResult r = python(Peer::Torch, R"PY(
import shutil, sys, h5py, numpy as np
d = sys.argv[1]
def text(vals):
    return [v.decode() if isinstance(v, bytes) else str(v) for v in vals]
def put(g, key, vals):
    g.attrs[key] = np.array(vals, dtype=h5py.string_dtype())
for name, edit in (('missing', lambda g: put(g, 'paths', ['layers/dense/vars/9'] + text(g.attrs['paths'])[1:])),
                   ('short', lambda g: put(g, 'names', text(g.attrs['names'])[1:])),
                   ('twice', lambda g: put(g, 'names', text(g.attrs['names'])[1:2] + text(g.attrs['names'])[1:]))):
    shutil.copy(d + '/ok.weights.h5', d + '/' + name + '.weights.h5')
    with h5py.File(d + '/' + name + '.weights.h5', 'a') as f:
        edit(f['tensorbridge'])
print('edited')
)PY",
                       {dir.path().string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(load_file(dir / "ok.weights.h5").state_dict().size() == 21);
  CHECK_THROWS_WITH(load_file(dir / "missing.weights.h5"),
                    Catch::Matchers::Contains("missing.weights.h5") &&
                        Catch::Matchers::Contains("names dataset '/layers/dense/vars/9', which is not a layer weight"));
  CHECK_THROWS_WITH(load_file(dir / "short.weights.h5"),
                    Catch::Matchers::Contains("as many dataset paths as tensor names"));
  CHECK_THROWS_WITH(load_file(dir / "twice.weights.h5"), Catch::Matchers::Contains("is given to two datasets"));
}
