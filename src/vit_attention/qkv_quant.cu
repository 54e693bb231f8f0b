// Q/K/V quantization of the ViT attention (vit_attention.h, SPEC §5): one launch quantizes all
// three tensors into contiguous e4m3 [S_total, H, Dp] with zero pad columns; dynamic scaling adds
// an amax pass before it and keeps its history on the device.
//
// Work: one thread per 8-column output chunk (8 bf16 in with one 16-byte load, 8 codes out with
// one 8-byte store), blockIdx.y the tensor. The amax must be known before the first code is
// written (the scale of this forward includes it), so dynamic scaling reads the inputs twice; at
// the sizes of a ViT layer (S * H * D * 2 bytes * 3 <= ~40 MB) the second read hits L2.
#include <cuda_bf16.h>

#include <cfloat>

#include "common/block_reduce.cuh"
#include "core/launch.cuh"
#include "qfuse/core/checked.h"
#include "qfuse/quant/chunk.cuh"
#include "qfuse/quant/rules.h"
#include "qfuse/vit_attention/vit_attention.h"
#include "quant/validate.h"
#include "vit_attention/qkv.cuh"
#include "vit_attention/validate.h"

namespace qfuse {
namespace vit {
namespace {

constexpr int kThreads = 256;
constexpr int kBlocksPerTensor = 132 * 8;  // grid-stride beyond this

/// Chunk c of tensor `which`: 8 values (zeros beyond D) as fp32; its output row and column.
__device__ __forceinline__ void load_chunk(const QkvGeometry& g, const InView& v, uint32_t c,
                                           float (&x)[8], uint32_t* row, int* col0) {
  const uint32_t r = g.div_cpr.div(c);
  const int j = static_cast<int>(c - r * static_cast<uint32_t>(g.cpr));
  const uint32_t t = g.div_h.div(r);
  const uint32_t h = r - t * static_cast<uint32_t>(g.H);
  *row = r;
  *col0 = 8 * j;
  const __nv_bfloat16* p = row_ptr(g, v, t, h) + 8 * j;
  if (v.vec && 8 * j + 8 <= g.D) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
    const __nv_bfloat162* b2 = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(b2[i]);
      x[2 * i] = f.x;
      x[2 * i + 1] = f.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) x[i] = 8 * j + i < g.D ? __bfloat162float(p[i]) : 0.0f;
  }
}

/// max |x| of each tensor into cur[which] (uint32 bits of non-negative floats order like the
/// floats; a NaN, sign cleared, sits above +inf and so propagates).
__global__ void __launch_bounds__(kThreads) amax_kernel(QkvGeometry g, uint32_t* layer_state) {
  pdl_begin();
  const int which = blockIdx.y;
  const InView v = g.in[which];
  uint32_t m = 0;
  for (uint32_t c = blockIdx.x * kThreads + threadIdx.x; c < g.chunks; c += gridDim.x * kThreads) {
    float x[8];
    uint32_t row;
    int col0;
    load_chunk(g, v, c, x, &row, &col0);
#pragma unroll
    for (int i = 0; i < 8; ++i) m = max(m, __float_as_uint(fabsf(x[i])));
  }
  block_atomic_max_u32<kThreads>(m, layer_state + state::kCurrent + which);
}

/// scale = max(history with the current amax in the oldest slot) / 448 (ref::vit_dynamic_scale).
__device__ __forceinline__ float dynamic_scale(const uint32_t* st, int which) {
  const uint32_t pos = st[state::kCount] % kVitHistory;
  float m = __uint_as_float(st[state::kCurrent + which]);
  const float* hist = reinterpret_cast<const float*>(st + state::kHistory) + which * kVitHistory;
  for (int i = 0; i < kVitHistory; ++i)
    if (i != static_cast<int>(pos)) m = rules::nan_max(m, hist[i]);
  float s = m / rules::kFp8Max;
  s = rules::nan_max(s, FLT_MIN);
  return s > FLT_MAX ? FLT_MAX : s;
}

/// 8 codes of x * inv, columns past D zero codes (whatever the scale: 0 * inv is NaN for a NaN
/// scale).
__device__ __forceinline__ void encode_chunk(const float (&x)[8], float inv, int real,
                                             uint32_t (&w)[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const uint32_t lo = quant::e4m3x2(x[4 * h] * inv, x[4 * h + 1] * inv);
    const uint32_t hi = quant::e4m3x2(x[4 * h + 2] * inv, x[4 * h + 3] * inv);
    w[h] = lo | (hi << 16);
  }
  if (real < 8) {
#pragma unroll
    for (int i = 0; i < 8; ++i)
      if (i >= real) w[i / 4] &= ~(0xffu << (8 * (i % 4)));
  }
}

/// Row-major output [S_total, H, Dp]: one thread per 8-column chunk.
__device__ __forceinline__ void quant_rows(const QkvGeometry& g, const InView& v, uint8_t* out,
                                           float inv) {
  for (uint32_t c = blockIdx.x * kThreads + threadIdx.x; c < g.chunks; c += gridDim.x * kThreads) {
    float x[8];
    uint32_t row;
    int col0;
    load_chunk(g, v, c, x, &row, &col0);
    uint32_t w[2];
    encode_chunk(x, inv, g.D - col0, w);
    *reinterpret_cast<uint2*>(out + static_cast<int64_t>(row) * g.Dp + col0) =
        make_uint2(w[0], w[1]);
  }
}

/// Transposed output [H, Dp, Sp] (VitVLayout::kTransposed): a unit is 32 keys of one head,
/// quantized chunk by chunk into a shared [Dp][32] tile at the keys' permuted positions
/// (vit_vt_position), then written as 32-byte runs of each row. Keys past S_total are zero codes.
__device__ __forceinline__ void quant_vt(const QkvGeometry& g, const InView& v, uint8_t* out,
                                         float inv) {
  __shared__ __align__(16) uint8_t tile[kVitMaxQuantHeadDim][32];
  const int64_t key_blocks = g.Sp / 32;
  const int64_t units = key_blocks * g.H;
  const int items = 32 * g.cpr;
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    const int64_t kb = u / g.H;
    const int h = static_cast<int>(u - kb * g.H);
    for (int i = threadIdx.x; i < items; i += kThreads) {
      const int key = i / g.cpr, j = i - key * g.cpr;
      const int64_t t = kb * 32 + key;
      uint32_t w[2] = {0u, 0u};
      if (t < g.S_total) {
        const uint32_t c = (static_cast<uint32_t>(t) * g.H + h) * g.cpr + j;
        float x[8];
        uint32_t row;
        int col0;
        load_chunk(g, v, c, x, &row, &col0);
        encode_chunk(x, inv, g.D - col0, w);
      }
      const int pos = static_cast<int>(vit_vt_position(key));
#pragma unroll
      for (int e = 0; e < 8; ++e)
        tile[8 * j + e][pos] = static_cast<uint8_t>(w[e / 4] >> (8 * (e % 4)));
    }
    __syncthreads();
    for (int i = threadIdx.x; i < 2 * g.Dp; i += kThreads) {
      const int d = i >> 1, half = i & 1;
      *reinterpret_cast<uint4*>(out + (static_cast<int64_t>(h) * g.Dp + d) * g.Sp + kb * 32 +
                                16 * half) = *reinterpret_cast<const uint4*>(&tile[d][16 * half]);
    }
    __syncthreads();
  }
}

