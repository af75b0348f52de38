// Pipeline: one compute shader (VkShaderModule) with its descriptor-set layout (N storage buffers
// at bindings 0..N-1), pipeline layout (128 bytes of push constants) and VkPipeline, with optional
// uint32 specialization constants (constant_id 0..n-1) fixed at creation.
#pragma once

#include <vulkan/vulkan.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "compute/vulkan/context.h"

namespace tb::compute::vulkan {

class Pipeline {
 public:
  /** Push-constant block size every shader may use (the Vulkan minimum limit). */
  static constexpr uint32_t kPushConstantBytes = 128;

  /** `spec[i]` specializes the shader's `constant_id = i` (all uint32); empty keeps the defaults. */
  Pipeline(std::shared_ptr<Context> ctx, std::string name, const uint32_t* spirv, size_t words, uint32_t buffers,
           const std::vector<uint32_t>& spec = {});
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  const std::string& name() const { return name_; }
  uint32_t buffer_count() const { return buffers_; }
  VkPipeline handle() const { return pipeline_; }
  VkPipelineLayout layout() const { return layout_; }
  VkDescriptorSetLayout set_layout() const { return set_layout_; }

 private:
  void release();
  std::shared_ptr<Context> ctx_;
  std::string name_;
  uint32_t buffers_;
  VkShaderModule module_ = VK_NULL_HANDLE;
  VkDescriptorSetLayout set_layout_ = VK_NULL_HANDLE;
  VkPipelineLayout layout_ = VK_NULL_HANDLE;
  VkPipeline pipeline_ = VK_NULL_HANDLE;
};

}  // namespace tb::compute::vulkan
