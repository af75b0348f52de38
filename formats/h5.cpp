// Placeholder until the HDF5 / Keras .h5 adapter lands.
#include "formats/adapters.h"
#include "formats/detail/stub.h"

namespace tb {
const FormatAdapter& h5_format() {
  static const FormatAdapter a = detail::unavailable_adapter(
      "h5", "HDF5 / Keras .h5", {".h5", ".hdf5", ".keras", }, nullptr, "not implemented yet");
  return a;
}
}  // namespace tb