template <bool kDynamic>
__global__ void __launch_bounds__(kThreads)
    quant_kernel(QkvGeometry g, uint8_t* out0, uint8_t* out1, uint8_t* out2, const float* scale0,
                 const float* scale1, const float* scale2, uint32_t* layer_state) {
  pdl_begin();
  const int which = blockIdx.y;
  const InView v = g.in[which];
  uint8_t* out = which == 0 ? out0 : which == 1 ? out1 : out2;
  float scale;
  if constexpr (kDynamic) {
    scale = dynamic_scale(layer_state, which);
  } else {
    scale = __ldg(which == 0 ? scale0 : which == 1 ? scale1 : scale2);
  }
  const float inv = rules::fp8_inv_scale(scale);
  if (which == 2 && g.vt) {
    quant_vt(g, v, out, inv);
  } else {
    quant_rows(g, v, out, inv);
  }
  if constexpr (kDynamic) {
    // The last block to finish records this forward: every block has read the history by now.
    __shared__ bool last;
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      const uint32_t done = atomicAdd(layer_state + state::kTicket, 1u);
      last = done == gridDim.x * gridDim.y - 1;
    }
    __syncthreads();
    if (last && threadIdx.x < 3) {
      __threadfence();
      volatile uint32_t* st = layer_state;
      const int t = threadIdx.x;
      const uint32_t pos = st[state::kCount] % kVitHistory;
      const float s = dynamic_scale(layer_state, t);
      st[state::kHistory + t * kVitHistory + pos] = st[state::kCurrent + t];
      st[state::kScales + t] = __float_as_uint(s);
      st[state::kCurrent + t] = 0;
    }
    __syncthreads();
    if (last && threadIdx.x == 0) {
      layer_state[state::kCount] += 1;
      layer_state[state::kTicket] = 0;
    }
  }
}

