// Placeholder until the NumPy .npz archive adapter lands.
#include "formats/adapters.h"
#include "formats/detail/stub.h"

namespace tb {
const FormatAdapter& npz_format() {
  static const FormatAdapter a = detail::unavailable_adapter(
      "npz", "NumPy .npz archive", {".npz", }, nullptr, "not implemented yet");
  return a;
}
}  // namespace tb
