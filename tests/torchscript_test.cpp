// TorchScript archives (torch.jit.save): the fixtures of fixtures/gen_torchscript.py (torch 1.13) read as
// torch.jit.load(f).state_dict() gives them, then tensor attributes and constants; the module tree;
// convert to safetensors and .pt checked by the frameworks; run --arch; hostile pickles; code/ unused.
#include "tests/support.h"

#include <fstream>
#include <sstream>

#include "formats/pt.h"
#include "formats/torchscript.h"

using namespace tb;
namespace fs = std::filesystem;

namespace {

using tbtest::describe_tensors;

// The judge: torch.jit.load(path).state_dict(), then the tensor attributes named after ':' in the
// argument (path:offset), then the constants of the root's code as constants.<name>.
const char* kPyJudge = R"(
import sys, torch
for arg in sys.argv[1:]:
    path, _, attrs = arg.partition(':')
    m = torch.jit.load(path)
    out = list(m.state_dict().items())
    out += [(a, getattr(m, a)) for a in attrs.split(',') if a]
    out += [('constants.' + k, v) for k, v in m.code_with_constants[1].const_mapping.items()]
    print('==', path)
    for k, t in out:
        t = t.detach().contiguous()
        line(k, str(t.dtype).replace('torch.', ''), t.shape, t.numpy().tobytes())
)";

std::map<std::string, std::string> by_file(const tbtest::RunResult& r) {
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  std::map<std::string, std::string> out;
  std::istringstream is(r.output);
  std::string l, cur;
  while (std::getline(is, l)) {
    if (l.rfind("== ", 0) == 0)
      out[cur = l.substr(3)];
    else if (!cur.empty() && l.find('|') != std::string::npos)
      out[cur] += l + "\n";
  }
  return out;
}

std::string ts(const std::string& name) { return tbtest::fixture("torchscript/" + name).string(); }

std::string sorted_lines(const std::string& s) {
  std::vector<std::string> v;
  std::istringstream is(s);
  for (std::string l; std::getline(is, l);) v.push_back(l);
  std::sort(v.begin(), v.end());
  std::string o;
  for (auto& l : v) o += l + "\n";
  return o;
}

std::string info_of(const Checkpoint& c, const std::string& key) {
  for (const auto& [k, v] : c.info)
    if (k == key) return v;
  return {};
}

}  // namespace

TEST_CASE("TorchScript archives read as torch.jit.load(f).state_dict(), then tensor attributes and constants") {
  const std::vector<std::string> args = {ts("mlp.pt"), ts("seq_traced.pt"), ts("tied.pt") + ":offset",
                                         ts("constant.pt"), ts("mlp.ptl")};
  auto want = by_file(tbtest::python(tbtest::Peer::Torch, std::string(tbtest::kPyDescribeLine) + kPyJudge, args));
  for (const auto& arg : args) {
    std::string path = arg.substr(0, arg.find(':'));
    INFO(path);
    Checkpoint c = load(path);
    CHECK(c.format == "torchscript");
    REQUIRE(want.count(path));
    CHECK(describe_tensors(c.state_dict()) == want[path]);
  }
  // Names where torch has no state_dict key: documented positions, counted in info.
  Checkpoint tied = load(ts("tied.pt"));
  CHECK(tied.state_dict().keys() == std::vector<std::string>{"scale", "mask", "emb.weight", "head.weight", "offset"});
  CHECK(info_of(tied, "tensor attributes outside state_dict") == "offset");
  CHECK(info_of(tied, "state_dict tensors") == "4");
  Checkpoint k = load(ts("constant.pt"));
  CHECK(k.state_dict().keys() == std::vector<std::string>{"lin.weight", "lin.bias", "constants.c0"});
  CHECK(info_of(k, "constants").rfind("1 ", 0) == 0);
  CHECK(info_of(k, "extra files") == "producer.txt");
  CHECK(info_of(load(ts("mlp.ptl")), "bytecode.pkl").rfind("present", 0) == 0);
  Checkpoint seq = load(ts("seq_traced.pt"));
  CHECK(seq.state_dict().at("1.num_batches_tracked").dtype() == DType::I64);
  CHECK(info_of(seq, "version") == "3");
}

