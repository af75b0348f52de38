// The pickle VM (formats/detail/pickle_vm.cpp) on arbitrary bytes. The first byte picks the options:
// bit 0 keeps unknown globals as opaque objects, bit 1 answers persistent ids with a tensor (like
// torch storages do); the rest is the pickle. globals_in() (the no-run scan) sees the same bytes.
#include "formats/detail/pickle.h"
#include "fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  uint8_t mode = data[0];
  auto r = tbfuzz::reader(data + 1, size - 1, "fuzz.pkl");
  tb::pickle::Options opts;
  opts.allow_unknown_globals = mode & 1;
  if (mode & 2) {
    opts.persistent_load = [](const tb::Value&) {
      return tb::Value::tensor(tb::Tensor::zeros(tb::DType::F32, tb::Shape{4}));
    };
  }
  tbfuzz::guarded([&] { (void)tb::pickle::load(*r, 0, r->size(), opts); });
  tbfuzz::guarded([&] { (void)tb::pickle::globals_in(*r, 0, r->size()); });
  return 0;
}
