// .npy: the magic/version/header dict parser and the data (including pickled object arrays).
#include "formats/npy.h"
#include "fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto r = tbfuzz::reader(data, size, "fuzz.npy");
  tbfuzz::guarded([&] { (void)tb::read_npy_header(*r); });
  tbfuzz::guarded([&] {
    tb::Source s;
    s.reader = r;
    tbfuzz::touch(tb::load_npy(s));
  });
  return 0;
}
