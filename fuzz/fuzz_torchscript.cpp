// TorchScript archives: zip + data.pkl module tree (__torch__ classes), constants.pkl, code/ read as
// text, through load_torchscript() from memory.
#include "fuzz/fuzz_common.h"
#include "formats/torchscript.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tbfuzz::guarded([&] { tbfuzz::touch(tb::load_torchscript(tbfuzz::source(data, size, "fuzz.pt"))); });
  return 0;
}
