// What the ViT attention dispatch (dispatch.cpp) hands its kernels (one instantiation per input
// type and translation unit: instantiations/*.cu).
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "qfuse/core/status.h"
#include "qfuse/quant/quantize.h"

/// The head sizes vit_attention takes, the one list: X(D) for each, ascending. The dispatch
/// (supported_head_dim, with_head_dim in dispatch.cpp) and the extern templates below expand it;
/// each size needs its two instantiation files, instantiations/tc_d<D>.cu and tc_bf16_d<D>.cu (one
/// translation unit each, listed in family.cmake), or the link fails.
#define QFUSE_VIT_HEAD_DIMS(X) X(64) X(72) X(80) X(96) X(128)

namespace qfuse::vit {

/// Validated attention arguments. Element (t, h, d) of input `which` (q, k, v) sits at
/// in[which] + (t' / S) * sb + (t' % S) * ss + h * sh + d * sd (elements of the input type), t' = t
/// except for a transposed V (v_perm: t' = vit_vt_position(t), sd = S_pad).
struct AttnParams {
  const void* in[3];
  int64_t sb[3], ss[3], sh[3], sd[3];
  bool v_perm;
  int64_t S;        // tokens per leading index (S_total when sb is unused)
  int64_t S_total;  // packed tokens
  int H, D;
  const int32_t* cu_seqlens;  // device [num_seqs + 1], or null: sequences of S tokens
  int num_seqs;
  const float* q_scale;  // device dequantization scales (null: 1)
  const float* k_scale;
  const float* v_scale;
  float softmax_scale;
};

/// What the tensor-core kernel reads (attention_tc.cuh): TMA maps of q and k ([S_total, H, Dp]
/// e4m3, box 128 bytes x 1 head x 128 rows (q: 64 where q_rows is 192), 128-byte swizzle) and of
/// the transposed V ([H, Dp, S_pad] e4m3, box 128 keys x D rows x 1 head, 128-byte swizzle).
struct TcParams {
  CUtensorMap q_map, k_map, vt_map;
  const int32_t* cu_seqlens;  // device [num_seqs + 1], or null: sequences of S tokens
  int num_seqs;
  int64_t S, S_total;
  int H;
  int tiles;  // query tiles of q_rows rows over every sequence (the grid's x without padding)
  const float* q_scale;
  const float* k_scale;
  const float* v_scale;
  float softmax_scale;
  int q_rows;  // query rows per block: 128, or 192 (the FP8 kernel's three-consumer form)
};

/// Head sizes whose FP8 tensor-core kernel has the three-consumer form (192 query rows a block,
/// FlashAttention-3's FP8 tile up to D 96; bench/NOTES.md V12): those whose consumer fits 160
/// registers without spilling (O is D / 2 floats a thread; ptxas: D 80 spills 32 bytes, D 96 96).
constexpr bool tc_three_consumers(int D) {
  return D <= 72;
}

/// The FP8 tensor-core kernel's query rows per block at head size D: 64 x the consumer count,
/// QFUSE_VIT_TC_CONSUMERS=2|3 at start-up or set_tc_consumers (tests, same-binary A/B), else the
/// default (3); 3 where tc_three_consumers(D) only. Process-wide.
int tc_query_rows(int D);
/// 2 or 3 forces that many consumers (where the head size has the form), anything else restores
/// the default.
void set_tc_consumers(int consumers);

/// The tensor-core kernel for head size kD (one of QFUSE_VIT_HEAD_DIMS), output kinds none bf16
/// and fp8_per_tensor; tp.q_rows from tc_query_rows.
template <int kD>
Status launch_tc_for(const TcParams& p, const QuantOutput& out, cudaStream_t stream);
#define QFUSE_VIT_EXTERN_TC(kD) \
  extern template Status launch_tc_for<kD>(const TcParams&, const QuantOutput&, cudaStream_t);
QFUSE_VIT_HEAD_DIMS(QFUSE_VIT_EXTERN_TC)
#undef QFUSE_VIT_EXTERN_TC

/// The BF16 tensor-core kernel (attention_tc_bf16.cuh) for head size kD, the same parameters with
/// bf16 maps: q_map, k_map and vt_map (V, not transposed) all [S_total, H, D] bf16 (dim 0 = D, so
/// the columns past D are TMA zero fill, never a neighbour's), box 64 columns x 1 head x 128
/// tokens, 128-byte swizzle; the scale pointers are unused. Output kinds as launch_tc_for.
template <int kD>
Status launch_tc_bf16_for(const TcParams& p, const QuantOutput& out, cudaStream_t stream);
#define QFUSE_VIT_EXTERN_TC_BF16(kD) \
  extern template Status launch_tc_bf16_for<kD>(const TcParams&, const QuantOutput&, cudaStream_t);
QFUSE_VIT_HEAD_DIMS(QFUSE_VIT_EXTERN_TC_BF16)
#undef QFUSE_VIT_EXTERN_TC_BF16

/// The CUDA-core kernel over e4m3 / bf16 inputs; `out` validated for [S_total, H * D].
Status launch_simple_fp8(const AttnParams& p, const QuantOutput& out, cudaStream_t stream);
Status launch_simple_bf16(const AttnParams& p, const QuantOutput& out, cudaStream_t stream);

}  // namespace qfuse::vit
