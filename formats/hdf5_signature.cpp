// The HDF5 signature check, built with or without the HDF5 library: sniffing needs only the bytes, so
// a build without HDF5 still tells the user what the file is.
#include <cstring>

#include "formats/h5.h"

namespace tb {

uint64_t hdf5_signature_offset(const Reader& r) {
  static const uint8_t sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  const uint64_t size = r.size();
  for (uint64_t off = 0; off + 8 <= size; off = off == 0 ? 512 : off * 2) {
    uint8_t b[8];
    r.read_at(off, b, 8);
    if (std::memcmp(b, sig, 8) == 0) return off;
    if (off > (1ull << 40)) break;
  }
  return UINT64_MAX;
}

bool is_hdf5(const Reader& r) {
  try {
    return hdf5_signature_offset(r) != UINT64_MAX;
  } catch (...) {
    return false;
  }
}

}  // namespace tb
