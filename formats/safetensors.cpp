// Placeholder until the safetensors adapter lands.
#include "formats/adapters.h"
#include "formats/detail/stub.h"

namespace tb {
const FormatAdapter& safetensors_format() {
  static const FormatAdapter a = detail::unavailable_adapter(
      "safetensors", "safetensors", {".safetensors", }, nullptr, "not implemented yet");
  return a;
}
}  // namespace tb
