// SiLU-and-mul with any quantized output (SPEC §1): x [T, 2H] bf16|fp16 -> silu(gate) * up,
// computed in fp32 and written once through the shared quantizer (rowwise.cuh). silu_and_mul is
// the same kernel with the plain (identity) policy. With the engine rule (per-group FP8, the
// drop-in silu_and_mul_per_block_quant) the silu is the reference engine's arithmetic too.
#include <climits>

#include "common/rowwise.cuh"
#include "qfuse/act_quant/silu_mul.h"
#include "quant/validate.h"

namespace qfuse {
namespace quant {

/// How the producer computes silu(g) * u:
///   kAccurate  rules::silu (expf): plain float outputs;
///   kFast      exp through ex2.approx (a few fp32 ulps, more for gates below about -8), for
///              quantized outputs with qfuse's rules, where that error is far below one FP8/E2M1
///              step;
///   kEngine    rules::engine_silu_mul, the reference engine's SiLU per-block arithmetic, for the
///              engine rule (bit for bit the engine's values).
enum class SiluArith { kAccurate, kFast, kEngine };

template <SiluArith kArith>
__device__ __forceinline__ float silu_mul(float g, float u) {
  if constexpr (kArith == SiluArith::kFast) return __fdividef(g, 1.0f + __expf(-g)) * u;
  if constexpr (kArith == SiluArith::kEngine)
    return rules::engine_silu_mul(g, u, rules::Ex2ApproxFtz{});
  return rules::silu(g) * u;
}

/// silu_mul over a chunk (kEngine: engine_silu_mul_chunk, one branch a chunk).
template <SiluArith kArith>
__device__ __forceinline__ void silu_mul_chunk(const float (&g)[kChunk], const float (&u)[kChunk],
                                               float (&v)[kChunk]) {
  if constexpr (kArith == SiluArith::kEngine) {
    engine_silu_mul_chunk(g, u, v);
  } else {
#pragma unroll
    for (int i = 0; i < kChunk; ++i) v[i] = silu_mul<kArith>(g[i], u[i]);
  }
}

template <class TIn, SiluArith kArith>
struct LoadSiluMul {
  const TIn* x;
  int64_t ld;
  int64_t H;
  bool vec;
  static constexpr int kVecs = kChunk * sizeof(TIn) / 16;
  struct Raw {
    uint4 g[kVecs], u[kVecs];
  };
  template <class Ready = NoWait>
  __device__ void fetch(int64_t row, int col, int nvalid, Raw& raw, Ready ready = {}) const {
    if (vec && nvalid == kChunk) {
      const uint4* g = reinterpret_cast<const uint4*>(x + row * ld + col);
      const uint4* u = reinterpret_cast<const uint4*>(x + row * ld + H + col);
      ready();  // (after the address arithmetic: kLatePdlWait)
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        raw.g[i] = __ldg(g + i);
        raw.u[i] = __ldg(u + i);
      }
    } else {
      ready();
    }
  }
  __device__ void convert(const Raw& raw, int64_t row, int col, int nvalid,
                          float (&v)[kChunk]) const {
    float g[kChunk], u[kChunk];
    if (vec && nvalid == kChunk) {
      convert_chunk<TIn>(raw.g, g);
      convert_chunk<TIn>(raw.u, u);
    } else {
      const TIn* gate = x + row * ld + col;
      load_chunk2(gate, gate + H, false, nvalid, g, u);
    }
    silu_mul_chunk<kArith>(g, u, v);
  }
  template <class Ready = NoWait>
  __device__ void load(int64_t row, int col, int nvalid, float (&v)[kChunk],
                       Ready ready = {}) const {
    const TIn* gate = x + row * ld + col;
    ready();  // (after the address arithmetic: kLatePdlWait)
    float g[kChunk], u[kChunk];
    load_chunk2(gate, gate + H, vec, nvalid, g, u);
    silu_mul_chunk<kArith>(g, u, v);
  }
  __device__ void finish(int64_t, int, int) const {}
  // NOTE: 8 blocks of 256 threads (<= 32 registers): full occupancy; a looser cap let nvcc take
  // more registers and cost bandwidth (bench/NOTES.md 41a).
  static constexpr int kStreamMinBlocks = 8;
  // The engine arithmetic (per-group only): 40 registers (at 32 its kernels spilled 24 bytes).
  static constexpr int kStreamMinBlocksGrouped = kArith == SiluArith::kEngine ? 6 : 8;
  static constexpr int kNvfp4Round = 1;  // the clamp-free E2M1 round where exact (NOTES 34)
  // The native rules wait at the kernel's top (rowwise_kernel: late measured slower at large
  // batches and at T 16 H 14336, NOTES 39); the engine rule (the drop-ins, per-group only) waits
  // after its address arithmetic: at T 16 H 2048 / 7168 that measured 1.59 / 1.96 -> 1.33 / 1.71
  // µs for NVFP4 on an H100, and its drop-in trails torch.compile there (NOTES 48).
  static constexpr bool kLatePdlWait = kArith == SiluArith::kEngine;
  static constexpr int kNvfp4LaneChunks = 2;  // 4 spilled at 64 registers (NOTES 32, 41c)
  // Per-group FP8: 8 values per lane (wide lanes measured the same, NOTES 32, 41c).
  static constexpr int kGroupLaneChunks = 1;
};

}  // namespace quant

