// PyTorch .pt/.pth: real files written by torch 1.13 (fixtures/torch) and by other torch versions
// (fixtures/shared/pytorch_*) read with the names, dtypes, shapes and bytes torch 1.13 itself reads;
// our writer read back by torch.load(weights_only=True); shared storages, views, whole modules,
// metadata, zero copy, trimming.
#include "tests/support.h"

#include <cstring>
#include <map>
#include <sstream>

#include "formats/detail/pickle.h"
#include "formats/detail/zip.h"
#include "formats/pt.h"

using namespace tb;

namespace {

using tbtest::describe_tensors;

// Python shared by both describers: flat() collects (path, tensor) pairs (nn.Module state dicts too
// when MODULES is set) and describe() prints the describe_tensors() lines of an object.
std::string py_describer(bool modules) {
  return std::string(tbtest::kPyDescribeLine) + "import sys, torch\nMODULES = " + (modules ? "True" : "False") + R"(
def flat(v, p, out):
    if isinstance(v, torch.Tensor):
        out.append((p, v)); return
    if MODULES and isinstance(v, torch.nn.Module):
        v = v.state_dict()
    if isinstance(v, dict):
        for k, x in v.items(): flat(x, (p + '.' if p else '') + str(k), out)
    elif isinstance(v, (list, tuple)):
        for i, x in enumerate(v): flat(x, (p + '.' if p else '') + str(i), out)
def describe(obj):
    out = []
    flat(obj, '', out)
    for k, t in out:
        t = t.detach().contiguous()
        if t.dtype == torch.bfloat16: b = t.view(torch.int16).numpy().tobytes()
        else: b = t.numpy().tobytes()
        line(k, str(t.dtype).replace('torch.', ''), t.shape, b)
)";
}

// Prints, per file, "== path" then the same lines as describe_tensors(), computed by torch 1.13.
const std::string kPyDescribe = py_describer(true) + R"(
for path in sys.argv[1:]:
    print('==', path)
    try:
        obj = torch.load(path, map_location='cpu')
    except Exception as e:
        print('ERR', type(e).__name__, str(e).splitlines()[0][:200]); continue
    describe(obj)
)";

std::map<std::string, std::string> torch_describe(const std::vector<std::string>& paths,
                                                  const std::string& code = kPyDescribe) {
  auto r = tbtest::python(tbtest::Peer::Torch, code, paths);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  std::map<std::string, std::string> out;
  std::istringstream is(r.output);
  std::string line, cur;
  while (std::getline(is, line)) {
    if (line.rfind("== ", 0) == 0) {
      cur = line.substr(3);
      out[cur];
    } else if (!cur.empty() && line.find('|') != std::string::npos) {
      out[cur] += line + "\n";
    } else if (!cur.empty() && line == "NOTE float") {
      out[cur + " float"] = "1";
    } else if (!cur.empty() && line.rfind("ERR", 0) == 0) {
      out[cur] = line;
    }
  }
  return out;
}

std::vector<std::string> torch_fixture_files() {
  std::vector<std::string> v;
  for (const char* f :
       {"all_dtypes.pt", "bn1d.pt", "bn1d_io.pt", "bn2d.pt", "bn2d_io.pt", "channels_last.pt", "checkpoint.pt",
        "cnn.pt", "cnn_io.pt", "dict_xy.pt", "legacy_mlp.pt", "list_xy.pt", "mlp.params", "mlp_io.pt", "protocol4.pt",
        "scalar_and_empty.pt", "single_tensor.pt", "views.pt", "whole_module_seq.pt"})
    v.push_back(tbtest::fixture(std::string("torch/") + f).string());
  return v;
}

std::vector<std::string> shared_fixture_files() {
  std::vector<std::string> v;
  for (const char* d : {"shared/pytorch_legacy", "shared/pytorch_zip_2x"})
    for (const auto& e : std::filesystem::directory_iterator(tbtest::fixture(d)))
      if (e.path().extension() != ".md") v.push_back(e.path().string());
  std::sort(v.begin(), v.end());
  return v;
}

