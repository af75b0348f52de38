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

/** A compiled compute shader ready to dispatch (see the file comment); keeps its Context alive. */
class Pipeline {
 public:
  /** Push-constant block size every shader may use (the Vulkan minimum limit). */
  static constexpr uint32_t kPushConstantBytes = 128;

  /** `spec[i]` specializes the shader's `constant_id = i` (all uint32); empty keeps the defaults. */
  /** Builds the shader module, layouts and pipeline for `buffers` storage-buffer bindings; name labels
   *  errors. Throws BackendError on Vulkan failures. */
  Pipeline(std::shared_ptr<Context> ctx, std::string name, const uint32_t* spirv, size_t words, uint32_t buffers,
           const std::vector<uint32_t>& spec = {});
  /** Not copyable; the destructor destroys the Vulkan objects (release()). */
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  /** The shader's name, for messages. */
  const std::string& name() const { return name_; }
  /** Number of storage buffers bound at 0..N-1. */
  uint32_t buffer_count() const { return buffers_; }
  /** The compute pipeline. */
  VkPipeline handle() const { return pipeline_; }
  /** Pipeline layout: one descriptor set plus kPushConstantBytes of push constants. */
  VkPipelineLayout layout() const { return layout_; }
  /** Layout of the descriptor set of buffer_count() storage buffers. */
  VkDescriptorSetLayout set_layout() const { return set_layout_; }

 private:
  /** Destroys whichever Vulkan objects exist and nulls them (safe to call twice). */
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
