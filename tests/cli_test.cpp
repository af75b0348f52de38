// The tensorbridge binary, run as a user runs it.
#include "tests/support.h"

#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

using tbtest::contains;

using tbtest::run_cli;

namespace {
void write_file(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}
}  // namespace

TEST_CASE("usage errors exit 1 with one clear line", "[cli]") {
  auto r = run_cli({});
  CHECK(r.exit_code == 1);
  r = run_cli({"convert", "only-one-arg"});
  CHECK(r.exit_code == 1);
  r = run_cli({"--help"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "inspect"));
  CHECK(contains(r.output, "convert"));
}

TEST_CASE("unrecognised input names the file and says what it looks like", "[cli]") {
  tbtest::TempDir dir;
  write_file(dir / "lfs.pt", "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n");
  auto r = run_cli({"inspect", (dir / "lfs.pt").string()});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "lfs.pt"));
  CHECK(contains(r.output, "Git LFS pointer"));
  write_file(dir / "page.safetensors", "<!DOCTYPE html><html>Not found</html>");
  r = run_cli({"inspect", (dir / "page.safetensors").string()});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "HTML page"));
  r = run_cli({"inspect", (dir / "missing.pt").string()});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "does not exist"));
}

TEST_CASE("inspect --json lists the seed MLP's tensors", "[cli]") {
  auto r = run_cli({"inspect", "--json", tbtest::fixture("torch/mlp.params").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.output);
  CHECK(j["format"] == "pt");
  REQUIRE(j["tensors"].size() == 4);
  CHECK(j["tensors"][0]["name"] == "hidden.weight");
  CHECK(j["tensors"][0]["dtype"] == "float32");
  CHECK(j["tensors"][0]["shape"] == nlohmann::json::array({256, 20}));
  CHECK(j["tensors"][0]["nbytes"] == 256 * 20 * 4);
  CHECK(j["tensors"][3]["name"] == "out.bias");
}

TEST_CASE("convert writes safetensors, refuses to overwrite, --force replaces", "[cli]") {
  tbtest::TempDir dir;
  auto out = (dir / "mlp.safetensors").string();
  auto in = tbtest::fixture("torch/mlp.params").string();
  auto r = run_cli({"convert", in, out});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  r = run_cli({"convert", in, out});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "already exists"));
  r = run_cli({"convert", in, out, "--force"});
  CHECK(r.exit_code == 0);
  r = run_cli({"diff", in, out});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "EQUAL"));
  auto py = tbtest::python(tbtest::Peer::Torch, R"(
import sys, torch, numpy as np
sd = torch.load(sys.argv[1])
import json
hdr_len = int.from_bytes(open(sys.argv[2], 'rb').read(8), 'little')
hdr = json.loads(open(sys.argv[2], 'rb').read(8 + hdr_len)[8:])
assert sorted(k for k in hdr if k != '__metadata__') == sorted(sd.keys()), hdr.keys()
print('ok')
)",
                           {in, out});
  INFO(py.output);
  CHECK(py.exit_code == 0);
}

TEST_CASE("convert refuses to drop non-tensor values unless asked, --key selects a sub-tree", "[cli]") {
  tbtest::TempDir dir;
  auto in = tbtest::fixture("torch/checkpoint.pt").string();
  auto r = run_cli({"convert", in, (dir / "a.safetensors").string()});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "epoch = 7"));
  CHECK(contains(r.output, "--key"));
  CHECK_FALSE(std::filesystem::exists(dir / "a.safetensors"));
  r = run_cli({"convert", in, (dir / "b.safetensors").string(), "--key", "model_state_dict"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  r = run_cli({"inspect", "--json", (dir / "b.safetensors").string()});
  auto j = nlohmann::json::parse(r.output);
  CHECK(j["tensors"].size() == 4);
  std::set<std::string> names;
  for (const auto& t : j["tensors"]) names.insert(t["name"].get<std::string>());
  CHECK(names == std::set<std::string>{"hidden.weight", "hidden.bias", "out.weight", "out.bias"});
  r = run_cli({"convert", in, (dir / "c.safetensors").string(), "--key", "no_such_key"});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "no key 'no_such_key'"));
  CHECK(contains(r.output, "model_state_dict"));
}

TEST_CASE("diff exits 1 on different files and 2 on errors", "[cli]") {
  auto a = tbtest::fixture("torch/mlp.params").string();
  auto b = tbtest::fixture("torch/cnn.pt").string();
  auto r = run_cli({"diff", a, b});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "only in A: hidden.weight"));
  r = run_cli({"diff", a, "/nonexistent/file.pt"});
  CHECK(r.exit_code == 2);
}

