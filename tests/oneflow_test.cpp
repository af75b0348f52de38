// OneFlow: the real checkpoints in fixtures/shared/oneflow (flow.save folders, a whole module, nn.Graph
// variables, a lazy-mode snapshot), single-file pickles from fixtures/gen_oneflow.py, our writer
// (byte-exact against the fixture and against CPython's pickle), and hostile folders.
// OneFlow is not installable here (no wheel for Python 3.11): values are checked with numpy reading the
// raw `out` files, and pickles with CPython's pickle and stand-in classes named like OneFlow's.
#include "tests/support.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "formats/adapters.h"
#include "formats/oneflow.h"

using tbtest::contains;

using namespace tb;
namespace fs = std::filesystem;
using tbtest::error_of;

namespace {

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
void write_all(const fs::path& p, const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; }

/** Copies a folder tree (fixtures are read-only; hostile tests edit copies). */
void copy_tree(const fs::path& from, const fs::path& to) {
  fs::copy(from, to, fs::copy_options::recursive);
  for (auto& e : fs::recursive_directory_iterator(to))
    fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
}

/** Relative paths of every file under root, sorted. */
std::vector<std::string> tree_files(const fs::path& root) {
  std::vector<std::string> out;
  for (auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) out.push_back(fs::relative(e.path(), root).string());
  std::sort(out.begin(), out.end());
  return out;
}

fs::path of_fixture(const std::string& rel) { return tbtest::fixture("shared/oneflow/" + rel); }

/** numpy reads `out` of each variable folder as raw little-endian data (dtype, shape given); prints
 *  one line per folder: the values as repr'd floats. */
std::vector<std::vector<double>> numpy_values(const std::vector<std::pair<fs::path, std::string>>& vars) {
  std::vector<std::string> argv;
  for (const auto& [p, dt] : vars) {
    argv.push_back((p / "out").string());
    argv.push_back(dt);
  }
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import sys, numpy as np
a = sys.argv[1:]
for i in range(0, len(a), 2):
    v = np.fromfile(a[i], dtype=np.dtype(a[i + 1]).newbyteorder('<'))
    print(' '.join(repr(float(x)) for x in v.ravel()))
)",
                          argv);
  REQUIRE(r.exit_code == 0);
  std::vector<std::vector<double>> out;
  std::istringstream lines(r.output);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream ls(line);
    std::vector<double> v;
    double d;
    while (ls >> d) v.push_back(d);
    out.push_back(v);
  }
  REQUIRE(out.size() == vars.size());
  return out;
}

void check_values(const Tensor& t, const std::vector<double>& expected) {
  REQUIRE(t.numel() == int64_t(expected.size()));
  for (int64_t i = 0; i < t.numel(); ++i) CHECK(t.item_as_double(i) == expected[size_t(i)]);
}

}  // namespace

TEST_CASE("meta text proto: fixture files and text-format variants", "[oneflow]") {
  auto m =
      parse_oneflow_meta(read_all(of_fixture("flow_save_dir_state_dict/3x3_i3o3_conv2d_params/tensor_5/meta")), "m");
  CHECK(m.dtype == DType::F32);
  CHECK(m.shape == Shape{3, 3, 3, 3});
  m = parse_oneflow_meta(read_all(of_fixture("lazy_checkpoint_mlp/variables/System-Train-TrainStep-train_job/meta")),
                         "m");
  CHECK(m.dtype == DType::I64);
  CHECK(m.shape == Shape{1});
  // what our writer emits is what OneFlow wrote (text_format.MessageToString)
  CHECK(oneflow_meta_text({DType::F32, {3, 3, 3, 3}}) ==
        read_all(of_fixture("flow_save_dir_full_module/3x3_i3o3_conv2d/tensor_3/meta")));
  CHECK(oneflow_meta_text({DType::I64, {1}}) ==
        read_all(of_fixture("lazy_checkpoint_mlp/variables/System-Train-TrainStep-train_job/meta")));
  // other spellings text_format accepts: comments, lists, <> blocks, separators, numeric enums, unknown fields
  m = parse_oneflow_meta(
      "# comment\nshape: < dim: [2, 5]; dim: 7 >\nextra { nested { x: \"a\\\"b\" } }\n"
      "data_type: 9 quant: 1.5\n",
      "m");
  CHECK(m.dtype == DType::F16);
  CHECK(m.shape == Shape{2, 5, 7});
  m = parse_oneflow_meta("data_type: kBFloat16", "m");  // no shape: 0-d
  CHECK(m.dtype == DType::BF16);
  CHECK(m.shape.empty());
  for (auto [name, dt] : std::vector<std::pair<const char*, DType>>{{"kDouble", DType::F64},
                                                                    {"kInt8", DType::I8},
                                                                    {"kUInt8", DType::U8},
                                                                    {"kBool", DType::Bool},
                                                                    {"kInt32", DType::I32},
                                                                    {"kInt16", DType::I16}}) {
    CHECK(dtype_from_oneflow(name) == dt);
    CHECK(oneflow_dtype_name(dt) == name);
  }
  CHECK_THROWS_AS(oneflow_dtype_name(DType::F8E4M3FN), UnsupportedError);
}