std::string str(int64_t v) {
  return std::to_string(v);
}

/// Checks args (static: scales given; dynamic: scales null) and fills the geometry.
Status validate(const VitQkvQuantArgs& a, bool dynamic, QkvGeometry* geo) {
  const TensorRef* in[3] = {&a.q, &a.k, &a.v};
  const TensorRef* out[3] = {&a.q_out, &a.k_out, &a.v_out};
  const char* names[3] = {"q", "k", "v"};
  const TensorRef& q = a.q;
  if (q.rank != 3 && q.rank != 4)
    return Status::InvalidArgument("q.rank", "3 ([S, H, D]) or 4 ([B, S, H, D])", str(q.rank));
  const int r = q.rank;
  for (int i = 0; i < 3; ++i) {
    const TensorRef& t = *in[i];
    const std::string n = names[i];
    if (t.dtype != DType::kBF16)
      return Status::InvalidArgument(n + ".dtype", "bf16", std::string(to_string(t.dtype)));
    QFUSE_RETURN_IF_ERROR(check_like_q(t, n, q));
  }
  const int64_t B = r == 4 ? q.sizes[0] : 1, S = q.sizes[r - 3], H = q.sizes[r - 2],
                D = q.sizes[r - 1];
  const int64_t S_total = B * S;  // check_sizes bounded the product
  if (S_total > 0 && H > 0 && (D < 1 || D > kVitMaxQuantHeadDim))
    return Status::InvalidArgument("q.sizes[" + str(r - 1) + "]",
                                   "a head size in [1, " + str(kVitMaxQuantHeadDim) + "]", str(D));
  const int64_t Dp = vit_padded_head_dim(D);
  const int64_t chunks = S_total * H * (Dp / 8);
  if (chunks >= (int64_t{1} << 30))
    return Status::InvalidArgument("q.sizes", "S_total * H * Dp < 2^33 elements", q.shape_string());
  const bool vt = a.v_layout == VitVLayout::kTransposed;
  if (!vt && a.v_layout != VitVLayout::kRowMajor)
    return Status::InvalidArgument("v_layout", "kRowMajor or kTransposed",
                                   str(static_cast<int>(a.v_layout)));
  const int64_t Sp = vit_vt_keys(S_total);
  for (int i = 0; i < 3; ++i) {
    const TensorRef& t = *out[i];
    const std::string n = std::string(names[i]) + "_out";
    if (t.dtype != DType::kE4M3)
      return Status::InvalidArgument(n + ".dtype", "e4m3", std::string(to_string(t.dtype)));
    if (i == 2 && vt) {
      if (t.rank != 3 || t.sizes[0] != H || t.sizes[1] != Dp || t.sizes[2] != Sp)
        return Status::InvalidArgument(n + ".sizes",
                                       "[" + str(H) + ", " + str(Dp) + ", " + str(Sp) +
                                           "] (transposed: [H, Dp, S_total rounded up to 32])",
                                       t.shape_string() + " rank " + str(t.rank));
    } else if (t.rank != 3 || t.sizes[0] != S_total || t.sizes[1] != H || t.sizes[2] != Dp) {
      return Status::InvalidArgument(
          n + ".sizes",
          "[" + str(S_total) + ", " + str(H) + ", " + str(Dp) + "] (Dp = D padded to 16)",
          t.shape_string() + " rank " + str(t.rank));
    }
    if (chunks > 0 && !t.is_contiguous())
      return Status::InvalidArgument(n + ".strides", "contiguous", t.describe());
    if (chunks > 0 && (t.data == nullptr || reinterpret_cast<uintptr_t>(t.data) % 16 != 0))
      return Status::InvalidArgument(n + ".data", "a 16-byte aligned pointer",
                                     t.data == nullptr ? "null" : "a misaligned pointer");
  }
  const float* scales[3] = {a.q_scale, a.k_scale, a.v_scale};
  for (int i = 0; i < 3; ++i) {
    const std::string n = std::string(names[i]) + "_scale";
    if (dynamic && scales[i] != nullptr)
      return Status::InvalidArgument(n, "null (dynamic scaling computes the scales)", "a pointer");
    if (!dynamic && scales[i] == nullptr)
      return Status::InvalidArgument(n, "a device fp32 scale", "null");
  }
  if (chunks == 0) {
    geo->chunks = 0;
    return Status::Ok();
  }
  for (int i = 0; i < 3; ++i)
    if (in[i]->data == nullptr)
      return Status::InvalidArgument(std::string(names[i]) + ".data", "a device pointer", "null");
  QFUSE_RETURN_IF_ERROR(detail::check_device_pointers({{a.q.data, "q.data"},
                                                       {a.k.data, "k.data"},
                                                       {a.v.data, "v.data"},
                                                       {a.q_out.data, "q_out.data"},
                                                       {a.k_out.data, "k_out.data"},
                                                       {a.v_out.data, "v_out.data"},
                                                       {a.q_scale, "q_scale"},
                                                       {a.k_scale, "k_scale"},
                                                       {a.v_scale, "v_scale"}}));
  QkvGeometry& g = *geo;
  for (int i = 0; i < 3; ++i) {
    const TensorRef& t = *in[i];
    InView& v = g.in[i];
    v.p = static_cast<const __nv_bfloat16*>(t.data);
    v.sb = r == 4 ? t.strides[0] : 0;
    v.ss = t.strides[r - 3];
    v.sh = t.strides[r - 2];
    v.vec = reinterpret_cast<uintptr_t>(t.data) % 16 == 0 && v.sb % 8 == 0 && v.ss % 8 == 0 &&
            v.sh % 8 == 0 && D % 8 == 0;
  }
  g.S = S;
  g.S_total = S_total;
  g.H = static_cast<int>(H);
  g.D = static_cast<int>(D);
  g.Dp = static_cast<int>(Dp);
  g.cpr = static_cast<int>(Dp / 8);
  g.div_cpr = FastDiv::make(static_cast<uint32_t>(g.cpr));
  g.div_h = FastDiv::make(static_cast<uint32_t>(H));
  g.div_s = FastDiv::make(static_cast<uint32_t>(S));
  g.chunks = static_cast<uint32_t>(chunks);
  g.vt = vt;
  g.Sp = Sp;
  return Status::Ok();
}

