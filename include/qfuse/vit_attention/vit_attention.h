// Attention for vision encoders (ViT) with FP8 inputs (SPEC §5): Q/K/V quantization with head-dim
// padding, dynamic (amax history) and static per-tensor scales, and non-causal varlen attention.
//
// Q/K/V views: bf16 [S, H, D] or [B, S, H, D], last dimension contiguous, every other stride free
// (slices of one interleaved QKV projection output are the usual case). Token t of a 4-D view is
// (b, s) = (t / S, t % S); the packed token count is S_total = B * S (S for a 3-D view).
//
// vit_quantize_qkv: one launch for all three tensors, writing contiguous e4m3 [S_total, H, Dp],
//   Dp = round_up(D, 16), columns [D, Dp) zero:  code = e4m3(x * (1 / scale)) (SPEC §0.1: fp32
//   reciprocal, round to nearest even, saturating; NaN stays NaN). Scales are dequantization
//   scales (x ~ code * scale), one fp32 per tensor on the device; scale 1.0 is a plain cast.
//
// vit_quantize_qkv_dynamic: the same with the scales of dynamic scaling. Per layer the device
//   keeps an amax history of 16 per Q/K/V and a forward counter. A forward takes amax = max |x| of
//   each tensor (NaN if any value is NaN), puts it in the history in place of the oldest entry and
//   quantizes with scale = max(history) / 448, floored at FLT_MIN (clamped to FLT_MAX). The
//   counter lives on the device: the whole path is CUDA-graph capturable. Two launches: the amax
//   (a read of the inputs), then the quantizing pass, which computes the scales in every block and
//   whose last block updates the history. vit_dynamic_scales() points at the scales the last
//   forward of a layer used (what the attention's dequantization reads).
//
// vit_attention: non-causal attention of every packed sequence (cu_seqlens) and head:
//     s_ij = softmax_scale * q_scale * k_scale * <q_i, k_j>,  o_i = v_scale * sum_j softmax(s)_j
//     v_j
//   in fp32 (scales 1 for bf16 inputs). Inputs either e4m3 [S_total, H, Dp] (from
//   vit_quantize_qkv; the pad columns are read as given, so they must be zero) or the bf16 views
//   themselves. softmax_scale is the caller's (conventionally 1 / sqrt(D), D the original head
//   size). The output o [S_total, H, D] (or [S_total, H * D]) is written un-padded through the
//   quantizer protocol: out.spec none (bf16|fp16|fp32) or any quantization kind, groups running
//   along the H * D columns of a token.
//
// Errors are returned before anything is launched (nothing written). S_total = 0 is a no-op.
#pragma once

#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "qfuse/core/status.h"
#include "qfuse/core/tensor.h"
#include "qfuse/quant/quantize.h"