TEST_CASE("meta: malformed and hostile text refused with the file named", "[oneflow]") {
  auto msg = error_of<FormatError>([] { parse_oneflow_meta("shape { dim: -3 }\ndata_type: kFloat\n", "a/meta"); });
  CHECK(contains(msg, "'a/meta'"));
  CHECK(contains(msg, "negative dim -3"));
  CHECK(contains(error_of<FormatError>([] { parse_oneflow_meta("shape { dim: 99999999999999999999 }", "m"); }),
                 "overflows int64"));
  CHECK(contains(error_of<FormatError>([] { parse_oneflow_meta("shape { dim: 3 }\n", "m"); }), "no data_type"));
  CHECK(contains(error_of<FormatError>([] { parse_oneflow_meta("shape { dim: 3\ndata_type: kFloat", "m"); }),
                 "unterminated"));
  CHECK(contains(error_of<FormatError>([] { parse_oneflow_meta("data_type: kFloaty", "m"); }), "unknown data_type"));
  CHECK(contains(error_of<UnsupportedError>([] { parse_oneflow_meta("data_type: kOFRecord", "m"); }), "kOFRecord"));
  std::string deep;
  for (int i = 0; i < 5000; ++i) deep += "x { ";
  deep += std::string(5000, '}') + " data_type: kFloat";
  CHECK(contains(error_of<FormatError>([&] { parse_oneflow_meta(deep, "m"); }), "nested deeper"));
  std::string wide = "shape {" + [] {
    std::string s;
    for (int i = 0; i < 65; ++i) s += " dim: 1";
    return s;
  }() + " } data_type: kFloat";
  CHECK(contains(error_of<FormatError>([&] { parse_oneflow_meta(wide, "m"); }), "more than 64 dims"));
  CHECK_THROWS_AS(parse_oneflow_meta(std::string(70000, ' ') + "data_type: kFloat", "m"), FormatError);
  // shape products that overflow are refused before anything is allocated
  tbtest::TempDir dir;
  fs::create_directory(dir / "v");
  write_all(dir / "v" / "meta", "shape { dim: 4294967296 dim: 4294967296 }\ndata_type: kFloat\n");
  write_all(dir / "v" / "out", "");
  CHECK_THROWS_AS(load_oneflow_variable(dir / "v"), Error);
}

TEST_CASE("flow.save state-dict folder: names, shapes, dtypes, zero-copy values equal numpy's", "[oneflow]") {
  fs::path dir = of_fixture("flow_save_dir_state_dict/3x3_i3o3_conv2d_params");
  CHECK(&detect_format(Source::from_path(dir)) == &oneflow_format());
  Checkpoint c = tb::load(dir);
  CHECK(c.format == "oneflow");
  REQUIRE(c.root.is_dict());
  CHECK(c.root.dict_data().cls == "collections.OrderedDict");
  StateDict sd = c.state_dict();
  REQUIRE(sd.keys() == std::vector<std::string>{"weight", "bias"});
  CHECK(sd.at("weight").dtype() == DType::F32);
  CHECK(sd.at("weight").shape() == Shape{3, 3, 3, 3});
  CHECK(sd.at("bias").shape() == Shape{3});
  CHECK(sd.at("weight").storage()->kind() == Storage::Kind::Mapped);
  auto vals = numpy_values({{dir / "tensor_5", "<f4"}, {dir / "tensor_6", "<f4"}});
  check_values(sd.at("weight"), vals[0]);
  check_values(sd.at("bias"), vals[1]);
  // without mmap the values are the same, on the heap
  LoadOptions no_mmap;
  no_mmap.mmap = false;
  StateDict heap = tb::load(dir, no_mmap).state_dict();
  CHECK(heap.at("weight").storage()->kind() == Storage::Kind::Heap);
  CHECK(equal(heap.at("weight"), sd.at("weight")));
}

TEST_CASE("flow.save of a whole module loads as the module's state dict", "[oneflow]") {
  fs::path dir = of_fixture("flow_save_dir_full_module/3x3_i3o3_conv2d");
  Checkpoint c = tb::load(dir);  // OneFlow's own module classes are kept as data, never run
  StateDict sd = c.state_dict();
  REQUIRE(sd.keys() == std::vector<std::string>{"weight", "bias"});
  bool saw_class = false;
  for (const auto& [k, v] : c.info) saw_class |= (k == "module (root)" && v == "oneflow.nn.modules.conv.Conv2d");
  CHECK(saw_class);
  // the same weights as the state-dict fixture (the same files, renumbered)
  StateDict other = tb::load(of_fixture("flow_save_dir_state_dict/3x3_i3o3_conv2d_params")).state_dict();
  CHECK(equal(sd.at("weight"), other.at("weight")));
  CHECK(equal(sd.at("bias"), other.at("bias")));
  auto vals = numpy_values({{dir / "tensor_3", "<f4"}});
  check_values(sd.at("weight"), vals[0]);
}

