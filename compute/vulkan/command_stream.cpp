#include "compute/vulkan/command_stream.h"

#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

#include "compute/vulkan/vk_check.h"

namespace tb::compute::vulkan {
namespace {

struct DispatchCounts {
  std::mutex mu;
  std::map<std::string, uint64_t, std::less<>> by_shader;
};
DispatchCounts& dispatch_counts() {
  static DispatchCounts counts;
  return counts;
}

}  // namespace

uint64_t dispatches_of(std::string_view name) {
  auto& c = dispatch_counts();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.by_shader.find(name);
  return it == c.by_shader.end() ? 0 : it->second;
}

CommandStream::CommandStream(std::shared_ptr<Context> ctx) : ctx_(std::move(ctx)) {
  VkDevice dev = ctx_->device();
  VkCommandPoolCreateInfo pci{};
  pci.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO;
  pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pci.queueFamilyIndex = ctx_->queue_family();
  TB_VK_CHECK(vkCreateCommandPool(dev, &pci, nullptr, &pool_));
  VkCommandBufferAllocateInfo cai{};
  cai.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO;
  cai.commandPool = pool_;
  cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  cai.commandBufferCount = 1;
  TB_VK_CHECK(vkAllocateCommandBuffers(dev, &cai, &cmd_));
  VkFenceCreateInfo fci{};
  fci.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO;
  TB_VK_CHECK(vkCreateFence(dev, &fci, nullptr, &fence_));
  VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, kMaxSets * kMaxBuffersPerSet};
  VkDescriptorPoolCreateInfo dpci{};
  dpci.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO;
  dpci.maxSets = kMaxSets;
  dpci.poolSizeCount = 1;
  dpci.pPoolSizes = &size;
  TB_VK_CHECK(vkCreateDescriptorPool(dev, &dpci, nullptr, &desc_pool_));
}

CommandStream::~CommandStream() {
  VkDevice dev = ctx_->device();
  if (recording_) {
    try {
      submit_and_wait();
    } catch (const Error&) {
      vkDeviceWaitIdle(dev);
    }
  }
  vkDestroyDescriptorPool(dev, desc_pool_, nullptr);
  vkDestroyFence(dev, fence_, nullptr);
  vkDestroyCommandPool(dev, pool_, nullptr);
}

void CommandStream::begin() {
  if (recording_) return;
  VkCommandBufferBeginInfo bi{};
  bi.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  TB_VK_CHECK(vkBeginCommandBuffer(cmd_, &bi));
  recording_ = true;
}

void CommandStream::barrier() {
  VkMemoryBarrier mb{};
  mb.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER;
  mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                     VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_HOST_READ_BIT;
  vkCmdPipelineBarrier(
      cmd_, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
      VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0,
      nullptr, 0, nullptr);
}

void CommandStream::dispatch(const Pipeline& pipeline, const std::vector<std::shared_ptr<Buffer>>& buffers,
                             const void* push, size_t push_bytes, uint32_t gx, uint32_t gy, uint32_t gz) {
  TB_ASSERT(buffers.size() == pipeline.buffer_count() && buffers.size() <= kMaxBuffersPerSet, pipeline.name());
  TB_ASSERT(push_bytes <= Pipeline::kPushConstantBytes, pipeline.name());
  {
    auto& c = dispatch_counts();
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.by_shader.find(pipeline.name());
    if (it == c.by_shader.end()) it = c.by_shader.emplace(pipeline.name(), 0).first;
    ++it->second;
  }
  if (sets_used_ == kMaxSets) submit_and_wait();
  begin();
  VkDevice dev = ctx_->device();
  VkDescriptorSetLayout layout = pipeline.set_layout();
  VkDescriptorSetAllocateInfo ai{};
  ai.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO;
  ai.descriptorPool = desc_pool_;
  ai.descriptorSetCount = 1;
  ai.pSetLayouts = &layout;
  VkDescriptorSet set = VK_NULL_HANDLE;
  TB_VK_CHECK(vkAllocateDescriptorSets(dev, &ai, &set));
  ++sets_used_;
  std::vector<VkDescriptorBufferInfo> infos(buffers.size());
  std::vector<VkWriteDescriptorSet> writes(buffers.size());
  for (size_t i = 0; i < buffers.size(); ++i) {
    infos[i] = VkDescriptorBufferInfo{buffers[i]->handle(), 0, VK_WHOLE_SIZE};
    writes[i] = VkWriteDescriptorSet{};
    writes[i].sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
    writes[i].dstSet = set;
    writes[i].dstBinding = uint32_t(i);
    writes[i].descriptorCount = 1;
    writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[i].pBufferInfo = &infos[i];
    in_flight_.push_back(buffers[i]);
  }
  vkUpdateDescriptorSets(dev, uint32_t(writes.size()), writes.data(), 0, nullptr);
  vkCmdBindPipeline(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.handle());
  vkCmdBindDescriptorSets(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.layout(), 0, 1, &set, 0, nullptr);
  uint8_t block[Pipeline::kPushConstantBytes] = {};
  std::memcpy(block, push, push_bytes);
  vkCmdPushConstants(cmd_, pipeline.layout(), VK_SHADER_STAGE_COMPUTE_BIT, 0, Pipeline::kPushConstantBytes, block);
  vkCmdDispatch(cmd_, gx, gy, gz);
  barrier();
}

void CommandStream::copy(const std::shared_ptr<Buffer>& src, const std::shared_ptr<Buffer>& dst, size_t bytes) {
  begin();
  VkBufferCopy region{0, 0, (bytes + 3) / 4 * 4};
  vkCmdCopyBuffer(cmd_, src->handle(), dst->handle(), 1, &region);
  in_flight_.push_back(src);
  in_flight_.push_back(dst);
  barrier();
}

void CommandStream::submit_and_wait() {
  if (!recording_) return;
  VkDevice dev = ctx_->device();
  recording_ = false;
  TB_VK_CHECK(vkEndCommandBuffer(cmd_));
  VkSubmitInfo si{};
  si.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cmd_;
  TB_VK_CHECK(vkQueueSubmit(ctx_->queue(), 1, &si, fence_));
  TB_VK_CHECK(vkWaitForFences(dev, 1, &fence_, VK_TRUE, UINT64_MAX));
  TB_VK_CHECK(vkResetFences(dev, 1, &fence_));
  TB_VK_CHECK(vkResetCommandBuffer(cmd_, 0));
  TB_VK_CHECK(vkResetDescriptorPool(dev, desc_pool_, 0));
  sets_used_ = 0;
  in_flight_.clear();
}

}  // namespace tb::compute::vulkan
