#include "compute/vulkan/buffer.h"

#include "compute/vulkan/vk_check.h"

namespace tb::compute::vulkan {

std::shared_ptr<Buffer> Buffer::create(std::shared_ptr<Context> ctx, size_t nbytes, Use use) {
  std::shared_ptr<Buffer> b(new Buffer());
  b->ctx_ = ctx;
  b->size_ = std::max<size_t>(4, (nbytes + 3) / 4 * 4);
  VkDevice dev = ctx->device();
  VkBufferCreateInfo bci{};
  bci.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO;
  bci.size = b->size_;
  bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  bci.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  TB_VK_CHECK(vkCreateBuffer(dev, &bci, nullptr, &b->buffer_));
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(dev, b->buffer_, &req);

  const VkMemoryPropertyFlags host = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  std::vector<int> candidates;
  if (use == Use::Staging) {
    candidates.push_back(ctx->find_memory_type(req.memoryTypeBits, host, host | VK_MEMORY_PROPERTY_HOST_CACHED_BIT));
  } else {
    candidates.push_back(ctx->find_memory_type(req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | host,
                                               VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | host));
    candidates.push_back(ctx->find_memory_type(req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT,
                                               VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT));
    candidates.push_back(ctx->find_memory_type(req.memoryTypeBits, 0, 0));
  }
  VkResult last = VK_ERROR_OUT_OF_DEVICE_MEMORY;
  for (int type : candidates) {
    if (type < 0) continue;
    VkMemoryAllocateInfo ai{};
    ai.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO;
    ai.allocationSize = req.size;
    ai.memoryTypeIndex = uint32_t(type);
    last = vkAllocateMemory(dev, &ai, nullptr, &b->memory_);
    if (last == VK_SUCCESS) {
      VkMemoryPropertyFlags flags = 0;
      VkPhysicalDeviceMemoryProperties mp;
      vkGetPhysicalDeviceMemoryProperties(ctx->physical_device(), &mp);
      flags = mp.memoryTypes[type].propertyFlags;
      TB_VK_CHECK(vkBindBufferMemory(dev, b->buffer_, b->memory_, 0));
      if ((flags & host) == host) TB_VK_CHECK(vkMapMemory(dev, b->memory_, 0, VK_WHOLE_SIZE, 0, &b->mapped_));
      return b;
    }
    b->memory_ = VK_NULL_HANDLE;
  }
  throw BackendError(str("[vulkan] cannot allocate a buffer of ", nbytes, " bytes on ", ctx->device_name(), ": ",
                         vk_result_name(last)));
}

Buffer::~Buffer() {
  VkDevice dev = ctx_->device();
  if (mapped_) vkUnmapMemory(dev, memory_);
  if (buffer_) vkDestroyBuffer(dev, buffer_, nullptr);
  if (memory_) vkFreeMemory(dev, memory_, nullptr);
}

}  // namespace tb::compute::vulkan
