// TorchScript archives: zip + data.pkl module tree (__torch__ classes), constants.pkl, code/ read as
// text, through load_torchscript() from memory.
#include "formats/torchscript.h"
#include "fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tbfuzz::guarded([&] { tbfuzz::touch(tb::load_torchscript(tbfuzz::source(data, size, "fuzz.pt"))); });
  return 0;
}
