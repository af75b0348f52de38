// Buffer: a VkBuffer with its own VkDeviceMemory, released at destruction. Device buffers prefer
// memory that is both device-local and host-visible (lavapipe, integrated GPUs, resizable BAR) and
// then stay mapped, so upload/download are plain memcpy; otherwise they are device-local only and
// the backend copies through a staging buffer.
#pragma once

#include <vulkan/vulkan.h>

#include <memory>

#include "compute/vulkan/context.h"

namespace tb::compute::vulkan {

/** A Vulkan buffer and its memory (see the file comment); keeps its Context alive. */
class Buffer {
 public:
  /** Device: for tensors (device-local, host-visible if possible); Staging: host-visible transfer buffer. */
  enum class Use { Device, Staging };
  /** Size is rounded up to a multiple of 4 bytes (at least 4): shaders address 32-bit words. */
  static std::shared_ptr<Buffer> create(std::shared_ptr<Context> ctx, size_t nbytes, Use use);
  /** Not copyable; the destructor unmaps and frees the buffer and its memory. */
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  /** The VkBuffer. */
  VkBuffer handle() const { return buffer_; }
  /** Size in bytes after rounding (a multiple of 4, may exceed what create() was asked for). */
  size_t size() const { return size_; }
  /** Host pointer to the whole buffer, or nullptr when the memory is not host-visible. */
  void* mapped() const { return mapped_; }

 private:
  /** Use create(). */
  Buffer() = default;
  std::shared_ptr<Context> ctx_;
  VkBuffer buffer_ = VK_NULL_HANDLE;
  VkDeviceMemory memory_ = VK_NULL_HANDLE;
  size_t size_ = 0;
  void* mapped_ = nullptr;
};

}  // namespace tb::compute::vulkan
