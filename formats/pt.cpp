// Placeholder until the PyTorch torch.save (zip and legacy) adapter lands.
#include "formats/adapters.h"
#include "formats/detail/stub.h"

namespace tb {
const FormatAdapter& pt_format() {
  static const FormatAdapter a = detail::unavailable_adapter(
      "pt", "PyTorch torch.save (zip and legacy)", {".pt", ".pth", ".bin", ".params", ".ckpt", ".tar", }, nullptr, "not implemented yet");
  return a;
}
}  // namespace tb
