# The mla_decode family (SPEC §3): cache writer, device scheduler, tensor-core and CUDA-core decode
# kernels (one explicit instantiation per translation unit), the split-KV combine, the combine with
# the fused up-projection and the engine-contract op mla_attention (issue 14), the graph ops.
qfuse_family(NAME mla_decode
  SUMMARY "MLA decode attention (DeepSeek V2/V3) over bf16 / FP8 paged latent caches"
  KERNELS dispatch.cpp reference.cpp schedule.cu combine.cu up_proj.cu attention.cpp cache_write.cu
          register.cpp
          instantiations/simple_bf16.cu instantiations/simple_fp8.cu
          instantiations/tc_r16_bf16_partial.cu instantiations/tc_r16_bf16_output.cu
          instantiations/tc_r32_bf16_partial.cu instantiations/tc_r32_bf16_output.cu
          instantiations/tc_r16_fp8_partial.cu instantiations/tc_r16_fp8_output.cu
          instantiations/tc_r32_fp8_partial.cu instantiations/tc_r32_fp8_output.cu
          instantiations/tc_r16_fp8alt_partial.cu instantiations/tc_r16_fp8alt_output.cu
          instantiations/tc_r16_fp8alt8_partial.cu instantiations/tc_r16_fp8alt8_output.cu
          instantiations/wide_bf16_partial.cu instantiations/wide_bf16_output.cu
          instantiations/wide_fp8_partial.cu instantiations/wide_fp8_output.cu
          instantiations/pair_bf16_partial.cu instantiations/pair_bf16_output.cu
  GRAPH graph_ops.cpp)
