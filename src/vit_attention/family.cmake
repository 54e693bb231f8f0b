# The vit_attention family (SPEC §5): Q/K/V quantization with head-dim padding and dynamic scaling,
# the attention kernels (one input type per translation unit), static scale files.
qfuse_family(NAME vit_attention
  SUMMARY "FP8 / bf16 attention for vision encoders (varlen, fused Q/K/V quantization)"
  KERNELS register.cpp dispatch.cpp validate.cpp reference.cpp trace.cpp qkv_quant.cu
          instantiations/simple_fp8.cu instantiations/simple_bf16.cu
          instantiations/tc_d64.cu instantiations/tc_d72.cu instantiations/tc_d80.cu
          instantiations/tc_d96.cu instantiations/tc_d128.cu
          instantiations/tc_bf16_d64.cu instantiations/tc_bf16_d72.cu instantiations/tc_bf16_d80.cu
          instantiations/tc_bf16_d96.cu instantiations/tc_bf16_d128.cu
  GRAPH scales.cpp layer.cpp)
