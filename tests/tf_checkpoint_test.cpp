// TensorFlow checkpoint bundles written by TensorFlow itself (fixtures/gen_tf_checkpoint.py): every
// tensor equals what tf.train.load_checkpoint(prefix).get_tensor(key) gave (reference.npz), through
// every way of naming a bundle; readable names and --style torch for a tf-keras MLP; bundles we write
// read back by tf.train.load_checkpoint; damaged or hostile bundles refused with exit 1, naming the
// file and the key.
#include <algorithm>
#include <cstring>
#include <fstream>

#include "formats/registry.h"
#include "formats/tf_checkpoint.h"
#include "formats/tf_checkpoint_graph.h"
#include "formats/tf_sstable.h"
#include "tests/support.h"

using tbtest::contains;

using namespace tb;
namespace fs = std::filesystem;
using tbtest::run_cli;

namespace {

fs::path fixture(const std::string& rel) { return tbtest::fixture("tf_checkpoint/" + rel); }

std::vector<uint8_t> bytes_of(const Tensor& t) {
  std::vector<uint8_t> b(t.nbytes());
  t.copy_to(b.data());
  return b;
}

/** Checks every tensor of `sd` whose key is in reference.npz under "<case>:<key>". Returns how many. */
size_t check_against_reference(const StateDict& sd, const std::string& cas) {
  StateDict ref = load(fixture("reference.npz")).state_dict();
  size_t n = 0;
  for (const auto& [rk, rt] : ref) {
    if (rk.rfind(cas + ":", 0) != 0) continue;
    std::string key = rk.substr(cas.size() + 1);
    const bool bf16 = key.size() > 9 && key.compare(key.size() - 9, 9, ":bf16bits") == 0;
    if (bf16) key.resize(key.size() - 9);
    INFO(key);
    REQUIRE(sd.contains(key));
    const Tensor& t = sd.at(key);
    CHECK(t.shape() == rt.shape());
    if (bf16)
      CHECK(t.dtype() == DType::BF16);
    else
      CHECK(t.dtype() == rt.dtype());
    CHECK(bytes_of(t) == bytes_of(rt));
    ++n;
  }
  return n;
}

/** Copies a fixture bundle folder into dir and returns the copy's path. */
fs::path copy_bundle(const tbtest::TempDir& dir, const std::string& sub) {
  fs::path to = dir / sub;
  fs::copy(fixture(sub), to, fs::copy_options::recursive);
  return to;
}

void flip_byte(const fs::path& p, uint64_t offset) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(std::streamoff(offset));
  char c;
  f.get(c);
  f.seekp(std::streamoff(offset));
  f.put(char(c ^ 0x40));
}

std::string varint(uint64_t v) {
  std::string s;
  while (v >= 0x80) {
    s += char(uint8_t(v) | 0x80);
    v >>= 7;
  }
  return s + char(uint8_t(v));
}

/** A BundleEntryProto by hand (field numbers of tensor_bundle.proto): float32 of the given dims. */
std::string entry_proto(const std::vector<uint64_t>& dims, uint64_t offset, uint64_t size, uint32_t crc,
                        int shard = 0) {
  std::string shape;
  for (uint64_t d : dims) {
    std::string dim = "\x08" + varint(d);
    shape += "\x12" + varint(dim.size()) + dim;
  }
  std::string e = "\x08\x01";  // dtype DT_FLOAT
  e += "\x12" + varint(shape.size()) + shape;
  if (shard) e += "\x18" + varint(uint64_t(shard));
  e += "\x20" + varint(offset);
  e += "\x28" + varint(size);
  e += '\x35';
  for (int i = 0; i < 4; ++i) e += char(uint8_t(crc >> (8 * i)));
  return e;
}

/** Writes prefix.index (header + one entry "w") and prefix.data-00000-of-00001 holding data. */
void write_crafted(const fs::path& prefix, const std::string& entry, const std::string& data) {
  const std::string header = std::string("\x08\x01\x1a\x02\x08\x01", 6);  // num_shards 1, version.producer 1
  std::ofstream(prefix.string() + ".index", std::ios::binary) << write_sstable({{"", header}, {"w", entry}});
  std::ofstream(prefix.string() + ".data-00000-of-00001", std::ios::binary) << data;
}

}  // namespace

