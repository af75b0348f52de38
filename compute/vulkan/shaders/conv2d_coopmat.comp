#version 450
// f16 conv2d (implicit GEMM) on NVIDIA cooperative matrices (tensor cores); the body is coopmat_conv.glsl.
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#include "coopmat_conv.glsl"