Checkpoint load_file(const std::string& p, bool unknown = false, bool mmap = true) {
  LoadOptions o;
  o.allow_unknown_globals = unknown;
  o.mmap = mmap;
  return load_pt(Source::from_path(p, mmap), o);
}

std::string info_of(const Checkpoint& c, const std::string& key) {
  for (const auto& [k, v] : c.info)
    if (k == key) return v;
  return "<none>";
}

}  // namespace

TEST_CASE("torch 1.13 fixtures read exactly as torch 1.13 reads them") {
  auto files = torch_fixture_files();
  auto expected = torch_describe(files);
  for (const auto& f : files) {
    INFO(f);
    Checkpoint c = load_file(f);
    CHECK(c.format == "pt");
    REQUIRE(expected.count(f));
    REQUIRE(expected[f].rfind("ERR", 0) != 0);
    CHECK(describe_tensors(c.state_dict()) == expected[f]);
  }
}

TEST_CASE("files from torch 0.3, 1.x and 2.x read with the names, dtypes, shapes and values torch reads") {
  auto files = shared_fixture_files();
  REQUIRE(files.size() == 33);
  auto expected = torch_describe(files);
  int compared = 0;
  for (const auto& f : files) {
    INFO(f);
    Checkpoint c = load_file(f);
    std::string ours = describe_tensors(c.state_dict());
    CHECK(!c.state_dict().empty());
    if (expected[f].rfind("ERR", 0) == 0) {
      WARN("torch 1.13 cannot read " << f << ": " << expected[f]);
      continue;
    }
    CHECK(ours == expected[f]);
    ++compared;
  }
  CHECK(compared >= 30);
}

TEST_CASE("2.x records, archive folder and values where torch 1.13 cannot help") {
  Checkpoint c = load_file(tbtest::fixture("shared/pytorch_zip_2x/pt2x_bool.pt").string());
  CHECK(info_of(c, "container") == "zip");
  CHECK(info_of(c, "archive") == "bool");
  CHECK(info_of(c, "byteorder") == "little");
  CHECK(info_of(c, "version") == "3");
  Tensor t = c.state_dict().at("tensor");
  CHECK(t.dtype() == DType::Bool);
  Checkpoint b = load_file(tbtest::fixture("shared/pytorch_zip_2x/pt2x_bfloat16.pt").string());
  CHECK(b.state_dict().at("tensor").dtype() == DType::BF16);
  Checkpoint p = load_file(tbtest::fixture("shared/pytorch_zip_2x/pt2x_fortran_strides_int64.pth").string());
  Tensor f = p.state_dict().at("tensor_fortran");
  CHECK(f.shape() == Shape{2, 3, 4});
  CHECK_FALSE(f.is_contiguous());
}

TEST_CASE("views share their storage after loading: writing through evens changes numbers") {
  Checkpoint c = load_file(tbtest::fixture("torch/views.pt").string());
  StateDict sd = c.state_dict();
  Tensor numbers = sd.at("numbers"), evens = sd.at("evens");
  REQUIRE(numbers.shares_storage(evens));
  CHECK(evens.to_vector<int64_t>() == std::vector<int64_t>{2, 4, 6, 8});
  CHECK(evens.strides() == Shape{2});
  evens.data_as<int64_t>()[0] = 100;  // element 0 of evens is numbers[1]
  CHECK(numbers.to_vector<int64_t>()[1] == 100);
  CHECK(sd.at("matrix_t").shares_storage(sd.at("matrix")));
  CHECK(sd.at("matrix_t").strides() == Shape{1, 4});
  CHECK(sd.at("block").to_vector<float>() == std::vector<float>{5, 6, 9, 10});
  // a view smaller than its storage is reported
  bool reported = false;
  for (const auto& [k, v] : c.info)
    reported = reported || (k == "view smaller than its storage" && v.find("evens") == 0);
  CHECK(reported);
}

