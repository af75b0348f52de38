// The zip reader alone (formats/detail/zip.cpp): end of central directory, ZIP64 records, central
// directory entries, local headers, inflating and CRC checks of every member. Inflation is capped
// at 64 MiB so that a legitimate bomb is refused rather than exhausting the fuzzer's memory.
#include "formats/detail/zip.h"
#include "fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto r = tbfuzz::reader(data, size, "fuzz.zip");
  (void)tb::zip::looks_like_zip(*r);
  tbfuzz::guarded([&] {
    tb::zip::ReadOptions o;
    o.max_inflated_size = 64u << 20;
    o.verify_stored_crc = true;
    tb::zip::ZipReader z(r, o);
    for (const auto& e : z.entries()) {
      tbfuzz::guarded([&] {
        auto m = z.open(e);
        if (m->size()) (void)m->read_bytes(m->size() - 1, 1);
      });
    }
  });
  return 0;
}