TEST_CASE("tied weights share one storage, as in torch") {
  StateDict sd = load(ts("tied.pt")).state_dict();
  CHECK(sd.at("emb.weight").storage() == sd.at("head.weight").storage());
  CHECK(sd.at("emb.weight").storage() != sd.at("scale").storage());
}

TEST_CASE("the module tree is shaped like a torch.save(model) pickle, classes named __torch__.*") {
  Checkpoint c = load(ts("mlp.pt"));
  CHECK(info_of(c, "whole module").rfind("__torch__.MLP ", 0) == 0);
  Value tree = pt_module_tree(c);
  REQUIRE(tree.kind() == Value::Kind::Object);
  CHECK(tree.as_object().cls == "__torch__.MLP");
  CHECK(pt_is_module(tree));
  const Value& out = value_at_path(*tree.as_object().state, "_modules.output");
  CHECK(out.as_object().cls == "__torch__.torch.nn.modules.linear.Linear");  // ___torch_mangle_<n> dropped
  CHECK(out.as_object().state->get("training")->as_bool() == false);
  CHECK(flatten(pt_module_state_dict(tree)).keys() == c.state_dict().keys());

  Value seq = pt_module_tree(load(ts("seq_traced.pt")));
  CHECK(seq.as_object().cls == "__torch__.torch.nn.modules.container.Sequential");
  const Value& bn = value_at_path(*seq.as_object().state, "_modules.1");
  CHECK(flatten(*bn.as_object().state->get("_buffers")).keys() ==
        std::vector<std::string>{"running_mean", "running_var", "num_batches_tracked"});
}

TEST_CASE("convert to safetensors gives the tensors torch.jit.load gives") {
  tbtest::TempDir dir;
  std::vector<std::string> judge_args, outs;
  for (const std::string name : {"seq_traced", "tied", "constant"}) {
    auto out = (dir / (name + ".safetensors")).string();
    auto r = tbtest::run_cli({"convert", ts(name + ".pt"), out});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    outs.push_back(out);
    judge_args.push_back(ts(name + ".pt") + (name == std::string("tied") ? ":offset" : ""));
  }
  auto want = by_file(tbtest::python(tbtest::Peer::Torch, std::string(tbtest::kPyDescribeLine) + kPyJudge, judge_args));
  auto got = by_file(tbtest::python(tbtest::Peer::Peers, std::string(tbtest::kPyDescribeLine) + R"(
import sys, json
from safetensors import safe_open
from safetensors.numpy import load_file
for path in sys.argv[1:]:
    print('==', path)
    arrays = load_file(path)
    with safe_open(path, 'np') as f:  # tied tensors are stored once, the others named in metadata
        aliases = json.loads((f.metadata() or {}).get('tensorbridge.aliases', '{}'))
    for k, a in list(arrays.items()) + [(k, arrays[v]) for k, v in aliases.items()]:
        line(k, str(a.dtype), a.shape, a.tobytes())
)",
                                    outs));
  for (size_t i = 0; i < outs.size(); ++i) {
    INFO(outs[i]);
    std::string src = judge_args[i].substr(0, judge_args[i].find(':'));
    CHECK(sorted_lines(got[outs[i]]) == sorted_lines(want[src]));
  }
}

TEST_CASE("convert to .pt: refused as a whole module, a torch.save state dict with --state-dict-only") {
  tbtest::TempDir dir;
  auto out = (dir / "mlp.pt").string();
  auto r = tbtest::run_cli({"convert", ts("mlp.pt"), out});
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("__torch__.MLP (TorchScript") != std::string::npos);
  CHECK(r.output.find("--state-dict-only") != std::string::npos);
  CHECK(!fs::exists(out));
  r = tbtest::run_cli({"convert", ts("mlp.pt"), out, "--state-dict-only"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(load(out).format == "pt");
  auto got = by_file(tbtest::python(tbtest::Peer::Torch, std::string(tbtest::kPyDescribeLine) + R"(
import sys, torch
sd = torch.load(sys.argv[1], weights_only=True)
print('== x')
for k, t in sd.items():
    line(k, str(t.dtype).replace('torch.', ''), t.shape, t.numpy().tobytes())
)",
                                    {out}));
  auto want =
      by_file(tbtest::python(tbtest::Peer::Torch, std::string(tbtest::kPyDescribeLine) + kPyJudge, {ts("mlp.pt")}));
  CHECK(got["x"] == want[ts("mlp.pt")]);
}

