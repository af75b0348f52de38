// ONNX in full: weights at every subgraph depth (If, Loop, Scan, nested) under the documented naming
// rule, ONNX -> ONNX keeping the graph (checked by onnx.checker full_check and run by onnxruntime
// against the source), and single TensorProto .pb files (ONNX test data).
#include "tests/support.h"

#include <algorithm>

#include "formats/registry.h"

using tbtest::contains;

using namespace tb;
using tbtest::fixture;
using tbtest::Peer;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> names_of(const fs::path& p) {
  auto keys = load(p).state_dict().keys();
  std::sort(keys.begin(), keys.end());
  return keys;
}

const char* kModels[] = {"cf_torch_if", "cf_torch_loop", "cf_helper", "cf_fp16"};

// Runs both models on the same inputs (every bool input True, then False) and compares the outputs.
const char* kOrtCompare = R"(
import sys, numpy as np, onnxruntime as ort
a, b, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
def feeds(sess, cond):
    out, rng = {}, np.random.default_rng(3)
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 2 for d in i.shape]
        if i.type == 'tensor(bool)': out[i.name] = np.array(cond)
        elif i.type == 'tensor(int64)': out[i.name] = np.array(3, np.int64)
        elif i.type == 'tensor(float16)': out[i.name] = rng.standard_normal(shape).astype(np.float16)
        else: out[i.name] = rng.standard_normal(shape).astype(np.float32) * (1 if cond else -1)
    return out
sa, sb = ort.InferenceSession(a), ort.InferenceSession(b)
for cond in (True, False):
    ra, rb = sa.run(None, feeds(sa, cond)), sb.run(None, feeds(sb, cond))
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        assert x.dtype == y.dtype and x.shape == y.shape, (x.dtype, y.dtype, x.shape, y.shape)
        ok = np.array_equal(x, y) if tol == 0 else np.allclose(x.astype(np.float64), y.astype(np.float64), rtol=tol, atol=tol)
        assert ok, (x, y)
print("SAME", len(ra))
)";

const char* kFullCheck = R"(
import sys, onnx
m = onnx.load(sys.argv[1])
onnx.checker.check_model(m, full_check=True)
print("CHECKED nodes", len(m.graph.node), "opset", m.opset_import[0].version, "producer", m.producer_name)
)";

void expect_same_run(const fs::path& a, const fs::path& b, double tol) {
  auto chk = tbtest::python(Peer::Torch, kFullCheck, {b.string()});
  INFO(chk.output);
  REQUIRE(chk.exit_code == 0);
  auto r = tbtest::python(Peer::Peers, kOrtCompare, {a.string(), b.string(), std::to_string(tol)});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.output, "SAME"));
}

}  // namespace

TEST_CASE("weights inside If, Loop and Scan subgraphs are read under the naming rule", "[onnx_full]") {
  CHECK(names_of(fixture("onnx_extra/cf_helper.onnx")) ==
        std::vector<std::string>{"Scan#3/body/If#0/then_branch/iw", "Scan#3/body/sw", "branch/else_branch/es",
                                 "branch/then_branch/tc", "branch/then_branch/tw", "top_w", "zero3"});
  CHECK(names_of(fixture("onnx_extra/cf_torch_if.onnx")) ==
        std::vector<std::string>{"/Constant_output_0", "/If/else_branch//Constant_2_output_0",
                                 "/If/then_branch//Constant_1_output_0", "a", "b"});
  CHECK(names_of(fixture("onnx_extra/cf_torch_loop.onnx")) ==
        std::vector<std::string>{"/Constant_output_0", "/Loop/body//Constant_1_output_0", "w"});
  CHECK(names_of(fixture("onnx_extra/cf_fp16.onnx")) ==
        std::vector<std::string>{"W", "pick_bias/else_branch/else_bias", "pick_bias/then_branch/then_bias"});
  auto r = tbtest::run_cli({"inspect", fixture("onnx_extra/cf_helper.onnx").string()});
  CHECK(contains(r.output, "subgraph weights: 5"));
  CHECK(contains(r.output, "branch/else_branch/es"));
}

