// .safetensors: 8-byte header length, JSON header (dtypes, shapes, data_offsets, __metadata__).
#include "formats/safetensors.h"
#include "fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tbfuzz::guarded([&] { tbfuzz::touch(tb::load_safetensors(tbfuzz::reader(data, size, "fuzz.safetensors"))); });
  return 0;
}
