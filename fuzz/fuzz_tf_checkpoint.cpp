// TensorFlow bundle .index: LevelDB table (footer, block handles, prefix-compressed entries, CRCs),
// then the BundleHeaderProto and every BundleEntryProto checked for consistency.
#include "formats/tf_checkpoint.h"
#include "fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tbfuzz::guarded([&] {
    auto r = tbfuzz::reader(data, size, "fuzz.index");
    tb::LoadBudget budget(tb::default_load_limits(), r->label(), r->size());
    tb::TfBundleIndex idx = tb::parse_tf_bundle_index(*r, budget);
    volatile uint64_t sink = 0;
    for (const auto& e : idx.entries) sink = sink + e.size + e.key.size();
    (void)sink;
  });
  return 0;
}