TEST_CASE("tf.train.Checkpoint of every dtype reads as TensorFlow reads it", "[tf_checkpoint]") {
  for (const fs::path& p : {fixture("vars/ckpt-1.index"), fixture("vars") / "ckpt-1", fixture("vars"),
                            fixture("vars/ckpt-1.data-00000-of-00001")}) {
    INFO(p);
    Checkpoint c = load(p);
    CHECK(c.format == "tf-checkpoint");
    std::vector<NonTensor> other;
    StateDict sd = c.state_dict({}, &other);
    CHECK(sd.size() == 17);
    CHECK(check_against_reference(sd, "vars") == 17);
    // String tensors stay as non-tensor values: the object graph and the string variable.
    REQUIRE(other.size() == 2);
    CHECK(other[0].path == "_CHECKPOINTABLE_OBJECT_GRAPH");
    CHECK(other[1].path == "name/.ATTRIBUTES/VARIABLE_VALUE");
    std::string name;
    for (const auto& [k, v] : c.root.dict_data().items)
      if (k.as_str() == "name/.ATTRIBUTES/VARIABLE_VALUE") name = v.as_str();
    CHECK(name == "hello tensorbridge");
  }
  // Without mmap, the same values from copies.
  LoadOptions o;
  o.mmap = false;
  CHECK(check_against_reference(load(fixture("vars/ckpt-1.index"), o).state_dict(), "vars") == 17);
}

TEST_CASE("tf-keras save_weights: raw keys, readable names, optimizer state kept visible", "[tf_checkpoint]") {
  StateDict raw = load(fixture("mlp")).state_dict();  // the folder: its `checkpoint` file names mlp_ckpt
  CHECK(raw.size() == 14);
  CHECK(check_against_reference(raw, "mlp") == 14);

  LoadOptions o;
  o.readable_names = true;
  Checkpoint c = load(fixture("mlp") / "mlp_ckpt", o);
  std::vector<NonTensor> other;
  StateDict sd = c.state_dict({}, &other);
  REQUIRE(sd.size() == 4);
  CHECK(sd.entries()[0].first == "layer_with_weights-0/kernel");
  CHECK(sd.entries()[1].first == "layer_with_weights-0/bias");
  CHECK(sd.entries()[2].first == "layer_with_weights-1/kernel");
  CHECK(sd.entries()[3].first == "layer_with_weights-1/bias");
  CHECK(bytes_of(sd.at("layer_with_weights-1/kernel")) ==
        bytes_of(raw.at("layer_with_weights-1/kernel/.ATTRIBUTES/VARIABLE_VALUE")));
  CHECK(other.size() == 11);  // 10 optimizer tensors (slots, iterations, learning rate) + the object graph

  auto r = run_cli({"inspect", "--readable-names", fixture("mlp").string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "optimizer/_variables/1/.ATTRIBUTES/VARIABLE_VALUE = <tf optimizer state float32[20, 256]"));
  CHECK(contains(r.output, "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"));
}

