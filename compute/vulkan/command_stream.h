// CommandStream: a command pool + one command buffer + fence + descriptor pool that record
// dispatches back to back (with a memory barrier between them) and submit them in one go.
// Buffers used by recorded work are kept alive until the submission completes.
#pragma once

#include <vulkan/vulkan.h>

#include <memory>
#include <string_view>
#include <vector>

#include "compute/vulkan/buffer.h"
#include "compute/vulkan/pipeline.h"

namespace tb::compute::vulkan {

/** Records dispatches and copies into one command buffer and submits them together; not thread-safe. */
class CommandStream {
 public:
  /** Creates the command pool, buffer, fence and a descriptor pool of 512 sets; BackendError on failure. */
  explicit CommandStream(std::shared_ptr<Context> ctx);
  /** Not copyable; the destructor submits and waits for pending work (idling the device if that fails),
   *  then destroys its Vulkan objects. */
  ~CommandStream();
  CommandStream(const CommandStream&) = delete;
  CommandStream& operator=(const CommandStream&) = delete;

  /** Records pipeline over groups (x, y, z) with buffers bound at 0..N-1 and push constants
   *  (at most Pipeline::kPushConstantBytes). Later work sees this dispatch's writes. */
  void dispatch(const Pipeline& pipeline, const std::vector<std::shared_ptr<Buffer>>& buffers, const void* push,
                size_t push_bytes, uint32_t gx, uint32_t gy = 1, uint32_t gz = 1);
  /** Records a copy of bytes from src to dst. */
  void copy(const std::shared_ptr<Buffer>& src, const std::shared_ptr<Buffer>& dst, size_t bytes);
  /** Submits what was recorded and waits for it; no-op when nothing is pending. */
  void submit_and_wait();
  /** True when work was recorded and not yet submitted. */
  bool pending() const { return recording_; }

 private:
  /** Starts recording the command buffer unless it already is. */
  void begin();
  /** Records a memory barrier so later shader, transfer and host reads see earlier writes. */
  void barrier();
  std::shared_ptr<Context> ctx_;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
  VkDescriptorPool desc_pool_ = VK_NULL_HANDLE;
  uint32_t sets_used_ = 0;
  bool recording_ = false;
  std::vector<std::shared_ptr<Buffer>> in_flight_;
  static constexpr uint32_t kMaxSets = 512;
  static constexpr uint32_t kMaxBuffersPerSet = 8;
};

/** Dispatches of shader `name` recorded so far in this process, over all backends: lets tests check
 *  which shader a shape and dtype took. */
uint64_t dispatches_of(std::string_view name);

}  // namespace tb::compute::vulkan
