// Placeholder until the NumPy .npy adapter lands.
#include "formats/adapters.h"
#include "formats/detail/stub.h"

namespace tb {
const FormatAdapter& npy_format() {
  static const FormatAdapter a = detail::unavailable_adapter(
      "npy", "NumPy .npy", {".npy", }, nullptr, "not implemented yet");
  return a;
}
}  // namespace tb
