// What the ViT attention dispatch (dispatch.cpp) hands its kernels (one instantiation per input
// type and translation unit: instantiations/*.cu).
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "qfuse/core/status.h"
#include "qfuse/quant/quantize.h"
#include "qfuse/vit_attention/vit_attention.h"

/// The head sizes vit_attention takes, the one list: X(D) for each, ascending. The dispatch
/// (supported_head_dim, with_head_dim in dispatch.cpp) and the extern templates below expand it;
/// each size needs its two instantiation files, instantiations/tc_d<D>.cu and tc_bf16_d<D>.cu (one
/// translation unit each, listed in family.cmake), or the link fails.
#define QFUSE_VIT_HEAD_DIMS(X) X(64) X(72) X(80) X(96) X(128)

#if defined(__CUDACC__)
#define QFUSE_VIT_HD __host__ __device__ __forceinline__
#else
#define QFUSE_VIT_HD inline
#endif

namespace qfuse::vit {

/// The tensor-core kernels' key tiles of a sequence [beg, end): 128 keys each from its first key
/// rounded down to 32 (where the transposed V's key permutation lines up) to its end.
QFUSE_VIT_HD int64_t tc_key_tiles(int64_t beg, int64_t end) {
  return end > beg ? (end - (beg & ~int64_t{31}) + 127) / 128 : 0;
}

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

/// Most blocks of a stream-K grid whose shares TcParams lists (sk_table); larger grids take
/// uniform shares.
constexpr int kStreamKTableBlocks = 160;

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
  // Stream-K (tc_common.cuh: build_segments), where sk_blocks > 0: the grid is sk_blocks blocks.
  // Block b first runs the whole query tiles u = b + k * sk_blocks, k < sk_waves (units counted
  // head by head, `tiles` a head: the one-unit grid's waves, in its order), then the key-tile
  // steps [sk_base + b * sk_per, sk_base + (b + 1) * sk_per) of the (head, sequence, query tile,
  // key tile) order, each head steps_per_head of them (sk_base: the steps of the first sk_waves *
  // sk_blocks units). A query tile split between blocks leaves fp32 partials in sk_ws (2 slots a
  // block) and the last of its blocks to finish (sk_tickets, one a block, zero at the launch)
  // merges them and writes the output.
  // Where sk_table: block b's steps are [sk_base + sk_start[b], sk_base + sk_start[b + 1])
  // instead (plan_stream_k's shares balanced by cost: segments and idle consumers counted; no
  // empty share before a non-empty one).
  int sk_blocks;
  int sk_waves;
  int64_t sk_base;
  int64_t sk_per;
  int64_t steps_per_head;
  bool sk_table;
  // Consumers whose rows all lie past the sequence's end skip the work (attention_tc.cuh):
  // QFUSE_VIT_TC_IDLE=0 at start-up keeps them computing (A/B and sanitizer runs).
  bool skip_idle;
  int32_t sk_start[kStreamKTableBlocks + 1];
  float* sk_ws;
  int* sk_tickets;
  // Q quantized by the kernel (attention_fused_q): q_map then describes the bf16 Q ([S_total, H,
  // D], box D columns x 1 head x the Q box's rows, no swizzle), staged in shared memory and
  // turned into the e4m3 tile by its consumers with 1 / *q_scale, as vit_quantize_qkv would.
  bool fused_q;
#ifdef QFUSE_VIT_TRACE
  uint64_t* trace;  // trace.h: the timeline's device words (QFUSE_VIT_TRACE builds only)
#endif
};

/// `count` query tiles in a row of `nk` key tiles each, a step of them weighing `w` (the
/// stream-K planner's cost model, dispatch.cpp: SkCost).
struct SkRun {
  int64_t count, nk;
  double w;
};

/// Shares of the steps `runs` lists for base_cost.size() blocks, block b starting with
/// base_cost[b] (its whole query tiles): each takes the steps in order while its cost (`seg` for
/// each query tile it meets, w a step) stays within C, and at least one while any are left, for
/// the least C (to 1/64 of a step) that leaves none; into start[0..blocks] (step offsets,
/// nondecreasing; only trailing shares empty). False (start unspecified) where the runs are too
/// many to plan on each call, or none.
bool balance_shares(const std::vector<SkRun>& runs, const std::vector<double>& base_cost,
                    double seg, int32_t* start);

