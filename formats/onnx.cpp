// Placeholder until the ONNX initializers adapter lands.
#include "formats/adapters.h"
#include "formats/detail/stub.h"

namespace tb {
const FormatAdapter& onnx_format() {
  static const FormatAdapter a = detail::unavailable_adapter(
      "onnx", "ONNX initializers", {".onnx", }, nullptr, "not implemented yet");
  return a;
}
}  // namespace tb