TEST_CASE("a training loop's tf.train.Checkpoint(model, optimizer): readable names start at the layers",
          "[tf_checkpoint]") {
  StateDict raw = load(fixture("train_loop")).state_dict();
  CHECK(raw.size() == 15);  // 4 weights, 10 optimizer tensors, save_counter
  CHECK(check_against_reference(raw, "train_loop") == 15);
  LoadOptions o;
  o.readable_names = true;
  std::vector<NonTensor> other;
  StateDict sd = load(fixture("train_loop"), o).state_dict({}, &other);
  REQUIRE(sd.size() == 4);
  CHECK(sd.entries()[0].first == "layer_with_weights-0/kernel");
  CHECK(
      equal(sd.at("layer_with_weights-1/bias"), raw.at("model/layer_with_weights-1/bias/.ATTRIBUTES/VARIABLE_VALUE")));
  CHECK(other.size() == 12);  // the object graph, 10 optimizer tensors, save_counter
  bool counter = false;
  for (const auto& n : other) counter = counter || n.path == "save_counter/.ATTRIBUTES/VARIABLE_VALUE";
  CHECK(counter);
  tbtest::TempDir dir;
  auto r = run_cli({"run", fixture("train_loop").string(), "--arch", "mlp:20,256,10", "--input",
                    fixture("mlp_X.npy").string(), "--output", (dir / "Y.npy").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(allclose(tbtest::load_npy_tensor(dir / "Y.npy"), tbtest::load_npy_tensor(fixture("mlp_Y.npy")), 1e-5, 1e-6));
}

TEST_CASE("a tf-keras checkpoint with --style torch gives torch Linear weights", "[tf_checkpoint]") {
  tbtest::TempDir dir;
  auto r = run_cli({"convert", fixture("mlp").string(), (dir / "mlp.safetensors").string(), "--style", "torch",
                    "--drop-non-tensors", "-q"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  StateDict out = load(dir / "mlp.safetensors").state_dict();
  StateDict raw = load(fixture("mlp")).state_dict();
  REQUIRE(out.contains("layer_with_weights-0.weight"));
  const Tensor& w = out.at("layer_with_weights-0.weight");
  CHECK(w.shape() == Shape{256, 20});
  CHECK(equal(w, raw.at("layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE").transpose(0, 1).contiguous()));
  CHECK(equal(out.at("layer_with_weights-1.bias"), raw.at("layer_with_weights-1/bias/.ATTRIBUTES/VARIABLE_VALUE")));
}

TEST_CASE("run: a tf-keras checkpoint computes what Keras computed", "[tf_checkpoint]") {
  tbtest::TempDir dir;
  auto r = run_cli({"run", fixture("mlp").string(), "--arch", "mlp:20,256,10", "--input", fixture("mlp_X.npy").string(),
                    "--output", (dir / "Y.npy").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  Tensor y = tbtest::load_npy_tensor(dir / "Y.npy"), want = tbtest::load_npy_tensor(fixture("mlp_Y.npy"));
  CHECK(y.shape() == Shape{4, 10});
  CHECK(allclose(y, want, 1e-5, 1e-6));
}

TEST_CASE("a SavedModel folder reads its variables/ bundle", "[tf_checkpoint]") {
  StateDict sd = load(fixture("saved_model")).state_dict();
  CHECK(sd.size() == 2);
  CHECK(check_against_reference(sd, "saved_model") == 2);
}

TEST_CASE("bundles we write are read by tf.train.load_checkpoint with equal values", "[tf_checkpoint]") {
  tbtest::TempDir dir;
  auto r = run_cli(
      {"convert", (fixture("vars") / "ckpt-1").string(), (dir / "out.index").string(), "--drop-non-tensors", "-q"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(fs::exists(dir / "out.data-00000-of-00001"));
  // Our own reader agrees first.
  CHECK(check_against_reference(load(dir / "out").state_dict(), "vars") == 17);
  // A second convert without --force is refused; with it the bundle is replaced.
  r = run_cli({"convert", fixture("saved_model").string(), (dir / "out").string(), "--to", "tf-checkpoint", "-q",
               "--drop-non-tensors"});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "already exists"));
  auto py = tbtest::python(tbtest::Peer::Peers, R"(
import os, sys
os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
import numpy as np, tensorflow as tf
r = tf.train.load_checkpoint(sys.argv[1])
z = np.load(sys.argv[2])
n = 0
for k in z.files:
    if not k.startswith('vars:'):
        continue
    key = k[5:].replace(':bf16bits', '')
    v = np.asarray(r.get_tensor(key))
    if k.endswith(':bf16bits'):
        v = v.view(np.uint16)
    assert v.dtype == z[k].dtype and v.shape == z[k].shape and np.array_equal(v, z[k]), k
    n += 1
print('equal', n, len(r.get_variable_to_shape_map()))
)",
                           {(dir / "out").string(), fixture("reference.npz").string()});
  INFO(py.output);
  CHECK(py.exit_code == 0);
  CHECK(contains(py.output, "equal 17 18"));  // and the object graph

  r = run_cli({"convert", fixture("saved_model").string(), (dir / "out").string(), "--to", "tf-checkpoint", "-q",
               "--drop-non-tensors", "--force"});
  REQUIRE(r.exit_code == 0);
  CHECK(check_against_reference(load(dir / "out.index").state_dict(), "saved_model") == 2);
}

TEST_CASE("bundles we write restore by object: tf.train.Checkpoint, tf.Module trees, tf-keras load_weights",
          "[tf_checkpoint]") {
  tbtest::TempDir dir;
  auto convert = [&](std::vector<std::string> args) {
    args.insert(args.begin(), "convert");
    args.push_back("-q");
    auto r = run_cli(args);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
  };
  // TensorFlow's own keys (read without --readable-names) keep their objects: the graph is rebuilt from them.
  convert({(fixture("vars") / "ckpt-1").string(), (dir / "vars.index").string(), "--drop-non-tensors"});
  // The same keys with root=inner: one more object between the root and the variables, keys unchanged.
  convert({(fixture("vars") / "ckpt-1").string(), (dir / "inner.index").string(), "--drop-non-tensors", "--option",
           "root=inner"});
  // torch names become nested objects (0.weight: 0 -> weight) under TensorFlow's keys with keys=tf.
  convert({tbtest::fixture("torch/bn1d.pt").string(), (dir / "bn1d.index").string(), "--option", "keys=tf"});
  // Readable names of a training loop's checkpoint, written back under root "model": the original keys.
  convert({fixture("train_loop").string(), (dir / "loop.index").string(), "--readable-names", "--drop-non-tensors",
           "--option", "keys=tf", "--option", "root=model"});
  // tf-keras save_weights, by readable names and by raw keys (its optimizer slots stay out of the graph).
  convert({fixture("mlp").string(), (dir / "mlp.index").string(), "--readable-names", "--drop-non-tensors", "--option",
           "keys=tf"});
  convert({fixture("mlp").string(), (dir / "mlp_raw.index").string(), "--drop-non-tensors"});
  // Names as given that are not TensorFlow keys: no object graph (TensorFlow could not use one).
  convert({tbtest::fixture("torch/bn1d.pt").string(), (dir / "plain.index").string()});

  StateDict torch = load(tbtest::fixture("torch/bn1d.pt")).state_dict();
  StateDict ours = load(dir / "bn1d").state_dict();
  CHECK(ours.size() == torch.size());
  for (const auto& [k, t] : torch) {
    std::string key = k;
    std::replace(key.begin(), key.end(), '.', '/');
    key += "/.ATTRIBUTES/VARIABLE_VALUE";
    INFO(key);
    REQUIRE(ours.contains(key));
    CHECK(bytes_of(ours.at(key)) == bytes_of(t));
  }
  auto index_keys = [](const fs::path& index) {
    LoadBudget budget(default_load_limits(), index.string());
    std::vector<std::string> keys;
    for (const auto& e : parse_tf_bundle_index(*open_file(index), budget).entries) keys.push_back(e.key);
    return keys;
  };
  std::vector<std::string> original_model_keys;
  for (const auto& k : index_keys(fixture("train_loop/ckpt-1.index")))
    if (k.rfind("model/", 0) == 0 || k == "_CHECKPOINTABLE_OBJECT_GRAPH") original_model_keys.push_back(k);
  CHECK(original_model_keys.size() == 5);
  CHECK(index_keys(dir / "loop.index") == original_model_keys);
  std::vector<std::string> original_mlp_keys;  // the model's keys of save_weights (not the optimizer's)
  for (const auto& k : index_keys(fixture("mlp/mlp_ckpt.index")))
    if (k.rfind("layer_with_weights-", 0) == 0 || k == "_CHECKPOINTABLE_OBJECT_GRAPH") original_mlp_keys.push_back(k);
  CHECK(original_mlp_keys.size() == 5);
  CHECK(index_keys(dir / "mlp.index") == original_mlp_keys);
  const std::vector<std::string> plain = index_keys(dir / "plain.index");
  CHECK(plain.size() == torch.size());
  CHECK(std::find(plain.begin(), plain.end(), "_CHECKPOINTABLE_OBJECT_GRAPH") == plain.end());

  auto py = tbtest::python(tbtest::Peer::Peers, R"(
import os, sys
os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
import numpy as np, tensorflow as tf, tf_keras
d, fixtures = sys.argv[1], sys.argv[2]

def path_of(key):
    return [c.replace('.S', '/').replace('..', '.') for c in key.split('/.ATTRIBUTES/')[0].split('/')]

def restore_modules(prefix, under=None):
    # tf.Modules nested as the keys say, holding zero variables; read() by object (write()'s counterpart:
    # no save_counter, as in TensorFlow's own write() files); bit-equal to the file's tensors.
    r = tf.train.load_checkpoint(prefix)
    dtypes, root, made = r.get_variable_to_dtype_map(), tf.Module(), {}
    for key, shape in r.get_variable_to_shape_map().items():
        if key == '_CHECKPOINTABLE_OBJECT_GRAPH':
            continue
        p, obj = path_of(key), root
        for c in p[:-1]:
            if c not in vars(obj):
                setattr(obj, c, tf.Module())
            obj = getattr(obj, c)
        made[key] = tf.Variable(tf.zeros(shape, dtype=dtypes[key]))
        setattr(obj, p[-1], made[key])
    (tf.train.Checkpoint(**{under: root}) if under else tf.train.Checkpoint(root)).read(prefix).assert_consumed()
    for key, v in made.items():
        a, b = np.asarray(v.numpy()), np.asarray(r.get_tensor(key))
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), key
    return len(made)

def mlp():
    return tf_keras.Sequential([tf_keras.layers.Dense(256, activation='relu', name='hidden', input_shape=(20,)),
                                tf_keras.layers.Dense(10, name='output')])

X, Y = np.load(os.path.join(fixtures, 'mlp_X.npy')), np.load(os.path.join(fixtures, 'mlp_Y.npy'))
print('modules', restore_modules(os.path.join(d, 'vars')), restore_modules(os.path.join(d, 'bn1d')),
      restore_modules(os.path.join(d, 'inner'), under='inner'))
m = mlp()
tf.train.Checkpoint(model=m).read(os.path.join(d, 'loop')).assert_consumed()
print('loop', np.array_equal(m(X).numpy(), Y))
m = mlp()
m.load_weights(os.path.join(d, 'mlp')).assert_consumed()
print('keras', np.array_equal(m(X).numpy(), Y))
m = mlp()
m.load_weights(os.path.join(d, 'mlp_raw')).assert_existing_objects_matched()
print('keras raw', np.array_equal(m(X).numpy(), Y))
)",
                           {dir.path().string(), fixture("").string()});
  INFO(py.output);
  CHECK(py.exit_code == 0);
  CHECK(contains(py.output, "modules 17 9 17"));
  CHECK(contains(py.output, "loop True"));
  CHECK(contains(py.output, "keras True"));
  CHECK(contains(py.output, "keras raw True"));
}

TEST_CASE("the object graph's paths: TensorFlow keys undone, other names split at '.' and '/'", "[tf_checkpoint]") {
  using V = std::vector<std::string>;
  CHECK(tf_object_path("model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE") ==
        V{"model", "layer_with_weights-0", "kernel"});
  CHECK(tf_object_path("a..b/c.Sd/.ATTRIBUTES/VARIABLE_VALUE") == V{"a.b", "c/d"});
  CHECK(tf_object_path("layer1.0.conv1.weight") == V{"layer1", "0", "conv1", "weight"});
  CHECK(tf_object_path("dense/kernel") == V{"dense", "kernel"});
  CHECK(tf_object_path("a..b") == V{"a..b"});
  CHECK(tf_object_path("m/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE").empty());
  CHECK(tf_object_path("m/.ATTRIBUTES/OBJECT_CONFIG_JSON").empty());
  CHECK(tf_key_for_path({"a.b", "c/d"}) == "a..b/c.Sd/.ATTRIBUTES/VARIABLE_VALUE");
  tbtest::TempDir dir;
  auto r = run_cli(
      {"convert", tbtest::fixture("torch/bn1d.pt").string(), (dir / "x.index").string(), "--option", "keys=keras"});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "option keys='keras': expected one of given, tf"));
}

TEST_CASE("damaged and hostile bundles are refused with exit 1, naming the file and key", "[tf_checkpoint]") {
  tbtest::TempDir dir;
  auto refused = [](const fs::path& p, const std::vector<std::string>& parts) {
    auto r = run_cli({"inspect", p.string()});
    INFO(r.output);
    CHECK(r.exit_code == 1);
    for (const auto& part : parts) CHECK(contains(r.output, part));
  };
  SECTION("a bad CRC in an index block") {
    fs::path b = copy_bundle(dir, "vars");
    flip_byte(b / "ckpt-1.index", 20);
    refused(b / "ckpt-1.index", {"ckpt-1.index", "CRC-32C mismatch in the data block 0"});
  }
  SECTION("a bad CRC in the data") {
    fs::path b = copy_bundle(dir, "vars");
    flip_byte(b / "ckpt-1.data-00000-of-00001", fs::file_size(b / "ckpt-1.data-00000-of-00001") - 1);
    refused(b / "ckpt-1", {"ckpt-1.data-00000-of-00001", "tensor '", "CRC-32C mismatch"});
  }
  SECTION("a truncated index") {
    fs::path b = copy_bundle(dir, "vars");
    fs::resize_file(b / "ckpt-1.index", fs::file_size(b / "ckpt-1.index") - 10);
    refused(b / "ckpt-1.index", {"ckpt-1.index", "magic"});
  }
  SECTION("a truncated data shard: offsets past its end") {
    fs::path b = copy_bundle(dir, "vars");
    fs::resize_file(b / "ckpt-1.data-00000-of-00001", 100);
    refused(b / "ckpt-1.index", {"ckpt-1.data-00000-of-00001", "tensor '", "runs past the data shard's end at 100"});
  }
  SECTION("an offset past the data's end") {
    write_crafted(dir / "c", entry_proto({2}, 1000, 8, 0), std::string(8, '\0'));
    refused(dir / "c.index", {"c.data-00000-of-00001", "tensor 'w'", "runs past the data shard's end"});
  }
  SECTION("a huge shape") {
    write_crafted(dir / "c", entry_proto({uint64_t(1) << 40, uint64_t(1) << 40}, 0, 8, 0), std::string(8, '\0'));
    refused(dir / "c.index", {"c.index", "tensor 'w'", "overflows"});
    write_crafted(dir / "c", entry_proto({uint64_t(1) << 30}, 0, 8, 0), std::string(8, '\0'));
    refused(dir / "c.index", {"c.index", "tensor 'w'", "needs 4294967296 bytes but its entry says 8"});
  }
  SECTION("a data shard that is a symbolic link out of the folder") {
    fs::path b = copy_bundle(dir, "vars");
    fs::rename(b / "ckpt-1.data-00000-of-00001", dir / "elsewhere");
    fs::create_symlink(dir / "elsewhere", b / "ckpt-1.data-00000-of-00001");
    refused(b / "ckpt-1.index", {"ckpt-1.data-00000-of-00001", "symbolic link"});
  }
  SECTION("a snappy-compressed block") {
    // Our writer's table with the data block's compression byte set to 1 and its CRC fixed up.
    std::string t = write_sstable({{"", std::string("\x08\x01", 2)}});
    // The table starts with the data block (one entry, one restart, the count); its trailer follows.
    const size_t data_size = 3 + 2 + 4 + 4;  // varints(0,0,2) + value + restart + count
    t[data_size] = 1;
    uint32_t crc = crc32c_mask(crc32c_extend(0, t.data(), data_size + 1));
    std::memcpy(&t[data_size + 1], &crc, 4);
    std::ofstream(dir / "s.index", std::ios::binary) << t;
    std::ofstream(dir / "s.data-00000-of-00001", std::ios::binary) << "";
    refused(dir / "s.index", {"s.index", "snappy-compressed"});
  }
}

TEST_CASE("a bundle saved under the prefix 'folder/' (files .index, .data-*) reads by each of its names",
          "[tf_checkpoint]") {
  tbtest::TempDir dir;
  auto r = run_cli(
      {"convert", (fixture("vars") / "ckpt-1").string(), (dir / "x.index").string(), "--drop-non-tensors", "-q"});
  REQUIRE(r.exit_code == 0);
  fs::create_directory(dir / "MTT");
  fs::rename(dir / "x.index", dir / "MTT" / ".index");
  fs::rename(dir / "x.data-00000-of-00001", dir / "MTT" / ".data-00000-of-00001");
  for (const fs::path& p : {dir / "MTT" / ".index", dir / "MTT" / ".data-00000-of-00001", dir / "MTT"}) {
    INFO(p);
    Checkpoint c = load(p);
    CHECK(c.format == "tf-checkpoint");
    CHECK(check_against_reference(c.state_dict(), "vars") == 17);
  }
}

TEST_CASE("readable names of a TF 1 Saver bundle (no object graph) keep its slots and counters aside",
          "[tf_checkpoint]") {
  tbtest::TempDir dir;
  StateDict sd;
  for (const char* k : {"conv2d/kernel", "conv2d/kernel/Adam", "conv2d/kernel/Adam_1", "dense/bias",
                        "dense/bias/Momentum", "beta1_power", "beta2_power", "global_step"})
    sd.insert(k, Tensor::zeros(DType::F32, {2}));
  save(Checkpoint::from_state_dict(sd), dir / "v1", "tf-checkpoint");
  LoadOptions o;
  o.readable_names = true;
  Checkpoint c = load(dir / "v1.index", o);
  StateDict model = c.state_dict();
  CHECK(model.size() == 2);
  CHECK(model.contains("conv2d/kernel"));
  CHECK(model.contains("dense/bias"));
  auto r = run_cli({"inspect", "--readable-names", (dir / "v1").string()});
  CHECK(contains(r.output, "2 model tensors; 6 optimizer/counter tensors kept as non-tensor values"));
}

TEST_CASE("a bundle of two data shards reads each tensor from its shard", "[tf_checkpoint]") {
  tbtest::TempDir dir;
  const float values[2] = {1.5f, -2.0f};
  const uint32_t crc = crc32c_mask(crc32c_extend(0, values, 8));
  const std::string header = std::string("\x08\x02\x1a\x02\x08\x01", 6);  // num_shards 2
  std::ofstream(dir / "c.index", std::ios::binary)
      << write_sstable({{"", header}, {"w", entry_proto({2}, 4, 8, crc, 1)}});
  std::ofstream(dir / "c.data-00000-of-00002", std::ios::binary) << "";
  std::ofstream(dir / "c.data-00001-of-00002", std::ios::binary)
      << "xxxx" << std::string(reinterpret_cast<const char*>(values), 8);
  StateDict sd = load(dir / "c").state_dict();
  REQUIRE(sd.contains("w"));
  CHECK(sd.at("w").to_vector<float>() == std::vector<float>{1.5f, -2.0f});
  // Without the second shard: refused, naming it.
  fs::remove(dir / "c.data-00001-of-00002");
  auto r = run_cli({"inspect", (dir / "c.index").string()});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "c.data-00001-of-00002"));
}

