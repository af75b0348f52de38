// The compute shaders of shaders/*.comp, compiled by glslc at build time and embedded as SPIR-V
// words (cmake/EmbedSpirv.cmake writes the arrays).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tb::compute::vulkan {

/** An embedded SPIR-V compute shader (compiled from compute/vulkan/shaders/<name>.comp at build time). */
struct ShaderCode {
  std::string_view name;  // file name without .comp
  const uint32_t* words;  // SPIR-V
  size_t size;            // in 32-bit words
  uint32_t buffers;       // storage buffers at bindings 0..buffers-1
};

/** The embedded shader of that name; InternalError when unknown. */
const ShaderCode& shader_code(std::string_view name);

}  // namespace tb::compute::vulkan