namespace {

Status run_silu_mul(const char* op, const TensorRef& x, const QuantOutput& q, cudaStream_t stream) {
  QFUSE_RETURN_IF_ERROR(detail::check_matrix(x, "x", {DType::kBF16, DType::kF16}, -1, -1));
  const int64_t T = x.sizes[0], W = x.sizes[1];
  if (W % 2 != 0)
    return Status::InvalidArgument("x.sizes[1]", "an even width 2H", std::to_string(W));
  const int64_t H = W / 2;
  if (H > INT_MAX / 2)
    return Status::InvalidArgument("x.sizes[1]", "<= " + std::to_string(INT_MAX),
                                   std::to_string(W));
  QFUSE_RETURN_IF_ERROR(detail::check_quant_call(op, q, T, H, {{x.data, "x.data"}}));
  if (T == 0 || H == 0) return Status::Ok();
  const int64_t ld = x.strides[0];
  // NOTE: 16-byte loads need the up half (x + H) aligned too, hence H in the check.
  const bool vec = quant::aligned_rows(x.data, ld, 2, 16) && (H * 2) % 16 == 0;
  const bool fast = q.spec.kind != QuantKind::kNone;
  const bool engine = q.spec.rule == QuantRule::kEngine;  // per-group only (register.cpp)
  using quant::SiluArith;
  if (x.dtype == DType::kBF16) {
    const auto* p = static_cast<const __nv_bfloat16*>(x.data);
    if (engine)
      return quant::launch_rowwise<quant::kEngineGroupKinds>(
          quant::LoadSiluMul<__nv_bfloat16, SiluArith::kEngine>{p, ld, H, vec}, q, T, H, stream);
    if (fast)
      return quant::launch_rowwise<quant::kQuantizedKinds>(
          quant::LoadSiluMul<__nv_bfloat16, SiluArith::kFast>{p, ld, H, vec}, q, T, H, stream);
    return quant::launch_rowwise<quant::kPlainKinds>(
        quant::LoadSiluMul<__nv_bfloat16, SiluArith::kAccurate>{p, ld, H, vec}, q, T, H, stream);
  }
  const auto* p = static_cast<const __half*>(x.data);
  if (engine)
    return quant::launch_rowwise<quant::kEngineGroupKinds>(
        quant::LoadSiluMul<__half, SiluArith::kEngine>{p, ld, H, vec}, q, T, H, stream);
  if (fast)
    return quant::launch_rowwise<quant::kQuantizedKinds>(
        quant::LoadSiluMul<__half, SiluArith::kFast>{p, ld, H, vec}, q, T, H, stream);
  return quant::launch_rowwise<quant::kPlainKinds>(
      quant::LoadSiluMul<__half, SiluArith::kAccurate>{p, ld, H, vec}, q, T, H, stream);
}

}  // namespace

Status silu_mul_quant(const TensorRef& x, const QuantOutput& q, cudaStream_t stream) {
  return run_silu_mul("silu_mul_quant", x, q, stream);
}

Status silu_and_mul(const TensorRef& x, const TensorRef& out, cudaStream_t stream) {
  QuantOutput q;
  q.out = out;
  return run_silu_mul("silu_and_mul", x, q, stream);
}

}  // namespace qfuse
