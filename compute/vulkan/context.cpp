#include "compute/vulkan/context.h"

#include <algorithm>
#include <cstring>
#include <iterator>

#include "compute/vulkan/vk_check.h"

namespace tb::compute::vulkan {
namespace {

VkInstance create_instance() {
  VkApplicationInfo app{};
  app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO;
  app.pApplicationName = "tensorbridge";
  app.apiVersion = VK_API_VERSION_1_1;
  VkInstanceCreateInfo ci{};
  ci.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO;
  ci.pApplicationInfo = &app;
  VkInstance inst = VK_NULL_HANDLE;
  TB_VK_CHECK(vkCreateInstance(&ci, nullptr, &inst));
  return inst;
}

/** Compute-capable devices with the queue family to use (discrete and integrated GPUs first). */
std::vector<std::pair<VkPhysicalDevice, uint32_t>> compute_devices(VkInstance inst) {
  uint32_t n = 0;
  TB_VK_CHECK(vkEnumeratePhysicalDevices(inst, &n, nullptr));
  std::vector<VkPhysicalDevice> devs(n);
  TB_VK_CHECK(vkEnumeratePhysicalDevices(inst, &n, devs.data()));
  std::vector<std::pair<VkPhysicalDevice, uint32_t>> out;
  for (int pass = 0; pass < 2; ++pass) {
    for (VkPhysicalDevice d : devs) {
      VkPhysicalDeviceProperties p;
      vkGetPhysicalDeviceProperties(d, &p);
      bool gpu = p.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU ||
                 p.deviceType == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU;
      if ((pass == 0) != gpu) continue;
      uint32_t qn = 0;
      vkGetPhysicalDeviceQueueFamilyProperties(d, &qn, nullptr);
      std::vector<VkQueueFamilyProperties> qs(qn);
      vkGetPhysicalDeviceQueueFamilyProperties(d, &qn, qs.data());
      for (uint32_t i = 0; i < qn; ++i) {
        if (qs[i].queueFlags & VK_QUEUE_COMPUTE_BIT) {
          out.emplace_back(d, i);
          break;
        }
      }
    }
  }
  return out;
}

bool has_extension(VkPhysicalDevice d, const char* name) {
  uint32_t n = 0;
  if (vkEnumerateDeviceExtensionProperties(d, nullptr, &n, nullptr) != VK_SUCCESS) return false;
  std::vector<VkExtensionProperties> exts(n);
  if (vkEnumerateDeviceExtensionProperties(d, nullptr, &n, exts.data()) != VK_SUCCESS) return false;
  return std::any_of(exts.begin(), exts.end(),
                     [&](const VkExtensionProperties& e) { return std::strcmp(e.extensionName, name) == 0; });
}

/** The device features gemm_coopmat.comp needs, chained for vkGetPhysicalDeviceFeatures2 (query) and
 *  vkCreateDevice (enable). */
struct CoopmatFeatures {
  VkPhysicalDeviceCooperativeMatrixFeaturesNV coop{};
  VkPhysicalDeviceShaderFloat16Int8FeaturesKHR f16{};
  VkPhysicalDeviceVulkanMemoryModelFeaturesKHR vmm{};
  CoopmatFeatures() {
    coop.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV;
    f16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES_KHR;
    vmm.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_MEMORY_MODEL_FEATURES_KHR;
    coop.pNext = &f16;
    f16.pNext = &vmm;
  }
  CoopmatFeatures(const CoopmatFeatures&) = delete;
  CoopmatFeatures& operator=(const CoopmatFeatures&) = delete;
};

const char* const kCoopmatExtensions[] = {"VK_NV_cooperative_matrix", "VK_KHR_shader_float16_int8",
                                          "VK_KHR_vulkan_memory_model"};

// Note [cooperative matrices]: gemm_coopmat.comp is written for 16x16x16 f16 x f16 -> f32 matrices
// at subgroup scope, the size NVIDIA lists from Turing on. The path is on only when the device has
// the three extensions, their features, a full-subgroup compute stage, and lists exactly that
// shape; otherwise f16 GEMMs take the plain shaders (lavapipe never has it).
bool supports_coopmat_f16(VkInstance inst, VkPhysicalDevice d, uint32_t subgroup_size) {
  for (const char* e : kCoopmatExtensions)
    if (!has_extension(d, e)) return false;
  if (subgroup_size < 8 || 256 % subgroup_size != 0) return false;
  CoopmatFeatures f;
  VkPhysicalDeviceFeatures2 f2{};
  f2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2;
  f2.pNext = &f.coop;
  vkGetPhysicalDeviceFeatures2(d, &f2);
  if (!f.coop.cooperativeMatrix || !f.f16.shaderFloat16 || !f.vmm.vulkanMemoryModel) return false;
  auto props_fn = reinterpret_cast<PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV>(
      vkGetInstanceProcAddr(inst, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV"));
  if (!props_fn) return false;
  uint32_t n = 0;
  if (props_fn(d, &n, nullptr) != VK_SUCCESS) return false;
  std::vector<VkCooperativeMatrixPropertiesNV> ps(n);
  for (auto& p : ps) p.sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV;
  if (props_fn(d, &n, ps.data()) != VK_SUCCESS) return false;
  return std::any_of(ps.begin(), ps.end(), [](const VkCooperativeMatrixPropertiesNV& p) {
    return p.MSize == 16 && p.NSize == 16 && p.KSize == 16 && p.AType == VK_COMPONENT_TYPE_FLOAT16_NV &&
           p.BType == VK_COMPONENT_TYPE_FLOAT16_NV && p.CType == VK_COMPONENT_TYPE_FLOAT32_NV &&
           p.DType == VK_COMPONENT_TYPE_FLOAT32_NV && p.scope == VK_SCOPE_SUBGROUP_NV;
  });
}

}  // namespace

std::vector<std::string> Context::list_devices() {
  std::vector<std::string> names;
  try {
    VkInstance inst = create_instance();
    try {
      for (auto& [d, q] : compute_devices(inst)) {
        VkPhysicalDeviceProperties p;
        vkGetPhysicalDeviceProperties(d, &p);
        names.emplace_back(p.deviceName);
      }
    } catch (const Error&) {}
    vkDestroyInstance(inst, nullptr);
  } catch (const Error&) {}
  return names;
}

std::shared_ptr<Context> Context::create(int index) {
  std::shared_ptr<Context> ctx(new Context());
  try {
    ctx->instance_ = create_instance();
  } catch (const BackendError& e) {
    throw UnsupportedError(str("[vulkan] no Vulkan driver: ", e.message()));
  }
  auto devs = compute_devices(ctx->instance_);
  TB_CHECK(index >= 0 && size_t(index) < devs.size(), UnsupportedError, "[vulkan] no compute-capable device #", index,
           " (found ", devs.size(), ")");
  ctx->physical_ = devs[size_t(index)].first;
  ctx->queue_family_ = devs[size_t(index)].second;
  vkGetPhysicalDeviceProperties(ctx->physical_, &ctx->props_);
  VkPhysicalDeviceSubgroupProperties sub{};
  sub.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES;
  VkPhysicalDeviceProperties2 props2{};
  props2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2;
  props2.pNext = &sub;
  vkGetPhysicalDeviceProperties2(ctx->physical_, &props2);
  ctx->subgroup_size_ = std::max<uint32_t>(sub.subgroupSize, 1);
  vkGetPhysicalDeviceMemoryProperties(ctx->physical_, &ctx->mem_props_);
  ctx->name_ = ctx->props_.deviceName;

  float priority = 1.0f;
  VkDeviceQueueCreateInfo qci{};
  qci.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO;
  qci.queueFamilyIndex = ctx->queue_family_;
  qci.queueCount = 1;
  qci.pQueuePriorities = &priority;
  VkDeviceCreateInfo dci{};
  dci.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO;
  dci.queueCreateInfoCount = 1;
  dci.pQueueCreateInfos = &qci;
  CoopmatFeatures coop;
  ctx->coopmat_f16_ = supports_coopmat_f16(ctx->instance_, ctx->physical_, ctx->subgroup_size_);
  if (ctx->coopmat_f16_) {
    coop.coop.cooperativeMatrix = VK_TRUE;
    coop.f16.shaderFloat16 = VK_TRUE;
    coop.vmm.vulkanMemoryModel = VK_TRUE;
    dci.pNext = &coop.coop;
    dci.enabledExtensionCount = uint32_t(std::size(kCoopmatExtensions));
    dci.ppEnabledExtensionNames = kCoopmatExtensions;
  }
  if (ctx->coopmat_f16_ && vkCreateDevice(ctx->physical_, &dci, nullptr, &ctx->device_) != VK_SUCCESS) {
    ctx->coopmat_f16_ = false;  // a driver that lists the features but refuses them: plain shaders
    dci.pNext = nullptr;
    dci.enabledExtensionCount = 0;
    dci.ppEnabledExtensionNames = nullptr;
  }
  if (!ctx->device_) TB_VK_CHECK(vkCreateDevice(ctx->physical_, &dci, nullptr, &ctx->device_));
  vkGetDeviceQueue(ctx->device_, ctx->queue_family_, 0, &ctx->queue_);
  return ctx;
}

Context::~Context() {
  if (device_) {
    vkDeviceWaitIdle(device_);
    vkDestroyDevice(device_, nullptr);
  }
  if (instance_) vkDestroyInstance(instance_, nullptr);
}

int Context::find_memory_type(uint32_t type_bits, VkMemoryPropertyFlags required,
                              VkMemoryPropertyFlags preferred) const {
  int fallback = -1;
  for (uint32_t i = 0; i < mem_props_.memoryTypeCount; ++i) {
    if (!(type_bits & (1u << i))) continue;
    VkMemoryPropertyFlags f = mem_props_.memoryTypes[i].propertyFlags;
    if ((f & required) != required) continue;
    if ((f & preferred) == preferred) return int(i);
    if (fallback < 0) fallback = int(i);
  }
  return fallback;
}

}  // namespace tb::compute::vulkan