TEST_CASE("roundtrip reports every format as bit-exact or cannot hold", "[cli]") {
  auto r = run_cli({"roundtrip", tbtest::fixture("torch/mlp.params").string(), "--json"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.output);
  CHECK(j["ok"] == true);
  size_t exact = 0;
  for (const auto& row : j["rows"]) exact += row["result"] == "bit-exact";
  CHECK(exact >= 3);
}

TEST_CASE("roundtrip: formats that cannot hold the content are their own verdict, not a failure",
          "[cli][needs_hdf5][needs_onnx]") {
  struct Case {
    const char* fixture;
    int exit_code;
    std::vector<std::string> exact;        // must be bit-exact
    std::vector<std::string> cannot_hold;  // must say so, with the writer's reason
  };
  const std::vector<Case> cases = {
      {"torch/all_dtypes.pt", 0, {"pt", "npz", "h5", "onnx"}, {"npy", "safetensors", "keras-h5"}},
      {"torch/bn1d.pt", 0, {"pt", "npz", "h5", "keras-h5", "keras3-h5"}, {}},
      {"numpy/f32_c.npy", 0, {"npz", "h5", "onnx", "safetensors"}, {"keras-h5"}},
      // np.save of a dict: many tensors in one .npy come back through .npz
      {"numpy/dict.npy", 0, {"pt", "npz", "npy", "h5", "onnx", "safetensors"}, {}},
  };
  for (const auto& c : cases) {
    auto r = run_cli({"roundtrip", tbtest::fixture(c.fixture).string(), "--json"});
    INFO(c.fixture << ": " << r.output);
    CHECK(r.exit_code == c.exit_code);
    auto j = nlohmann::json::parse(r.output);
    std::map<std::string, nlohmann::json> by_via;
    for (const auto& row : j["rows"]) by_via[row["via"].get<std::string>()] = row;
    for (const auto& f : c.exact) CHECK(by_via[f]["result"] == "bit-exact");
    for (const auto& f : c.cannot_hold) {
      CHECK(by_via[f]["result"] == "cannot hold");
      CHECK(!by_via[f]["detail"].get<std::string>().empty());
    }
  }
  auto r = run_cli({"roundtrip", tbtest::fixture("torch/all_dtypes.pt").string(), "--via", "npy"});
  CHECK(contains(r.output, "cannot hold bfloat16"));
  // Nothing checked at all is not a success.
  r = run_cli({"roundtrip", tbtest::fixture("numpy/f32_c.npy").string(), "--via", "keras-h5,keras3-h5"});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "NOTHING CHECKED"));
}

TEST_CASE("inspect --json keeps repeated info entries", "[cli]") {
  tbtest::TempDir dir;
  // Three views of one 64-float storage: the .pt loader notes each view smaller than its storage.
  auto storage = tb::Tensor::zeros(tb::DType::F32, {64}).storage();
  tb::StateDict sd;
  for (int i = 0; i < 3; ++i)
    sd.insert("v" + std::to_string(i), tb::Tensor(storage, tb::DType::F32, {4}, {1}, int64_t(i) * 16));
  tb::save(tb::Checkpoint::from_state_dict(sd), dir / "views.pt", "pt");
  auto r = run_cli({"inspect", "--json", (dir / "views.pt").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.output);
  REQUIRE(j["info"].is_array());
  size_t notes = 0;
  for (const auto& e : j["info"]) notes += e["key"] == "view smaller than its storage";
  CHECK(notes == 3);
}

TEST_CASE("a whole pickled module to .pt is refused unless --state-dict-only", "[cli]") {
  tbtest::TempDir dir;
  const std::string in = tbtest::fixture("torch/whole_module_seq.pt").string();
  auto r = run_cli({"convert", in, (dir / "m.pt").string()});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "whole pickled module (torch.nn.modules.container.Sequential)"));
  CHECK(contains(r.output, "--state-dict-only"));
  CHECK(!std::filesystem::exists(dir / "m.pt"));
  r = run_cli({"convert", in, (dir / "m.pt").string(), "--state-dict-only", "-q"});
  CHECK(r.exit_code == 0);
  r = run_cli({"diff", in, (dir / "m.pt").string()});
  CHECK(r.exit_code == 0);
  // Other targets hold only tensors anyway: no flag needed.
  CHECK(run_cli({"convert", in, (dir / "m.safetensors").string(), "-q"}).exit_code == 0);
}

TEST_CASE("the demo runs on the bundled fixtures", "[cli][needs_hdf5]") {
  auto r = run_cli({"demo", TB_FIXTURES_DIR});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "no differences"));
}

