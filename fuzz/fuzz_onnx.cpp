// ONNX model bytes (protobuf ModelProto): initializers (raw_data and typed fields), graph reading.
#include "formats/onnx.h"
#include "fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tbfuzz::guarded([&] { tbfuzz::touch(tb::load_onnx(tbfuzz::source(data, size, "fuzz.onnx"))); });
  tbfuzz::guarded([&] { (void)tb::read_onnx_graph(tbfuzz::source(data, size, "fuzz.onnx")); });
  return 0;
}
