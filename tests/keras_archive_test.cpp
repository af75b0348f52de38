// Keras 3 .keras archives written by Keras 3 (fixtures/gen_keras_archive.py): what inspect lists is
// what h5py finds in the archive's model.weights.h5, `run` gives Keras's predict(), torch-style names
// are the layers' own names, and damaged archives are refused naming the member.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include <nlohmann/json.hpp>

#include "formats/registry.h"
#include "tests/support.h"

using tbtest::contains;

using namespace tb;
namespace fs = std::filesystem;
using tbtest::run_cli;

namespace {}  // namespace

TEST_CASE(".keras: inspect lists exactly the datasets of the archive's model.weights.h5", "[keras_archive]") {
  for (const char* name : {"mlp", "cnn"}) {
    const std::string path = tbtest::fixture(str("keras_archive/", name, ".keras")).string();
    auto r = run_cli({"inspect", "--json", path});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    auto j = nlohmann::json::parse(r.output);
    CHECK(j["format"] == "keras");
    std::string ours;
    for (const auto& t : j["tensors"])
      ours += str(t["name"].get<std::string>(), " ", t["dtype"].get<std::string>(), " ", t["shape"].dump(), "\n");
    auto h = tbtest::python(tbtest::Peer::Torch, R"(
import io, sys, zipfile, h5py
f = h5py.File(io.BytesIO(zipfile.ZipFile(sys.argv[1]).read('model.weights.h5')), 'r')
rows = []
f.visititems(lambda n, o: rows.append('%s %s %s' % (n, o.dtype.name, str(list(o.shape)).replace(' ', ''))) if isinstance(o, h5py.Dataset) else None)
print('\n'.join(sorted(rows)))
)",
                            {path});
    INFO(h.output);
    REQUIRE(h.exit_code == 0);
    std::vector<std::string> a, b;
    std::istringstream sa(ours), sb(h.output);
    for (std::string l; std::getline(sa, l);) a.push_back(l);
    for (std::string l; std::getline(sb, l);)
      if (!l.empty()) b.push_back(l);
    std::sort(a.begin(), a.end());
    CHECK(a == b);
  }
}

TEST_CASE(".keras: run builds the model from config.json and gives Keras's predict()", "[keras_archive]") {
  tbtest::TempDir dir;
  for (const char* name : {"mlp", "cnn"}) {
    auto x = tbtest::fixture(str("keras_archive/", name, "_X.npy")).string();
    auto out = (dir / str(name, "_Y.npy")).string();
    auto r = run_cli({"run", tbtest::fixture(str("keras_archive/", name, ".keras")).string(), "-i", x, "-o", out});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK(contains(r.output, "keras model_config"));
    Tensor y = tbtest::load_npy_tensor(out),
           want = tbtest::load_npy_tensor(tbtest::fixture(str("keras_archive/", name, "_Y.npy")));
    REQUIRE(y.shape() == want.shape());
    auto yv = y.to_vector<float>(), wv = want.to_vector<float>();
    for (size_t i = 0; i < yv.size(); ++i) CHECK(std::abs(yv[i] - wv[i]) <= 1e-5f + 1e-5f * std::abs(wv[i]));
  }
}

TEST_CASE(".keras: --style torch names layers by their own names, values are Keras's weights", "[keras_archive]") {
  tbtest::TempDir dir;
  auto out = (dir / "mlp.safetensors").string();
  auto r = run_cli({"convert", tbtest::fixture("keras_archive/mlp.keras").string(), out, "--style", "torch"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto p = tbtest::python(tbtest::Peer::Peers, R"(
import os, sys
os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
import keras, numpy as np
from safetensors.numpy import load_file
m = keras.saving.load_model(sys.argv[1])
t = load_file(sys.argv[2])
print(sorted(t))
for layer in ('hidden', 'output'):
    k, b = m.get_layer(layer).get_weights()
    assert np.array_equal(t[layer + '.weight'], k.T), layer
    assert np.array_equal(t[layer + '.bias'], b), layer
print('same')
)",
                          {tbtest::fixture("keras_archive/mlp.keras").string(), out});
  INFO(p.output);
  CHECK(p.exit_code == 0);
  CHECK(contains(p.output, "['hidden.bias', 'hidden.weight', 'output.bias', 'output.weight']"));
}

TEST_CASE(".keras: damaged archives are refused naming the member", "[keras_archive]") {
  tbtest::TempDir dir;
  auto p = tbtest::python(tbtest::Peer::Torch, R"(
import sys, zipfile
src = zipfile.ZipFile(sys.argv[1])
def write(name, replace):
    with zipfile.ZipFile(name, 'w') as z:
        for i in src.infolist():
            if i.filename in replace:
                if replace[i.filename] is not None: z.writestr(i.filename, replace[i.filename])
            else:
                z.writestr(i, src.read(i.filename))
write(sys.argv[2] + '/badjson.keras', {'config.json': b'{"class_name": "Sequential", '})
write(sys.argv[2] + '/badweights.keras', {'model.weights.h5': b'not hdf5 at all'})
)",
                          {tbtest::fixture("keras_archive/mlp.keras").string(), dir.path().string()});
  INFO(p.output);
  REQUIRE(p.exit_code == 0);
  auto r = run_cli({"inspect", (dir / "badjson.keras").string()});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "member 'config.json' is not valid JSON"));
  r = run_cli({"inspect", (dir / "badweights.keras").string()});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "model.weights.h5"));
}