TEST_CASE("nn.Graph variable folders and a single variable folder", "[oneflow]") {
  fs::path dir = of_fixture("graph_saved_variables");
  CHECK(&detect_format(Source::from_path(dir)) == &oneflow_format());
  StateDict sd = tb::load(dir).state_dict();
  REQUIRE(sd.keys() == std::vector<std::string>{"model.a", "model.b"});
  CHECK(sd.at("model.a").shape() == Shape{3, 4});
  CHECK(sd.at("model.b").shape() == Shape{4});
  auto vals = numpy_values({{dir / "model.a", "<f4"}, {dir / "model.b", "<f4"}});
  check_values(sd.at("model.a"), vals[0]);
  check_values(sd.at("model.b"), vals[1]);
  CHECK(vals[0] == std::vector<double>(12, 1.0));
  StateDict one = tb::load(dir / "model.b").state_dict();
  REQUIRE(one.keys() == std::vector<std::string>{"model.b"});
  CHECK(equal(one.at("model.b"), sd.at("model.b")));
}

TEST_CASE("lazy-mode snapshot (snapshot_done) and the SavedModel folder around it", "[oneflow]") {
  fs::path vars = of_fixture("lazy_checkpoint_mlp/variables");
  StateDict sd = tb::load(vars).state_dict();
  CHECK(sd.size() == 10);  // dense1-weight is not copied (see PROVENANCE.md)
  const Tensor& step = sd.at("System-Train-TrainStep-train_job");
  CHECK(step.dtype() == DType::I64);
  CHECK(step.to_vector<int64_t>() == std::vector<int64_t>{12000});
  CHECK(sd.at("dense2-weight").shape() == Shape{10, 500});
  CHECK(sd.at("dense1-bias-v").shape() == Shape{500});
  auto vals = numpy_values({{vars / "dense2-weight", "<f4"}, {vars / "dense1-bias-m", "<f4"}});
  check_values(sd.at("dense2-weight"), vals[0]);
  check_values(sd.at("dense1-bias-m"), vals[1]);
  StateDict outer = tb::load(of_fixture("lazy_checkpoint_mlp")).state_dict();
  CHECK(outer.keys() == sd.keys());
  // the complete snapshot, with the 1.5 MB dense1-weight, from shared/fixtures
  fs::path full = tbtest::shared_fixture("oneflow/lazy_checkpoint_mlp/variables");
  StateDict all = tb::load(full).state_dict();
  CHECK(all.size() == 11);
  CHECK(all.at("dense1-weight").shape() == Shape{500, 784});
  auto w = numpy_values({{full / "dense1-weight", "<f4"}});
  check_values(all.at("dense1-weight"), w[0]);
}

TEST_CASE("flow.save single-file pickles (both magic keys) with numpy arrays and OneFlow dtypes", "[oneflow]") {
  fs::path f = tbtest::fixture("oneflow_extra/single_file_state_dict");
  CHECK(&detect_format(Source::from_path(f)) == &oneflow_format());
  StateDict sd = tb::load(f).state_dict();
  REQUIRE(sd.keys() == std::vector<std::string>{"hidden.weight", "hidden.bias"});
  CHECK(sd.at("hidden.weight").to_vector<float>() ==
        std::vector<float>{-5.5f, -4.5f, -3.5f, -2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f, 3.5f, 4.5f, 5.5f});
  CHECK(sd.at("hidden.bias").to_vector<float>() == std::vector<float>{0.25f, -1.0f, 3.0f});

  Checkpoint c = tb::load(tbtest::fixture("oneflow_extra/single_file_checkpoint"));
  CHECK(c.root.get("epoch")->as_int() == 3);
  CHECK(c.root.get("lr")->as_float() == 0.5);
  StateDict ck = c.state_dict();
  CHECK(ck.at("model.fc.weight").dtype() == DType::F64);
  CHECK(ck.at("model.fc.weight").shape() == Shape{2, 4});
  CHECK(ck.at("model.fc.weight").item_as_double(7) == 1.0);
  CHECK(ck.at("model.fc.half").dtype() == DType::F16);
  CHECK(ck.at("model.fc.half").item_as_double(2) == 65504.0);
  CHECK(ck.at("model.steps").shape().empty());
  CHECK(ck.at("model.steps").item_as_double() == 7.0);
  CHECK(ck.at("ids.0").shares_storage(ck.at("ids.1")));  // one object pickled twice stays one tensor
  CHECK(ck.at("ids.0").to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3, 4, 5});
  CHECK(ck.at("cast").dtype() == DType::I32);  // the OneFlow dtype wins over the array's, as flow.tensor does
  CHECK(ck.at("cast").to_vector<int32_t>() == std::vector<int32_t>{1, 2, -3});
}

