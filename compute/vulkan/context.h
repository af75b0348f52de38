// Context: the VkInstance, the chosen physical device, the VkDevice and its compute queue.
// This is a simple owner of those handles; the destructor waits for the device and releases them.
#pragma once

#include <vulkan/vulkan.h>

#include <memory>
#include <string>
#include <vector>

namespace tb::compute::vulkan {

/** The Vulkan device state one backend runs on; shared (std::shared_ptr) by its buffers, pipelines and
 *  streams, which keep it alive. */
class Context {
 public:
  /** Opens compute-capable device number index (order of list_devices()). Throws
   *  UnsupportedError when there is no such device, BackendError on Vulkan failures. */
  static std::shared_ptr<Context> create(int index);
  /** Names of the compute-capable devices ("llvmpipe (LLVM 15.0.6, 256 bits)"); empty when none
   *  (or no loader/driver). Never throws. */
  static std::vector<std::string> list_devices();

  /** Not copyable; the destructor waits for the device to go idle, then destroys the device and instance. */
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  /** The logical device (owned by this context). */
  VkDevice device() const { return device_; }
  /** The physical device chosen by create(). */
  VkPhysicalDevice physical_device() const { return physical_; }
  /** The compute queue all command streams submit to. */
  VkQueue queue() const { return queue_; }
  /** Family index of queue(). */
  uint32_t queue_family() const { return queue_family_; }
  /** The device's name as list_devices() gives it. */
  const std::string& device_name() const { return name_; }
  /** The physical device's properties (limits, vendor, driver version). */
  const VkPhysicalDeviceProperties& properties() const { return props_; }
  /** Threads per subgroup (warp/wavefront) of compute shaders; 1 if the device does not say. */
  uint32_t subgroup_size() const { return subgroup_size_; }
  /** True when the device multiplies 16x16x16 f16 x f16 -> f32 cooperative matrices at subgroup
   *  scope (VK_NV_cooperative_matrix, with shaderFloat16 and the Vulkan memory model enabled). */
  bool coopmat_f16() const { return coopmat_f16_; }
  /** Index of a memory type having all `required` flags (and preferring `preferred`); -1 if none. */
  int find_memory_type(uint32_t type_bits, VkMemoryPropertyFlags required, VkMemoryPropertyFlags preferred) const;

 private:
  /** Use create(). */
  Context() = default;
  VkInstance instance_ = VK_NULL_HANDLE;
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  std::string name_;
  VkPhysicalDeviceProperties props_{};
  VkPhysicalDeviceMemoryProperties mem_props_{};
  uint32_t subgroup_size_ = 1;
  bool coopmat_f16_ = false;
};

}  // namespace tb::compute::vulkan