TEST_CASE(".keras written from .keras and Keras 2 full-model .h5 files: Keras 3 load_model predicts the same",
          "[keras_archive]") {
  tbtest::TempDir dir;
  struct Case {
    const char* src;
    const char* x;
    const char* y;
  };
  const Case cases[] = {{"keras_archive/mlp.keras", "keras_archive/mlp_X.npy", "keras_archive/mlp_Y.npy"},
                        {"keras_archive/cnn.keras", "keras_archive/cnn_X.npy", "keras_archive/cnn_Y.npy"},
                        {"keras/mlp_keras2_full.h5", "keras/mlp_X.npy", "keras/mlp_keras2_Y.npy"},
                        {"h5_extra/cnn_keras2_full.h5", "h5_extra/cnn_X.npy", "h5_extra/cnn_keras2_Y.npy"}};
  std::vector<std::string> argv;
  for (const Case& c : cases) {
    auto out = (dir / (fs::path(c.src).stem().string() + ".keras")).string();
    auto r = run_cli({"convert", tbtest::fixture(c.src).string(), out});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    for (const auto& a : {out, tbtest::fixture(c.x).string(), tbtest::fixture(c.y).string()}) argv.push_back(a);
  }
  auto p = tbtest::python(tbtest::Peer::Peers, R"(
import os, sys, zipfile
os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
import keras, numpy as np
a = sys.argv[1:]
for i in range(0, len(a), 3):
    assert zipfile.ZipFile(a[i]).namelist() == ['metadata.json', 'config.json', 'model.weights.h5']
    m = keras.saving.load_model(a[i])
    d = float(np.abs(m.predict(np.load(a[i + 1]), verbose=0) - np.load(a[i + 2])).max())
    print(os.path.basename(a[i]), d)
    assert d <= 1e-5, a[i]
print('all predict the same')
)",
                          argv);
  INFO(p.output);
  CHECK(p.exit_code == 0);
  CHECK(contains(p.output, "all predict the same"));
}

TEST_CASE(".keras: a source without an architecture is refused; roundtrip is bit-exact", "[keras_archive]") {
  tbtest::TempDir dir;
  auto r = run_cli({"convert", tbtest::fixture("torch/mlp.params").string(), (dir / "m.keras").string()});
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, "a .keras archive holds the model's architecture (config.json) and this source has none"));
  CHECK_FALSE(fs::exists(dir / "m.keras"));
  r = run_cli({"roundtrip", tbtest::fixture("keras_archive/cnn.keras").string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "keras->keras        bit-exact"));
  CHECK(contains(r.output, "keras->pt           bit-exact"));
}

TEST_CASE(".keras: the weights are read from a locked temporary file that is gone afterwards, or from memory",
          "[keras_archive]") {
  const fs::path keras = tbtest::fixture("keras_archive/mlp.keras");
  const StateDict expected = load(keras).state_dict();
  tbtest::TempDir tmp;
  const char* old = std::getenv("TMPDIR");
  const std::string saved = old ? old : "";
  auto same = [&](const StateDict& sd) {  // the values, and how many are file mappings
    REQUIRE(sd.size() == expected.size());
    for (const auto& [k, t] : expected) {
      INFO(k);
      REQUIRE(sd.contains(k));
      CHECK(equal(sd.at(k), t));
    }
    size_t mapped = 0;
    for (const auto& [k, t] : sd) mapped += t.storage() && t.storage()->kind() == Storage::Kind::Mapped;
    return mapped;
  };
  ::setenv("TMPDIR", tmp.path().c_str(), 1);
  {
    LoadOptions o;
    o.mmap = true;
    CHECK(same(load(keras, o).state_dict()) == expected.size());  // mapped from the removed copy
    CHECK(fs::is_empty(tmp.path()));
  }
  {
    // A copy left by a killed load (no lock held) goes with the next load; one a live load holds stays.
    const fs::path stale = tmp / "tensorbridge-keras-Stale1", live = tmp / "tensorbridge-keras-Live12";
    std::ofstream(stale) << "left by a killed process";
    std::ofstream(live) << "held by a running load";
    const int held = ::open(live.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(held >= 0);
    REQUIRE(::flock(held, LOCK_SH) == 0);
    same(load(keras).state_dict());
    CHECK_FALSE(fs::exists(stale));
    CHECK(fs::exists(live));
    ::close(held);
    fs::remove(live);
    CHECK(fs::is_empty(tmp.path()));
  }
  ::setenv("TMPDIR", (tmp / "missing").c_str(), 1);  // no temporary file possible: the member's bytes
  CHECK(same(load(keras).state_dict()) == 0);
  if (old)
    ::setenv("TMPDIR", saved.c_str(), 1);
  else
    ::unsetenv("TMPDIR");
}
