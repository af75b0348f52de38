// TensorFlow checkpoint bundles need Protocol Buffers: without them the adapter still recognises a
// bundle and says how to get support.
#include "formats/adapters.h"
#include "formats/detail/stub.h"
#include "formats/tf_sstable.h"

namespace tb {
const FormatAdapter& tf_checkpoint_format() {
  static const FormatAdapter a = detail::unavailable_adapter(
      "tf-checkpoint", "TensorFlow checkpoint bundle (not built)", {".index"},
      [](const Source& s) {
        TfBundleLocation loc = find_tf_bundle(s);
        return !loc.index.empty() || !loc.ambiguous.empty();
      },
      "built without Protocol Buffers (libprotobuf-dev, protobuf-compiler); install them and reconfigure");
  return a;
}
}  // namespace tb
