// Built when TB_WITH_VULKAN=OFF: the API links, and says why Vulkan is missing.
#include "compute/backend.h"

namespace tb::compute::vulkan {
bool is_available() { return false; }
std::vector<std::string> device_names() { return {}; }
std::unique_ptr<Backend> make_backend(int) {
  throw UnsupportedError("[vulkan] built without Vulkan support; reconfigure with -DTB_WITH_VULKAN=ON");
}
}  // namespace tb::compute::vulkan
