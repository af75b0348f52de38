// OneFlow variable `meta` files (VariableMetaInfo text proto: shape { dim: N } data_type: kFloat).
#include <string_view>

#include "formats/oneflow.h"
#include "fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  tbfuzz::guarded([&] {
    tb::OneflowMeta m = tb::parse_oneflow_meta(text, "fuzz/meta");
    (void)tb::oneflow_meta_text(m);
  });
  return 0;
}