TEST_CASE("subgraph weights reach safetensors with onnx's own values", "[onnx_full]") {
  tbtest::TempDir dir;
  for (const char* m : kModels) {
    auto st = dir / (std::string(m) + ".safetensors");
    auto r =
        tbtest::run_cli({"convert", "-q", fixture(std::string("onnx_extra/") + m + ".onnx").string(), st.string()});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    // The reference: onnx.numpy_helper over every graph, named by the rule (README), into an .npz.
    auto ref = dir / (std::string(m) + "_ref.npz");
    auto e = tbtest::python(Peer::Torch, R"(
import sys, numpy as np, onnx
from onnx import numpy_helper, helper
m = onnx.load(sys.argv[1])
out = {}
def walk(g, scope):
    for t in g.initializer: out[scope + t.name] = numpy_helper.to_array(t)
    for s in g.sparse_initializer:
        d = np.zeros(tuple(s.dims), numpy_helper.to_array(s.values).dtype)
        d.reshape(-1)[numpy_helper.to_array(s.indices)] = numpy_helper.to_array(s.values)
        out[scope + s.values.name] = d
    holders = [i for i, n in enumerate(g.node) if any(a.HasField('g') or len(a.graphs) for a in n.attribute)]
    for i, n in enumerate(g.node):
        if n.op_type == 'Constant' and n.domain in ('', 'ai.onnx'):
            a = n.attribute[0]
            out[scope + n.output[0]] = numpy_helper.to_array(a.t) if a.name == 'value' else np.array(helper.get_attribute_value(a))
    names = {i: (g.node[i].name or '%s#%d' % (g.node[i].op_type, i)) for i in holders}
    assert len(set(names.values())) == len(names)
    for i in holders:
        for a in g.node[i].attribute:
            if a.HasField('g'): walk(a.g, scope + names[i] + '/' + a.name + '/')
            for k, sub in enumerate(a.graphs): walk(sub, scope + names[i] + '/' + a.name + '/%d/' % k)
walk(m.graph, '')
np.savez(sys.argv[2], **out)
print(len(out))
)",
                            {fixture(std::string("onnx_extra/") + m + ".onnx").string(), ref.string()});
    INFO(e.output);
    REQUIRE(e.exit_code == 0);
    auto c = tbtest::python(Peer::Peers, R"(
import sys, numpy as np
from safetensors.numpy import load_file
got, want = load_file(sys.argv[1]), dict(np.load(sys.argv[2]))
assert sorted(got) == sorted(want), (sorted(got), sorted(want))
for k in want:
    assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
    assert got[k].tobytes() == want[k].tobytes(), k
print("ALL", len(want))
)",
                            {st.string(), ref.string()});
    INFO(c.output);
    REQUIRE(c.exit_code == 0);
    CHECK(contains(c.output, "ALL"));
  }
}

TEST_CASE("onnx -> onnx keeps the graph: full check and the same onnxruntime outputs", "[onnx_full]") {
  tbtest::TempDir dir;
  for (const char* m : kModels) {
    auto src = fixture(std::string("onnx_extra/") + m + ".onnx");
    auto out = dir / (std::string(m) + ".onnx");
    auto r = tbtest::run_cli({"convert", "-q", src.string(), out.string()});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    expect_same_run(src, out, 0);
    CHECK(names_of(out) == names_of(src));
  }
  // Producer, metadata and doc strings stay.
  auto out = dir / "cf_helper.onnx";
  auto chk = tbtest::python(Peer::Torch, R"(
import sys, onnx
m = onnx.load(sys.argv[1])
print(m.producer_name, {p.key: p.value for p in m.metadata_props}["author"], m.graph.doc_string)
)",
                            {out.string()});
  CHECK(contains(chk.output, "gen_onnx_control_flow.py tensorbridge fixtures weights in If, Scan and a nested If"));
}

TEST_CASE("onnx -> onnx --dtype float16 stores half weights and still checks and runs", "[onnx_full]") {
  tbtest::TempDir dir;
  for (const char* m : {"cf_torch_if", "cf_torch_loop", "cf_helper"}) {
    auto src = fixture(std::string("onnx_extra/") + m + ".onnx");
    auto out = dir / (std::string(m) + "_f16.onnx");
    auto r = tbtest::run_cli({"convert", "-q", src.string(), out.string(), "--dtype", "float16"});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    for (const auto& [k, t] : load(out).state_dict())
      if (k != "/Constant_output_0") CHECK(t.dtype() == DType::F16);
    expect_same_run(src, out, 2e-2);
  }
}

TEST_CASE("onnx -> onnx --rename renames the graph's references too", "[onnx_full]") {
  tbtest::TempDir dir;
  auto src = fixture("onnx_extra/cf_helper.onnx");
  auto out = dir / "renamed.onnx";
  auto r = tbtest::run_cli({"convert", "-q", src.string(), out.string(), "--rename", "top_w=weights.top", "--rename",
                            "branch/then_branch/tw=branch/then_branch/tw_renamed", "--rename", "zero3=init_state"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto keys = names_of(out);
  CHECK(std::count(keys.begin(), keys.end(), "weights.top") == 1);
  CHECK(std::count(keys.begin(), keys.end(), "branch/then_branch/tw_renamed") == 1);
  CHECK(std::count(keys.begin(), keys.end(), "init_state") == 1);
  expect_same_run(src, out, 0);

  r = tbtest::run_cli(
      {"convert", "-q", src.string(), (dir / "bad1.onnx").string(), "--rename", "branch/then_branch/tw=tw"});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "can be renamed only within it (the new name must start with 'branch/then_branch/')"));
  r = tbtest::run_cli({"convert", "-q", src.string(), (dir / "bad2.onnx").string(), "--rename", "top_w=X"});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "renaming 'top_w' to 'X' clashes with another value of the graph named 'X'"));
  CHECK(!fs::exists(dir / "bad1.onnx"));
}

