// Host twin of the MLA KV-cache writer kernel (cache_write.cu).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "mla_decode/params.h"
#include "qfuse/core/status.h"

namespace qfuse::mla {

/// Validated arguments of mla_write_cache; strides in elements.
struct CacheWriteParams {
  const uint16_t* kv_c;
  int64_t ld_c;
  const uint16_t* k_pe;
  int64_t ld_pe;
  const int64_t* slot_mapping;
  int64_t T;
  void* cache;
  int64_t c_sb, c_st;
  int block_size;
  int64_t slots;  // num_blocks * block_size
  const float* k_scale;
  bool vec_c, vec_pe;  // 16-byte loads of 8 elements
  bool vec_cache;      // 16-byte (bf16) / 8-byte (e4m3) stores of 8 elements
};

Status launch_write_cache(const CacheWriteParams& p, bool fp8, cudaStream_t stream);

}  // namespace qfuse::mla
