// `qfuse demo` for the mla_decode family: DeepSeek-V3-shaped decode steps (128 heads as at TP 1,
// 16 as at TP 8; s_q 1, and 2 as with multi-token prediction; requests of mixed lengths in one
// batch), the latent cache written by mla_write_cache (bf16, or FP8 with k_scale) into shuffled
// pages whose unused rows hold NaN, the decode timed and checked against the fp64 host reference
// (tolerances: docs/tolerances.md), then the layer's output o = o_latent . W_UV written as FP8 by
// the combine with the fused up-projection (issue 14). Without a GPU: the host reference on a tiny
// batch.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench/demo_kit.h"
#include "bench/family.h"
#include "qfuse/mla_decode/mla_decode.h"
#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"

namespace qfuse::bench {
namespace {

struct MlaDemoShape {
  const char* label;
  int64_t N;
  int s_q;
  DType cache;
  std::vector<int32_t> lens;
};

const MlaDemoShape kMlaShapes[] = {
    {"TP 1 decode, bf16 cache", 128, 1, DType::kBF16, {1, 17, 64, 65, 300, 1000, 2048, 4000}},
    {"TP 1 decode with MTP (s_q 2), FP8 cache",
     128,
     2,
     DType::kE4M3,
     {2, 63, 129, 700, 1500, 3000}},
    {"TP 8 decode (16 heads), FP8 cache",
     16,
     1,
     DType::kE4M3,
     {1, 5, 64, 100, 511, 512, 777, 1024, 2000, 2500, 3000, 4096, 4096, 6000, 8000, 9000}},
};

constexpr int64_t kBlockSize = 64;
constexpr float kKScale = 0.025f;  // |kv| < 8.7 -> |kv / k_scale| < 348 < 448

std::vector<uint16_t> random_bf16(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint16_t> v(static_cast<size_t>(n));
  for (uint16_t& b : v) b = ref::bf16_bits(std::clamp(normal(rng), -8.0f, 8.0f));
  return v;
}

bool run_mla_shape(const MlaDemoShape& s, int reps) {
  const int64_t B = static_cast<int64_t>(s.lens.size()), N = s.N, T = B * s.s_q;
  const int32_t max_len = *std::max_element(s.lens.begin(), s.lens.end());
  const int64_t max_blocks = (max_len + kBlockSize - 1) / kBlockSize;
  const int64_t num_blocks = B * max_blocks + 3;
  const bool fp8 = s.cache == DType::kE4M3;
  const int64_t es = fp8 ? 1 : 2;
  std::printf("\nmla_decode, %s: B=%lld N=%lld s_q=%d, block size %lld, lengths", s.label,
              static_cast<long long>(B), static_cast<long long>(N), s.s_q,
              static_cast<long long>(kBlockSize));
  for (int32_t l : s.lens) std::printf(" %d", l);
  std::printf("\n");

  // Pages in shuffled order; every request's tokens written by the cache writer.
  std::vector<int32_t> pages(static_cast<size_t>(num_blocks));
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), std::mt19937_64(3));
  std::vector<int32_t> table(static_cast<size_t>(B * max_blocks));
  for (size_t i = 0; i < table.size(); ++i) table[i] = pages[i];
  std::vector<int64_t> slots;
  for (int64_t b = 0; b < B; ++b)
    for (int32_t j = 0; j < s.lens[b]; ++j)
      slots.push_back(static_cast<int64_t>(table[b * max_blocks + j / kBlockSize]) * kBlockSize +
                      j % kBlockSize);
  const int64_t Tkv = static_cast<int64_t>(slots.size());
  const std::vector<uint16_t> kv_c = random_bf16(Tkv * kMlaLatentDim, 21);
  const std::vector<uint16_t> k_pe = random_bf16(Tkv * kMlaRopeDim, 22);
  const std::vector<uint16_t> q = random_bf16(T * N * kMlaHeadDim, 23);