TEST_CASE("onnx -> onnx refuses to leave out a weight the graph needs", "[onnx_full]") {
  tbtest::TempDir dir;
  auto src = fixture("onnx_extra/cf_helper.onnx");
  auto r = tbtest::run_cli({"convert", "-q", src.string(), (dir / "sel.onnx").string(), "--select", "branch/*"});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "the graph needs 'top_w' (an input of node 1 (Add))"));
  CHECK(!fs::exists(dir / "sel.onnx"));
  // Weights only, on request.
  r = tbtest::run_cli(
      {"convert", "-q", src.string(), (dir / "w.onnx").string(), "--select", "branch/*", "--option", "graph=drop"});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(names_of(dir / "w.onnx").size() == 3);
}

TEST_CASE("onnx -> onnx with external data keeps the graph", "[onnx_full]") {
  tbtest::TempDir dir;
  for (const char* m : {"cf_helper", "cf_torch_if"}) {
    auto src = fixture(std::string("onnx_extra/") + m + ".onnx");
    auto out = dir / (std::string(m) + "_ext.onnx");
    auto r = tbtest::run_cli({"convert", "-q", src.string(), out.string(), "--option", "external_data_threshold=16"});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    REQUIRE(fs::exists(dir / (std::string(m) + "_ext.onnx.data")));
    CHECK(fs::file_size(dir / (std::string(m) + "_ext.onnx.data")) > 0);
    expect_same_run(src, out, 0);
  }
}

TEST_CASE("subgraphs nested too deep are refused with a clear message", "[onnx_full]") {
  tbtest::TempDir dir;
  auto p = dir / "deep.onnx";
  auto g = tbtest::python(Peer::Torch, R"(
import sys, onnx
from onnx import helper, TensorProto, numpy_helper
import numpy as np
def level(k):
    out = helper.make_tensor_value_info('o%d' % k, TensorProto.FLOAT, [1])
    if k == 0:
        return helper.make_graph([helper.make_node('Identity', ['w0'], ['o0'])], 'g0', [], [out],
                                 initializer=[numpy_helper.from_array(np.ones(1, np.float32), 'w0')])
    n = helper.make_node('If', ['c'], ['o%d' % k], then_branch=level(k - 1), else_branch=level(0))
    return helper.make_graph([n], 'g%d' % k, [], [out])
top = level(20)
top.input.append(helper.make_tensor_value_info('c', TensorProto.BOOL, []))
onnx.save(helper.make_model(top), sys.argv[1])
)",
                          {p.string()});
  INFO(g.output);
  REQUIRE(g.exit_code == 0);
  auto r = tbtest::run_cli({"inspect", p.string()});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "subgraphs nest more than 16 levels deep"));
}

TEST_CASE("ONNX TensorProto .pb files read and write as one tensor", "[onnx_full]") {
  fs::path data = "/usr/share/libonnx-testdata/data/node/test_abs/test_data_set_0/input_0.pb";
  if (!fs::exists(data)) tbtest::skip("Debian package libonnx-testdata is not installed");
  Checkpoint c = load(data);
  CHECK(c.format == "onnx-tensor");
  StateDict sd = c.state_dict();
  REQUIRE(sd.size() == 1);
  CHECK(sd.entries()[0].first == "x");
  CHECK(sd.at("x").shape() == Shape{3, 4, 5});
  tbtest::TempDir dir;
  auto r = tbtest::run_cli({"convert", "-q", data.string(), (dir / "x.npz").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  r = tbtest::run_cli({"convert", "-q", (dir / "x.npz").string(), (dir / "back.pb").string()});
  REQUIRE(r.exit_code == 0);
  r = tbtest::run_cli({"diff", data.string(), (dir / "back.pb").string()});
  CHECK(r.exit_code == 0);
  auto v = tbtest::python(Peer::Torch, R"(
import sys, onnx
from onnx import numpy_helper
a, b = onnx.load_tensor(sys.argv[1]), onnx.load_tensor(sys.argv[2])
assert a.name == b.name and (numpy_helper.to_array(a) == numpy_helper.to_array(b)).all()
print("SAME")
)",
                          {data.string(), (dir / "back.pb").string()});
  CHECK(contains(v.output, "SAME"));
  // Many tensors do not fit one TensorProto.
  r = tbtest::run_cli({"convert", "-q", fixture("onnx_extra/cf_helper.onnx").string(), (dir / "many.pb").string()});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "a TensorProto file holds exactly one tensor, and there are 7"));
}

TEST_CASE("protobufs that are not tensors are not taken for .pb tensors", "[onnx_full]") {
  fs::path seq = "/usr/share/libonnx-testdata/data/node/test_identity_sequence/test_data_set_0/input_0.pb";
  if (!fs::exists(seq)) tbtest::skip("Debian package libonnx-testdata is not installed");
  auto r = tbtest::run_cli({"inspect", seq.string()});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "not a recognised weight file"));
  // An ONNX model with a .pb name is still a model.
  tbtest::TempDir dir;
  fs::copy_file(fixture("onnx_extra/cf_fp16.onnx"), dir / "model.pb");
  CHECK(load(dir / "model.pb").format == "onnx");
}
