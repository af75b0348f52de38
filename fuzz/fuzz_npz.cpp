// .npz: a zip of .npy members (stored or deflated) through load_npz() from memory.
#include "formats/npy.h"
#include "fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tbfuzz::guarded([&] { tbfuzz::touch(tb::load_npz(tbfuzz::source(data, size, "fuzz.npz"))); });
  return 0;
}
