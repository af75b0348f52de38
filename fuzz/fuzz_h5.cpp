// HDF5 / Keras .h5 as a file image handed to the HDF5 C library (H5Pset_file_image), then our
// walk of groups, datasets, attributes and Keras layouts.
#include "formats/h5.h"
#include "fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tbfuzz::guarded([&] { tbfuzz::touch(tb::load_h5(tbfuzz::source(data, size, "fuzz.h5"))); });
  return 0;
}