TEST_CASE("inspect names the format, the module class and the archive version") {
  auto r = tbtest::run_cli({"inspect", ts("mlp.pt")});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("format:  torchscript") != std::string::npos);
  CHECK(r.output.find("whole module: __torch__.MLP") != std::string::npos);
  CHECK(r.output.find("version: 3") != std::string::npos);
  CHECK(r.output.find("hidden.weight") != std::string::npos);
}

TEST_CASE("run --arch mlp:20,256,10 on the scripted MLP gives torch's outputs") {
  tbtest::TempDir dir;
  auto y = dir / "y.npy";
  auto r = tbtest::run_cli({"run", ts("mlp.pt"), "--arch", "mlp:20,256,10", "--input",
                            tbtest::fixture("torch/mlp_X.npy").string(), "--output", y.string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  Tensor got = tbtest::load_npy_tensor(y), want = tbtest::load_npy_tensor(tbtest::fixture("torch/mlp_Y.npy"));
  REQUIRE(got.shape() == want.shape());
  CHECK(allclose(got, want, 1e-5, 1e-6));
  // Without --arch: the TorchScript code is not run, so the architecture must be given.
  r = tbtest::run_cli({"run", ts("mlp.pt"), "--input", tbtest::fixture("torch/mlp_X.npy").string(), "--output",
                       (dir / "z.npy").string()});
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("__torch__.MLP") != std::string::npos);
  CHECK(r.output.find("--arch") != std::string::npos);
}

TEST_CASE("hostile TorchScript: a global outside the allow-list is refused by name, nothing runs") {
  const fs::path marker = "/tmp/tb_torchscript_pwned_marker";
  fs::remove(marker);
  std::string e = tbtest::error_of<UnsafeError>([] { load(ts("hostile.pt")); });
  CHECK(e.find("posix.system") != std::string::npos);
  CHECK(e.find("hostile.pt") != std::string::npos);
  LoadOptions lo;
  lo.allow_unknown_globals = true;  // kept as an opaque object, never called
  Checkpoint c = load(ts("hostile.pt"), lo);
  CHECK(c.state_dict().empty());
  CHECK(!fs::exists(marker));
  auto r = tbtest::run_cli({"inspect", ts("hostile.pt")});
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("posix.system") != std::string::npos);
}

TEST_CASE("code/ is never needed: the same tensors without it (torch.jit.load itself needs it)") {
  Checkpoint a = load(ts("mlp.pt")), b = load(ts("mlp_nocode.pt"));
  CHECK(tbtest::same_state_dicts(a.state_dict(), b.state_dict()));
  CHECK(info_of(b, "code") == "absent");
  CHECK(info_of(b, "undeclared classes").find("__torch__.MLP") != std::string::npos);
}

TEST_CASE("sniffing: TorchScript by content, torch.save archives stay pt, truncated files fail cleanly") {
  CHECK(detect_format(Source::from_path(ts("seq_traced.pt"))).name == "torchscript");
  CHECK(detect_format(Source::from_path(ts("mlp_nocode.pt"))).name == "torchscript");
  CHECK(detect_format(Source::from_path(tbtest::fixture("torch/mlp.params"))).name == "pt");
  CHECK(detect_format(Source::from_path(tbtest::fixture("torch/whole_module_seq.pt"))).name == "pt");
  CHECK(!sniff_torchscript(Source::from_path(tbtest::fixture("numpy/arrays.npz"))));
  CHECK(find_format("torchscript") != nullptr);
  CHECK(!find_format("torchscript")->save);  // read only

  tbtest::TempDir dir;
  std::ifstream in(ts("mlp.pt"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  for (size_t cut : {bytes.size() / 2, bytes.size() - 30}) {
    auto p = dir / "cut.pt";
    std::ofstream(p, std::ios::binary | std::ios::trunc).write(bytes.data(), std::streamsize(cut));
    std::string msg = tbtest::error_text([&] { load(p); });
    INFO(msg);
    CHECK(msg.find("cut.pt") != std::string::npos);
  }
}
