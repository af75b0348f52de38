// Architectures by structure (nn/arch_match.h, nn/arch_spec.h): the seed chapter's MLP under the names
// real code gives its layers loads into --arch and runs to torch's output; layer-sequence specs; whole
// modules of user classes (torch and OneFlow) load as module trees; bad fits are refused with both
// sides listed. Fixtures: fixtures/arch (fixtures/gen_arch.py).
#include "tests/support.h"

#include <cstdio>
#include <functional>

#include "models/arch.h"
#include "nn/arch_match.h"
#include "nn/arch_spec.h"
#include "nn/module.h"

using namespace tb;
namespace fs = std::filesystem;

namespace {

Tensor npy(const std::string& rel) { return tbtest::load_npy_tensor(tbtest::fixture(rel)); }

void check_close(const Tensor& got, const Tensor& want, const std::string& what) {
  REQUIRE(got.shape() == want.shape());
  std::printf("%s: max abs difference to torch %.3g\n", what.c_str(), max_abs_diff(got, want));
  CHECK(allclose(got, want, 1e-5, 1e-6));
}

LoadOptions trusting() {
  LoadOptions lo;
  lo.allow_unknown_globals = true;  // user classes kept as opaque objects, never called
  return lo;
}

// A state dict of Linear layers given as (name, out, in), in that order; values i * 0.01.
StateDict linears(const std::vector<std::tuple<std::string, int64_t, int64_t>>& layers) {
  StateDict sd;
  for (auto& [name, out, in] : layers) {
    std::vector<float> w(static_cast<size_t>(out * in)), b(static_cast<size_t>(out));
    for (size_t i = 0; i < w.size(); ++i) w[i] = float(i) * 0.01f;
    sd.insert(name + ".weight", Tensor::from_vector(DType::F32, {out, in}, w));
    sd.insert(name + ".bias", Tensor::from_vector(DType::F32, {out}, b));
  }
  return sd;
}

}  // namespace

TEST_CASE("the chapter MLP under every layer naming runs through --arch mlp and a layer sequence") {
  const Tensor X = npy("arch/mlp_X.npy"), Y = npy("arch/mlp_Y.npy");
  for (std::string file : {"chapter_mlp.params", "seq_mlp.pt", "fc_mlp.pt", "layers_mlp.pt", "net_mlp.pt",
                           "chapter_mlp_whole.pt", "oneflow_mlp_whole"})
    for (std::string spec : {"mlp:20,256,10", "linear:20,256 relu linear:256,10"}) {
      nn::ArchLoad how;
      how.load = trusting();
      nn::FileModel fm = nn::load_model(tbtest::fixture("arch/" + file), spec, how);
      INFO(file << " into " << spec << ":\n" << fm.mapping.describe());
      CHECK(fm.mapping.order == (file == "seq_mlp.pt" && spec[0] == 'l' ? "names" : "file order"));
      CHECK(fm.mapping.layers.size() == 2);
      check_close((*fm.model)(X), Y, file + " as " + spec);
    }

  // The mapping says which key went where, one line per layer.
  nn::FileModel fm = nn::load_model(tbtest::fixture("arch/chapter_mlp.params"), "mlp:20,256,10");
  CHECK(fm.mapping.renamed());
  CHECK(fm.mapping.describe() ==
        "hidden.{weight,bias} -> hidden.{weight,bias} (Linear)\noutput.{weight,bias} -> out.{weight,bias} (Linear)\n");
  CHECK(fm.mapping.layers[1].keys ==
        std::vector<std::pair<std::string, std::string>>{{"output.weight", "out.weight"}, {"output.bias", "out.bias"}});

  // Files already named like the architecture map by names, and nothing is reported.
  fm = nn::load_model(tbtest::fixture("torch/mlp.params"), "mlp:20,256,10");
  CHECK(fm.mapping.order == "names");
  CHECK(!fm.mapping.renamed());
  CHECK(fm.mapping.describe().empty());
}

