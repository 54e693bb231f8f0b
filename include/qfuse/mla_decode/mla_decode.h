// MLA decode attention of DeepSeek V2/V3 (absorbed form) over a paged latent KV cache (SPEC §3).
//
// Cache: [num_blocks, block_size, 576] rows [latent 512 | rope 64], bf16, or FP8 E4M3 with one
// per-tensor fp32 k_scale on the device (every byte e4m3(x / k_scale), dequantized x = q *
// k_scale). block_size in {16, 32, 64, 128}; the cache may be a strided view (a layer slice of a
// larger allocation): strides are free, the last dimension contiguous.
//
// mla_write_cache: kv_c [T, 512] and k_pe [T, 64] (bf16, strided rows) to cache slot
//   slot_mapping[t] = block * block_size + offset (int64; negative: padding token, skipped).
//
// mla_decode: B requests of s_q in {1, 2, 4} query tokens each, T = B * s_q rows of
//   q [T, N, 576] bf16 (request b owns rows [b * s_q, (b + 1) * s_q)), N in {16, 32, 64, 128}.
//   Query token i of a request of length L = seq_lens[b] attends to keys [0, L - s_q + i]
//   (causal among the request's own query tokens; none when L - s_q + i < 0). Keys and values:
//   K = the whole 576-wide row, V = its first 512 values, both dequantized.
//     s_j = softmax_scale * <q, K_j>,  o_latent = sum_j softmax(s)_j V_j,
//     lse = log(sum_j exp(s_j)) (natural log), computed in fp32.
//   o_latent [T, N, 512] (or the flat [T, N * 512]) is written through the quantizer protocol:
//   `out.spec` none (bf16|fp16|fp32) or any quantization kind (groups run along the N * 512
//   columns). lse [T, N] fp32 is optional. A request with no visible key (L = 0, or a query token
//   that sees nothing) gives zeros and lse -inf.
//
// Up-projection (optional: `w_uv` set, issue 14): instead of o_latent the call writes the layer's
//   o [T, N * 128], o[t, n * 128 + j] = sum_d o_latent[t, n, d] * W_UV[n, d, j] (W_UV [N, 512,
//   128] bf16; o_latent rounded once to bf16 as the product's operand, fp32 accumulation), through
//   the quantizer protocol: `out` [T, N, 128] or [T, N * 128] in plain bf16|fp16|fp32 or any
//   quantization kind with qfuse's rules (FP8 per-tensor, per-token, per-group 64 / 128 in every
//   scale layout, NVFP4; groups run along the N * 128 columns). It is fused into the split-KV
//   combine (MlaSplitMode::kAuto only): o_latent is never written, and no separate quantization
//   runs (per-token FP8, whose scale spans every head, takes two launches of the fused kernel:
//   docs/mla_decode.md).
//
// Work: split-KV with a scheduler computed on the device from seq_lens (fixed grid, no host
// synchronisation: CUDA-graph capturable); each split writes fp32 partials + lse into the
// caller's workspace and a combine writes the output. MlaSplitMode::kNone runs one thread block
// per request (and group of heads) that writes the output in its epilogue (out.spec none, bf16).
//
// Errors the host can see are returned before anything is launched (nothing is written). What
// only the device can see (block ids outside [0, num_blocks), seq_len beyond what the block table
// covers, negative seq_len) is never read out of bounds: an out-of-range block reads as zero rows,
// a request with a bad length as an empty request; a flag in the workspace records it and
// mla_decode_check() reports it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "qfuse/core/status.h"
#include "qfuse/core/tensor.h"
#include "qfuse/quant/quantize.h"

