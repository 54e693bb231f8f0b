// Standalone quantization: x [T, H] bf16|fp16|fp32 -> any QuantSpec output, through the shared
// row-wise kernel with the identity producer. These ops are also the unfused baselines.
#include <climits>

#include "qfuse/quant/quantize.h"
#include "quant/rowwise.cuh"
#include "quant/validate.h"

namespace qfuse {
namespace quant {

/// Producer: the input row itself.
template <class TIn>
struct LoadRows {
  const TIn* x;
  int64_t ld;
  bool vec;
  static constexpr int kVecs = kChunk * sizeof(TIn) / 16;
  struct Raw {
    uint4 r[kVecs];
  };
  template <class Ready = NoWait>
  __device__ void fetch(int64_t row, int col, int nvalid, Raw& raw, Ready ready = {}) const {
    ready();  // NOTE: first: this producer waits at the kernel's top (kLatePdlWait false)
    if (vec && nvalid == kChunk) {
      const uint4* p = reinterpret_cast<const uint4*>(x + row * ld + col);
#pragma unroll
      for (int i = 0; i < kVecs; ++i) raw.r[i] = __ldg(p + i);
    }
  }
  __device__ void convert(const Raw& raw, int64_t row, int col, int nvalid,
                          float (&v)[kChunk]) const {
    if (vec && nvalid == kChunk)
      convert_chunk<TIn>(raw.r, v);
    else
      load_chunk(x + row * ld + col, false, nvalid, v);
  }
  template <class Ready = NoWait>
  __device__ void load(int64_t row, int col, int nvalid, float (&v)[kChunk],
                       Ready ready = {}) const {
    ready();
    load_chunk(x + row * ld + col, vec, nvalid, v);
  }
  __device__ void finish(int64_t, int, int) const {}
  // NOTE: 8 blocks of 256 threads (<= 32 registers): full occupancy. `__launch_bounds__(256, 1)`
  // let nvcc take 40 registers and cost 4-6 % of bandwidth (H100, silu g128).
  static constexpr int kStreamMinBlocks = 8;
  static constexpr int kStreamMinBlocksGrouped = 8;
  // The clamp-free E2M1 round where exact (NOTES 30, 34: NaN-free round 81 -> 89 %, clamp-free
  // 86.6/93.2 -> 88.3/94.8 % at H=2048/7168).
  static constexpr int kNvfp4Round = 1;
  // Waits at the kernel's top (rowwise_kernel: late measured slower, NOTES 39).
  static constexpr bool kLatePdlWait = false;
  // Two NVFP4 blocks per lane: bf16 84/89 -> 87/93 % (NOTES 32); fp32 rows (8 registers a chunk)
  // spilled at 64 registers.
  static constexpr int kNvfp4LaneChunks = sizeof(TIn) == 4 ? 2 : 4;
  // Per-group FP8 with wide lanes (NOTES 32): g128 row 90.2/93.5 -> 93.8/98.8 %, col_tma packed
  // 88.7/92.3 -> 92.6/97.8 % at T=16384 H=2048/7168 (2 chunks: 91.3/94.9 %); fp32 as above.
  static constexpr int kGroupLaneChunks = sizeof(TIn) == 4 ? 2 : 4;
  static constexpr bool kStream = false;  // persistent pipelines for large problems
  // cp.async path (rowwise_async_kernel): the chunk's bytes, zero-filled past nvalid.
  static constexpr bool kAsync = true;
  // Bulk-copy path (rowwise_bulk_kernel): the task's 256-column row segment in one copy.
  // NOTE: off: measured on H100 (T=16384, H=7168, bf16 in) it ran quantize at 83 % of copy
  // bandwidth for fp8_per_tensor and fp8_group128 vs 87-89 % for the cp.async path; one
  // 512-byte copy per task is too small for the copy engine. Kept compiled for comparison.
#ifdef QFUSE_QUANT_BULK
  static constexpr bool kBulk = true;
#else
  static constexpr bool kBulk = false;
#endif
  static constexpr int kBulkBytes = 32 * kChunk * sizeof(TIn);
  __device__ void bulk_issue(uint32_t row, int col0, int ncols, uint8_t* dst, uint64_t* bar) const {
    const uint32_t bytes = static_cast<uint32_t>(ncols) * sizeof(TIn);
    mbar_arrive_expect_tx(bar, bytes);
    bulk_copy_g2s(dst, x + static_cast<int64_t>(row) * ld + col0, bytes, bar);
  }
  __device__ void bulk_compute(const uint8_t* buf, int lane, int nvalid, float (&v)[kChunk]) const {
    if (nvalid <= 0) {
#pragma unroll
      for (int i = 0; i < kChunk; ++i) v[i] = 0.0f;
      return;
    }
    read_chunk_shared<TIn>(buf + lane * kChunk * sizeof(TIn), v);
  }
  static constexpr int kStageBytes = kChunk * sizeof(TIn);
  __device__ void issue(int64_t row, int col, int nvalid, uint8_t* slot) const {
    const char* src = reinterpret_cast<const char*>(x + row * ld + col);
    const int bytes = nvalid * static_cast<int>(sizeof(TIn));
#pragma unroll
    for (int i = 0; i < kStageBytes / 16; ++i)
      cp_async16(slot + 16 * i, src + 16 * i, piece_bytes(bytes, i));
  }
  __device__ void compute(const uint8_t* slot, float (&v)[kChunk]) const {
    read_chunk_shared<TIn>(slot, v);
  }
};

}  // namespace quant

Status quantize(const TensorRef& x, const QuantOutput& q, cudaStream_t stream) {
  QFUSE_RETURN_IF_ERROR(
      detail::check_matrix(x, "x", {DType::kBF16, DType::kF16, DType::kF32}, -1, -1));
  const int64_t T = x.sizes[0], H = x.sizes[1];
  if (H > INT_MAX / 2)
    return Status::InvalidArgument("x.sizes[1]", "<= " + std::to_string(INT_MAX / 2),
                                   std::to_string(H));
  QFUSE_RETURN_IF_ERROR(q.spec.validate());
  QFUSE_RETURN_IF_ERROR(detail::check_op_supports("quantize", q.spec));
  QFUSE_RETURN_IF_ERROR(validate_quant_output(q, T, H));
  if (T == 0 || H == 0) return Status::Ok();
  QFUSE_RETURN_IF_ERROR(detail::check_device_pointers({{x.data, "x.data"},
                                                       {q.out.data, "out.data"},
                                                       {q.scales.data, "out.scales.data"},
                                                       {q.scale, "out.scale"},
                                                       {q.scale_ub, "out.scale_ub"}}));
  const int64_t ld = x.strides[0];
  const int64_t esize = static_cast<int64_t>(dtype_size(x.dtype));
  const bool vec = quant::aligned_rows(x.data, ld, esize, 16);
  switch (x.dtype) {
    case DType::kBF16:
      return quant::launch_rowwise(
          quant::LoadRows<__nv_bfloat16>{static_cast<const __nv_bfloat16*>(x.data), ld, vec}, q, T,
          H, stream);
    case DType::kF16:
      return quant::launch_rowwise(
          quant::LoadRows<__half>{static_cast<const __half*>(x.data), ld, vec}, q, T, H, stream);
    case DType::kF32:
      return quant::launch_rowwise(
          quant::LoadRows<float>{static_cast<const float*>(x.data), ld, vec}, q, T, H, stream);
    default:
      return Status::InvalidArgument("x.dtype", "bf16|fp16|fp32", std::string(to_string(x.dtype)));
  }
}

}  // namespace qfuse
