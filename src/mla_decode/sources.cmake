# Sources of the MLA decode family (issue 13), added to the qfuse library by CMakeLists.txt.
# One explicit kernel instantiation per translation unit (parallel builds).
set(QFUSE_MLA_DECODE_SOURCES
  src/mla_decode/dispatch.cpp
  src/mla_decode/reference.cpp
  src/mla_decode/schedule.cu
  src/mla_decode/combine.cu
  src/mla_decode/cache_write.cu
  src/mla_decode/instantiations/simple_bf16.cu
  src/mla_decode/instantiations/simple_fp8.cu
  src/mla_decode/instantiations/tc_r16_bf16_partial.cu
  src/mla_decode/instantiations/tc_r16_bf16_output.cu
  src/mla_decode/instantiations/tc_r32_bf16_partial.cu
  src/mla_decode/instantiations/tc_r32_bf16_output.cu
  src/mla_decode/instantiations/tc_r16_fp8_partial.cu
  src/mla_decode/instantiations/tc_r16_fp8_output.cu
  src/mla_decode/instantiations/tc_r32_fp8_partial.cu
  src/mla_decode/instantiations/tc_r32_fp8_output.cu
)