dim3 grid_of(const QkvGeometry& g) {
  const int64_t blocks = ceil_div(int64_t{g.chunks}, int64_t{kThreads});
  return dim3(static_cast<unsigned>(blocks < kBlocksPerTensor ? blocks : kBlocksPerTensor), 3);
}

uint32_t* layer_words(const VitScaleState& st, int layer) {
  return static_cast<uint32_t*>(st.data) + static_cast<int64_t>(layer) * state::kWords;
}

Status check_state(const VitScaleState& st, int layer) {
  if (st.num_layers < 1)
    return Status::InvalidArgument("state.num_layers", ">= 1", str(st.num_layers));
  if (st.data == nullptr) return Status::InvalidArgument("state.data", "a device pointer", "null");
  if (reinterpret_cast<uintptr_t>(st.data) % 16 != 0)
    return Status::InvalidArgument("state.data", "a 16-byte aligned pointer", "a misaligned one");
  if (st.bytes < vit_scale_state_bytes(st.num_layers))
    return Status::InvalidArgument(
        "state.bytes",
        ">= " + str(static_cast<int64_t>(vit_scale_state_bytes(st.num_layers))) +
            " (vit_scale_state_bytes)",
        str(static_cast<int64_t>(st.bytes)));
  if (layer < 0 || layer >= st.num_layers)
    return Status::InvalidArgument("layer", "in [0, " + str(st.num_layers) + ")", str(layer));
  return Status::Ok();
}

}  // namespace
}  // namespace vit