TEST_CASE("build_arch: one call from a spec and a state dict; strict names keep the old refusal") {
  StateDict sd = load(tbtest::fixture("arch/chapter_mlp.params")).state_dict();
  nn::BuiltArch b = nn::build_arch("linear:20,256 relu linear:256,10", sd);
  CHECK(b.model->type_name() == "Sequential");
  CHECK(b.mapping.describe() ==
        "hidden.{weight,bias} -> 0.{weight,bias} (Linear)\noutput.{weight,bias} -> 2.{weight,bias} (Linear)\n");
  check_close((*b.model)(npy("arch/mlp_X.npy")), npy("arch/mlp_Y.npy"), "build_arch");

  nn::ArchOptions strict;
  strict.strict_names = true;
  std::string e = tbtest::error_text([&] { nn::build_arch("mlp:20,256,10", sd, strict); });
  CHECK(e.find("missing keys (2): 'out.weight', 'out.bias'") != std::string::npos);
  CHECK(e.find("unexpected keys (2): 'output.weight', 'output.bias'") != std::string::npos);
}

TEST_CASE("conv, BatchNorm buffers and pooling follow their layers; specs with every layer kind") {
  nn::FileModel cnn = nn::load_model(tbtest::fixture("arch/cnn_bn.pt"),
                                     "conv2d:3,8,3,1,1 batchnorm:8 relu maxpool:2 flatten linear:128,10");
  INFO(cnn.mapping.describe());
  CHECK(cnn.mapping.describe().find("features.1.{weight,bias,running_mean,running_var,num_batches_tracked} -> "
                                    "1.{weight,bias,running_mean,running_var,num_batches_tracked} (BatchNorm2d)") !=
        std::string::npos);
  CHECK(cnn.model->state_dict().at("1.num_batches_tracked").item_as_double() == 5.0);
  check_close((*cnn.model)(npy("arch/cnn_X.npy")), npy("arch/cnn_Y.npy"), "cnn_bn.pt by structure");

  // A BatchNorm without num_batches_tracked (torch < 0.4.1) keeps the model's 0; the outputs are the same.
  StateDict old_bn;
  for (auto& [k, t] : load(tbtest::fixture("arch/cnn_bn.pt")).state_dict())
    if (k != "features.1.num_batches_tracked") old_bn.insert(k, t);
  nn::BuiltArch b = nn::build_arch("conv2d:3,8,3,1,1 batchnorm:8 relu maxpool:2 flatten linear:128,10", old_bn);
  CHECK(b.model->state_dict().at("1.num_batches_tracked").item_as_double() == 0.0);
  check_close((*b.model)(npy("arch/cnn_X.npy")), npy("arch/cnn_Y.npy"), "cnn_bn.pt without num_batches_tracked");

  // LeakyReLU, AvgPool2d with padding counted, AdaptiveAvgPool2d(1), Tanh, Softmax: from the whole
  // nn.Sequential by itself and from a spec.
  nn::FileModel pools = nn::load_model(tbtest::fixture("arch/pools_whole.pt"));
  check_close((*pools.model)(npy("arch/pools_X.npy")), npy("arch/pools_Y.npy"), "pools_whole.pt");
  nn::FileModel spec = nn::load_model(tbtest::fixture("arch/pools_whole.pt"),
                                      "conv2d:3,4,3 leakyrelu:0.1 avgpool:3,2,1 conv2d:4,4,1 avgpool flatten "
                                      "linear:4,3 tanh softmax");
  check_close((*spec.model)(npy("arch/pools_X.npy")), npy("arch/pools_Y.npy"), "pools spec");

  // BatchNorm dims follow the rank at that point; a first-layer BatchNorm looks ahead.
  auto seq = nn::parse_layer_sequence("batchnorm:3 conv2d:3,4,3 batchnorm:4 flatten batchnorm:16 dropout:0.2 sigmoid");
  CHECK(seq->child("0")->type_name() == "BatchNorm2d");
  CHECK(seq->child("2")->type_name() == "BatchNorm2d");
  CHECK(seq->child("4")->type_name() == "BatchNorm1d");
  CHECK(nn::parse_layer_sequence("linear:4,2,nobias")->state_dict().keys() == std::vector<std::string>{"0.weight"});
}