TEST_CASE("our writer reproduces the flow.save state-dict folder byte for byte", "[oneflow]") {
  fs::path src = of_fixture("flow_save_dir_state_dict/3x3_i3o3_conv2d_params");
  tbtest::TempDir tmp;
  SaveOptions opts;
  opts.options["first_tensor"] = "5";  // OneFlow numbered its tensors from a process-wide counter
  // 1) what we loaded (OrderedDict with its _metadata attribute) and 2) a flat state dict from any format
  Checkpoint loaded = tb::load(src);
  save_oneflow(loaded, tmp / "a", opts);
  Checkpoint flat = Checkpoint::from_state_dict(loaded.state_dict());
  tb::save(flat, tmp / "b", "oneflow", opts);
  for (const char* out : {"a", "b"}) {
    INFO(out);
    REQUIRE(tree_files(tmp / out) == tree_files(src));
    for (const auto& rel : tree_files(src)) {
      INFO(rel);
      CHECK(read_all(tmp / out / rel) == read_all(src / rel));
    }
  }
  // the whole-module fixture: the tensor folders are byte-identical too
  fs::path mod = of_fixture("flow_save_dir_full_module/3x3_i3o3_conv2d");
  opts.options["first_tensor"] = "3";
  save_oneflow(tb::load(mod), tmp / "m", opts);
  for (const char* rel : {"tensor_3/meta", "tensor_3/out", "tensor_4/meta", "tensor_4/out"})
    CHECK(read_all(tmp / "m" / rel) == read_all(mod / rel));
}

namespace {
// CPython pickles the same tree with stand-in classes named like OneFlow's; the bytes must be ours.
// It also unpickles our file and reads every tensor folder with numpy.
const char* kPyTree = R"(
import sys, os, io, pickle, types, numpy as np
from collections import OrderedDict
d = sys.argv[1]
for name in ('oneflow', 'oneflow.nn'):
    sys.modules[name] = types.ModuleType(name)
class Tensor:
    def __init__(self, path=None): self.path = path
    def __getstate__(self): return {'path': self.path}
    def __setstate__(self, s): self.path = s['path']
class Parameter(Tensor): pass
Tensor.__module__ = 'oneflow'; Parameter.__module__ = 'oneflow.nn'
sys.modules['oneflow'].Tensor = Tensor; sys.modules['oneflow.nn'].Parameter = Parameter
w, b, i, m = Parameter('tensor_0'), Parameter('tensor_1'), Tensor('tensor_2'), Tensor('tensor_3')
model = OrderedDict([('hidden.weight', w), ('hidden.bias', b), ('ids', i)])
tree = {'epoch': 7, 'loss': 0.125, 'model': model, 'tied': [w, w], 'mask': m, 'name': 'mlp', 'shape': (2, 3),
        'big': 70000, 'neg': -5, 'huge': 1 << 40, 'flags': [True, False, None], 'blob': b'\x00\x01',
        'nested': {'a': {'b': (1, 2, 3, 4)}}, 'empty': ()}
expected = pickle.dumps({'protocol_version': 1, 'data': tree}, protocol=4)
ours = open(os.path.join(d, 'pickled_data'), 'rb').read()
if ours != expected:
    import pickletools
    pickletools.dis(expected); print('----'); pickletools.dis(ours)
    sys.exit(1)
back = pickle.loads(ours)['data']
assert back['tied'][0] is back['tied'][1] and back['model']['hidden.weight'] is back['tied'][0]
metas = {}
for t, dt, shape in ((back['model']['hidden.weight'], '<f4', (2, 3)), (back['model']['hidden.bias'], '<f8', (3,)),
                     (back['model']['ids'], '<i8', (4,)), (back['mask'], '|b1', (2, 2))):
    meta = open(os.path.join(d, t.path, 'meta')).read()
    a = np.fromfile(os.path.join(d, t.path, 'out'), dtype=dt).reshape(shape)
    print(t.path, ' '.join(repr(float(x)) for x in a.ravel()))
print('OK')
)";
}  // namespace

