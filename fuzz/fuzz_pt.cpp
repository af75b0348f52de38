// torch .pt files: the zip container (archive/data.pkl + data/<key> storages) and the legacy
// stream (magic, protocol, sys_info pickles, storage table) through load_pt() from memory.
#include "formats/pt.h"
#include "fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tbfuzz::guarded([&] { tbfuzz::touch(tb::load_pt(tbfuzz::source(data, size, "fuzz.pt"))); });
  return 0;
}
