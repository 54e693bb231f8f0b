// fp64 host references of the MLA decode family (mla_decode.h): the decode over the dequantized
// cache, and the cache writer byte for byte (the same rules.h / reference.h conversions as the
// device).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>

#include "qfuse/mla_decode/mla_decode.h"
#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"

namespace qfuse::ref {

double mla_cache_value(const MlaHostCache& c, int64_t block, int64_t offset, int e) {
  const int64_t idx = block * c.stride_block + offset * c.stride_token + e;
  if (c.dtype == DType::kBF16) return bf16_value(static_cast<const uint16_t*>(c.data)[idx]);
  return static_cast<double>(rules::e4m3_value(static_cast<const uint8_t*>(c.data)[idx])) *
         static_cast<double>(c.k_scale);
}

void mla_decode(const uint16_t* q, int64_t B, int s_q, int64_t N, const MlaHostCache& cache,
                const int32_t* block_table, int64_t max_blocks, const int32_t* seq_lens,
                double softmax_scale, std::vector<double>* out, std::vector<double>* lse) {
  const int64_t T = B * s_q;
  out->assign(static_cast<size_t>(T * N * kMlaLatentDim), 0.0);
  lse->assign(static_cast<size_t>(T * N), -std::numeric_limits<double>::infinity());
  for (int64_t b = 0; b < B; ++b) {
    int64_t L = seq_lens[b];
    if (L < 0 || L > max_blocks * cache.block_size) L = 0;  // device-error semantics: empty
    // The dequantized rows of the request (zeros for a block id outside the cache).
    std::vector<double> k(static_cast<size_t>(L * kMlaHeadDim), 0.0);
    for (int64_t j = 0; j < L; ++j) {
      const int64_t blk = block_table[b * max_blocks + j / cache.block_size];
      if (blk < 0 || blk >= cache.num_blocks) continue;
      for (int e = 0; e < kMlaHeadDim; ++e)
        k[j * kMlaHeadDim + e] = mla_cache_value(cache, blk, j % cache.block_size, e);
    }
    // NOTE: the (token, head) rows are independent; threads share them out (a host reference of
    // long sequences and 128 heads is seconds of fp64 work otherwise).
    const int64_t rows = s_q * N;
    const auto work = [&](int64_t r0, int64_t r1) {
      std::vector<double> s, qv(kMlaHeadDim);
      for (int64_t r = r0; r < r1; ++r) {
        const int i = static_cast<int>(r / N);
        const int64_t h = r % N;
        const int64_t t = b * s_q + i;
        const int64_t visible = L - s_q + i + 1;  // keys [0, visible)
        if (visible <= 0) continue;
        const uint16_t* qr = q + (t * N + h) * kMlaHeadDim;
        for (int e = 0; e < kMlaHeadDim; ++e) qv[e] = bf16_value(qr[e]);
        s.assign(static_cast<size_t>(visible), 0.0);
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < visible; ++j) {
          double acc = 0.0;
          const double* kr = k.data() + j * kMlaHeadDim;
          for (int e = 0; e < kMlaHeadDim; ++e) acc += qv[e] * kr[e];
          s[j] = acc * softmax_scale;
          m = std::max(m, s[j]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j < visible; ++j) {
          s[j] = std::exp(s[j] - m);
          sum += s[j];
        }
        double* o = out->data() + (t * N + h) * kMlaLatentDim;
        for (int64_t j = 0; j < visible; ++j) {
          const double w = s[j] / sum;
          const double* kr = k.data() + j * kMlaHeadDim;
          for (int d = 0; d < kMlaLatentDim; ++d) o[d] += w * kr[d];
        }
        (*lse)[t * N + h] = m + std::log(sum);
      }
    };
    const int64_t nt = std::clamp<int64_t>(std::min<int64_t>(rows, L * rows / 4096 + 1), 1,
                                           std::max(1u, std::thread::hardware_concurrency()));
    std::vector<std::thread> pool;
    for (int64_t k0 = 0; k0 < nt; ++k0)
      pool.emplace_back(work, rows * k0 / nt, rows * (k0 + 1) / nt);
    for (auto& th : pool) th.join();
  }
}

void mla_up_proj(const std::vector<double>& o_latent, const uint16_t* w_uv, int64_t T, int64_t N,
                 bool bf16_operand, std::vector<double>* out) {
  out->assign(static_cast<size_t>(T * N * kMlaVHeadDim), 0.0);
  std::vector<double> a(kMlaLatentDim);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      const double* o = o_latent.data() + (t * N + n) * kMlaLatentDim;
      for (int d = 0; d < kMlaLatentDim; ++d)
        a[d] = bf16_operand ? bf16_value(bf16_bits(static_cast<float>(o[d]))) : o[d];
      double* y = out->data() + (t * N + n) * kMlaVHeadDim;
      const uint16_t* w = w_uv + n * kMlaLatentDim * kMlaVHeadDim;
      for (int d = 0; d < kMlaLatentDim; ++d)
        for (int j = 0; j < kMlaVHeadDim; ++j) y[j] += a[d] * bf16_value(w[d * kMlaVHeadDim + j]);
    }
}

void mla_write_cache(const uint16_t* kv_c, int64_t ld_c, const uint16_t* k_pe, int64_t ld_pe,
                     const int64_t* slot_mapping, int64_t T, const MlaHostCache& c, void* cache) {
  const int64_t slots = c.num_blocks * c.block_size;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t slot = slot_mapping[t];
    if (slot < 0 || slot >= slots) continue;
    const int64_t base =
        (slot / c.block_size) * c.stride_block + (slot % c.block_size) * c.stride_token;
    for (int e = 0; e < kMlaHeadDim; ++e) {
      const uint16_t bits =
          e < kMlaLatentDim ? kv_c[t * ld_c + e] : k_pe[t * ld_pe + (e - kMlaLatentDim)];
      if (c.dtype == DType::kBF16) {
        static_cast<uint16_t*>(cache)[base + e] = bits;
      } else {
        // NOTE: the device's rule: fp32 IEEE division by k_scale, then the E4M3 encoding.
        const float x = bf16_value(bits) / c.k_scale;
        static_cast<uint8_t*>(cache)[base + e] = e4m3_encode(x);
      }
    }
  }
}

}  // namespace qfuse::ref
