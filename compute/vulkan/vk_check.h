// TB_VK_CHECK(expr): every VkResult goes through here; failures throw BackendError with the
// result's name, the call and where it happened.
#pragma once

#include <vulkan/vulkan.h>

#include "tensor/error.h"

namespace tb::compute::vulkan {

/** "VK_ERROR_OUT_OF_DEVICE_MEMORY" etc.; "VkResult(<n>)" for unknown values. */
const char* vk_result_name(VkResult r);

}  // namespace tb::compute::vulkan

#define TB_VK_CHECK(expr)                                                                                           \
  do {                                                                                                              \
    VkResult tb_vk_result_ = (expr);                                                                                \
    if (tb_vk_result_ != VK_SUCCESS)                                                                                \
      throw ::tb::BackendError(::tb::str("[vulkan] ", #expr,                                                        \
                                         " failed: ", ::tb::compute::vulkan::vk_result_name(tb_vk_result_), " at ", \
                                         __FILE__, ":", __LINE__));                                                 \
  } while (0)
