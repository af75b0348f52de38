// ONNX support is optional (TB_WITH_ONNX=OFF): the adapter still recognises .onnx files and says how
// to get support.
#include "formats/adapters.h"
#include "formats/detail/stub.h"

namespace tb {
const FormatAdapter& onnx_format() {
  static const FormatAdapter a =
      detail::unavailable_adapter("onnx", "ONNX model initializers (not built)", {".onnx"}, nullptr,
                                  "built without ONNX support; reconfigure with -DTB_WITH_ONNX=ON");
  return a;
}
const FormatAdapter& onnx_tensor_format() {
  static const FormatAdapter a =
      detail::unavailable_adapter("onnx-tensor", "one ONNX TensorProto (not built)", {".pb"}, nullptr,
                                  "built without ONNX support; reconfigure with -DTB_WITH_ONNX=ON");
  return a;
}
}  // namespace tb
