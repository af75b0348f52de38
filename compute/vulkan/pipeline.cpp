#include "compute/vulkan/pipeline.h"

#include <vector>

#include "compute/vulkan/vk_check.h"

namespace tb::compute::vulkan {

Pipeline::Pipeline(std::shared_ptr<Context> ctx, std::string name, const uint32_t* spirv, size_t words,
                   uint32_t buffers, const std::vector<uint32_t>& spec)
    : ctx_(std::move(ctx)), name_(std::move(name)), buffers_(buffers) {
  VkDevice dev = ctx_->device();
  try {
    VkShaderModuleCreateInfo smci{};
    smci.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO;
    smci.codeSize = words * 4;
    smci.pCode = spirv;
    TB_VK_CHECK(vkCreateShaderModule(dev, &smci, nullptr, &module_));

    std::vector<VkDescriptorSetLayoutBinding> binds(buffers);
    for (uint32_t i = 0; i < buffers; ++i) {
      binds[i] =
          VkDescriptorSetLayoutBinding{i, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
    }
    VkDescriptorSetLayoutCreateInfo dci{};
    dci.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO;
    dci.bindingCount = buffers;
    dci.pBindings = binds.data();
    TB_VK_CHECK(vkCreateDescriptorSetLayout(dev, &dci, nullptr, &set_layout_));

    VkPushConstantRange pcr{VK_SHADER_STAGE_COMPUTE_BIT, 0, kPushConstantBytes};
    VkPipelineLayoutCreateInfo plci{};
    plci.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO;
    plci.setLayoutCount = 1;
    plci.pSetLayouts = &set_layout_;
    plci.pushConstantRangeCount = 1;
    plci.pPushConstantRanges = &pcr;
    TB_VK_CHECK(vkCreatePipelineLayout(dev, &plci, nullptr, &layout_));

    VkComputePipelineCreateInfo cpci{};
    cpci.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO;
    cpci.stage = VkPipelineShaderStageCreateInfo{};
    cpci.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
    cpci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    cpci.stage.module = module_;
    cpci.stage.pName = "main";
    std::vector<VkSpecializationMapEntry> entries(spec.size());
    for (uint32_t i = 0; i < spec.size(); ++i) entries[i] = VkSpecializationMapEntry{i, i * 4, 4};
    VkSpecializationInfo si{uint32_t(entries.size()), entries.data(), spec.size() * 4, spec.data()};
    if (!spec.empty()) cpci.stage.pSpecializationInfo = &si;
    cpci.layout = layout_;
    TB_VK_CHECK(vkCreateComputePipelines(dev, VK_NULL_HANDLE, 1, &cpci, nullptr, &pipeline_));
  } catch (Error& e) {
    e.add_context(str("while creating the Vulkan pipeline for shader '", name_, "'"));
    release();
    throw;
  }
}

Pipeline::~Pipeline() { release(); }

void Pipeline::release() {
  VkDevice dev = ctx_->device();
  if (pipeline_) vkDestroyPipeline(dev, pipeline_, nullptr);
  if (layout_) vkDestroyPipelineLayout(dev, layout_, nullptr);
  if (set_layout_) vkDestroyDescriptorSetLayout(dev, set_layout_, nullptr);
  if (module_) vkDestroyShaderModule(dev, module_, nullptr);
  pipeline_ = VK_NULL_HANDLE, layout_ = VK_NULL_HANDLE, set_layout_ = VK_NULL_HANDLE, module_ = VK_NULL_HANDLE;
}

}  // namespace tb::compute::vulkan