TEST_CASE("convert --shard-size into a folder that does not exist yet creates it with reference shard names", "[cli]") {
  tbtest::TempDir dir;
  const std::string src = tbtest::fixture("torch/cnn.pt").string();
  for (const std::string& out : {(dir / "with_slash").string() + "/", (dir / "no_extension").string()}) {
    auto r = run_cli({"convert", src, out, "--to", "safetensors", "--shard-size", "1KB", "-q"});
    INFO(out << ": " << r.output);
    REQUIRE(r.exit_code == 0);
    const std::filesystem::path f =
        out.back() == '/' ? std::filesystem::path(out.substr(0, out.size() - 1)) : std::filesystem::path(out);
    CHECK(std::filesystem::exists(f / "model-00001-of-00010.safetensors"));
    CHECK(std::filesystem::exists(f / "model-00010-of-00010.safetensors"));
    CHECK(std::filesystem::exists(f / "model.safetensors.index.json"));
    auto d = run_cli({"diff", src, f.string()});
    CHECK(d.exit_code == 0);
  }
}

TEST_CASE("convert refuses an option the target format does not read, naming the ones it does", "[cli][needs_hdf5]") {
  tbtest::TempDir dir;
  const std::string in = tbtest::fixture("torch/mlp.params").string();
  auto r = run_cli({"convert", in, (dir / "o.h5").string(), "--option", "layuot=keras"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Matchers::Contains("unknown option 'layuot=keras'"));
  CHECK_THAT(r.output, Catch::Matchers::Contains("h5 accepts layout: plain, keras or keras3"));
  CHECK_FALSE(std::filesystem::exists(dir / "o.h5"));
  r = run_cli({"convert", in, (dir / "o.safetensors").string(), "--compress"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Matchers::Contains("unknown option 'compress=1'"));
  r = run_cli({"convert", in, (dir / "o.pb").string(), "--to", "onnx-tensor", "--option", "x=1"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Matchers::Contains("onnx-tensor takes no options"));
  // The options a format lists are accepted.
  r = run_cli({"convert", in, (dir / "o.npz").string(), "--compress"});
  CHECK(r.exit_code == 0);
  r = run_cli({"convert", in, (dir / "k.h5").string(), "--option", "layout=keras", "--option", "keras_version=2.15.0"});
  INFO(r.output);
  CHECK(r.exit_code == 0);
}

TEST_CASE("typed writers list their keys in the formats listing and refuse an unknown or bad --option",
          "[cli][needs_hdf5]") {
  tbtest::TempDir dir;
  const std::string in = tbtest::fixture("torch/mlp.params").string();
  const std::vector<std::pair<std::string, std::vector<std::string>>> keys = {
      {"pt", {"trim_storage"}},
      {"npy", {"object"}},
      {"oneflow", {"layout", "magic", "tensor_class", "first_tensor"}},
      {"h5", {"layout", "backend", "keras_version"}},
      {"keras-h5", {"layout", "backend", "keras_version"}},
      {"keras3-h5", {"layout", "backend", "keras_version"}},
      {"keras", {}}};
  const auto listing = run_cli({"formats"});
  REQUIRE(listing.exit_code == 0);
  for (const auto& [format, accepted] : keys) {
    INFO(format);
    const tb::FormatAdapter* f = tb::find_format(format);
    REQUIRE(f != nullptr);
    REQUIRE(f->save_options.size() == accepted.size());
    for (size_t i = 0; i < accepted.size(); ++i) {
      CHECK(f->save_options[i].key == accepted[i]);
      CHECK(contains(listing.output, "--option " + accepted[i] + "=...  " + f->save_options[i].help + "\n"));
    }
    const std::string out = (dir / ("o." + format)).string();
    auto r = run_cli({"convert", in, out, "--to", format, "--option", "bogus=1"});
    INFO(r.output);
    CHECK(r.exit_code == 1);
    CHECK(contains(r.output, "cannot write '" + out + "' as " + format + ": unknown option 'bogus=1'; "));
    if (accepted.empty()) CHECK(contains(r.output, format + " takes no options"));
    for (const auto& o : f->save_options) CHECK(contains(r.output, o.key + ": " + o.help));
    CHECK_FALSE(std::filesystem::exists(out));
  }
  // A bad value is refused by the table, naming what it expects.
  auto r = run_cli({"convert", in, (dir / "x").string(), "--to", "oneflow", "--option", "first_tensor=-1"});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "as oneflow: option first_tensor='-1': expected a whole number >= 0"));
  r = run_cli({"convert", in, (dir / "k.h5").string(), "--to", "keras-h5", "--option", "layout=keras4"});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "as keras-h5: option layout='keras4': expected one of plain, keras, keras3"));
}