namespace qfuse {

inline constexpr int kMlaLatentDim = 512;
inline constexpr int kMlaRopeDim = 64;
inline constexpr int kMlaHeadDim = kMlaLatentDim + kMlaRopeDim;  // 576
inline constexpr int kMlaVHeadDim = 128;  // v_head_dim: W_UV's output columns per head

// ---- cache writer ---------------------------------------------------------------------------

struct MlaCacheWriteArgs {
  TensorRef kv_c;                         // [T, 512] bf16, last dim contiguous, row stride free
  TensorRef k_pe;                         // [T, 64] bf16, last dim contiguous, row stride free
  const int64_t* slot_mapping = nullptr;  // device, [T] contiguous; < 0: skip the token
  TensorRef cache;                        // [num_blocks, block_size, 576] bf16|e4m3
  const float* k_scale = nullptr;         // device fp32; required for an e4m3 cache, else null
};

/// Writes row t to cache slot slot_mapping[t] (bf16 copies, or e4m3(x / k_scale) in fp32 with
/// IEEE division, round to nearest even, saturating). Slots >= num_blocks * block_size are not
/// written (the device cannot report them here: validate slot_mapping upstream). T = 0: no-op.
Status mla_write_cache(const MlaCacheWriteArgs& args, cudaStream_t stream);

// ---- decode ---------------------------------------------------------------------------------

struct MlaDecodeArgs {
  TensorRef q;      // [T, N, 576] bf16; last dim contiguous, 16-byte aligned strides
  TensorRef cache;  // [num_blocks, block_size, 576] bf16|e4m3, 16-byte aligned strides
  const float* k_scale = nullptr;  // device fp32: required for an e4m3 cache, null for bf16
  TensorRef block_table;           // [B, max_blocks] i32, last dim contiguous
  TensorRef seq_lens;              // [B] i32, contiguous
  int s_q = 1;                     // query tokens per request: 1, 2 or 4
  float softmax_scale = 0.0f;      // finite, > 0
  QuantOutput out;                 // o_latent [T, N, 512] (heads contiguous) or [T, N * 512];
                                   // with w_uv: o [T, N, 128] or [T, N * 128]
  TensorRef lse;                   // optional [T, N] fp32 (natural log), last dim contiguous
  TensorRef w_uv;                  // optional [N, 512, 128] bf16 (last dim contiguous, 16-byte
                                   // aligned rows): write the up-projected o (file comment)
};

enum class MlaSplitMode {
  kAuto,  // device scheduler, fp32 partials, combine through the quantizer (any out.spec)
  kNone,  // one block per (request, head group); epilogue writes o_latent (bf16, spec none)
};

enum class MlaKernel {
  kAuto,        // the tensor-core kernel where the device has one (sm_90), else kSimple
  kTensorCore,  // wgmma + TMA, warp-specialized (sm_90a)
  kSimple,      // CUDA-core kernel: the slow, obviously correct rung (any sm_80+ device)
};

/// A schedule computed once for several mla_decode calls (mla_decode_schedule): the layers of one
/// decode step share seq_lens, the block table's shape, the head count and s_q, so the step
/// computes its split schedule once and every layer's call launches only the decode kernel (and
/// the combine), as FlashMLA's metadata is computed once a step. Host-side: what the schedule
/// covers, checked against each call that reuses it; the schedule itself lives in the workspace.
struct MlaSchedule {
  const void* ws = nullptr;  // the workspace holding it (null: none computed)
  int device = -1;
  int64_t batch = 0, heads = 0, capacity = 0;  // capacity: max_blocks * block_size
  int s_q = 0, cache_bytes = 0, rows_per_block = 0, parts = 0, overhead = 0;
  bool split = true, tensor_core = true;
};

struct MlaDecodeOptions {
  MlaSplitMode split = MlaSplitMode::kAuto;
  MlaKernel kernel = MlaKernel::kAuto;
  /// Reuse this schedule (computed by mla_decode_schedule on the same workspace for the same
  /// shapes) instead of computing one: the call launches no scheduler. Null: compute it.
  const MlaSchedule* schedule = nullptr;
};

/// Caller-owned device scratch: scheduler metadata, the device error flag, fp32 partials.
struct MlaWorkspace {
  void* data = nullptr;
  size_t bytes = 0;
};

/// Bytes of workspace mla_decode needs for `batch` requests of `s_q` tokens and `num_heads` heads
/// on the current device (the partials depend on its multiprocessor count), or on a device of
/// `sm_count` multiprocessors when it is > 0 (planning without a device).
Status mla_decode_workspace_size(int64_t batch, int s_q, int num_heads, const MlaDecodeOptions& opt,
                                 size_t* bytes, int sm_count = 0);

/// Whether mla_decode can run this call (shapes, dtypes, head count, block size, s_q, alignment,
/// output kind, workspace size, device); the message names what is missing.
Status mla_decode_can_implement(const MlaDecodeArgs& args, const MlaWorkspace& ws,
                                const MlaDecodeOptions& opt);

/// Decode attention (see the file comment). Validates every argument first; on error nothing is
/// written. B = 0 is a no-op. No host synchronisation, no allocation.
Status mla_decode(const MlaDecodeArgs& args, const MlaWorkspace& ws, const MlaDecodeOptions& opt,
                  cudaStream_t stream);

/// Computes the split schedule of calls shaped as `args` with options `opt` into `ws` (what
/// mla_decode does first) and describes it in `*schedule`, for calls that pass it as
/// opt.schedule. The schedule captures seq_lens as they are when it runs on `stream` (the
/// lengths, sanitized, and the work split): the calls that reuse it read the lengths from it, not
/// from seq_lens, so they compute attention over the lengths of the step it was computed for.
/// The calls may use other q, cache (same dtype and block size), block_table (same shape),
/// output and lse tensors: the layers of a step. It also clears the device error flag
/// (mla_decode_check then reports every call since). Validates like mla_decode; B = 0 launches
/// nothing.
Status mla_decode_schedule(const MlaDecodeArgs& args, const MlaWorkspace& ws,
                           const MlaDecodeOptions& opt, MlaSchedule* schedule, cudaStream_t stream);

/// Device-side errors of the mla_decode calls on `ws` since its schedule was computed (the last
/// call, or with a reused schedule every call since mla_decode_schedule; synchronises `stream`):
/// Ok, or
/// kInvalidArgument naming what the device found (block id out of range, seq_len beyond the
/// block table, negative seq_len).
Status mla_decode_check(const MlaWorkspace& ws, cudaStream_t stream);

/// Device error flag bits (the first int of the workspace).
enum MlaDeviceError : int {
  kMlaErrBlockId = 1,      // a block table entry outside [0, num_blocks) (read as zero rows)
  kMlaErrSeqTooLong = 2,   // seq_len > max_blocks * block_size (request treated as empty)
  kMlaErrSeqNegative = 4,  // seq_len < 0 (request treated as empty)
};

// ---- the attention op with the reference engine's contract (issue 14, SPEC §3) ----------------

/// What the engine's attention metadata says about one forward's rows: rows [0,
/// num_decode_tokens) are decode requests of decode_s_q query tokens each (B = num_decode_tokens /
/// decode_s_q, over which block_table and seq_lens run); rows [num_decode_tokens,
/// num_actual_tokens) are prefill tokens; rows past num_actual_tokens are CUDA-graph padding,
/// neither read nor written.
struct MlaAttentionMetadata {
  int64_t num_actual_tokens = 0;
  int64_t num_decode_tokens = 0;
  int decode_s_q = 1;                     // 1, 2 or 4
  const int64_t* slot_mapping = nullptr;  // device [num_actual_tokens]: where kv_c's rows go
  TensorRef block_table;                  // [B, max_blocks] i32
  TensorRef seq_lens;                     // [B] i32 (lengths include this step's tokens)
};

struct MlaAttentionArgs {
  TensorRef q;                     // [num_tokens, N, 576] bf16: the absorbed query of every row
  TensorRef kv_c, k_pe;            // optional [num_tokens, 512] / [num_tokens, 64] bf16: this
                                   // step's latent / rope rows, written to the cache first
  TensorRef kv_cache;              // [num_blocks, block_size, 576] bf16|e4m3
  const float* k_scale = nullptr;  // device fp32 for an e4m3 cache
  TensorRef w_uv;                  // [N, 512, 128] bf16
  float softmax_scale = 0.0f;
  /// The layer's output [num_tokens, N * 128] in the QuantOutput's kind: out.scale is the
  /// engine's output_scale (FP8 per-tensor, NVFP4 global), out.scales its output_block_scale
  /// (the kind's scale buffer, sized for num_tokens rows).
  QuantOutput output;
  TensorRef lse;  // optional [num_tokens, N] fp32
};

/// Workspace bytes of mla_attention for this call (the decode's, mla_decode_workspace_size).
Status mla_attention_workspace_size(const MlaAttentionArgs& args, const MlaAttentionMetadata& m,
                                    size_t* bytes);

/// One MLA attention forward as the reference engine's backend does it (SPEC §3): writes kv_c /
/// k_pe's first num_actual_tokens rows to the cache (when given), then the decode rows' attention
/// with the up-projection, o = softmax(q K^T) V . W_UV per head, written straight in the output's
/// kind (mla_decode with w_uv; its file comment). Only rows [0, num_actual_tokens) are read or
/// written; rows past it are left as they are, with one exception that the layout itself makes:
/// NVFP4 with swizzled scales zeroes the scale bytes of rows [num_actual_tokens,
/// round_up(num_actual_tokens, 128)), the padding of its last 128-row tile, which block-scaled
/// GEMMs read. Column-major per-group scale layouts index by the buffer's row count, so they need
/// num_actual_tokens == num_tokens (else kNotSupported). Prefill rows (num_actual_tokens >
/// num_decode_tokens) are kNotSupported until the prefill attention family exists. Every argument
/// is validated before anything is launched: on error nothing is written.
Status mla_attention(const MlaAttentionArgs& args, const MlaAttentionMetadata& m,
                     const MlaWorkspace& ws, cudaStream_t stream);

namespace ref {

/// Host copy of a paged cache: raw elements (bf16 bits or e4m3 bytes) with element strides.
struct MlaHostCache {
  DType dtype = DType::kBF16;
  const void* data = nullptr;
  int64_t num_blocks = 0, block_size = 0;
  int64_t stride_block = 0, stride_token = 0;  // elements
  float k_scale = 1.0f;                        // e4m3 only
};

/// The dequantized value of element e of the row of (block, offset), as fp64.
double mla_cache_value(const MlaHostCache& c, int64_t block, int64_t offset, int e);

/// fp64 up-projection of o_latent [T, N, 512] by W_UV (bf16 bits [N, 512, 128] contiguous) into
/// out [T, N * 128]. With `bf16_operand`, o_latent is first rounded to bf16 (what the kernel
/// multiplies; the difference is the operand's rounding, docs/tolerances.md).
void mla_up_proj(const std::vector<double>& o_latent, const uint16_t* w_uv, int64_t T, int64_t N,
                 bool bf16_operand, std::vector<double>* out);

/// fp64 reference of mla_decode over the dequantized cache. q: bf16 bits [T, N, 576] contiguous;
/// block_table [B, max_blocks] contiguous; out [T, N, 512] row-major; lse [T, N] natural log.
/// Device-error semantics as in the file comment (bad block id: zero rows; bad length: empty).
void mla_decode(const uint16_t* q, int64_t B, int s_q, int64_t N, const MlaHostCache& cache,
                const int32_t* block_table, int64_t max_blocks, const int32_t* seq_lens,
                double softmax_scale, std::vector<double>* out, std::vector<double>* lse);

/// The bytes mla_write_cache writes: `cache` (host copy of the device cache, raw elements,
/// strides as in c) updated in place from kv_c / k_pe bf16 bits (row strides ld_c, ld_pe).
void mla_write_cache(const uint16_t* kv_c, int64_t ld_c, const uint16_t* k_pe, int64_t ld_pe,
                     const int64_t* slot_mapping, int64_t T, const MlaHostCache& c, void* cache);

}  // namespace ref

}  // namespace qfuse