TEST_CASE("stored records of a mapped file are zero-copy and 64-byte aligned") {
  auto path = tbtest::fixture("torch/mlp.params").string();
  Checkpoint c = load_file(path, false, true);
  for (const auto& [k, t] : c.state_dict()) {
    INFO(k);
    CHECK(t.storage()->kind() == Storage::Kind::Mapped);
    CHECK(reinterpret_cast<uintptr_t>(t.data()) % 64 == 0);
  }
  Checkpoint h = load_file(path, false, false);
  for (const auto& [k, t] : h.state_dict()) CHECK(t.storage()->kind() != Storage::Kind::Mapped);
  CHECK(describe_tensors(c.state_dict()) == describe_tensors(h.state_dict()));
}

TEST_CASE("legacy stream gives the same tensors as the zip file") {
  Checkpoint z = load_file(tbtest::fixture("torch/mlp.params").string());
  Checkpoint l = load_file(tbtest::fixture("torch/legacy_mlp.pt").string());
  CHECK(info_of(l, "container") == "legacy");
  CHECK(describe_tensors(z.state_dict()) == describe_tensors(l.state_dict()));
  Checkpoint p4 = load_file(tbtest::fixture("torch/protocol4.pt").string());
  CHECK(info_of(p4, "pickle protocol") == "4");
  CHECK(describe_tensors(z.state_dict()) == describe_tensors(p4.state_dict()));
}

TEST_CASE("_metadata of a state_dict is metadata, never a tensor key") {
  Checkpoint c = load_file(tbtest::fixture("torch/bn1d.pt").string());
  StateDict sd = c.state_dict();
  for (const auto& k : sd.keys()) CHECK(k.find("_metadata") == std::string::npos);
  CHECK(c.metadata.at("_metadata.1.version") == "2");
  CHECK(c.metadata.at("_metadata.version") == "1");
  CHECK(c.root.dict_data().cls == "collections.OrderedDict");
  CHECK(sd.at("1.num_batches_tracked").dim() == 0);
  CHECK(sd.at("1.num_batches_tracked").to_vector<int64_t>()[0] == 3);
}

TEST_CASE("checkpoint dicts keep epoch, loss and optimizer state as values") {
  Checkpoint c = load_file(tbtest::fixture("torch/checkpoint.pt").string());
  CHECK(c.root.get("epoch")->as_int() == 7);
  CHECK(c.root.get("loss")->as_float() == 0.125);
  const Value& st = value_at_path(c.root, "optimizer_state_dict.state");
  REQUIRE(st.is_dict());
  CHECK(st.dict_data().items.front().first.as_int() == 0);
  CHECK(c.state_dict("model_state_dict").size() == 4);
}