/// Words of device memory a quantizer zeroes for the kernel after it (the layer's stream-K
/// tickets, VitAttentionArgs::workspace_zeroed): none by default.
struct ZeroWords {
  uint32_t* words = nullptr;
  int count = 0;
};

/// The static Q/K/V quantization (vit_quantize_qkv); skip_q: K and V only (q_out is checked but
/// not written: attention_fused_q quantizes Q in the attention kernel); `zero` zeroed too.
Status quantize_static(const VitQkvQuantArgs& a, bool skip_q, ZeroWords zero, cudaStream_t stream);
/// vit_quantize_qkv_dynamic, with `zero` zeroed too.
Status quantize_dynamic(const VitQkvQuantArgs& a, const VitScaleState& st, int layer,
                        ZeroWords zero, cudaStream_t stream);

/// A fused-Q call checked and prepared (fused_q_prepare): the kernel's parameters, its output
/// and head size, everything fused_q_launch needs.
struct FusedQCall {
  TcParams tp{};
  QuantOutput out;
  int head_dim = 0;
};

/// vit_attention over FP8 K / V (the tensor-core kernel, V transposed) with Q given in bf16 as
/// `q_bf16` ([S, H, D] or [B, S, H, D] with evenly spaced batches, as the layer's input) and
/// quantized inside the kernel with the static a.q_scale: the codes vit_quantize_qkv would write
/// (a.q: the e4m3 tensor they would go to, checked as vit_attention checks it, not read).
/// fused_q_prepare checks the call and fills `call` (no launch); NotSupported where the call does
/// not take that path (another kernel or output kind, a Q view the TMA cannot describe): the
/// caller then quantizes Q itself. fused_q_launch launches a prepared call; attention_fused_q
/// does both.
Status fused_q_prepare(const VitAttentionArgs& a, const TensorRef& q_bf16, FusedQCall* call);
Status fused_q_launch(const VitAttentionArgs& a, const FusedQCall& call, cudaStream_t stream);
Status attention_fused_q(const VitAttentionArgs& a, const TensorRef& q_bf16, cudaStream_t stream);

/// Whether the layer quantizes Q in the attention kernel where it can (static scales, the tensor
/// cores, the stream-K grid): QFUSE_VIT_FUSED_Q=0|1 at start-up or set_fused_q (tests, same-binary
/// A/B), else yes (H100, bench/NOTES.md V23: the static layer 0.973-0.996x of the quantizer
/// writing Q). Process-wide.
bool fused_q_on();
/// 0 or 1 forces it, anything else restores the default.
void set_fused_q(int on);

/// Whether the BF16 tensor-core kernel runs in clusters of two blocks that share each K / V tile
/// (one half each, multicast; attention_tc_bf16.cuh, bench/NOTES.md V35):
/// QFUSE_VIT_BF16_CLUSTER=0|1 at start-up or set_bf16_cluster (tests, same-binary A/B), else yes.
/// Process-wide.
bool bf16_cluster_on();
/// 0 or 1 forces it, anything else restores the default.
void set_bf16_cluster(int on);

/// Most segments (query tiles or parts of one) a stream-K block runs: the host takes the one-unit
/// grid where a block could meet more (many short sequences, where that grid balances anyway).
constexpr int kStreamKMaxSegments = 32;

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

/// Whether the FP8 tensor-core kernel takes the stream-K grid by default where the call has a
/// workspace: yes. The hybrid order (the full waves whole, bench/NOTES.md V19) measured 0.942x at
/// S 4096, 0.929x at S 16384 and 0.991x on four images against the one-unit grid on an H100.
constexpr bool kTcStreamKDefault = true;

/// The stream-K setting of the FP8 tensor-core kernel: QFUSE_VIT_TC_STREAMK at start-up or
/// set_tc_streamk (tests, same-binary A/B): 0 the default (kTcStreamKDefault), -1 off, n > 0
/// stream-K with a grid of at most n blocks (at most the SM count) where the call has a
/// workspace. Process-wide.
int tc_streamk_mode();
void set_tc_streamk(int mode);
/// Whether the setting asks for the stream-K grid (where the call has a workspace).
inline bool tc_streamk_on() {
  const int mode = tc_streamk_mode();
  return mode > 0 || (mode == 0 && kTcStreamKDefault);
}

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
