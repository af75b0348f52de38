#include "compute/vulkan/shaders.h"

#include "tensor/error.h"

#define TB_SHADER(name)                  \
  extern const uint32_t tb_spv_##name[]; \
  extern const size_t tb_spv_##name##_size;
TB_SHADER(gemm)
TB_SHADER(gemm_direct)
TB_SHADER(gemm_skinny)
TB_SHADER(gemm_coopmat)
TB_SHADER(gemm_coopmat_emu)
TB_SHADER(conv2d_coopmat)
TB_SHADER(conv2d_coopmat_emu)
TB_SHADER(binary)
TB_SHADER(relu)
TB_SHADER(conv2d)
TB_SHADER(conv2d_igemm)
TB_SHADER(maxpool2d)
TB_SHADER(batchnorm)
TB_SHADER(softmax)
TB_SHADER(cast)
#undef TB_SHADER

namespace tb::compute::vulkan {

const ShaderCode& shader_code(std::string_view name) {
  static const ShaderCode table[] = {
      {"gemm", tb_spv_gemm, tb_spv_gemm_size, 4},
      {"gemm_direct", tb_spv_gemm_direct, tb_spv_gemm_direct_size, 4},
      {"gemm_skinny", tb_spv_gemm_skinny, tb_spv_gemm_skinny_size, 4},
      {"gemm_coopmat", tb_spv_gemm_coopmat, tb_spv_gemm_coopmat_size, 4},
      {"gemm_coopmat_emu", tb_spv_gemm_coopmat_emu, tb_spv_gemm_coopmat_emu_size, 4},
      {"conv2d_coopmat", tb_spv_conv2d_coopmat, tb_spv_conv2d_coopmat_size, 4},
      {"conv2d_coopmat_emu", tb_spv_conv2d_coopmat_emu, tb_spv_conv2d_coopmat_emu_size, 4},
      {"binary", tb_spv_binary, tb_spv_binary_size, 3},
      {"relu", tb_spv_relu, tb_spv_relu_size, 2},
      {"conv2d", tb_spv_conv2d, tb_spv_conv2d_size, 4},
      {"conv2d_igemm", tb_spv_conv2d_igemm, tb_spv_conv2d_igemm_size, 4},
      {"maxpool2d", tb_spv_maxpool2d, tb_spv_maxpool2d_size, 2},
      {"batchnorm", tb_spv_batchnorm, tb_spv_batchnorm_size, 6},
      {"softmax", tb_spv_softmax, tb_spv_softmax_size, 2},
      {"cast", tb_spv_cast, tb_spv_cast_size, 2},
  };
  for (const auto& s : table)
    if (s.name == name) return s;
  TB_ASSERT(false, "unknown shader ", name);
}

}  // namespace tb::compute::vulkan