TEST_CASE("whole-module pickles: refused by default when a user class is named, state_dict keys otherwise") {
  auto path = tbtest::fixture("torch/whole_module_mlp.pt").string();
  try {
    load_file(path);
    FAIL("expected UnsafeError");
  } catch (const UnsafeError& e) {
    CHECK(std::string(e.what()).find("__main__.MLP") != std::string::npos);
  }
  Checkpoint c = load_file(path, true);
  Checkpoint ref = load_file(tbtest::fixture("torch/mlp.params").string());
  CHECK(c.state_dict().keys() == ref.state_dict().keys());
  CHECK(describe_tensors(c.state_dict()) == describe_tensors(ref.state_dict()));
  Value tree = pt_module_tree(c);
  REQUIRE(tree.kind() == Value::Kind::Object);
  CHECK(tree.as_object().cls == "__main__.MLP");
  const Value& hidden = value_at_path(*tree.as_object().state, "_modules.hidden");
  CHECK(hidden.as_object().cls == "torch.nn.modules.linear.Linear");
  CHECK(hidden.as_object().state->get("in_features")->as_int() == 20);
  CHECK(hidden.as_object().state->get("out_features")->as_int() == 256);

  Checkpoint s = load_file(tbtest::fixture("torch/whole_module_seq.pt").string());
  CHECK(s.state_dict().keys() == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"});
  Checkpoint old = load_file(tbtest::fixture("shared/pytorch_legacy/pt03_full_module_sequential_cuda.pt").string());
  CHECK(old.state_dict().keys() == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"});
}

namespace {
// Loads what we wrote with torch 1.13 weights_only=True and describes it like kPyDescribe.
const std::string kPyDescribeWeightsOnly = py_describer(false) + R"(
for path in sys.argv[1:]:
    print('==', path)
    try:
        obj = torch.load(path, weights_only=True)
    except Exception as e:
        # torch 1.13's weights_only unpickler has no BINFLOAT (operand 71): a Python float anywhere
        # (loss, lr) makes it fail, also for files torch itself writes. Such files are read normally.
        if 'Unsupported operand 71' not in str(e): raise
        print('NOTE float')
        obj = torch.load(path)
    describe(obj)
)";
}  // namespace

TEST_CASE("written files load in torch 1.13 with weights_only=True, bit-identical") {
  tbtest::TempDir dir;
  std::vector<std::string> ins = torch_fixture_files();
  for (const auto& f : shared_fixture_files()) ins.push_back(f);
  std::vector<std::string> outs;
  std::map<std::string, std::string> ours;
  for (const auto& f : ins) {
    INFO(f);
    Checkpoint c = load_file(f, true);
    auto out = (dir / (std::to_string(outs.size()) + "_" + std::filesystem::path(f).stem().string() + ".pt")).string();
    save_pt(c, out);
    outs.push_back(out);
    ours[out] = describe_tensors(c.state_dict());
  }
  auto theirs = torch_describe(outs, kPyDescribeWeightsOnly);
  int with_floats = 0;
  for (const auto& o : outs) {
    INFO(o);
    CHECK(theirs[o] == ours[o]);
    if (theirs.count(o + " float")) {
      ++with_floats;
      // only checkpoints holding Python floats (loss, lr, eps) need the fallback
      CHECK(load_file(o).root.is_dict());
    }
  }
  CHECK(with_floats <= 5);
}

TEST_CASE("written archives look like torch's: folder from the file name, aligned records, version, byteorder") {
  tbtest::TempDir dir;
  Checkpoint c = load_file(tbtest::fixture("torch/views.pt").string());
  auto out = dir / "my_views.pt";
  save_pt(c, out);
  CHECK_THROWS_AS(save_pt(c, out), IoError);  // no overwrite by default
  zip::ZipReader z(open_file(out));
  CHECK(z.entries().front().name == "my_views/data.pkl");
  for (const auto& e : z.entries()) CHECK(e.data_offset % 64 == 0);
  CHECK(z.read_string(z.at("my_views/version")) == "3\n");
  CHECK(z.read_string(z.at("my_views/byteorder")) == "little");
  CHECK(z.zip64());
  // views of one storage -> one record; numbers/evens share data/0
  size_t records = 0;
  for (const auto& e : z.entries()) records += e.name.rfind("my_views/data/", 0) == 0;
  CHECK(records == 3);  // numbers, matrix, a
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import sys, torch
d = torch.load(sys.argv[1], weights_only=True)
assert d['evens'].storage().data_ptr() == d['numbers'].storage().data_ptr()
d['evens'][0] = 100
assert d['numbers'][1] == 100
assert d['matrix_t'].stride() == (1, 4)
assert d['tied'] is d['a']
print('ok')
)",
                          {out.string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
}

TEST_CASE("trim_storage writes only the bytes the views use, keeping shared views shared") {
  tbtest::TempDir dir;
  Tensor big = Tensor::zeros(DType::F32, {999});
  for (int i = 0; i < 999; ++i) big.data_as<float>()[i] = float(i);
  Value root = Value::dict();
  root.set_item(Value::string("small"), Value::tensor(big.slice(0, 10, 15)));
  root.set_item(Value::string("also"), Value::tensor(big.slice(0, 12, 14)));
  Checkpoint c;
  c.format = "pt";
  c.root = root;
  SaveOptions full, trim;
  trim.options["trim_storage"] = "1";
  save_pt(c, dir / "full.pt", full);
  save_pt(c, dir / "trim.pt", trim);
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import sys, torch
f = torch.load(sys.argv[1], weights_only=True)
t = torch.load(sys.argv[2], weights_only=True)
assert f['small'].storage().size() == 999, f['small'].storage().size()
assert t['small'].storage().size() == 5, t['small'].storage().size()
assert t['small'].tolist() == [10, 11, 12, 13, 14] and t['also'].tolist() == [12, 13]
assert t['also'].storage().data_ptr() == t['small'].storage().data_ptr()
assert t['also'].storage_offset() == 2
print('ok')
)",
                          {(dir / "full.pt").string(), (dir / "trim.pt").string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
}

TEST_CASE("big-endian archives (byteorder record 'big') are byte-swapped on load") {
  // Rebuild single_tensor.pt with swapped storage bytes and a 'big' byteorder record.
  tbtest::TempDir dir;
  zip::ZipReader src(open_file(tbtest::fixture("torch/single_tensor.pt")));
  auto out = dir / "be.pt";
  {
    AtomicFileWriter w(out);
    zip::WriteOptions zo;
    zo.align = 64;
    zip::ZipWriter zw(w, zo);
    for (const auto& e : src.entries()) {
      std::string data = src.read_string(e);
      if (e.name.find("/data/") != std::string::npos)
        for (size_t i = 0; i + 4 <= data.size(); i += 4)
          std::swap(data[i], data[i + 3]), std::swap(data[i + 1], data[i + 2]);
      zw.add_stored(e.name, data);
      if (e.name.size() >= 8 && e.name.substr(e.name.size() - 8) == "data.pkl")
        zw.add_stored("single_tensor/byteorder", std::string_view("big"));
    }
    zw.finish();
    w.commit();
  }
  Checkpoint c = load_file(out.string());
  CHECK(info_of(c, "byteorder") == "big");
  auto v = c.state_dict().at("").to_vector<float>();
  CHECK(v == std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
}

TEST_CASE("adapter: sniffing by content, registry name and extensions") {
  const FormatAdapter* a = find_format("pt");
  REQUIRE(a);
  CHECK(a->keeps_tree);
  CHECK(a->sniff(Source::from_path(tbtest::fixture("torch/mlp.params"))));
  CHECK(a->sniff(Source::from_path(tbtest::fixture("torch/legacy_mlp.pt"))));
  CHECK(&detect_format(Source::from_path(tbtest::fixture("shared/pytorch_legacy/pt1x_state_dict_titanic.pt"))) == a);
  tbtest::TempDir dir;
  {
    AtomicFileWriter w(dir / "x.pt");
    w.write(std::string("not a torch file at all"));
    w.commit();
  }
  CHECK_FALSE(a->sniff(Source::from_path(dir / "x.pt")));
  CHECK_THROWS_AS(load_pt(Source::from_path(dir / "x.pt")), FormatError);
}

TEST_CASE("truncated and corrupted torch files fail with a clear message, never a crash") {
  auto bytes = open_file(tbtest::fixture("torch/legacy_mlp.pt"))->read_bytes(0, 4000);
  tbtest::TempDir dir;
  for (size_t cut : {20u, 200u, 400u, 1000u, 3999u}) {
    auto p = dir / ("cut" + std::to_string(cut) + ".pt");
    {
      AtomicFileWriter w(p);
      w.write(bytes.data(), cut);
      w.commit();
    }
    INFO(cut);
    try {
      load_pt(Source::from_path(p));
      FAIL("expected an error");
    } catch (const FormatError& e) {
      CHECK(std::string(e.what()).find("cut") != std::string::npos);
    }
  }
}

TEST_CASE("storage records are found by key whether torch numbered them or not; a missing one is named") {
  // torch names storages 0, 1, 2, ...; renamed here: key '1' -> 'k' (pickle and record), '2' -> '02'.
  tbtest::TempDir dir;
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import sys, zipfile, torch
src, renamed, missing = sys.argv[1:4]
torch.save({'a': torch.tensor([1.0, 2.0]), 'b': torch.tensor([3, 4, 5]), 'c': torch.tensor([6.5])}, src)
def rewrite(out, names, pickle_subst, drop=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, 'w') as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            name = info.filename
            if name.endswith('/data.pkl'):
                for a, b in pickle_subst:
                    assert data.count(a) == 1
                    data = data.replace(a, b)
            if name == drop:
                continue
            zout.writestr(names.get(name, name), data)
rewrite(renamed, {'src/data/1': 'src/data/k', 'src/data/2': 'src/data/02'},
        [(b'X\x01\x00\x00\x001', b'X\x01\x00\x00\x00k'), (b'X\x01\x00\x00\x002', b'X\x02\x00\x00\x0002')])
rewrite(missing, {}, [], drop='src/data/1')
print('ok')
)",
                          {(dir / "src.pt").string(), (dir / "renamed.pt").string(), (dir / "missing.pt").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  for (bool mmap : {true, false}) {
    StateDict sd = load_pt(Source::from_path(dir / "renamed.pt", mmap)).state_dict();
    REQUIRE(sd.size() == 3);
    CHECK(sd.at("a").data_as<float>()[1] == 2.0f);
    CHECK(sd.at("b").data_as<int64_t>()[2] == 5);
    CHECK(sd.at("c").data_as<float>()[0] == 6.5f);
  }
  const std::string msg = tbtest::error_text([&] { load_pt(Source::from_path(dir / "missing.pt")); });
  CHECK(msg.find("missing.pt") != std::string::npos);
  CHECK(msg.find("storage '1' has no record 'src/data/1'") != std::string::npos);
}

TEST_CASE("dtypes without a typed storage are written with _rebuild_tensor_v3 and read back") {
  tbtest::TempDir dir;
  Value root = Value::dict();
  root.set_item(Value::string("u16"), Value::tensor(Tensor::from_vector<uint16_t>(DType::U16, {3}, {1, 2, 65535})));
  root.set_item(Value::string("f8"), Value::tensor(Tensor::from_vector<uint8_t>(DType::F8E4M3FN, {2}, {0x38, 0x40})));
  Checkpoint c;
  c.format = "pt";
  c.root = root;
  save_pt(c, dir / "v3.pt");
  Checkpoint back = load_file((dir / "v3.pt").string());
  CHECK(describe_tensors(back.state_dict()) == describe_tensors(c.state_dict()));
}

TEST_CASE("a buffer viewed with several dtypes is written as separate torch storages") {
  tbtest::TempDir dir;
  auto st = Storage::allocate(4096);
  for (int i = 0; i < 16; ++i) st->data()[i] = uint8_t(i + 1);
  Value root = Value::dict();
  root.set_item(Value::string("f"), Value::tensor(Tensor(st, DType::F32, {2}, {1}, 0)));
  root.set_item(Value::string("s"), Value::tensor(Tensor(st, DType::I16, {4}, {1}, 8)));
  Checkpoint c;
  c.format = "safetensors";
  c.root = root;
  save_pt(c, dir / "mixed.pt");
  Checkpoint back = load_file((dir / "mixed.pt").string());
  CHECK(describe_tensors(back.state_dict()) == describe_tensors(c.state_dict()));
  CHECK(back.root.dict_data().cls == "collections.OrderedDict");  // flat dicts from other formats
  CHECK(info_of(back, "storage bytes") == "16");                  // not the 4096-byte buffer
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import sys, torch
d = torch.load(sys.argv[1], weights_only=True)
assert d['s'].tolist() == [0x0a09, 0x0c0b, 0x0e0d, 0x100f], d['s'].tolist()
print('ok')
)",
                          {(dir / "mixed.pt").string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
}

TEST_CASE("hostile torch.save files (fixtures/malformed/pickle_*) are refused and nothing runs") {
  const std::string marker = "/tmp/tb_pickle_pwned_marker";
  std::filesystem::remove(marker);
  auto evil = tbtest::fixture("malformed/pickle_evil_state_dict.pt").string();
  try {
    load_file(evil);
    FAIL("expected UnsafeError");
  } catch (const UnsafeError& e) {
    std::string m = e.what();
    CHECK(m.find("posix.system") != std::string::npos);
    CHECK(m.find("builtins.eval") != std::string::npos);
    CHECK(m.find("pickle_evil_state_dict.pt") != std::string::npos);
  }
  // opt-in: the tensors come out, the payloads stay opaque objects, nothing is called
  Checkpoint c = load_file(evil, true);
  CHECK(c.state_dict().keys() == std::vector<std::string>{"weight"});
  CHECK(c.root.get("payload")->as_object().cls == "posix.system");
  CHECK(!std::filesystem::exists(marker));
  for (const char* f : {"pickle_os_system_p2.pkl", "pickle_os_system_p4.pkl"}) {
    auto r = open_file(tbtest::fixture(std::string("malformed/") + f));
    CHECK_THROWS_AS(pickle::load(*r, 0, r->size()), UnsafeError);
  }
  for (const char* f : {"pickle_deep_lists.pkl", "pickle_bad_memo.pkl", "pickle_truncated.pkl"}) {
    INFO(f);
    auto r = open_file(tbtest::fixture(std::string("malformed/") + f));
    CHECK_THROWS_AS(pickle::load(*r, 0, r->size()), FormatError);
  }
  CHECK(!std::filesystem::exists(marker));
}

TEST_CASE("torch and numpy objects inside checkpoints: Parameter, tensor with attributes, Size, device, dtype, numpy") {
  tbtest::TempDir dir;
  auto path = (dir / "objs.pt").string();
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import sys, torch, numpy as np
t = torch.arange(4.)
t.note = 'hello'              # tensor with __dict__ -> _rebuild_from_type_v2
p = torch.nn.Parameter(torch.ones(2, 2))
torch.save({'t': t, 'p': p, 'size': torch.Size([2, 3]), 'dev': torch.device('cuda', 1), 'dt': torch.float16,
            'np_scalar': np.float64(2.5), 'np_arr': np.arange(3, dtype=np.int32), 'set': {1, 2},
            'c': 1 + 2j, 'b': b'\x00xy', 'big': 2**40, 'neg': -3}, sys.argv[1])
print('ok')
)",
                          {path});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  Checkpoint c = load_file(path);
  const Value& root = c.root;
  CHECK(root.get("t")->as_tensor().to_vector<float>() == std::vector<float>{0, 1, 2, 3});
  CHECK(root.get("p")->as_tensor().to_vector<float>() == std::vector<float>{1, 1, 1, 1});
  REQUIRE(root.get("size")->kind() == Value::Kind::Tuple);
  CHECK(root.get("size")->items()[1].as_int() == 3);
  CHECK(root.get("dev")->as_str() == "cuda:1");
  CHECK(root.get("dt")->kind() == Value::Kind::Object);
  CHECK(root.get("np_scalar")->as_tensor().to_vector<double>()[0] == 2.5);
  CHECK(root.get("np_arr")->as_tensor().to_vector<int32_t>() == std::vector<int32_t>{0, 1, 2});
  CHECK(root.get("set")->items().size() == 2);
  CHECK(root.get("c")->as_complex() == std::complex<double>(1, 2));
  CHECK(root.get("b")->as_str() == std::string("\x00xy", 3));
  CHECK(root.get("big")->as_int() == (int64_t(1) << 40));
  CHECK(root.get("neg")->as_int() == -3);
  StateDict sd = c.state_dict();
  CHECK(sd.contains("t"));
  CHECK(sd.contains("np_arr"));
}