Status vit_quantize_qkv(const VitQkvQuantArgs& a, cudaStream_t stream) {
  vit::QkvGeometry g{};
  QFUSE_RETURN_IF_ERROR(vit::validate(a, false, &g));
  if (g.chunks == 0) return Status::Ok();
  return launch_kernel("vit quant_kernel", vit::quant_kernel<false>, vit::grid_of(g),
                       dim3(vit::kThreads), 0, stream, g, static_cast<uint8_t*>(a.q_out.data),
                       static_cast<uint8_t*>(a.k_out.data), static_cast<uint8_t*>(a.v_out.data),
                       a.q_scale, a.k_scale, a.v_scale, static_cast<uint32_t*>(nullptr));
}

size_t vit_scale_state_bytes(int num_layers) {
  return num_layers < 1 ? 0 : static_cast<size_t>(num_layers) * vit::state::kWords * 4;
}

Status vit_scale_state_reset(const VitScaleState& st, cudaStream_t stream) {
  QFUSE_RETURN_IF_ERROR(vit::check_state(st, 0));
  QFUSE_RETURN_IF_ERROR(detail::check_device_pointers({{st.data, "state.data"}}));
  QFUSE_CUDA_RETURN(cudaMemsetAsync(st.data, 0, vit_scale_state_bytes(st.num_layers), stream));
  return Status::Ok();
}

const float* vit_dynamic_scales(const VitScaleState& st, int layer) {
  if (st.data == nullptr || layer < 0 || layer >= st.num_layers ||
      st.bytes < vit_scale_state_bytes(st.num_layers))
    return nullptr;
  return reinterpret_cast<const float*>(vit::layer_words(st, layer) + vit::state::kScales);
}

Status vit_quantize_qkv_dynamic(const VitQkvQuantArgs& a, const VitScaleState& st, int layer,
                                cudaStream_t stream) {
  vit::QkvGeometry g{};
  QFUSE_RETURN_IF_ERROR(vit::check_state(st, layer));
  QFUSE_RETURN_IF_ERROR(vit::validate(a, true, &g));
  if (g.chunks == 0) return Status::Ok();
  QFUSE_RETURN_IF_ERROR(detail::check_device_pointers({{st.data, "state.data"}}));
  uint32_t* words = vit::layer_words(st, layer);
  QFUSE_RETURN_IF_ERROR(launch_kernel("vit amax_kernel", vit::amax_kernel, vit::grid_of(g),
                                      dim3(vit::kThreads), 0, stream, g, words));
  return launch_kernel("vit quant_kernel", vit::quant_kernel<true>, vit::grid_of(g),
                       dim3(vit::kThreads), 0, stream, g, static_cast<uint8_t*>(a.q_out.data),
                       static_cast<uint8_t*>(a.k_out.data), static_cast<uint8_t*>(a.v_out.data),
                       static_cast<const float*>(nullptr), static_cast<const float*>(nullptr),
                       static_cast<const float*>(nullptr), words);
}

Status vit_scale_state_read(const VitScaleState& st, cudaStream_t stream,
                            std::vector<VitLayerScaleState>* out) {
  if (out == nullptr) return Status::InvalidArgument("out", "a vector to fill", "null");
  QFUSE_RETURN_IF_ERROR(vit::check_state(st, 0));
  std::vector<uint32_t> words(static_cast<size_t>(st.num_layers) * vit::state::kWords);
  QFUSE_CUDA_RETURN(
      cudaMemcpyAsync(words.data(), st.data, words.size() * 4, cudaMemcpyDeviceToHost, stream));
  QFUSE_CUDA_RETURN(cudaStreamSynchronize(stream));
  out->assign(st.num_layers, VitLayerScaleState{});
  for (int l = 0; l < st.num_layers; ++l) {
    const uint32_t* w = words.data() + static_cast<size_t>(l) * vit::state::kWords;
    VitLayerScaleState& s = (*out)[l];
    for (int t = 0; t < 3; ++t) {
      for (int i = 0; i < kVitHistory; ++i)
        s.history[t][i] = rules::bits_float(w[vit::state::kHistory + t * kVitHistory + i]);
      s.scales[t] = rules::bits_float(w[vit::state::kScales + t]);
    }
    s.forwards = w[vit::state::kCount];
  }
  return Status::Ok();
}

}  // namespace qfuse