TEST_CASE("writer: any tree round trips, CPython's pickle gives our bytes, numpy reads our folders", "[oneflow]") {
  Tensor w = Tensor::from_vector<float>(DType::F32, {3, 2}, {1, 2, 3, 4, 5, 6}).transpose(0, 1);  // non-contiguous
  Tensor b = Tensor::from_vector<double>(DType::F64, {3}, {0.5, -1.25, 1e300});
  Tensor ids = Tensor::from_vector<int64_t>(DType::I64, {4}, {-1, 0, 1LL << 40, 7});
  Tensor mask = Tensor::from_vector<uint8_t>(DType::Bool, {2, 2}, {1, 0, 0, 1});
  Value vw = Value::tensor(w);
  Value model = Value::dict("collections.OrderedDict");
  model.set_item(Value::string("hidden.weight"), vw);
  model.set_item(Value::string("hidden.bias"), Value::tensor(b));
  model.set_item(Value::string("ids"), Value::tensor(ids));
  Value root = Value::dict();
  root.set_item(Value::string("epoch"), Value::integer(7));
  root.set_item(Value::string("loss"), Value::real(0.125));
  root.set_item(Value::string("model"), model);
  root.set_item(Value::string("tied"), Value::list({vw, vw}));
  root.set_item(Value::string("mask"), Value::tensor(mask));
  root.set_item(Value::string("name"), Value::string("mlp"));
  root.set_item(Value::string("shape"), Value::tuple({Value::integer(2), Value::integer(3)}));
  root.set_item(Value::string("big"), Value::integer(70000));
  root.set_item(Value::string("neg"), Value::integer(-5));
  root.set_item(Value::string("huge"), Value::integer(1LL << 40));
  root.set_item(Value::string("flags"), Value::list({Value::boolean(true), Value::boolean(false), Value::none()}));
  root.set_item(Value::string("blob"), Value::bytes(std::string("\x00\x01", 2)));
  Value inner = Value::dict();
  inner.set_item(Value::string("b"),
                 Value::tuple({Value::integer(1), Value::integer(2), Value::integer(3), Value::integer(4)}));
  Value nested = Value::dict();
  nested.set_item(Value::string("a"), inner);
  root.set_item(Value::string("nested"), nested);
  root.set_item(Value::string("empty"), Value::tuple());
  Checkpoint c;
  c.root = root;

  tbtest::TempDir tmp;
  fs::path out = tmp / "ckpt";
  tb::save(c, out, "oneflow");
  // one folder per tensor object: the tied weight is written once
  CHECK(tree_files(out) == std::vector<std::string>{"pickled_data", "tensor_0/meta", "tensor_0/out", "tensor_1/meta",
                                                    "tensor_1/out", "tensor_2/meta", "tensor_2/out", "tensor_3/meta",
                                                    "tensor_3/out"});
  auto r = tbtest::python(tbtest::Peer::Torch, kPyTree, {out.string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.output, "tensor_0 1.0 3.0 5.0 2.0 4.0 6.0"));
  CHECK(contains(r.output, "tensor_3 1.0 0.0 0.0 1.0"));

  Checkpoint back = tb::load(out);
  StateDict sd = back.state_dict();
  CHECK(equal(sd.at("model.hidden.weight"), w.contiguous()));
  CHECK(equal(sd.at("model.hidden.bias"), b));
  CHECK(equal(sd.at("model.ids"), ids));
  CHECK(equal(sd.at("mask"), mask));
  CHECK(sd.at("tied.0").shares_storage(sd.at("model.hidden.weight")));
  CHECK(back.root.get("epoch")->as_int() == 7);
  CHECK(back.root.get("huge")->as_int() == (1LL << 40));
  CHECK(back.root.get("name")->as_str() == "mlp");
  CHECK(value_at_path(back.root, "nested.a.b").items().size() == 4);
}

TEST_CASE("writer: snapshot layout, every dtype OneFlow stores, and dtypes it cannot", "[oneflow]") {
  StateDict sd;
  sd.insert("f16", Tensor::from_vector<uint16_t>(DType::F16, {2}, {0x3c00, 0xc000}));
  sd.insert("bf16", Tensor::from_vector<uint16_t>(DType::BF16, {2}, {0x3f80, 0x4000}));
  sd.insert("u8", Tensor::from_vector<uint8_t>(DType::U8, {3}, {0, 128, 255}));
  sd.insert("i32", Tensor::from_vector<int32_t>(DType::I32, {1, 2}, {-7, 7}));
  sd.insert("c64", Tensor::from_vector<float>(DType::C64, {1}, {1.5f, -2.5f}));
  sd.insert("scalar", Tensor::from_vector<float>(DType::F32, {}, {3.5f}));
  sd.insert("empty", Tensor::zeros(DType::F32, {0, 3}));
  tbtest::TempDir tmp;
  SaveOptions snap;
  snap.options["layout"] = "snapshot";
  for (const char* layout : {"pickle", "snapshot"}) {
    INFO(layout);
    fs::path out = tmp / layout;
    tb::save(Checkpoint::from_state_dict(sd), out, "oneflow", std::string(layout) == "snapshot" ? snap : SaveOptions{});
    StateDict back = tb::load(out).state_dict();
    REQUIRE(back.size() == sd.size());
    for (const auto& [k, t] : sd) {
      INFO(k);
      CHECK(equal(back.at(k), t));
    }
  }
  CHECK(fs::is_regular_file(tmp / "snapshot" / "snapshot_done"));
  CHECK(read_all(tmp / "snapshot" / "scalar" / "meta") == "shape {\n}\ndata_type: kFloat\n");
  CHECK(read_all(tmp / "snapshot" / "bf16" / "meta") == "shape {\n  dim: 2\n}\ndata_type: kBFloat16\n");
  // a dtype OneFlow has no DataType for: refused, and nothing is left behind
  StateDict bad;
  bad.insert("ok", Tensor::zeros(DType::F32, {2}));
  bad.insert("f8", Tensor::zeros(DType::F8E5M2, {2}));
  auto msg = error_of<UnsupportedError>([&] { tb::save(Checkpoint::from_state_dict(bad), tmp / "bad", "oneflow"); });
  CHECK(contains(msg, "float8_e5m2"));
  CHECK(contains(msg, "'f8'"));
  CHECK_FALSE(fs::exists(tmp / "bad"));
  size_t entries = 0;
  for (auto& e : fs::directory_iterator(tmp.path()))
    entries += (e.path().filename() != "pickle" && e.path().filename() != "snapshot");
  CHECK(entries == 0);  // no temporary folder left
}

