// .gguf: header counts, typed key-values (nested arrays), tensor infos, aligned data; each input is
// loaded dequantized and again with the raw blocks kept.
#include "formats/gguf.h"
#include "fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (bool keep : {false, true}) {
    tb::LoadOptions o;
    o.keep_quantized = keep;
    tbfuzz::guarded([&] { tbfuzz::touch(tb::load_gguf(tbfuzz::reader(data, size, "fuzz.gguf"), o)); });
  }
  return 0;
}