TEST_CASE("a folder with several bundles and no checkpoint file is refused, naming them", "[tf_checkpoint]") {
  tbtest::TempDir dir;
  fs::path b = copy_bundle(dir, "vars");
  fs::copy_file(b / "ckpt-1.index", b / "ckpt-2.index");
  fs::copy_file(b / "ckpt-1.data-00000-of-00001", b / "ckpt-2.data-00000-of-00001");
  auto r = run_cli({"inspect", b.string()});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "holds several bundles (ckpt-1.index, ckpt-2.index)"));
  // A `checkpoint` file chooses, as tf.train.latest_checkpoint does.
  std::ofstream(b / "checkpoint") << "model_checkpoint_path: \"ckpt-2\"\nall_model_checkpoint_paths: \"ckpt-2\"\n";
  r = run_cli({"inspect", b.string()});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "ckpt-2.index"));
}

TEST_CASE("CRC-32C and its mask match the reference values", "[tf_checkpoint]") {
  // RFC 3720 test vector: 32 zero bytes -> 0x8a9136aa; "123456789" -> 0xe3069283.
  std::string zeros(32, '\0');
  CHECK(crc32c_extend(0, zeros.data(), zeros.size()) == 0x8a9136aau);
  CHECK(crc32c_extend(0, "123456789", 9) == 0xe3069283u);
  CHECK(crc32c_extend(crc32c_extend(0, "1234", 4), "56789", 5) == 0xe3069283u);
  CHECK(crc32c_mask(0) == 0xa282ead8u);
  // Large inputs run as interleaved streams: the same value as small pieces fed one after another.
  std::vector<uint8_t> big(3 * 8192 * 5 + 1237);
  uint32_t x = 12345;
  for (auto& b : big) b = uint8_t((x = x * 1103515245u + 12345u) >> 16);
  for (size_t start : {size_t(0), size_t(3), size_t(40000)}) {
    uint32_t pieces = 0x1234567u;
    for (size_t at = start; at < big.size(); at += 1000)
      pieces = crc32c_extend(pieces, big.data() + at, std::min<size_t>(1000, big.size() - at));
    CHECK(crc32c_extend(0x1234567u, big.data() + start, big.size() - start) == pieces);
  }
}