TEST_CASE("writer: refuses existing targets unless overwrite, and never replaces a foreign folder", "[oneflow]") {
  StateDict sd;
  sd.insert("w", Tensor::from_vector<float>(DType::F32, {2}, {1, 2}));
  Checkpoint c = Checkpoint::from_state_dict(sd);
  tbtest::TempDir tmp;
  fs::path out = tmp / "ckpt";
  tb::save(c, out, "oneflow");
  CHECK(contains(error_of<IoError>([&] { tb::save(c, out, "oneflow"); }), "already exists"));
  SaveOptions force;
  force.overwrite = true;
  sd.set("w", Tensor::from_vector<float>(DType::F32, {2}, {3, 4}));
  tb::save(Checkpoint::from_state_dict(sd), out, "oneflow", force);
  CHECK(tb::load(out).state_dict().at("w").to_vector<float>() == std::vector<float>{3, 4});
  fs::create_directory(tmp / "photos");
  write_all(tmp / "photos" / "cat.jpg", "not weights");
  CHECK(contains(error_of<IoError>([&] { tb::save(c, tmp / "photos", "oneflow", force); }), "refusing to replace"));
  CHECK(fs::exists(tmp / "photos" / "cat.jpg"));
  fs::create_directory(tmp / "empty");
  tb::save(c, tmp / "empty", "oneflow", force);
  CHECK(fs::is_regular_file(tmp / "empty" / "pickled_data"));
}

TEST_CASE("hostile folders: truncated data, escaping paths, foreign globals, wrong wrapper", "[oneflow]") {
  tbtest::TempDir tmp;
  fs::path d = tmp / "ckpt";
  copy_tree(of_fixture("flow_save_dir_state_dict/3x3_i3o3_conv2d_params"), d);
  // truncated out
  std::string out = read_all(d / "tensor_5" / "out");
  write_all(d / "tensor_5" / "out", out.substr(0, 320));
  auto msg = error_of<FormatError>([&] { tb::load(d); });
  CHECK(contains(msg, "tensor_5/out"));
  CHECK(contains(msg, "(float32 [3, 3, 3, 3]) needs 324 bytes but the file has 320"));
  write_all(d / "tensor_5" / "out", out);
  // missing meta
  fs::rename(d / "tensor_6" / "meta", d / "tensor_6" / "meta.bak");
  CHECK(contains(error_of<FormatError>([&] { tb::load(d); }), "no 'meta'"));
  fs::rename(d / "tensor_6" / "meta.bak", d / "tensor_6" / "meta");
  CHECK_NOTHROW(tb::load(d));

  // pickled_data pointing outside the folder (same length as 'tensor_5' so the FRAME stays valid)
  std::string pk = read_all(d / "pickled_data");
  std::string evil = pk;
  evil.replace(evil.find("tensor_5"), 8, "../../x5");
  write_all(d / "pickled_data", evil);
  CHECK(contains(error_of<UnsafeError>([&] { tb::load(d); }), "'../../x5'"));
  // a global that is not OneFlow's: refused before anything runs, unless the caller opts in
  evil = pk;
  evil.replace(evil.find("\x0aoneflow.nn"), 11, std::string("\x0aposix.xx.n", 11));
  write_all(d / "pickled_data", evil);
  msg = error_of<UnsafeError>([&] { tb::load(d); });
  CHECK(contains(msg, "posix.xx.n.Parameter"));
  LoadOptions opt_in;
  opt_in.allow_unknown_globals = true;
  CHECK(tb::load(d, opt_in).state_dict().empty());  // kept as opaque objects, no tensors claimed
  // wrapper without protocol_version / data
  write_all(d / "pickled_data", std::string("\x80\x04}\x94.", 5));
  CHECK(contains(error_of<FormatError>([&] { tb::load(d); }), "'protocol_version' and 'data'"));
  // truncated pickle
  write_all(d / "pickled_data", pk.substr(0, pk.size() / 2));
  CHECK_THROWS_AS(tb::load(d), FormatError);

  // a single file that merely looks like a pickle is not claimed by sniffing; a folder without a layout is refused
  fs::create_directory(tmp / "nothing");
  CHECK_FALSE(oneflow_format().sniff(Source::from_path(tmp / "nothing")));
  CHECK(
      contains(error_of<FormatError>([&] { load_oneflow(Source::from_path(tmp / "nothing")); }), "no OneFlow layout"));
  CHECK_FALSE(oneflow_format().sniff(Source::from_path(tbtest::fixture("torch/protocol4.pt"))));
}