TEST_CASE("order: the file's first, natural order for writer-sorted keys, else the one order shapes allow") {
  // fc2 written first: the natural order of the names (fc1, fc2) fits.
  StateDict sd = load(tbtest::fixture("arch/fc_mlp.pt")).state_dict();
  StateDict reversed;
  for (const char* k : {"fc2.weight", "fc2.bias", "fc1.weight", "fc1.bias"}) reversed.insert(k, sd.at(k));
  nn::BuiltArch b = nn::build_arch("mlp:20,256,10", reversed);
  CHECK(b.mapping.order == "natural name order");
  check_close((*b.model)(npy("arch/mlp_X.npy")), npy("arch/mlp_Y.npy"), "fc2 written first");
  // Neither the file's order nor the names' fits (the output layer is 'a', written first): the shapes
  // allow one order only.
  StateDict named;
  named.insert("a.weight", sd.at("fc2.weight")), named.insert("a.bias", sd.at("fc2.bias"));
  named.insert("z.weight", sd.at("fc1.weight")), named.insert("z.bias", sd.at("fc1.bias"));
  b = nn::build_arch("mlp:20,256,10", named);
  CHECK(b.mapping.order == "shapes (the only order that fits)");
  CHECK(b.mapping.describe() ==
        "z.{weight,bias} -> hidden.{weight,bias} (Linear)\na.{weight,bias} -> out.{weight,bias} (Linear)\n");
  check_close((*b.model)(npy("arch/mlp_X.npy")), npy("arch/mlp_Y.npy"), "output layer written first");

  // Eleven equal layers with keys in byte order (as safetensors writes them): natural order wins.
  std::vector<std::tuple<std::string, int64_t, int64_t>> eq;
  for (int i = 0; i < 11; ++i) eq.emplace_back("l." + std::to_string(i), 3, 3);
  StateDict natural = linears(eq), sorted;
  std::vector<std::string> keys = natural.keys();
  std::sort(keys.begin(), keys.end());
  for (auto& k : keys) sorted.insert(k, natural.at(k));
  std::string spec;
  for (int i = 0; i < 11; ++i) spec += "linear:3,3 ";
  b = nn::build_arch(spec, sorted);
  CHECK(b.mapping.order == "natural name order; the file's keys are sorted");
  CHECK(b.mapping.layers[2].source == "l.2");
  CHECK(b.mapping.layers[10].source == "l.10");
}

TEST_CASE("ambiguous and partial fits are refused with the candidates and both sides listed") {
  // a (8x4) first: neither the file's order nor the names' fits, and c/b (both 4x4) fit either way.
  StateDict sd = linears({{"a", 8, 4}, {"c", 4, 4}, {"b", 4, 4}});
  std::string e = tbtest::error_text([&] { nn::build_arch("linear:4,4 relu linear:4,4 relu linear:4,8", sd); });
  INFO(e);
  CHECK(e.find("the file's order does not fit and several orders do; candidates:") != std::string::npos);
  CHECK(e.find("(1) c -> 0, b -> 2, a -> 4") != std::string::npos);
  CHECK(e.find("(2) b -> 0, c -> 2, a -> 4") != std::string::npos);
  CHECK_THROWS_AS(nn::build_arch("linear:4,4 relu linear:4,4 relu linear:4,8", sd), KeyError);

  // Three layers for a two-layer architecture.
  e = tbtest::error_text([] { nn::load_model(tbtest::fixture("arch/mlp3.pt"), "mlp:20,256,10"); });
  INFO(e);
  CHECK(e.find("the state dict has 3 layers with tensors, the architecture 2") != std::string::npos);
  CHECK(e.find("hidden Linear: weight [256, 20], bias [256]") != std::string::npos);
  CHECK(e.find("4: weight [10, 16], bias [10]") != std::string::npos);
  CHECK(e.find("loading '") != std::string::npos);

  // Same layer count, a shape that differs: ShapeError naming the first misfit.
  e = tbtest::error_text([] { nn::build_arch("mlp:20,128,10", load(tbtest::fixture("arch/fc_mlp.pt")).state_dict()); });
  INFO(e);
  CHECK(e.find("no order of the file's layers has the architecture's shapes") != std::string::npos);
  CHECK(e.find("first misfit in file order: layer 1 of the architecture, hidden Linear: weight [128, 20]") !=
        std::string::npos);
  CHECK_THROWS_AS(nn::build_arch("mlp:20,128,10", load(tbtest::fixture("arch/fc_mlp.pt")).state_dict()), ShapeError);

  // A missing bias is a partial fit, not a silent zero.
  StateDict no_bias = load(tbtest::fixture("arch/fc_mlp.pt")).state_dict();
  StateDict cut;
  for (auto& [k, t] : no_bias)
    if (k != "fc2.bias") cut.insert(k, t);
  CHECK_THROWS_AS(nn::build_arch("mlp:20,256,10", cut), KeyError);
}

