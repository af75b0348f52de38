// The tensorbridge binary, run as a user runs it.
#include "tests/support.h"

#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

using tbtest::run_cli;

namespace {
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
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
)", {in, out});
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

TEST_CASE("roundtrip reports every format as bit-exact or refused", "[cli]") {
  auto r = run_cli({"roundtrip", tbtest::fixture("torch/mlp.params").string(), "--json"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.output);
  CHECK(j["ok"] == true);
  size_t exact = 0;
  for (const auto& row : j["rows"]) exact += row["result"] == "bit-exact";
  CHECK(exact >= 3);
}

TEST_CASE("the demo runs on the bundled fixtures", "[cli]") {
  auto r = run_cli({"demo", TB_FIXTURES_DIR});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "no differences"));
}