TEST_CASE("writer: large pickles (frames, LONG_BINGET, batches, out-of-frame payloads) equal CPython's", "[oneflow]") {
  // 3000 distinct strings: > 64 KiB of frames, memo indices past 255, APPENDS batches of 1000;
  // a 70000-byte string and bytes: written outside frames; a set: ADDITEMS.
  Value vocab = Value::list();
  for (int i = 0; i < 3000; ++i) vocab.items().push_back(Value::string(str("token_", i, "_", std::string(20, 'a'))));
  Value repeats = Value::list();
  for (int i = 0; i < 3000; i += 7) repeats.items().push_back(vocab.items()[size_t(i)]);
  Value root = Value::dict();
  root.set_item(Value::string("vocab"), vocab);
  root.set_item(Value::string("again"), repeats);
  root.set_item(Value::string("text"), Value::string(std::string(70000, 'x')));
  root.set_item(Value::string("raw"), Value::bytes(std::string(70000, '\x07')));
  root.set_item(Value::string("ints"), Value::set({Value::integer(1), Value::integer(2)}));
  root.set_item(Value::string("w"), Value::tensor(Tensor::from_vector<float>(DType::F32, {2}, {1, 2})));
  Checkpoint c;
  c.root = root;
  tbtest::TempDir tmp;
  tb::save(c, tmp / "big", "oneflow");
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import sys, os, pickle, types
for name in ('oneflow', 'oneflow.nn'):
    sys.modules[name] = types.ModuleType(name)
class Parameter:
    def __init__(self, path=None): self.path = path
    def __getstate__(self): return {'path': self.path}
    def __setstate__(self, s): self.path = s['path']
Parameter.__module__ = 'oneflow.nn'; sys.modules['oneflow.nn'].Parameter = Parameter
vocab = ['token_%d_%s' % (i, 'a' * 20) for i in range(3000)]
tree = {'vocab': vocab, 'again': [vocab[i] for i in range(0, 3000, 7)], 'text': 'x' * 70000,
        'raw': b'\x07' * 70000, 'ints': {1, 2}, 'w': Parameter('tensor_0')}
expected = pickle.dumps({'protocol_version': 1, 'data': tree}, protocol=4)
ours = open(os.path.join(sys.argv[1], 'pickled_data'), 'rb').read()
if ours != expected:
    i = next((k for k in range(min(len(ours), len(expected))) if ours[k] != expected[k]), None)
    print('differ at', i, len(ours), len(expected), ours[i - 20:i + 20] if i else '', expected[i - 20:i + 20] if i else '')
    sys.exit(1)
print('OK', len(ours))
)",
                          {(tmp / "big").string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  Checkpoint back = tb::load(tmp / "big");
  CHECK(back.root.get("vocab")->items().size() == 3000);
  CHECK(back.root.get("again")->items()[1].as_str() == vocab.items()[7].as_str());
  CHECK(back.root.get("text")->as_str().size() == 70000);
  CHECK(back.state_dict().at("w").to_vector<float>() == std::vector<float>{1, 2});
}