TEST_CASE("spec errors name the layer and list the forms") {
  std::string e = tbtest::error_text([] { nn::builtin_model("linear:20 relu"); });
  CHECK(e.find("layer 'linear:20' needs the form linear:IN,OUT[,nobias]") != std::string::npos);
  CHECK(e.find("--arch forms:") != std::string::npos);
  e = tbtest::error_text([] { nn::builtin_model("linear:20,10 swish"); });
  CHECK(e.find("layer 'swish' is not a known layer") != std::string::npos);
  e = tbtest::error_text([] { nn::builtin_model("conv2d:3,x,3"); });
  CHECK(e.find("has 'x' where a positive integer belongs") != std::string::npos);
  e = tbtest::error_text([] { nn::builtin_model("relu:2"); });
  CHECK(e.find("layer 'relu:2' takes no arguments") != std::string::npos);
  e = tbtest::error_text([] { nn::builtin_model("resnet50"); });
  CHECK(e.find("unknown built-in architecture 'resnet50'") != std::string::npos);
}

TEST_CASE("whole modules of user classes load as module trees; running them needs an architecture") {
  CHECK_THROWS_AS(nn::load_model(tbtest::fixture("arch/chapter_mlp_whole.pt")), UnsafeError);
  for (std::string file : {"chapter_mlp_whole.pt", "oneflow_mlp_whole"}) {
    nn::FileModel fm = nn::load_model(tbtest::fixture("arch/" + file), trusting());
    INFO(file << ": " << fm.model->repr());
    CHECK(fm.model->type_name() == "MLP");
    CHECK(fm.model->state_dict().keys() ==
          std::vector<std::string>{"hidden.weight", "hidden.bias", "output.weight", "output.bias"});
    CHECK(equal(fm.model->state_dict().at("output.bias"),
                load(tbtest::fixture("arch/chapter_mlp.params")).state_dict().at("output.bias")));
    auto users = nn::modules_without_forward(*fm.model);
    REQUIRE(users.size() == 1);
    CHECK(users[0].second->class_name == "__main__.MLP");
    std::string e = tbtest::error_text([&] { nn::require_forward(*fm.model, file); });
    CHECK(e.find("holds a whole module of the user class __main__.MLP") != std::string::npos);
    CHECK(e.find("--arch \"linear:20,256 relu linear:256,10\"") != std::string::npos);
  }
  // The CNN's guess keeps the layers the tree holds (ReLU, MaxPool2d) and adds the flatten.
  nn::FileModel cnn = nn::load_model(tbtest::fixture("arch/cnn_bn_whole.pt"), trusting());
  CHECK(nn::guess_arch_spec(*cnn.model) == "conv2d:3,8,3,1,1 batchnorm:8 relu maxpool:2,2,0 flatten linear:128,10");
  nn::FileModel run = nn::load_model(tbtest::fixture("arch/cnn_bn_whole.pt"), nn::guess_arch_spec(*cnn.model), [] {
    nn::ArchLoad how;
    how.load = trusting();
    return how;
  }());
  check_close((*run.model)(npy("arch/cnn_X.npy")), npy("arch/cnn_Y.npy"), "cnn_bn_whole.pt with the guessed spec");
}

TEST_CASE("OneFlow whole modules run like torch ones (Sequential by itself, a known layer by itself)") {
  nn::FileModel seq = nn::load_model(tbtest::fixture("arch/oneflow_seq_whole"));
  CHECK(seq.architecture == "oneflow module tree");
  check_close((*seq.model)(npy("arch/mlp_X.npy")), npy("arch/mlp_Y.npy"), "oneflow_seq_whole");
  // OneFlow's own test data: flow.save(nn.Conv2d(3, 3, 3)).
  nn::FileModel conv = nn::load_model(tbtest::fixture("shared/oneflow/flow_save_dir_full_module/3x3_i3o3_conv2d"));
  CHECK(conv.model->type_name() == "Conv2d");
  check_close((*conv.model)(npy("arch/oneflow_conv_X.npy")), npy("arch/oneflow_conv_Y.npy"), "oneflow conv2d");
}
