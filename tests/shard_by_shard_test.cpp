// Sharded inputs converted shard for shard: --keep-shards on threads, --shards I/N slices that add up
// to the same bytes as one whole convert, the Ray example on two local workers, and the refusals.
#include "tests/support.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>

#include "formats/registry.h"
#include "formats/shard_by_shard.h"

using namespace tb;
namespace fs = std::filesystem;

namespace {

/** Every file of a folder (name -> bytes). */
std::map<std::string, std::string> folder_bytes(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::ifstream in(e.path(), std::ios::binary);
    out[e.path().filename().string()] = std::string(std::istreambuf_iterator<char>(in), {});
  }
  return out;
}

/** A sharded safetensors input of `shards` shards (our --shard-size writer) from the CNN fixture. */
fs::path sharded_input(const tbtest::TempDir& dir, const std::string& size = "1KB") {
  const fs::path in = dir / "in";
  auto r = tbtest::run_cli({"convert", tbtest::fixture("torch/cnn.pt").string(), in.string() + "/", "--to",
                            "safetensors", "--shard-size", size, "-q"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  return in;
}

tbtest::RunResult convert(const std::vector<std::string>& args) {
  std::vector<std::string> all{"convert"};
  all.insert(all.end(), args.begin(), args.end());
  return tbtest::run_cli(all);
}

}  // namespace

TEST_CASE("slices are numbered I/N with 0 <= I < N and take the shards k % N == I", "[sharded]") {
  CHECK(parse_slice("0/1") == std::pair<size_t, size_t>{0, 1});
  CHECK(parse_slice("3/4") == std::pair<size_t, size_t>{3, 4});
  for (const char* bad : {"4/4", "1", "/2", "1/", "-1/2", "a/b", "1/0", "1/2/3"})
    CHECK_THROWS_WITH(parse_slice(bad), Catch::Contains("expected I/N with 0 <= I < N"));
  CHECK(shards_of_slice(10, 1, 3) == std::vector<size_t>{1, 4, 7});
  CHECK(shards_of_slice(2, 2, 3).empty());
}

TEST_CASE("convert --keep-shards writes one output shard per input shard, the same bytes on 1 or 2 threads",
          "[sharded][cli]") {
  tbtest::TempDir dir;
  const fs::path in = sharded_input(dir);
  const auto input = folder_bytes(in);
  REQUIRE(input.size() == 11);  // 10 shards + the index
  auto r = convert({in.string(), (dir / "one").string(), "--to", "safetensors", "--keep-shards", "--jobs", "1", "-q"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  r = convert({in.string(), (dir / "two").string(), "--to", "safetensors", "--keep-shards", "--jobs", "2", "-q"});
  REQUIRE(r.exit_code == 0);
  // Our own --shard-size output converted shard for shard is the input again, byte for byte.
  CHECK(folder_bytes(dir / "one") == input);
  CHECK(folder_bytes(dir / "two") == input);
  CHECK(convert({}).exit_code != 0);
  CHECK(tbtest::run_cli({"diff", tbtest::fixture("torch/cnn.pt").string(), (dir / "two").string()}).exit_code == 0);
}

TEST_CASE("convert --keep-shards into a folder that holds an earlier output: refused, or replaced with --force",
          "[sharded][cli]") {
  tbtest::TempDir dir;
  const fs::path in = sharded_input(dir);
  const fs::path out = dir / "out";
  // An earlier split into 8 shards and a single-file output beside it.
  auto r = convert({tbtest::fixture("torch/cnn.pt").string(), out.string() + "/", "--to", "safetensors", "--shard-size",
                    "4KB", "-q"});
  REQUIRE(r.exit_code == 0);
  REQUIRE(fs::exists(out / "model-00008-of-00008.safetensors"));
  fs::copy_file(out / "model-00001-of-00008.safetensors", out / "model.safetensors");
  // Readers take model.safetensors before an index, so the new shards would be hidden: refused.
  r = convert({in.string(), out.string(), "--to", "safetensors", "--keep-shards", "-q"});
  CHECK(r.exit_code == 1);
  CHECK(tbtest::contains(r.output, "model.safetensors' already exists and readers would take it for the output"));
  CHECK(!fs::exists(out / "model-00001-of-00010.safetensors"));
  // With --force the folder ends up exactly as a convert into an empty folder.
  r = convert({in.string(), out.string(), "--to", "safetensors", "--keep-shards", "--force", "-q"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(folder_bytes(out) == folder_bytes(in));
}

TEST_CASE("convert --shards I/N: slices run in any order add up to the bytes of one whole convert", "[sharded][cli]") {
  tbtest::TempDir dir;
  const fs::path in = sharded_input(dir);
  const std::vector<std::string> stages{"--to",     "safetensors",    "--dtype", "float16",
                                        "--rename", "^(.*)$=net.\\1", "-q"};
  auto with = [&](std::vector<std::string> args) {
    args.insert(args.end(), stages.begin(), stages.end());
    return convert(args);
  };
  auto r = with({in.string(), (dir / "whole").string(), "--keep-shards"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const fs::path sliced = dir / "sliced";
  for (const char* slice : {"2/3", "0/3"}) {
    r = with({in.string(), sliced.string(), "--shards", slice});
    REQUIRE(r.exit_code == 0);
    CHECK_FALSE(fs::exists(sliced / "model.safetensors.index.json"));  // written once the set is complete
  }
  r = with({in.string(), sliced.string(), "--shards", "1/3"});
  REQUIRE(r.exit_code == 0);
  CHECK(folder_bytes(sliced) == folder_bytes(dir / "whole"));
  // More slices than shards: the empty ones write nothing but may complete the index.
  const fs::path many = dir / "many";
  for (int i = 0; i < 12; ++i)
    REQUIRE(with({in.string(), many.string(), "--shards", std::to_string(i) + "/12"}).exit_code == 0);
  CHECK(folder_bytes(many) == folder_bytes(dir / "whole"));

  StateDict whole = load(dir / "whole").state_dict();
  StateDict orig = load(tbtest::fixture("torch/cnn.pt")).state_dict();
  REQUIRE(whole.size() == orig.size());
  for (const auto& [name, t] : orig) {
    const Tensor& h = whole.at("net." + name);
    CHECK(h.dtype() == (is_floating(t.dtype()) ? DType::F16 : t.dtype()));
    CHECK(h.shape() == t.shape());
  }
}

TEST_CASE("torch shards (pytorch_model.bin.index.json) become safetensors shards the reference reads",
          "[sharded][cli]") {
  tbtest::TempDir dir;
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import sys, os, json, torch
d = sys.argv[1]
torch.manual_seed(0)
parts = [{'encoder.weight': torch.randn(4, 3), 'encoder.bias': torch.randn(4)}, {'decoder.weight': torch.randn(2, 4)},
         {'head.weight': torch.randn(3, 2), 'head.steps': torch.tensor(7)}]
wm = {}
for i, p in enumerate(parts):
    name = 'pytorch_model-%05d-of-%05d.bin' % (i + 1, len(parts))
    torch.save(p, os.path.join(d, name))
    wm.update({k: name for k in p})
json.dump({'metadata': {}, 'weight_map': wm}, open(os.path.join(d, 'pytorch_model.bin.index.json'), 'w'), indent=2)
)",
                          {dir.path().string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const fs::path out = dir / "out";
  r = convert({dir.path().string(), out.string(), "--to", "safetensors", "--keep-shards", "--jobs", "3", "-q"});
  REQUIRE(r.exit_code == 0);
  CHECK(fs::exists(out / "model-00003-of-00003.safetensors"));
  auto py = tbtest::python(tbtest::Peer::Peers, R"(
import sys, os, json
from safetensors.numpy import load_file
d = sys.argv[1]
idx = json.load(open(os.path.join(d, 'model.safetensors.index.json')))
wm = idx['weight_map']
assert sorted(set(wm.values())) == ['model-%05d-of-00003.safetensors' % i for i in (1, 2, 3)], wm
total = 0
for shard in sorted(set(wm.values())):
    for k, v in load_file(os.path.join(d, shard)).items():
        assert wm[k] == shard, (k, shard)
        total += v.nbytes
assert total == idx['metadata']['total_size'], total
print('ok', len(wm))
)",
                           {out.string()});
  INFO(py.output);
  CHECK(py.exit_code == 0);
  CHECK(tbtest::run_cli({"diff", dir.path().string(), out.string()}).exit_code == 0);
}

TEST_CASE("shard-for-shard conversion refuses what it cannot do, naming why", "[sharded][cli]") {
  tbtest::TempDir dir;
  const fs::path in = sharded_input(dir, "4KB");
  const std::string out = (dir / "out").string();
  auto r = convert({in.string(), out, "--to", "safetensors", "--shards", "3/3"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("expected I/N with 0 <= I < N"));
  r = convert({tbtest::fixture("torch/cnn.pt").string(), out, "--to", "safetensors", "--keep-shards"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("is not a sharded checkpoint"));
  r = convert({in.string(), out, "--to", "npz", "--keep-shards"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("write safetensors shards, not npz"));
  r = convert({in.string(), out, "--to", "safetensors", "--keep-shards", "--style", "keras"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("a layer may span shards"));
  r = convert({in.string(), out, "--to", "safetensors", "--jobs", "2"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("it goes with --keep-shards or --shards"));
  REQUIRE(convert({in.string(), out, "--to", "safetensors", "--keep-shards", "-q"}).exit_code == 0);
  r = convert({in.string(), out, "--to", "safetensors", "--keep-shards", "-q"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("already exists"));
  CHECK(convert({in.string(), out, "--to", "safetensors", "--keep-shards", "--force", "-q"}).exit_code == 0);
}

TEST_CASE("examples/ray_convert.py fans the slices out over two local Ray workers", "[sharded][ray]") {
  const fs::path venv = fs::path(TB_PEERS_PYTHON).parent_path().parent_path();
  auto probe = tbtest::run({TB_PEERS_PYTHON, "-c", "import ray"});
  if (probe.exit_code != 0) {
    // Required under TB_REQUIRE_PEERS=1 unless scripts/setup.sh recorded that ray could not be installed.
    std::ifstream notes(venv / "tb-optional-peers.txt");
    std::string text((std::istreambuf_iterator<char>(notes)), {});
    const char* req = std::getenv("TB_REQUIRE_PEERS");
    if (req && std::string(req) == "1" && text.find("\nray") == std::string::npos && text.rfind("ray", 0) != 0)
      FAIL("ray is not importable in " << venv << " (scripts/setup.sh installs it)");
    tbtest::skip("ray is not installed in the peers venv");
  }
  tbtest::TempDir dir;
  const fs::path in = sharded_input(dir);
  auto r = convert({in.string(), (dir / "whole").string(), "--to", "safetensors", "--keep-shards", "-q"});
  REQUIRE(r.exit_code == 0);
  r = tbtest::run({TB_PEERS_PYTHON, (fs::path(TB_SOURCE_DIR) / "examples" / "ray_convert.py").string(),
                   "--tensorbridge", TB_CLI_PATH, "--workers", "2", in.string(), (dir / "ray").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(folder_bytes(dir / "ray") == folder_bytes(dir / "whole"));
}