TEST_CASE("nested whole module: Sequential children become dotted keys, non-persistent buffers left out", "[oneflow]") {
  Checkpoint c = tb::load(tbtest::fixture("oneflow_extra/whole_module_seq"));
  StateDict sd = c.state_dict();
  CHECK(sd.keys() ==
        std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.running_mean", "1.num_batches_tracked"});
  CHECK(sd.at("0.weight").to_vector<float>() == std::vector<float>{0, 0.25f, 0.5f, 0.75f, 1, 1.25f});
  CHECK(sd.at("1.num_batches_tracked").dtype() == DType::I64);
  CHECK(sd.at("1.num_batches_tracked").shape().empty());
  CHECK(sd.at("1.num_batches_tracked").item_as_double() == 3.0);
  std::map<std::string, std::string> info(c.info.begin(), c.info.end());
  CHECK(info["module 1"] == "oneflow.nn.modules.batchnorm.BatchNorm1d");
  CHECK(info["module (root)"] == "oneflow.nn.modules.container.Sequential");
}

TEST_CASE("writer: single-file flow.save pickle equals CPython + numpy's bytes and reads back", "[oneflow]") {
  std::vector<float> big(20000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = float(i) * 0.5f;
  StateDict sd;
  sd.insert("fc.weight", Tensor::from_vector<float>(DType::F32, {2, 3}, {1, 2, 3, 4, 5, 6}));
  sd.insert("fc.bias", Tensor::from_vector<double>(DType::F64, {2}, {-0.5, 0.25}));
  sd.insert("steps", Tensor::from_vector<int64_t>(DType::I64, {}, {7}));
  sd.insert("mask", Tensor::from_vector<uint8_t>(DType::Bool, {3}, {1, 0, 1}));
  sd.insert("half", Tensor::from_vector<uint16_t>(DType::F16, {2}, {0x3c00, 0xc000}));
  sd.insert("bytes", Tensor::from_vector<uint8_t>(DType::U8, {2, 2}, {0, 1, 254, 255}));
  sd.insert("big", Tensor::from_vector<float>(DType::F32, {20000}, big));
  Checkpoint c = Checkpoint::from_state_dict(sd);
  tbtest::TempDir tmp;
  SaveOptions single;
  single.options["layout"] = "single";
  tb::save(c, tmp / "model.of", "oneflow", single);
  CHECK(&detect_format(Source::from_path(tmp / "model.of")) == &oneflow_format());
  StateDict back = tb::load(tmp / "model.of").state_dict();
  REQUIRE(back.keys() == sd.keys());
  for (const auto& [k, t] : sd) {
    INFO(k);
    CHECK(equal(back.at(k), t));
  }
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import sys, pickle, types, numpy as np
from collections import OrderedDict
for name in ('oneflow', 'oneflow.nn', 'oneflow._oneflow_internal'):
    sys.modules[name] = types.ModuleType(name)
class dtype:
    def __init__(self, t=0): self.t = t
    def __getstate__(self): return self.t
    def __setstate__(self, t): self.t = t
dtype.__module__ = 'oneflow._oneflow_internal'; sys.modules['oneflow._oneflow_internal'].dtype = dtype
F32, F64, I64, BOOL, F16, U8 = dtype(2), dtype(3), dtype(6), dtype(12), dtype(9), dtype(7)
class Tensor:
    def __init__(self, a=None, t=None): self.a, self.t = a, t
    def __getstate__(self): return {'data': self.a, 'dtype': self.t, 'device': 'cpu'}
    def __setstate__(self, s): self.a, self.t = s['data'], s['dtype']
class Parameter(Tensor): pass
Tensor.__module__ = 'oneflow'; Parameter.__module__ = 'oneflow.nn'
sys.modules['oneflow'].Tensor = Tensor; sys.modules['oneflow.nn'].Parameter = Parameter
sd = OrderedDict([
    ('fc.weight', Parameter(np.arange(1, 7, dtype=np.float32).reshape(2, 3), F32)),
    ('fc.bias', Parameter(np.array([-0.5, 0.25]), F64)),
    ('steps', Tensor(np.array(7, dtype=np.int64), I64)),
    ('mask', Tensor(np.array([True, False, True]), BOOL)),
    ('half', Parameter(np.array([1, -2], dtype=np.float16), F16)),
    ('bytes', Tensor(np.array([[0, 1], [254, 255]], dtype=np.uint8), U8)),
    ('big', Parameter(np.arange(20000, dtype=np.float32) * 0.5, F32))])
sd._metadata = OrderedDict()
expected = pickle.dumps({'protocol_version': 1, '__oneflow__': None, 'data': sd}, protocol=4)
ours = open(sys.argv[1], 'rb').read()
if ours != expected:
    i = next((k for k in range(min(len(ours), len(expected))) if ours[k] != expected[k]), None)
    print('differ at', i, len(ours), len(expected), ours[max(0, i - 30):i + 30], expected[max(0, i - 30):i + 30])
    sys.exit(1)
back = pickle.loads(ours)['data']
assert (back['fc.weight'].a == sd['fc.weight'].a).all() and back['big'].a.shape == (20000,)
print('OK')
)",
                          {(tmp / "model.of").string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "OK"));
  // bfloat16 has no numpy dtype: refused for the single file, nothing written
  StateDict bf;
  bf.insert("w", Tensor::from_vector<uint16_t>(DType::BF16, {1}, {0x3f80}));
  CHECK_THROWS_AS(tb::save(Checkpoint::from_state_dict(bf), tmp / "bf.of", "oneflow", single), UnsupportedError);
  CHECK_FALSE(fs::exists(tmp / "bf.of"));
}

TEST_CASE("nn.Graph variable folders through the CLI: inspect lists them, convert writes what numpy reads",
          "[oneflow][cli]") {
  const fs::path dir = of_fixture("graph_saved_variables");
  auto r = tbtest::run_cli({"inspect", "--json", dir.string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.output);
  REQUIRE(j["tensors"].size() == 2);
  CHECK(j["tensors"][0]["name"] == "model.a");
  CHECK(j["tensors"][0]["dtype"] == "float32");
  CHECK(j["tensors"][0]["shape"] == nlohmann::json::array({3, 4}));
  CHECK(j["tensors"][1]["name"] == "model.b");
  CHECK(j["tensors"][1]["shape"] == nlohmann::json::array({4}));
  tbtest::TempDir tmp;
  r = tbtest::run_cli({"convert", dir.string(), (tmp / "g.npz").string(), "-q"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  // numpy reads the converted file and the variables' raw `out` bytes alike: 12 and 4 float32 ones.
  auto np = tbtest::python(tbtest::Peer::Torch, R"PY(
import sys, numpy as np
z = np.load(sys.argv[1])
a, b = np.fromfile(sys.argv[2] + '/model.a/out', '<f4').reshape(3, 4), np.fromfile(sys.argv[2] + '/model.b/out', '<f4')
print(z.files, np.array_equal(z['model.a'], a), np.array_equal(z['model.b'], b), (a == 1).all(), b.shape)
)PY",
                           {(tmp / "g.npz").string(), dir.string()});
  INFO(np.output);
  CHECK(np.output.find("['model.a', 'model.b'] True True True (4,)") != std::string::npos);
}