  const int64_t cache_elems = num_blocks * kBlockSize * kMlaHeadDim;
  DeviceBuffer d_cache, d_kvc, d_kpe, d_slots, d_q, d_table, d_lens, d_scale, d_out, d_lse, d_ws;
  DEMO_CHECK(d_cache.allocate(cache_elems * es));
  DEMO_CHECK(d_kvc.allocate(kv_c.size() * 2));
  DEMO_CHECK(d_kpe.allocate(k_pe.size() * 2));
  DEMO_CHECK(d_slots.allocate(slots.size() * 8));
  DEMO_CHECK(d_q.allocate(q.size() * 2));
  DEMO_CHECK(d_table.allocate(table.size() * 4));
  DEMO_CHECK(d_lens.allocate(s.lens.size() * 4));
  DEMO_CHECK(d_scale.allocate(4));
  DEMO_CHECK(d_out.allocate(T * N * kMlaLatentDim * 2));
  DEMO_CHECK(d_lse.allocate(T * N * 4));
  // NaN in every row no request owns (0xFF: NaN in bf16 pairs and in E4M3).
  DEMO_CUDA(cudaMemset(d_cache.get(), 0xFF, cache_elems * es));
  DEMO_CUDA(cudaMemcpy(d_kvc.get(), kv_c.data(), kv_c.size() * 2, cudaMemcpyHostToDevice));
  DEMO_CUDA(cudaMemcpy(d_kpe.get(), k_pe.data(), k_pe.size() * 2, cudaMemcpyHostToDevice));
  DEMO_CUDA(cudaMemcpy(d_slots.get(), slots.data(), slots.size() * 8, cudaMemcpyHostToDevice));
  DEMO_CUDA(cudaMemcpy(d_q.get(), q.data(), q.size() * 2, cudaMemcpyHostToDevice));
  DEMO_CUDA(cudaMemcpy(d_table.get(), table.data(), table.size() * 4, cudaMemcpyHostToDevice));
  DEMO_CUDA(cudaMemcpy(d_lens.get(), s.lens.data(), s.lens.size() * 4, cudaMemcpyHostToDevice));
  DEMO_CUDA(cudaMemcpy(d_scale.get(), &kKScale, 4, cudaMemcpyHostToDevice));

  const TensorRef cache =
      TensorRef::contiguous(d_cache.get(), s.cache, {num_blocks, kBlockSize, kMlaHeadDim});
  MlaCacheWriteArgs w;
  w.kv_c = TensorRef::contiguous(d_kvc.get(), DType::kBF16, {Tkv, kMlaLatentDim});
  w.k_pe = TensorRef::contiguous(d_kpe.get(), DType::kBF16, {Tkv, kMlaRopeDim});
  w.slot_mapping = d_slots.as<int64_t>();
  w.cache = cache;
  w.k_scale = fp8 ? d_scale.as<float>() : nullptr;
  DEMO_CHECK(mla_write_cache(w, 0));

  MlaDecodeArgs a;
  a.q = TensorRef::contiguous(d_q.get(), DType::kBF16, {T, N, kMlaHeadDim});
  a.cache = cache;
  a.k_scale = w.k_scale;
  a.block_table = TensorRef::contiguous(d_table.get(), DType::kI32, {B, max_blocks});
  a.seq_lens = TensorRef::contiguous(d_lens.get(), DType::kI32, {B});
  a.s_q = s.s_q;
  a.softmax_scale = 1.0f / std::sqrt(192.0f);  // DeepSeek-V3: 1 / sqrt(128 + 64)
  a.out.out = TensorRef::contiguous(d_out.get(), DType::kBF16, {T, N * kMlaLatentDim});
  a.lse = TensorRef::contiguous(d_lse.get(), DType::kF32, {T, N});
  const MlaDecodeOptions opt;
  size_t ws_bytes = 0;
  DEMO_CHECK(mla_decode_workspace_size(B, s.s_q, static_cast<int>(N), opt, &ws_bytes));
  DEMO_CHECK(d_ws.allocate(ws_bytes));
  const MlaWorkspace ws{d_ws.get(), ws_bytes};
  DEMO_CHECK(mla_decode(a, ws, opt, 0));
  DEMO_CHECK(mla_decode_check(ws, 0));

  // Timing: back-to-back calls between two events (the first call above warmed up).
  cudaEvent_t e0, e1;
  DEMO_CUDA(cudaEventCreate(&e0));
  DEMO_CUDA(cudaEventCreate(&e1));
  const int calls = std::max(reps, 1);
  DEMO_CUDA(cudaEventRecord(e0, 0));
  for (int i = 0; i < calls; ++i) DEMO_CHECK(mla_decode(a, ws, opt, 0));
  DEMO_CUDA(cudaEventRecord(e1, 0));
  DEMO_CUDA(cudaEventSynchronize(e1));
  float ms = 0.0f;
  DEMO_CUDA(cudaEventElapsedTime(&ms, e0, e1));
  DEMO_CUDA(cudaEventDestroy(e0));
  DEMO_CUDA(cudaEventDestroy(e1));
  const double us = 1000.0 * ms / calls;
  const double kv_bytes =
      static_cast<double>(std::accumulate(s.lens.begin(), s.lens.end(), int64_t{0})) * kMlaHeadDim *
      es;

