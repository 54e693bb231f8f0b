// MLA decode dispatch (SPEC §3, §7): validate every argument (nothing is launched on error), pick
// the kernel and its compile-time form (rows per block, cache dtype, epilogue), then launch the
// scheduler, the decode kernel and (split mode) the combine. Also the cache writer's entry.
#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/tma.h"
#include "mla_decode/cache_write.h"
#include "mla_decode/launch.h"
#include "mla_decode/schedule_rules.h"
#include "mla_decode/traits.cuh"
#include "mla_decode/up_proj.h"
#include "qfuse/core/arch.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/mla_decode/mla_decode.h"
#include "quant/validate.h"

namespace qfuse {
namespace mla {
namespace {

/// A kernel-form switch's start-up value: `other` where the environment variable `name` reads
/// as that number (same-binary A/B runs), else `fallback`.
int env_form(const char* name, int fallback, int other) {
  const char* env = std::getenv(name);
  return env != nullptr && std::strcmp(env, std::to_string(other).c_str()) == 0 ? other : fallback;
}

std::atomic<int>& fp8_form_state() {
  static std::atomic<int> state{
      env_form("QFUSE_MLA_FP8_FORM", env_form("QFUSE_MLA_FP8_FORM", 3, 2), 1)};
  return state;
}

std::atomic<int>& fp8_wide_state() {
  static std::atomic<int> state{env_form("QFUSE_MLA_FP8_WIDE", 1, 0)};
  return state;
}

std::atomic<int>& wide_form_state() {
  static std::atomic<int> state{env_form("QFUSE_MLA_WIDE_FORM", 1, 2)};
  return state;
}

std::atomic<int>& release_state() {
  static std::atomic<int> state{
      env_form("QFUSE_MLA_RELEASE", env_form("QFUSE_MLA_RELEASE", 1, 2), 0)};
  return state;
}

std::atomic<int>& direct_state() {
  static std::atomic<int> state{env_form("QFUSE_MLA_DIRECT", 1, 0)};
  return state;
}

/// QFUSE_MLA_PIECE_OVERHEAD=n (1 .. kMaxOverheadTiles): the scheduler's cost of a piece, for
/// measuring a kernel's real per-piece cost (bench/NOTES.md M18, M19); unset or out of range:
/// piece_overhead of the kernel's rows.
int piece_overhead_override() {
  static const int v = [] {
    const char* env = std::getenv("QFUSE_MLA_PIECE_OVERHEAD");
    const int n = env != nullptr ? std::atoi(env) : 0;
    return n >= 1 && n <= mla::kMaxOverheadTiles ? n : 0;
  }();
  return v;
}

}  // namespace

int scheduler_piece_overhead(int rows, CacheKind cache) {
  if (piece_overhead_override() > 0) return piece_overhead_override();
  // NOTE: the FP8 16-row forms 1 and 2 (QK on converted fp16 products) were measured best at 6
  // (bench/NOTES.md M19); schedule_rules.h's figure is form 3's (M30).
  if (rows < 32 && cache == CacheKind::kFp8 && fp8_form() != 3) return 6;
  return piece_overhead(rows, cache);
}

void set_direct_output(bool direct) {
  direct_state().store(direct ? 1 : 0);
}
bool direct_output() {
  return direct_state().load() != 0;
}

void set_wide_form(int form) {
  wide_form_state().store(form == 2 ? 2 : 1);
}
int wide_form() {
  return wide_form_state().load();
}

void set_fp8_wide(bool wide) {
  fp8_wide_state().store(wide ? 1 : 0);
}
bool fp8_wide() {
  return fp8_wide_state().load() != 0;
}

void set_bf16_release(int mode) {
  release_state().store(mode == 0 || mode == 2 ? mode : 1);
}
int bf16_release() {
  return release_state().load();
}

void set_fp8_form(int form) {
  fp8_form_state().store(form == 1 || form == 2 ? form : 3);
}
int fp8_form() {
  return fp8_form_state().load();
}

}  // namespace mla

namespace {

using mla::CacheKind;
using mla::EpilogueKind;

std::string str(int64_t v) {
  return std::to_string(v);
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

int64_t align256(int64_t v) {
  return (v + 255) / 256 * 256;
}

/// Parts the split grid may use on this device (the partial slots are sized for it).
int max_parts(const DeviceInfo& dev) {
  return 2 * dev.sm_count;
}

struct WsLayout {
  int64_t len = 0, cost_pre = 0, first = 0, lse_part = 0, o_part = 0, amax = 0, bytes = 0;
};

WsLayout ws_layout(int64_t B, int s_q, int64_t N, int parts) {
  WsLayout l;
  int64_t off = mla::kHeaderInts * 4;
  l.len = off;
  off = align256(off + B * 4);
  l.cost_pre = off;
  off = align256(off + (B + 1) * 4);
  l.first = off;
  off = align256(off + (B + 1) * 4);
  const int64_t slots = B + parts;
  l.lse_part = off;
  off = align256(off + slots * s_q * N * 4);
  l.o_part = off;
  off = align256(off + slots * s_q * N * mla::kLatent * 4);
  l.amax = off;
  off = align256(off + B * s_q * N * 4);
  l.bytes = off;
  return l;
}

/// Everything mla_decode derives from validated arguments.
struct Plan {
  int64_t B = 0, T = 0, N = 0, num_blocks = 0, block_size = 0, max_blocks = 0;
  CacheKind cache = CacheKind::kBf16;
  bool tensor_core = false;
  bool split = true;
  int rows = 0;  // N * s_q
  int rpb = 0;   // rows per block
  int row_blocks = 0;
  int parts = 0;    // split grid parts
  bool up = false;  // w_uv given: the output is the up-projected o
  QuantOutput out;  // flattened [T, N * 512] ([T, N * 128] with w_uv)
  WsLayout ws;
};

Status validate(const MlaDecodeArgs& a, const MlaWorkspace& ws, const MlaDecodeOptions& opt,
                Plan* plan) {
  Plan& P = *plan;
  // q
  const TensorRef& q = a.q;
  if (q.rank != 3) return Status::InvalidArgument("q.rank", "3 ([T, N, 576])", str(q.rank));
  if (q.dtype == DType::kE4M3)
    return Status::NotSupported(
        "q.dtype e4m3: the FP8-query path is not implemented yet (issue 22); pass bf16 q");
  if (q.dtype != DType::kBF16)
    return Status::InvalidArgument("q.dtype", "bf16", std::string(to_string(q.dtype)));
  if (q.sizes[2] != kMlaHeadDim)
    return Status::InvalidArgument("q.sizes[2]", str(kMlaHeadDim) + " (512 latent + 64 rope)",
                                   str(q.sizes[2]));
  P.T = q.sizes[0];
  P.N = q.sizes[1];
  if (P.T < 0) return Status::InvalidArgument("q.sizes[0]", ">= 0", str(P.T));
  if (P.N != 16 && P.N != 32 && P.N != 64 && P.N != 128)
    return Status::InvalidArgument("q.sizes[1]", "heads in {16, 32, 64, 128}", str(P.N));
  if (q.strides[2] != 1)
    return Status::InvalidArgument("q.strides[2]", "1 (last dimension contiguous)",
                                   str(q.strides[2]));
  if (q.strides[1] < kMlaHeadDim || q.strides[1] % 8 != 0)
    return Status::InvalidArgument("q.strides[1]", ">= 576 and a multiple of 8 (16-byte rows)",
                                   str(q.strides[1]));
  if (P.T > 1 && (q.strides[0] < q.strides[1] * P.N || q.strides[0] % 8 != 0))
    return Status::InvalidArgument(
        "q.strides[0]", ">= N * strides[1] = " + str(q.strides[1] * P.N) + " and a multiple of 8",
        str(q.strides[0]));
  // s_q, batch
  if (a.s_q != 1 && a.s_q != 2 && a.s_q != 4)
    return Status::InvalidArgument("s_q", "1, 2 or 4", str(a.s_q));
  if (P.T % a.s_q != 0)
    return Status::InvalidArgument(
        "q.sizes[0]", "a multiple of s_q = " + str(a.s_q) + " (T = B * s_q)", str(P.T));
  P.B = P.T / a.s_q;
  P.rows = static_cast<int>(P.N) * a.s_q;
  // cache
  const TensorRef& c = a.cache;
  if (c.rank != 3)
    return Status::InvalidArgument("cache.rank", "3 ([num_blocks, block_size, 576])", str(c.rank));
  if (c.dtype != DType::kBF16 && c.dtype != DType::kE4M3)
    return Status::InvalidArgument("cache.dtype", "bf16|e4m3", std::string(to_string(c.dtype)));
  P.cache = c.dtype == DType::kBF16 ? CacheKind::kBf16 : CacheKind::kFp8;
  if (c.sizes[2] != kMlaHeadDim)
    return Status::InvalidArgument("cache.sizes[2]", str(kMlaHeadDim), str(c.sizes[2]));
  P.num_blocks = c.sizes[0];
  P.block_size = c.sizes[1];
  if (P.block_size != 16 && P.block_size != 32 && P.block_size != 64 && P.block_size != 128)
    return Status::InvalidArgument("cache.sizes[1]", "block size in {16, 32, 64, 128}",
                                   str(P.block_size));
  if (P.num_blocks < 1 || P.num_blocks >= INT_MAX)
    return Status::InvalidArgument("cache.sizes[0]", "num_blocks in [1, 2^31 - 1)",
                                   str(P.num_blocks));
  const int64_t es = static_cast<int64_t>(dtype_size(c.dtype));
  if (c.strides[2] != 1)
    return Status::InvalidArgument("cache.strides[2]", "1 (last dimension contiguous)",
                                   str(c.strides[2]));
  if (c.strides[1] < kMlaHeadDim || (c.strides[1] * es) % 16 != 0)
    return Status::InvalidArgument("cache.strides[1]", ">= 576 and 16-byte aligned rows",
                                   str(c.strides[1]));
  if (c.strides[0] < c.strides[1] * P.block_size || (c.strides[0] * es) % 16 != 0)
    return Status::InvalidArgument(
        "cache.strides[0]",
        ">= block_size * strides[1] = " + str(c.strides[1] * P.block_size) + ", 16-byte aligned",
        str(c.strides[0]));
  if (c.data == nullptr || !aligned16(c.data))
    return Status::InvalidArgument("cache.data", "a 16-byte aligned device pointer",
                                   c.data == nullptr ? "null" : "misaligned");
  if (P.cache == CacheKind::kFp8 && a.k_scale == nullptr)
    return Status::InvalidArgument("k_scale", "a device fp32 (the cache is e4m3)", "null");
  if (P.cache == CacheKind::kBf16 && a.k_scale != nullptr)
    return Status::InvalidArgument("k_scale", "null (the cache is bf16)", "a pointer");
  // block table, seq_lens
  const TensorRef& bt = a.block_table;
  if (bt.dtype != DType::kI32)
    return Status::InvalidArgument("block_table.dtype", "i32", std::string(to_string(bt.dtype)));
  if (bt.rank != 2)
    return Status::InvalidArgument("block_table.rank", "2 ([B, max_blocks])", str(bt.rank));
  if (bt.sizes[0] != P.B)
    return Status::InvalidArgument("block_table.sizes[0]", str(P.B) + " (B = T / s_q)",
                                   str(bt.sizes[0]));
  P.max_blocks = bt.sizes[1];
  if (P.max_blocks < 1)
    return Status::InvalidArgument("block_table.sizes[1]", ">= 1", str(P.max_blocks));
  if (bt.strides[1] != 1)
    return Status::InvalidArgument("block_table.strides[1]", "1", str(bt.strides[1]));
  if (P.B > 1 && bt.strides[0] < P.max_blocks)
    return Status::InvalidArgument("block_table.strides[0]", ">= " + str(P.max_blocks),
                                   str(bt.strides[0]));
  const TensorRef& sl = a.seq_lens;
  if (sl.dtype != DType::kI32)
    return Status::InvalidArgument("seq_lens.dtype", "i32", std::string(to_string(sl.dtype)));
  if (sl.rank != 1) return Status::InvalidArgument("seq_lens.rank", "1 ([B])", str(sl.rank));
  if (sl.sizes[0] != P.B)
    return Status::InvalidArgument("seq_lens.sizes[0]", str(P.B) + " (B)", str(sl.sizes[0]));
  if (P.B > 1 && sl.strides[0] != 1)
    return Status::InvalidArgument("seq_lens.strides[0]", "1", str(sl.strides[0]));
  const int64_t capacity = P.max_blocks * P.block_size;
  if (capacity >= INT_MAX)
    return Status::InvalidArgument("block_table.sizes[1]", "max_blocks * block_size < 2^31",
                                   str(capacity));
  if (P.B * (capacity / mla::kTileTokens + 1 + mla::kMaxOverheadTiles) >= INT_MAX)
    return Status::InvalidArgument("block_table.sizes",
                                   "B * (max_blocks * block_size / 64 + " +
                                       std::to_string(mla::kMaxOverheadTiles) + ") < 2^31",
                                   bt.shape_string());
  // softmax scale
  if (!(a.softmax_scale > 0.0f) || !std::isfinite(a.softmax_scale))
    return Status::InvalidArgument("softmax_scale", "finite and > 0",
                                   std::to_string(a.softmax_scale));
  // up-projection
  P.up = !a.w_uv.empty_ref();
  if (P.up) {
    const TensorRef& w = a.w_uv;
    if (w.rank != 3) return Status::InvalidArgument("w_uv.rank", "3 ([N, 512, 128])", str(w.rank));
    if (w.dtype != DType::kBF16)
      return Status::InvalidArgument("w_uv.dtype", "bf16", std::string(to_string(w.dtype)));
    if (w.sizes[0] != P.N || w.sizes[1] != kMlaLatentDim || w.sizes[2] != kMlaVHeadDim)
      return Status::InvalidArgument("w_uv.sizes", "[N, 512, 128] = [" + str(P.N) + ", 512, 128]",
                                     w.shape_string());
    if (w.strides[2] != 1)
      return Status::InvalidArgument("w_uv.strides[2]", "1 (last dimension contiguous)",
                                     str(w.strides[2]));
    if (w.strides[1] < kMlaVHeadDim || w.strides[1] % 8 != 0)
      return Status::InvalidArgument("w_uv.strides[1]", ">= 128 and a multiple of 8 (16-byte rows)",
                                     str(w.strides[1]));
    if (w.strides[0] < w.strides[1] * kMlaLatentDim || w.strides[0] % 8 != 0)
      return Status::InvalidArgument(
          "w_uv.strides[0]",
          ">= 512 * strides[1] = " + str(w.strides[1] * kMlaLatentDim) + " and a multiple of 8",
          str(w.strides[0]));
    if (w.data == nullptr || !aligned16(w.data))
      return Status::InvalidArgument("w_uv.data", "a 16-byte aligned device pointer",
                                     w.data == nullptr ? "null" : "misaligned");
  }
  // output
  QFUSE_RETURN_IF_ERROR(detail::flatten_head_output(
      a.out, P.up ? "o is [T, N * 128]" : "o_latent is [T, N * 512]", &P.out));
  QFUSE_RETURN_IF_ERROR(P.out.spec.validate());
  if (P.up) QFUSE_RETURN_IF_ERROR(detail::check_op_supports("mla_decode_up_proj", P.out.spec));
  QFUSE_RETURN_IF_ERROR(
      validate_quant_output(P.out, P.T, P.N * (P.up ? kMlaVHeadDim : kMlaLatentDim)));
  if (!a.lse.empty_ref())
    QFUSE_RETURN_IF_ERROR(detail::check_matrix(a.lse, "lse", {DType::kF32}, P.T, P.N));
  if (P.T > 0 && (q.data == nullptr || !aligned16(q.data)))
    return Status::InvalidArgument("q.data", "a 16-byte aligned device pointer",
                                   q.data == nullptr ? "null" : "misaligned");
  P.split = opt.split == MlaSplitMode::kAuto;
  if (!P.split && P.up)
    return Status::NotSupported(
        "w_uv with MlaSplitMode::kNone: the up-projection is fused into the split-KV combine "
        "(MlaSplitMode::kAuto)");
  if (!P.split) {
    if (P.out.spec.kind != QuantKind::kNone || P.out.out.dtype != DType::kBF16)
      return Status::NotSupported(
          "MlaSplitMode::kNone writes o_latent in the kernel's epilogue: bf16 only (out.spec none, "
          "out dtype bf16); got " +
          to_string(P.out.spec) + " " + std::string(to_string(P.out.out.dtype)) +
          ". Quantized outputs: MlaSplitMode::kAuto (the combine quantizes)");
    if (P.B > 65535)
      return Status::InvalidArgument("q.sizes[0]", "B <= 65535 with MlaSplitMode::kNone", str(P.B));
  }
  if (P.B == 0) return Status::Ok();  // no-op: nothing on the device is needed
  // kernel and split form (the device's)
  DeviceInfo dev;
  QFUSE_RETURN_IF_ERROR(current_device_info(&dev));
  const bool hopper = dev.cc_major == 9 && dev.cc_minor == 0;
  if (opt.kernel == MlaKernel::kTensorCore && !hopper)
    return Status::NotSupported(
        "MlaKernel::kTensorCore needs an sm_90 device (wgmma, TMA); this is sm_" +
        str(dev.cc_major * 10 + dev.cc_minor));
  P.tensor_core =
      opt.kernel == MlaKernel::kTensorCore || (opt.kernel == MlaKernel::kAuto && hopper);
  if (P.tensor_core) {
    P.rpb = mla::tc_rows_per_block(P.rows, P.cache);
  } else {
    P.rpb = mla::kSimpleRowsPerBlock;
  }
  P.row_blocks = (P.rows + P.rpb - 1) / P.rpb;
  P.parts = P.split ? std::max(1, std::min(max_parts(dev), dev.sm_count / P.row_blocks)) : 0;
  if (P.split && !P.tensor_core) P.parts = dev.sm_count;
  P.ws = ws_layout(P.B, a.s_q, P.N, max_parts(dev));
  if (ws.data == nullptr)
    return Status::InvalidArgument("ws.data", "a device buffer (mla_decode_workspace_size)",
                                   "null");
  if (reinterpret_cast<uintptr_t>(ws.data) % 256 != 0)
    return Status::InvalidArgument("ws.data", "256-byte aligned", "misaligned");
  if (static_cast<int64_t>(ws.bytes) < P.ws.bytes)
    return Status::InvalidArgument("ws.bytes", ">= " + str(P.ws.bytes), str(ws.bytes));
  return detail::check_device_pointers({{q.data, "q.data"},
                                        {c.data, "cache.data"},
                                        {a.k_scale, "k_scale"},
                                        {bt.data, "block_table.data"},
                                        {sl.data, "seq_lens.data"},
                                        {P.out.out.data, "out.out.data"},
                                        {P.out.scales.data, "out.scales.data"},
                                        {P.out.scale, "out.scale"},
                                        {P.out.scale_ub, "out.scale_ub"},
                                        {a.lse.data, "lse.data"},
                                        {a.w_uv.data, "w_uv.data"},
                                        {ws.data, "ws.data"}});
}

template <CacheKind kCache, EpilogueKind kEpi>
Status launch_tc_rows(int rpb, const mla::TcParams& tp, dim3 grid, cudaStream_t stream) {
  if (rpb == 64) {
    if constexpr (kCache == CacheKind::kBf16) {
      if (mla::wide_form() == 2) return mla::launch_pair<kEpi>(tp, grid, stream);
    }
    return mla::launch_wide<kCache, kEpi>(tp, grid, stream);
  }
  if constexpr (kCache == CacheKind::kFp8) {
    if (rpb == 16 && mla::fp8_form() == 2)
      return mla::launch_tc_fp8alt<kEpi, false>(tp, grid, stream);
    if (rpb == 16 && mla::fp8_form() == 3)
      return mla::launch_tc_fp8alt<kEpi, true>(tp, grid, stream);
  }
  if (rpb == 16) return mla::launch_tc<16, kCache, kEpi>(tp, grid, stream);
  return mla::launch_tc<32, kCache, kEpi>(tp, grid, stream);
}

Status launch_decode(const MlaDecodeArgs& a, const Plan& P, const mla::DecodeParams& dp,
                     cudaStream_t stream) {
  const EpilogueKind epi = P.split ? EpilogueKind::kPartial : EpilogueKind::kOutput;
  const dim3 grid(static_cast<unsigned>(P.row_blocks),
                  static_cast<unsigned>(P.split ? P.parts : P.B));
  if (!P.tensor_core) {
    if (P.cache == CacheKind::kBf16)
      return mla::launch_simple<CacheKind::kBf16>(dp, epi, grid, stream);
    return mla::launch_simple<CacheKind::kFp8>(dp, epi, grid, stream);
  }
  mla::TcParams tp{};
  tp.p = dp;
  const bool fp8 = P.cache == CacheKind::kFp8;
  tp.box_rows = static_cast<int>(std::min<int64_t>(P.block_size, 64));
  tp.q_box_h = static_cast<int>(std::min<int64_t>(P.N, P.rpb));
  tp.release = mla::bf16_release();
  {
    const cuuint64_t dims[3] = {static_cast<cuuint64_t>(kMlaHeadDim), static_cast<cuuint64_t>(P.N),
                                static_cast<cuuint64_t>(P.T)};
    const cuuint64_t strides[2] = {
        static_cast<cuuint64_t>(a.q.strides[1]) * 2,
        static_cast<cuuint64_t>(P.T > 1 ? a.q.strides[0] : a.q.strides[1] * P.N) * 2};
    const cuuint32_t box[3] = {64, static_cast<cuuint32_t>(tp.q_box_h),
                               static_cast<cuuint32_t>(P.rpb / tp.q_box_h)};
    QFUSE_RETURN_IF_ERROR(detail::encode_tma_3d(&tp.q_map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                                                a.q.data, dims, strides, box,
                                                CU_TENSOR_MAP_SWIZZLE_128B, "q"));
  }
  {
    const int64_t es = fp8 ? 1 : 2;
    const cuuint64_t dims[3] = {static_cast<cuuint64_t>(kMlaHeadDim),
                                static_cast<cuuint64_t>(P.block_size),
                                static_cast<cuuint64_t>(P.num_blocks)};
    const cuuint64_t strides[2] = {static_cast<cuuint64_t>(a.cache.strides[1] * es),
                                   static_cast<cuuint64_t>(a.cache.strides[0] * es)};
    const cuuint32_t box[3] = {64, static_cast<cuuint32_t>(tp.box_rows), 1};
    QFUSE_RETURN_IF_ERROR(detail::encode_tma_3d(
        &tp.kv_map, fp8 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
        a.cache.data, dims, strides, box,
        fp8 ? CU_TENSOR_MAP_SWIZZLE_64B : CU_TENSOR_MAP_SWIZZLE_128B, "cache"));
  }
  if (fp8) {
    if (P.split)
      return launch_tc_rows<CacheKind::kFp8, EpilogueKind::kPartial>(P.rpb, tp, grid, stream);
    return launch_tc_rows<CacheKind::kFp8, EpilogueKind::kOutput>(P.rpb, tp, grid, stream);
  }
  if (P.split)
    return launch_tc_rows<CacheKind::kBf16, EpilogueKind::kPartial>(P.rpb, tp, grid, stream);
  return launch_tc_rows<CacheKind::kBf16, EpilogueKind::kOutput>(P.rpb, tp, grid, stream);
}

}  // namespace

Status mla_decode_workspace_size(int64_t batch, int s_q, int num_heads, const MlaDecodeOptions&,
                                 size_t* bytes, int sm_count) {
  if (batch < 0) return Status::InvalidArgument("batch", ">= 0", str(batch));
  if (s_q != 1 && s_q != 2 && s_q != 4)
    return Status::InvalidArgument("s_q", "1, 2 or 4", str(s_q));
  if (num_heads != 16 && num_heads != 32 && num_heads != 64 && num_heads != 128)
    return Status::InvalidArgument("num_heads", "{16, 32, 64, 128}", str(num_heads));
  if (sm_count < 0) return Status::InvalidArgument("sm_count", ">= 0", str(sm_count));
  DeviceInfo dev;
  if (sm_count > 0) {
    dev.sm_count = sm_count;
  } else {
    QFUSE_RETURN_IF_ERROR(current_device_info(&dev));
  }
  *bytes = static_cast<size_t>(ws_layout(batch, s_q, num_heads, max_parts(dev)).bytes);
  return Status::Ok();
}

Status mla_decode_can_implement(const MlaDecodeArgs& args, const MlaWorkspace& ws,
                                const MlaDecodeOptions& opt) {
  Plan plan;
  return validate(args, ws, opt, &plan);
}

namespace {

/// What a schedule computed for plan P on `ws` covers (mla_decode_schedule; checked on reuse).
Status schedule_of(const Plan& P, const MlaDecodeArgs& a, const MlaWorkspace& ws, MlaSchedule* s) {
  DeviceInfo dev;
  if (P.B > 0) QFUSE_RETURN_IF_ERROR(current_device_info(&dev));
  *s = MlaSchedule{};
  s->ws = ws.data;
  s->device = dev.device;
  s->batch = P.B;
  s->heads = P.N;
  s->capacity = P.max_blocks * P.block_size;
  s->s_q = a.s_q;
  s->cache_bytes = P.cache == CacheKind::kFp8 ? 1 : 2;
  s->rows_per_block = P.rpb;
  s->parts = P.parts;
  s->overhead = P.B > 0 ? mla::scheduler_piece_overhead(P.rpb, P.cache) : 0;
  s->split = P.split;
  s->tensor_core = P.tensor_core;
  return Status::Ok();
}

std::string describe(const MlaSchedule& s) {
  return "ws " + std::string(s.ws == nullptr ? "null" : "set") + ", device " + str(s.device) +
         ", B " + str(s.batch) + ", N " + str(s.heads) + ", s_q " + str(s.s_q) + ", capacity " +
         str(s.capacity) + ", cache " + (s.cache_bytes == 1 ? "e4m3" : "bf16") +
         ", rows per block " + str(s.rows_per_block) + ", parts " + str(s.parts) + ", overhead " +
         str(s.overhead) + (s.split ? ", split" : ", whole") +
         (s.tensor_core ? ", tensor core" : ", simple");
}

bool same_schedule(const MlaSchedule& x, const MlaSchedule& y) {
  return x.ws == y.ws && x.device == y.device && x.batch == y.batch && x.heads == y.heads &&
         x.capacity == y.capacity && x.s_q == y.s_q && x.cache_bytes == y.cache_bytes &&
         x.rows_per_block == y.rows_per_block && x.parts == y.parts && x.overhead == y.overhead &&
         x.split == y.split && x.tensor_core == y.tensor_core;
}

/// The workspace's schedule arrays for plan P.
mla::Schedule schedule_arrays(const Plan& P, const MlaWorkspace& ws) {
  char* base = static_cast<char*>(ws.data);
  mla::Schedule s{};
  s.header = reinterpret_cast<int*>(base);
  s.len = reinterpret_cast<int*>(base + P.ws.len);
  s.cost_pre = reinterpret_cast<int*>(base + P.ws.cost_pre);
  s.first = reinterpret_cast<int*>(base + P.ws.first);
  s.lse_part = reinterpret_cast<float*>(base + P.ws.lse_part);
  s.o_part = reinterpret_cast<float*>(base + P.ws.o_part);
  s.num_parts = P.parts;
  s.overhead = mla::scheduler_piece_overhead(P.rpb, P.cache);
  return s;
}

Status launch_schedule(const MlaDecodeArgs& a, const Plan& P, const mla::Schedule& s,
                       cudaStream_t stream) {
  return mla::launch_schedule(static_cast<const int*>(a.seq_lens.data), static_cast<int>(P.B),
                              static_cast<int>(P.max_blocks * P.block_size), s, stream);
}

}  // namespace

Status mla_decode_schedule(const MlaDecodeArgs& a, const MlaWorkspace& ws,
                           const MlaDecodeOptions& opt, MlaSchedule* schedule,
                           cudaStream_t stream) {
  if (schedule == nullptr)
    return Status::InvalidArgument("schedule", "an MlaSchedule to fill", "null");
  Plan P;
  QFUSE_RETURN_IF_ERROR(validate(a, ws, opt, &P));
  MlaSchedule s;
  QFUSE_RETURN_IF_ERROR(schedule_of(P, a, ws, &s));
  if (P.B > 0) QFUSE_RETURN_IF_ERROR(launch_schedule(a, P, schedule_arrays(P, ws), stream));
  *schedule = s;
  return Status::Ok();
}

Status mla_decode(const MlaDecodeArgs& a, const MlaWorkspace& ws, const MlaDecodeOptions& opt,
                  cudaStream_t stream) {
  Plan P;
  QFUSE_RETURN_IF_ERROR(validate(a, ws, opt, &P));
  if (opt.schedule != nullptr) {
    MlaSchedule mine;
    QFUSE_RETURN_IF_ERROR(schedule_of(P, a, ws, &mine));
    if (!same_schedule(*opt.schedule, mine))
      return Status::InvalidArgument(
          "opt.schedule",
          "a schedule from mla_decode_schedule on this workspace for this call's shapes (" +
              describe(mine) + ")",
          describe(*opt.schedule));
  }
  if (P.B == 0) return Status::Ok();
  mla::DecodeParams dp{};
  dp.q = static_cast<const uint16_t*>(a.q.data);
  dp.q_st = P.T > 1 ? a.q.strides[0] : a.q.strides[1] * P.N;
  dp.q_sh = a.q.strides[1];
  dp.cache = a.cache.data;
  dp.c_sb = a.cache.strides[0];
  dp.c_st = a.cache.strides[1];
  dp.num_blocks = static_cast<int>(P.num_blocks);
  dp.block_size = static_cast<int>(P.block_size);
  dp.k_scale = a.k_scale;
  dp.block_table = static_cast<const int*>(a.block_table.data);
  dp.bt_st = P.B > 1 ? a.block_table.strides[0] : P.max_blocks;
  dp.max_blocks = static_cast<int>(P.max_blocks);
  dp.batch = static_cast<int>(P.B);
  dp.s_q = a.s_q;
  dp.heads = static_cast<int>(P.N);
  dp.rows = P.rows;
  dp.scale_log2 = a.softmax_scale * 1.4426950408889634f;
  dp.out = static_cast<uint16_t*>(P.out.out.data);
  dp.out_st = P.out.out.strides[0];
  dp.out_sh = kMlaLatentDim;
  dp.lse = static_cast<float*>(a.lse.data);
  dp.lse_st = a.lse.empty_ref() ? 0 : (P.T > 1 ? a.lse.strides[0] : P.N);
  // NOTE: split mode with a plain bf16 output: a batch the schedule leaves in one piece per
  // request (equal lengths on enough parts) is written by the decode kernel, the combine skips.
  dp.direct = P.split && !P.up && P.out.spec.kind == QuantKind::kNone &&
              P.out.out.dtype == DType::kBF16 && mla::direct_output();
  dp.sched = schedule_arrays(P, ws);
  if (opt.schedule == nullptr) QFUSE_RETURN_IF_ERROR(launch_schedule(a, P, dp.sched, stream));
  QFUSE_RETURN_IF_ERROR(launch_decode(a, P, dp, stream));
  if (P.split && P.up) {
    mla::UpProjParams u{};
    u.w = static_cast<const uint16_t*>(a.w_uv.data);
    u.w_sh = a.w_uv.strides[0];
    u.w_sk = a.w_uv.strides[1];
    u.amax = reinterpret_cast<float*>(static_cast<char*>(ws.data) + P.ws.amax);
    u.T = P.T;
    u.heads = static_cast<int>(P.N);
    return mla::launch_up_proj(dp, u, P.out, stream);
  }
  if (P.split) return mla::launch_combine(dp, P.out, stream);
  return Status::Ok();
}

Status mla_decode_check(const MlaWorkspace& ws, cudaStream_t stream) {
  if (ws.data == nullptr || ws.bytes < 4)
    return Status::InvalidArgument("ws.data", "the workspace of an mla_decode call", "null");
  int flags = 0;
  QFUSE_CUDA_RETURN(cudaMemcpyAsync(&flags, ws.data, 4, cudaMemcpyDeviceToHost, stream));
  QFUSE_CUDA_RETURN(cudaStreamSynchronize(stream));
  if (flags == 0) return Status::Ok();
  std::string what;
  if (flags & kMlaErrBlockId)
    what += "a block_table entry outside [0, num_blocks) (read as zero rows); ";
  if (flags & kMlaErrSeqTooLong)
    what += "a seq_len beyond max_blocks * block_size (request left empty); ";
  if (flags & kMlaErrSeqNegative) what += "a negative seq_len (request left empty); ";
  return Status::InvalidArgument("device-side check of mla_decode", "no bad block id or seq_len",
                                 what.substr(0, what.size() - 2));
}

Status mla_write_cache(const MlaCacheWriteArgs& a, cudaStream_t stream) {
  QFUSE_RETURN_IF_ERROR(detail::check_matrix(a.kv_c, "kv_c", {DType::kBF16}, -1, kMlaLatentDim));
  const int64_t T = a.kv_c.sizes[0];
  QFUSE_RETURN_IF_ERROR(detail::check_matrix(a.k_pe, "k_pe", {DType::kBF16}, T, kMlaRopeDim));
  const TensorRef& c = a.cache;
  if (c.rank != 3)
    return Status::InvalidArgument("cache.rank", "3 ([num_blocks, block_size, 576])", str(c.rank));
  if (c.dtype != DType::kBF16 && c.dtype != DType::kE4M3)
    return Status::InvalidArgument("cache.dtype", "bf16|e4m3", std::string(to_string(c.dtype)));
  if (c.sizes[2] != kMlaHeadDim)
    return Status::InvalidArgument("cache.sizes[2]", str(kMlaHeadDim), str(c.sizes[2]));
  const int64_t bs = c.sizes[1];
  if (bs != 16 && bs != 32 && bs != 64 && bs != 128)
    return Status::InvalidArgument("cache.sizes[1]", "block size in {16, 32, 64, 128}", str(bs));
  if (c.sizes[0] < 1) return Status::InvalidArgument("cache.sizes[0]", ">= 1", str(c.sizes[0]));
  if (c.strides[2] != 1)
    return Status::InvalidArgument("cache.strides[2]", "1 (last dimension contiguous)",
                                   str(c.strides[2]));
  if (c.strides[1] < kMlaHeadDim)
    return Status::InvalidArgument("cache.strides[1]", ">= 576", str(c.strides[1]));
  if (c.strides[0] < c.strides[1] * bs)
    return Status::InvalidArgument("cache.strides[0]", ">= block_size * strides[1]",
                                   str(c.strides[0]));
  const bool fp8 = c.dtype == DType::kE4M3;
  if (fp8 && a.k_scale == nullptr)
    return Status::InvalidArgument("k_scale", "a device fp32 (the cache is e4m3)", "null");
  if (!fp8 && a.k_scale != nullptr)
    return Status::InvalidArgument("k_scale", "null (the cache is bf16)", "a pointer");
  if (T > 0 && a.slot_mapping == nullptr)
    return Status::InvalidArgument("slot_mapping", "a device int64 array of T entries", "null");
  if (c.data == nullptr) return Status::InvalidArgument("cache.data", "a device pointer", "null");
  if (T == 0) return Status::Ok();
  QFUSE_RETURN_IF_ERROR(detail::check_device_pointers({{a.kv_c.data, "kv_c.data"},
                                                       {a.k_pe.data, "k_pe.data"},
                                                       {a.slot_mapping, "slot_mapping"},
                                                       {c.data, "cache.data"},
                                                       {a.k_scale, "k_scale"}}));
  mla::CacheWriteParams p{};
  p.kv_c = static_cast<const uint16_t*>(a.kv_c.data);
  p.ld_c = T > 1 ? a.kv_c.strides[0] : kMlaLatentDim;
  p.k_pe = static_cast<const uint16_t*>(a.k_pe.data);
  p.ld_pe = T > 1 ? a.k_pe.strides[0] : kMlaRopeDim;
  p.slot_mapping = a.slot_mapping;
  p.T = T;
  p.cache = c.data;
  p.c_sb = c.strides[0];
  p.c_st = c.strides[1];
  p.block_size = static_cast<int>(bs);
  p.slots = c.sizes[0] * bs;
  p.k_scale = a.k_scale;
  p.vec_c = aligned16(p.kv_c) && (p.ld_c * 2) % 16 == 0;
  p.vec_pe = aligned16(p.k_pe) && (p.ld_pe * 2) % 16 == 0;
  const int64_t es = fp8 ? 1 : 2;
  p.vec_cache = reinterpret_cast<uintptr_t>(c.data) % (8 * es) == 0 &&
                (p.c_sb * es) % (8 * es) == 0 && (p.c_st * es) % (8 * es) == 0;
  return mla::launch_write_cache(p, fp8, stream);
}

}  // namespace qfuse