namespace qfuse {

inline constexpr int kVitHistory = 16;           // amax history length of dynamic scaling
inline constexpr int kVitMaxQuantHeadDim = 256;  // vit_quantize_qkv: 1 <= D <= 256

/// Dp: D rounded up to a multiple of 16 (the FP8 tensor-core K step).
inline constexpr int64_t vit_padded_head_dim(int64_t d) {
  return (d + 15) / 16 * 16;
}

/// Layouts of the quantized V.
enum class VitVLayout {
  kRowMajor,    // [S_total, H, Dp], as q and k
  kTransposed,  // [H, Dp, S_pad], S_pad = vit_vt_keys(S_total): each row holds one dimension of
                // every key (the K-major B operand the FP8 tensor cores need for P * V), the keys
                // of each aligned block of 32 permuted (vit_vt_position) to match the register
                // layout of P; pad keys and pad rows are zero codes
};

/// Keys a transposed V row holds: S_total rounded up to 32.
inline constexpr int64_t vit_vt_keys(int64_t s_total) {
  return (s_total + 31) / 32 * 32;
}

/// Where key j sits in a transposed V row. Within its aligned block of 32, key 16 h + 8 a + 2 t + b
/// (h, a, b in {0, 1}, t in [0, 4)) sits at 16 h + 4 t + 2 a + b: the column of the wgmma A
/// fragment (k32, 8-bit) that holds the P value an fp32 accumulator fragment gives that key.
inline constexpr int64_t vit_vt_position(int64_t j) {
  const int64_t r = j & 15;
  return (j & ~int64_t{15}) + 4 * ((r >> 1) & 3) + 2 * (r >> 3) + (r & 1);
}

// ---- Q/K/V quantization ---------------------------------------------------------------------

struct VitQkvQuantArgs {
  TensorRef q, k, v;       // bf16 [S, H, D] | [B, S, H, D], same sizes, last dim contiguous
  TensorRef q_out, k_out;  // e4m3 [S_total, H, Dp], contiguous, 16-byte aligned
  TensorRef v_out;         // e4m3, v_layout: [S_total, H, Dp] or [H, Dp, S_pad]
  VitVLayout v_layout = VitVLayout::kRowMajor;
  // Static scaling: device fp32 dequantization scales, finite and > 0 (not read by the dynamic
  // entry, where they must be null).
  const float* q_scale = nullptr;
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;
};

/// Static per-tensor quantization of Q, K and V (see the file comment).
Status vit_quantize_qkv(const VitQkvQuantArgs& args, cudaStream_t stream);

/// Caller-owned device state of dynamic scaling for `num_layers` layers (zeroed by
/// vit_scale_state_reset before the first forward).
struct VitScaleState {
  void* data = nullptr;
  size_t bytes = 0;
  int num_layers = 0;
};

/// Bytes of state for `num_layers` (>= 1) layers.
size_t vit_scale_state_bytes(int num_layers);
/// Zeroes every layer's history, counter and scales (an asynchronous memset: capturable).
Status vit_scale_state_reset(const VitScaleState& state, cudaStream_t stream);
/// Device pointer to the 3 fp32 dequantization scales (q, k, v) of `layer`'s last forward
/// (zeros before the first); nullptr for a layer outside the state.
const float* vit_dynamic_scales(const VitScaleState& state, int layer);

/// Dynamic quantization of one layer's Q, K and V (see the file comment); args' scales must be
/// null.
Status vit_quantize_qkv_dynamic(const VitQkvQuantArgs& args, const VitScaleState& state, int layer,
                                cudaStream_t stream);

/// Host copy of one layer's dynamic-scaling state.
struct VitLayerScaleState {
  std::array<std::array<float, kVitHistory>, 3> history{};  // [q|k|v][slot]
  std::array<float, 3> scales{};                            // the last forward's scales
  uint32_t forwards = 0;                                    // forwards so far
};
/// Reads every layer's state (synchronises `stream`).
Status vit_scale_state_read(const VitScaleState& state, cudaStream_t stream,
                            std::vector<VitLayerScaleState>* out);

// ---- attention ------------------------------------------------------------------------------

struct VitAttentionArgs {
  TensorRef q, k, v;  // e4m3 [S_total, H, Dp] contiguous, or bf16 views (see the file comment)
  VitVLayout v_layout = VitVLayout::kRowMajor;  // e4m3 v: [S_total, H, Dp] or [H, Dp, S_pad]
  int head_dim = 0;                             // D, the original head size: 64, 72, 80, 96 or 128
  // FP8 inputs: device fp32 dequantization scales (vit_dynamic_scales() + 0, 1, 2 or static
  // ones); must be null for bf16 inputs.
  const float* q_scale = nullptr;
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;
  // Packed sequences: device int32 [num_seqs + 1] prefix sums of the lengths (0, ..., S_total)
  // and the same values on the host (checked here, never read back from the device). Both null:
  // one sequence per leading index of a 4-D view, or one sequence of a 3-D view.
  const int32_t* cu_seqlens = nullptr;
  const int32_t* cu_seqlens_host = nullptr;
  int64_t num_seqs = 0;
  float softmax_scale = 0.0f;  // finite, > 0
  QuantOutput out;             // o [S_total, H, D] (heads contiguous) or [S_total, H * D]
  // Optional device scratch of at least vit_attention_workspace_bytes() bytes (any content; the
  // call zeroes what it needs, asynchronously, unless workspace_zeroed): with it the FP8
  // tensor-core kernel can spread the key tiles of every (head, query tile) evenly over the SMs
  // (stream-K: a query tile may be split between blocks, whose fp32 partials meet in the workspace
  // and are merged by the last block; results are the same from run to run; on by default,
  // QFUSE_VIT_TC_STREAMK=-1 turns it off: docs/vit_attention.md). Null (bytes 0): a block a query
  // tile and head. One workspace a stream of calls: calls that may run at the same time (other
  // streams) need their own.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  // True: the caller promises the workspace's first vit_attention_ticket_bytes() bytes are zero
  // on entry, and the call issues no memset (one kernel node, so that programmatic dependent
  // launch can overlap it with the kernel before it). Every call leaves those bytes zero, so a
  // workspace kept for this use (and nothing else) needs zeroing only once.
  bool workspace_zeroed = false;
};

/// Bytes at the start of the workspace that VitAttentionArgs::workspace_zeroed speaks of (0
/// without a device).
size_t vit_attention_ticket_bytes();

/// Bytes of the optional workspace (VitAttentionArgs::workspace) for S_total tokens of H heads of
/// size head_dim on the current device: fp32 partials of two query tiles a streaming
/// multiprocessor and a word a streaming multiprocessor; 0 without a device or for an empty call.
size_t vit_attention_workspace_bytes(int64_t S_total, int64_t H, int head_dim);

enum class VitKernel {
  // kTensorCore where it can run the call (e4m3 inputs with V transposed, or bf16 views with
  // 16-byte aligned bases and strides; bf16 or fp8_per_tensor output; an sm_90 device), else
  // kSimple
  kAuto,
  // wgmma + TMA, warp-specialized (sm_90a): FP8 wgmma over e4m3 inputs (P rounded to e4m3), or
  // BF16 wgmma over the bf16 views (P rounded to bf16 for P V)
  kTensorCore,
  kSimple,  // CUDA-core kernel: the slow, obviously correct rung (any device)
};

struct VitAttentionOptions {
  VitKernel kernel = VitKernel::kAuto;
};

/// Whether vit_attention can run this call; the message names what is missing.
Status vit_attention_can_implement(const VitAttentionArgs& args,
                                   const VitAttentionOptions& opt = {});

/// Attention (see the file comment). Validates every argument first; on error nothing is written.
/// No host synchronisation, no allocation.
Status vit_attention(const VitAttentionArgs& args, const VitAttentionOptions& opt,
                     cudaStream_t stream);
inline Status vit_attention(const VitAttentionArgs& args, cudaStream_t stream) {
  return vit_attention(args, VitAttentionOptions{}, stream);
}

namespace ref {

/// Host references. Views are given as raw host memory with element strides (as the device
/// views): bf16 bits, [B, S, H, D] with strides (sb, ss, sh), last dim contiguous; a 3-D view is
/// B = 1.
struct VitHostView {
  const uint16_t* data = nullptr;
  int64_t B = 1, S = 0, H = 0, D = 0;
  int64_t sb = 0, ss = 0, sh = 0;
  float value(int64_t t, int64_t h, int64_t d) const;  // token t = b * S + s
};

/// The bytes vit_quantize_qkv writes for one tensor: e4m3 [B * S, H, Dp], or for a transposed V
/// e4m3 [H, Dp, vit_vt_keys(B * S)].
std::vector<uint8_t> vit_quantize(const VitHostView& x, float scale,
                                  VitVLayout layout = VitVLayout::kRowMajor);

/// max |x| over the real elements (NaN if any is NaN).
float vit_amax(const VitHostView& x);

/// The dynamic scale of a history: max(history) / 448, floored at FLT_MIN, clamped to FLT_MAX
/// (NaN propagates).
float vit_dynamic_scale(const std::array<float, kVitHistory>& history);

/// fp64 attention over dequantized inputs q, k, v [S_total, H, D] (row-major); out the same
/// shape. cu_seqlens: [num_seqs + 1] prefix sums (0, ..., S_total).
void vit_attention(const std::vector<double>& q, const std::vector<double>& k,
                   const std::vector<double>& v, int64_t H, int64_t D,
                   const std::vector<int32_t>& cu_seqlens, double softmax_scale,
                   std::vector<double>* out);

}  // namespace ref

}  // namespace qfuse