  // The fp64 reference over the device's cache bytes (dequantized: the FP8 codes times k_scale).
  std::vector<uint8_t> cache_h(static_cast<size_t>(cache_elems * es));
  std::vector<uint16_t> out_h(static_cast<size_t>(T * N * kMlaLatentDim));
  std::vector<float> lse_h(static_cast<size_t>(T * N));
  DEMO_CUDA(cudaMemcpy(cache_h.data(), d_cache.get(), cache_h.size(), cudaMemcpyDeviceToHost));
  DEMO_CUDA(cudaMemcpy(out_h.data(), d_out.get(), out_h.size() * 2, cudaMemcpyDeviceToHost));
  DEMO_CUDA(cudaMemcpy(lse_h.data(), d_lse.get(), lse_h.size() * 4, cudaMemcpyDeviceToHost));
  ref::MlaHostCache hc;
  hc.dtype = s.cache, hc.data = cache_h.data(), hc.num_blocks = num_blocks;
  hc.block_size = kBlockSize, hc.stride_block = kBlockSize * kMlaHeadDim;
  hc.stride_token = kMlaHeadDim, hc.k_scale = kKScale;
  std::vector<double> y, y_lse;
  ref::mla_decode(q.data(), B, s.s_q, N, hc, table.data(), max_blocks, s.lens.data(),
                  a.softmax_scale, &y, &y_lse);
  double num = 0.0, den = 0.0, max_abs = 0.0, lse_err = 0.0;
  for (size_t i = 0; i < y.size(); ++i) {
    const double d = ref::bf16_value(out_h[i]) - y[i];
    num += d * d, den += y[i] * y[i];
    max_abs = std::max(max_abs, std::fabs(d));
  }
  bool lse_ok = true;
  for (size_t i = 0; i < y_lse.size(); ++i) {
    if (std::isinf(y_lse[i]))
      lse_ok = lse_ok && std::isinf(lse_h[i]) && lse_h[i] < 0;
    else
      lse_err = std::max(lse_err, std::fabs(lse_h[i] - y_lse[i]));
  }
  const double rel = den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
  const double tol = fp8 ? 4e-2 : 1e-2;
  bool ok = rel <= tol && lse_ok && lse_err <= 1e-2 && std::isfinite(rel);
  std::printf(
      "  %.1f us per step (%d calls), KV read %.0f GB/s; o_latent vs fp64 reference: rel L2 "
      "%.2e (tolerance %.0e), max |diff| %.3g; lse max |diff| %.2e -> %s\n",
      us, calls, kv_bytes / (us * 1e3), rel, tol, max_abs, lse_err, ok ? "ok" : "FAILED");

  // The layer's output: o = o_latent . W_UV per head, written as static per-tensor FP8 by the
  // combine with the fused up-projection (issue 14), against the fp64 reference's o.
  const std::vector<uint16_t> w_uv = random_bf16(N * kMlaLatentDim * kMlaVHeadDim, 24);
  std::vector<double> o_ref;
  ref::mla_up_proj(y, w_uv.data(), T, N, false, &o_ref);
  double o_amax = 0.0;
  for (double v : o_ref) o_amax = std::max(o_amax, std::fabs(v));
  const float o_scale = static_cast<float>(std::max(o_amax, 1e-6) / 448.0 * 1.25);
  const int64_t C = N * kMlaVHeadDim;
  DeviceBuffer d_w, d_o8, d_oscale;
  DEMO_CHECK(d_w.allocate(w_uv.size() * 2));
  DEMO_CHECK(d_o8.allocate(T * C));
  DEMO_CHECK(d_oscale.allocate(4));
  DEMO_CUDA(cudaMemcpy(d_w.get(), w_uv.data(), w_uv.size() * 2, cudaMemcpyHostToDevice));
  DEMO_CUDA(cudaMemcpy(d_oscale.get(), &o_scale, 4, cudaMemcpyHostToDevice));
  MlaDecodeArgs up = a;
  up.w_uv = TensorRef::contiguous(d_w.get(), DType::kBF16, {N, kMlaLatentDim, kMlaVHeadDim});
  up.out = QuantOutput{};
  up.out.spec = QuantSpec::fp8_per_tensor();
  up.out.out = TensorRef::contiguous(d_o8.get(), DType::kE4M3, {T, C});
  up.out.scale = d_oscale.as<float>();
  up.lse = TensorRef{};
  DEMO_CHECK(mla_decode(up, ws, opt, 0));
  DEMO_CHECK(mla_decode_check(ws, 0));
  DEMO_CUDA(cudaEventCreate(&e0));
  DEMO_CUDA(cudaEventCreate(&e1));
  DEMO_CUDA(cudaEventRecord(e0, 0));
  for (int i = 0; i < calls; ++i) DEMO_CHECK(mla_decode(up, ws, opt, 0));
  DEMO_CUDA(cudaEventRecord(e1, 0));
  DEMO_CUDA(cudaEventSynchronize(e1));
  DEMO_CUDA(cudaEventElapsedTime(&ms, e0, e1));
  DEMO_CUDA(cudaEventDestroy(e0));
  DEMO_CUDA(cudaEventDestroy(e1));
  const double up_us = 1000.0 * ms / calls;
  std::vector<uint8_t> o8(static_cast<size_t>(T * C));
  DEMO_CUDA(cudaMemcpy(o8.data(), d_o8.get(), o8.size(), cudaMemcpyDeviceToHost));
  double onum = 0.0, oden = 0.0;
  for (size_t i = 0; i < o8.size(); ++i) {
    const double d = static_cast<double>(rules::e4m3_value(o8[i])) * o_scale - o_ref[i];
    onum += d * d, oden += o_ref[i] * o_ref[i];
  }
  // One E4M3 rounding (3 mantissa bits: about 2^-4 / sqrt(3) relative, rms) on top of the
  // decode's own error.
  const double orel = oden > 0.0 ? std::sqrt(onum / oden) : std::sqrt(onum);
  const double otol = tol + 0.05;
  const bool up_ok = std::isfinite(orel) && orel <= otol;
  std::printf(
      "  with W_UV, o [T, N*128] written as FP8 (per-tensor) by the combine: %.1f us per step; "
      "dequantized vs fp64 reference: rel L2 %.2e (tolerance %.0e) -> %s\n",
      up_us, orel, otol, up_ok ? "ok" : "FAILED");
  return ok && up_ok;
}

