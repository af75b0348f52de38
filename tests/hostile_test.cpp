// Damaged input never crashes the loader: every truncation point of a small fixture of each format
// and random byte flips either load or throw a tb::Error with a message naming the file. Anything
// else (a crash, std::bad_alloc, another exception type) fails. Runs under an address-space cap
// (outside sanitizer builds) so that allocating what a header merely claims fails the test.
#include "tests/support.h"

#include <sys/resource.h>

#include <fstream>
#include <random>

using namespace tb;

namespace {

#if defined(__SANITIZE_ADDRESS__)
void cap_memory() {}
#else
void cap_memory() {
  static bool done = false;
  if (done) return;
  rlimit lim{size_t(4) << 30, size_t(4) << 30};  // 4 GiB of address space
  ::setrlimit(RLIMIT_AS, &lim);
  done = true;
}
#endif

std::vector<uint8_t> read_all(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

// Loads bytes written to a file named like the original (sniffing is by content; the name only
// keeps extensions meaningful). Returns an empty string on success, the error message otherwise.
std::string try_load(const std::filesystem::path& dir, const std::string& name, const std::vector<uint8_t>& bytes) {
  auto p = dir / name;
  {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  }
  try {
    Checkpoint c = load(p);
    StateDict sd = c.state_dict();
    for (const auto& [k, t] : sd) (void)t.contiguous();  // touch the data
    return {};
  } catch (const Error& e) {
    return e.what();
  } catch (const std::bad_alloc&) {
    FAIL("std::bad_alloc loading a damaged " << name << " (" << bytes.size() << " bytes)");
  } catch (const std::exception& e) {
    FAIL("non-tensorbridge exception loading a damaged " << name << ": " << e.what());
  }
  return {};
}

void damage_and_load(const std::string& rel) {
  cap_memory();
  auto src = tbtest::fixture(rel);
  auto bytes = read_all(src);
  REQUIRE(!bytes.empty());
  std::string name = src.filename().string();
  tbtest::TempDir dir;
  // The intact file loads.
  REQUIRE(try_load(dir.path(), name, bytes).empty());
  // Every truncation point for small files, 400 evenly spread points for larger ones.
  size_t step = std::max<size_t>(1, bytes.size() / 400);
  size_t refused = 0;
  for (size_t n = 0; n < bytes.size(); n += step) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + long(n));
    std::string err = try_load(dir.path(), name, cut);
    if (!err.empty()) {
      ++refused;
      if (err.find(name) == std::string::npos)
        FAIL("error for a truncated " << name << " does not name the file: " << err);
    }
  }
  CHECK(refused > 0);
  // Random byte flips with a fixed seed.
  std::mt19937 rng(12345);
  for (int i = 0; i < 300; ++i) {
    auto copy = bytes;
    int flips = 1 + int(rng() % 4);
    for (int f = 0; f < flips; ++f) copy[rng() % copy.size()] ^= uint8_t(1u << (rng() % 8));
    try_load(dir.path(), name, copy);
  }
}

}  // namespace

TEST_CASE("damaged .pt (zip) files are refused cleanly", "[hostile]") { damage_and_load("torch/single_tensor.pt"); }
TEST_CASE("damaged .pt (legacy) files are refused cleanly", "[hostile]") { damage_and_load("torch/legacy_mlp.pt"); }
TEST_CASE("damaged .npy files are refused cleanly", "[hostile]") { damage_and_load("numpy/f64_fortran.npy"); }
TEST_CASE("damaged object .npy files are refused cleanly", "[hostile]") { damage_and_load("numpy/dict.npy"); }
TEST_CASE("damaged .npz files are refused cleanly", "[hostile]") { damage_and_load("numpy/arrays_compressed.npz"); }
TEST_CASE("damaged .safetensors files are refused cleanly", "[hostile]") {
  damage_and_load("safetensors/dtypes.safetensors");
}
TEST_CASE("damaged .onnx files are refused cleanly", "[hostile][needs_onnx]") { damage_and_load("onnx/mlp.onnx"); }
TEST_CASE("damaged .h5 files are refused cleanly", "[hostile][needs_hdf5]") { damage_and_load("h5/plain.h5"); }
