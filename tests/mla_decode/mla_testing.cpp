#include "mla_decode/mla_testing.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "qfuse/quant/reference.h"

namespace qfuse::test {

std::string describe(const MlaCase& c) {
  std::string s = "N=" + std::to_string(c.heads) + " s_q=" + std::to_string(c.s_q) +
                  " bs=" + std::to_string(c.block_size) + " " + std::string(to_string(c.cache)) +
                  (c.strided ? " strided" : "") + " lens=";
  for (size_t i = 0; i < c.lens.size(); ++i) s += (i ? "," : "") + std::to_string(c.lens[i]);
  return s;
}

MlaProblem make_problem(const MlaCase& c) {
  MlaProblem p;
  p.c = c;
  p.B = static_cast<int64_t>(c.lens.size());
  p.T = p.B * c.s_q;
  p.N = c.heads;
  std::mt19937_64 rng(c.seed * 7919 + 17);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const bool fp8 = c.cache == DType::kE4M3;
  const int64_t es = fp8 ? 1 : 2;
  const int64_t bs = c.block_size;

  // Blocks: a shuffled assignment of physical ids; unused table entries hold garbage.
  std::vector<int64_t> need(p.B);
  int64_t total = 0;
  for (int64_t b = 0; b < p.B; ++b) {
    need[b] = (std::max(c.lens[b], 0) + bs - 1) / bs;
    total += need[b];
    p.max_blocks = std::max(p.max_blocks, need[b]);
  }
  p.max_blocks += 2;
  p.num_blocks = total + 5;
  std::vector<int32_t> ids(p.num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  p.block_table.assign(p.B * p.max_blocks, INT_MAX - 7);
  int64_t next = 0;
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t k = 0; k < need[b]; ++k) p.block_table[b * p.max_blocks + k] = ids[next++];
  p.lens.assign(c.lens.begin(), c.lens.end());

  // Cache: [num_blocks, (2 layers,) bs, 576 (+ 64 padding)], the view the second layer when
  // strided.
  const int64_t row = c.strided ? 640 : kMlaHeadDim;
  const int64_t layers = c.strided ? 2 : 1;
  p.c_st = row;
  p.c_sb = layers * bs * row;
  p.c_off = c.strided ? bs * row : 0;
  const int64_t elems = p.num_blocks * p.c_sb;
  p.cache_bytes.resize(elems * es);
  for (int64_t e = 0; e < elems; ++e) {
    const float x = nd(rng);
    if (fp8) {
      p.cache_bytes[e] = ref::e4m3_encode(x / c.k_scale);
    } else {
      const uint16_t bits = ref::bf16_bits(x);
      std::memcpy(&p.cache_bytes[e * 2], &bits, 2);
    }
  }
  // NaN in every slot past a sequence's end in its blocks: a kernel must never let them leak.
  for (int64_t b = 0; b < p.B; ++b) {
    for (int64_t j = std::max(c.lens[b], 0); j < need[b] * bs; ++j) {
      const int64_t blk = p.block_table[b * p.max_blocks + j / bs];
      const int64_t base = p.c_off + blk * p.c_sb + (j % bs) * p.c_st;
      for (int e = 0; e < kMlaHeadDim; ++e) {
        if (fp8) {
          p.cache_bytes[base + e] = 0x7F;
        } else {
          const uint16_t nan = 0x7FC0;
          std::memcpy(&p.cache_bytes[(base + e) * 2], &nan, 2);
        }
      }
    }
  }
  // q: random, stored contiguous for the reference and with a padded head stride on the device.
  p.q.resize(p.T * p.N * kMlaHeadDim);
  for (auto& v : p.q) v = ref::bf16_bits(nd(rng));
  p.q_sh = c.strided ? 640 : kMlaHeadDim;
  p.q_st = p.N * p.q_sh;
  std::vector<uint16_t> qdev(p.T * p.q_st, 0);
  for (int64_t t = 0; t < p.T; ++t)
    for (int64_t h = 0; h < p.N; ++h)
      std::copy_n(&p.q[(t * p.N + h) * kMlaHeadDim], kMlaHeadDim, &qdev[t * p.q_st + h * p.q_sh]);

  p.softmax_scale = 1.0f / std::sqrt(192.0f);
  p.d_q = DeviceBuffer(qdev.size() * 2);
  p.d_q.upload(qdev.data(), qdev.size() * 2);
  p.d_cache = DeviceBuffer(p.cache_bytes.size());
  p.d_cache.upload(p.cache_bytes.data(), p.cache_bytes.size());
  p.d_scale = DeviceBuffer(4);
  p.d_scale.upload(&c.k_scale, 4);
  p.d_bt = DeviceBuffer(p.block_table.size() * 4);
  p.d_bt.upload(p.block_table.data(), p.block_table.size() * 4);
  p.d_lens = DeviceBuffer(p.lens.size() * 4);
  p.d_lens.upload(p.lens.data(), p.lens.size() * 4);
  return p;
}

ref::MlaHostCache MlaProblem::host_cache() const {
  ref::MlaHostCache h;
  h.dtype = c.cache;
  const int64_t es = c.cache == DType::kE4M3 ? 1 : 2;
  h.data = cache_bytes.data() + c_off * es;
  h.num_blocks = num_blocks;
  h.block_size = c.block_size;
  h.stride_block = c_sb;
  h.stride_token = c_st;
  h.k_scale = c.k_scale;
  return h;
}

void MlaProblem::compute_reference() {
  ref::mla_decode(q.data(), B, c.s_q, N, host_cache(), block_table.data(), max_blocks, lens.data(),
                  softmax_scale, &ref_out, &ref_lse);
}

MlaDecodeArgs MlaProblem::args() const {
  MlaDecodeArgs a;
  a.q = TensorRef::strided(d_q.get(), DType::kBF16, {T, N, kMlaHeadDim}, {q_st, q_sh, 1});
  const int64_t es = c.cache == DType::kE4M3 ? 1 : 2;
  a.cache = TensorRef::strided(static_cast<char*>(d_cache.get()) + c_off * es, c.cache,
                               {num_blocks, c.block_size, kMlaHeadDim}, {c_sb, c_st, 1});
  a.k_scale = c.cache == DType::kE4M3 ? d_scale.as<float>() : nullptr;
  a.block_table = TensorRef::contiguous(d_bt.get(), DType::kI32, {B, max_blocks});
  a.seq_lens = TensorRef::contiguous(d_lens.get(), DType::kI32, {B});
  a.s_q = c.s_q;
  a.softmax_scale = softmax_scale;
  return a;
}

MlaError compare_bf16(const std::vector<uint16_t>& out, int64_t ld, const MlaProblem& p) {
  MlaError e;
  double num = 0.0, den = 0.0;
  for (int64_t t = 0; t < p.T; ++t) {
    for (int64_t h = 0; h < p.N; ++h) {
      double rn = 0.0, rd = 0.0;
      bool any_out = false;
      for (int d = 0; d < kMlaLatentDim; ++d) {
        const double o = ref::bf16_value(out[t * ld + h * kMlaLatentDim + d]);
        const double r = p.ref_out[(t * p.N + h) * kMlaLatentDim + d];
        if (!std::isfinite(o)) ++e.nonfinite;
        any_out |= o != 0.0;
        rn += (o - r) * (o - r);
        rd += r * r;
      }
      num += rn;
      den += rd;
      if (rd == 0.0) {
        if (any_out) ++e.bad_zero_rows;
      } else {
        e.worst_row = std::max(e.worst_row, std::sqrt(rn / rd));
      }
    }
  }
  e.rel_l2 = den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
  if (!std::isfinite(e.rel_l2)) e.rel_l2 = 1e30;
  return e;
}

int64_t lse_mismatches(const std::vector<float>& lse, int64_t ld, const MlaProblem& p,
                       std::string* first) {
  int64_t bad = 0;
  for (int64_t t = 0; t < p.T; ++t)
    for (int64_t h = 0; h < p.N; ++h) {
      const double ref = p.ref_lse[t * p.N + h];
      const float got = lse[t * ld + h];
      const bool ok = std::isinf(ref)
                          ? (std::isinf(got) && got < 0)
                          : std::fabs(got - ref) <= 1e-3 * std::max(1.0, std::fabs(ref));
      if (!ok && bad++ == 0)
        *first = "t=" + std::to_string(t) + " h=" + std::to_string(h) + " got " +
                 std::to_string(got) + " want " + std::to_string(ref);
    }
  return bad;
}

}  // namespace qfuse::test