/// Without a GPU: the fp64 reference on a tiny batch (an empty request, one shorter than s_q, one
/// of two pages); an empty query row must give zeros and lse -inf.
bool run_host_mla() {
  const int64_t N = 16, B = 3, bs = 16, max_blocks = 2;
  const int s_q = 2;
  const std::vector<int32_t> lens = {0, 1, 20};
  const std::vector<int32_t> table = {4, 0, 2, 1, 3, 5};
  std::vector<uint16_t> cache = random_bf16(6 * bs * kMlaHeadDim, 31);
  const std::vector<uint16_t> q = random_bf16(B * s_q * N * kMlaHeadDim, 32);
  ref::MlaHostCache hc;
  hc.dtype = DType::kBF16, hc.data = cache.data(), hc.num_blocks = 6, hc.block_size = bs;
  hc.stride_block = bs * kMlaHeadDim, hc.stride_token = kMlaHeadDim;
  std::vector<double> y, lse;
  ref::mla_decode(q.data(), B, s_q, N, hc, table.data(), max_blocks, lens.data(),
                  1.0 / std::sqrt(192.0), &y, &lse);
  std::printf(
      "\nmla_decode host reference (fp64), B=3 requests of lengths 0 / 1 / 20, s_q 2 (causal "
      "among the two query tokens), 16 heads, block size 16:\n");
  bool ok = true;
  for (int64_t t = 0; t < B * s_q; ++t) {
    double amax = 0.0;
    for (int64_t d = 0; d < kMlaLatentDim; ++d)
      amax = std::max(amax, std::fabs(y[t * N * 512 + d]));
    std::printf("  token %lld (request %lld): head 0 lse %8.4f, max |o| %.4f\n",
                static_cast<long long>(t), static_cast<long long>(t / s_q), lse[t * N], amax);
    // Request 0 is empty; request 1 has one key, which only its last query token sees.
    const bool empty = t / s_q == 0 || t == 2;
    if (empty) ok = ok && std::isinf(lse[t * N]) && amax == 0.0;
    if (!empty) ok = ok && std::isfinite(lse[t * N]) && amax > 0.0;
  }
  std::printf("  empty rows give zeros and lse -inf: %s\n", ok ? "ok" : "FAILED");
  return ok;
}

}  // namespace

/// This family's `qfuse demo` section (called from its tool registration in routines.cu).
void add_mla_decode_demo(ToolRegistrar& r) {
  r.add_demo({"mla_decode",
              [](int reps) {
                bool ok = true;
                for (const MlaDemoShape& s : kMlaShapes) ok = run_mla_shape(s, reps) && ok;
                return ok;
              },
              run_host_mla});
}

}  // namespace qfuse::bench
