// Placeholder until the OneFlow flow.save folder adapter lands.
#include "formats/adapters.h"
#include "formats/detail/stub.h"

namespace tb {
const FormatAdapter& oneflow_format() {
  static const FormatAdapter a = detail::unavailable_adapter(
      "oneflow", "OneFlow flow.save folder", {}, nullptr, "not implemented yet");
  return a;
}
}  // namespace tb
