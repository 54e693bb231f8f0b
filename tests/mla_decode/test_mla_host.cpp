// Host-only tests of the MLA decode family (run in CI without a GPU): the fp64 reference on cases
// with known answers, the cache writer's reference, and a negative test for each validation
// (fake pointers: every check fails before any device call).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "common/compare.h"
#include "mla_decode/fp8_convert.h"
#include "mla_decode/schedule_rules.h"
#include "mla_decode/up_proj.h"
#include "qfuse/mla_decode/mla_decode.h"
#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"

namespace qfuse {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

/// A tiny bf16 cache of `blocks` blocks of 16 slots; row (b, o) element e = ((b*16+o)*7+e)%13 - 6
/// scaled by 1/8 (exact in bf16).
struct TinyCache {
  std::vector<uint16_t> data;
  ref::MlaHostCache c;
  explicit TinyCache(int blocks) {
    data.resize(blocks * 16 * kMlaHeadDim);
    for (size_t i = 0; i < data.size(); ++i)
      data[i] = ref::bf16_bits(static_cast<float>(static_cast<int>((i * 7) % 13) - 6) / 8.0f);
    c.dtype = DType::kBF16;
    c.data = data.data();
    c.num_blocks = blocks;
    c.block_size = 16;
    c.stride_block = 16 * kMlaHeadDim;
    c.stride_token = kMlaHeadDim;
  }
};

std::vector<uint16_t> random_q(int64_t T, int64_t N, float v) {
  std::vector<uint16_t> q(T * N * kMlaHeadDim);
  for (size_t i = 0; i < q.size(); ++i)
    q[i] = ref::bf16_bits(v * static_cast<float>(static_cast<int>(i % 5) - 2));
  return q;
}

/// The fp16 value (times 2^8) the FP8 consumer's conversion gives for a code: its E4M3 value,
/// NaN codes read as +-480 (mainloop_fp8.cuh: garbage rows past a sequence cannot poison O).
double converted_value(uint16_t f16) {
  return static_cast<double>(ref::f16_value(f16)) * 256.0;
}

double expected_value(uint8_t code) {
  if ((code & 0x7F) == 0x7F) return (code & 0x80) ? -480.0 : 480.0;
  return rules::e4m3_value(code);
}

TEST(MlaFp8Convert, EveryCodeOfBothQkPairs) {
  // QK: the pairs (byte 0, byte 1) and (byte 2, byte 3) of one word, each lane from its own code.
  int bad = 0;
  for (uint32_t x = 0; x < 256; ++x)
    for (uint32_t y = 0; y < 256; y += 37) {
      const uint32_t w = x | (y << 8) | ((255 - x) << 16) | (((y * 7) & 0xFF) << 24);
      // k_step_fragment: a[0] / a[2] from the first row's word, a[1] / a[3] from the second's.
      uint32_t a[4];
      mla::k_step_fragment(a, w, ~w);
      const uint32_t lo = a[0], hi = a[2];
      const uint32_t lo_other = a[1];
      ASSERT_EQ(lo_other, mla::e4m3_lanes_f16x2(mla::prmt(~w, 0, mla::pair_sel(0, 1))));
      const uint8_t codes[4] = {static_cast<uint8_t>(x), static_cast<uint8_t>(y),
                                static_cast<uint8_t>(255 - x),
                                static_cast<uint8_t>((y * 7) & 0xFF)};
      const uint16_t got[4] = {static_cast<uint16_t>(lo), static_cast<uint16_t>(lo >> 16),
                               static_cast<uint16_t>(hi), static_cast<uint16_t>(hi >> 16)};
      for (int i = 0; i < 4; ++i) {
        const double want = expected_value(codes[i]);
        const double v = converted_value(got[i]);
        // -0 must stay -0 (the sign bit), so compare bits of the zero cases too.
        if (v != want || std::signbit(v) != std::signbit(want)) {
          if (bad++ < 5)
            ADD_FAILURE() << "code 0x" << std::hex << int(codes[i]) << " -> f16 0x" << got[i]
                          << std::dec << " = " << v << ", want " << want;
        }
      }
    }
  EXPECT_EQ(bad, 0);
}

TEST(MlaFp8Convert, EveryCodeOfThePvPairs) {
  // PV: byte b of one token's word with byte b of the next token's word (two registers).
  int bad = 0;
  for (uint32_t b = 0; b < 4; ++b)
    for (uint32_t x = 0; x < 256; ++x) {
      const uint32_t y = (x * 91 + 17) & 0xFF;
      const uint32_t w0 = (x << (8 * b)) | (0x5Au << (8 * ((b + 1) & 3)));
      const uint32_t w1 = (y << (8 * b)) | (0xA5u << (8 * ((b + 2) & 3)));
      // v_tile_fragment of the token pairs (w0, w1) and (w1, w0): a[0] joins byte b of both.
      uint32_t a[4];
      mla::v_tile_fragment(a, w0, w1, w1, w0, b & 2);
      const uint32_t v = (b & 1) ? a[1] : a[0];
      ASSERT_EQ((b & 1) ? a[3] : a[2], (v >> 16) | (v << 16));
      const double lo = converted_value(static_cast<uint16_t>(v));
      const double hi = converted_value(static_cast<uint16_t>(v >> 16));
      const double want_lo = expected_value(static_cast<uint8_t>(x));
      const double want_hi = expected_value(static_cast<uint8_t>(y));
      if (lo != want_lo || hi != want_hi || std::signbit(lo) != std::signbit(want_lo) ||
          std::signbit(hi) != std::signbit(want_hi)) {
        if (bad++ < 5)
          ADD_FAILURE() << "byte " << b << " codes 0x" << std::hex << x << ", 0x" << y << std::dec
                        << " -> " << lo << ", " << hi << "; want " << want_lo << ", " << want_hi;
      }
    }
  EXPECT_EQ(bad, 0);
}

TEST(MlaFp8Convert, EveryCodeOfTheWideFormsBf16Chunk) {
  // The wide form's converter: 16 codes of a chunk -> 8 bf16 pairs in column order, each the
  // code's value times 2^-120 (the device then multiplies by 2^112, exactly). Every code in every
  // byte position, beside varied neighbours.
  int bad = 0;
  for (uint32_t pos = 0; pos < 16; ++pos)
    for (uint32_t x = 0; x < 256; ++x) {
      uint8_t codes[16];
      for (uint32_t i = 0; i < 16; ++i)
        codes[i] = static_cast<uint8_t>(i == pos ? x : (x * 29 + i * 53 + 7) & 0xFF);
      uint32_t in[4] = {0, 0, 0, 0}, out[8];
      for (uint32_t i = 0; i < 16; ++i)
        in[i >> 2] |= static_cast<uint32_t>(codes[i]) << (8 * (i & 3));
      mla::e4m3_chunk_bf16x2(out, in);
      for (uint32_t i = 0; i < 16; ++i) {
        const uint16_t bits = static_cast<uint16_t>(out[i >> 1] >> (16 * (i & 1)));
        const double v = std::ldexp(static_cast<double>(ref::bf16_value(bits)), 120);
        const double want = expected_value(codes[i]);
        if (v != want || std::signbit(v) != std::signbit(want)) {
          if (bad++ < 5)
            ADD_FAILURE() << "column " << i << " code 0x" << std::hex << int(codes[i])
                          << " -> bf16 0x" << bits << std::dec << " = " << v << ", want " << want;
        }
      }
    }
  EXPECT_EQ(bad, 0);
}

TEST(MlaFp8Convert, WideConverterWritesTheSwizzledTileOnceWithoutBankConflicts) {
  // The TMA layout of a bf16 tile with a 128-byte swizzle, written independently: box of column
  // `col` at 8192 B, its row `tok` at 128 B, the 16-byte chunk of the column XOR the row's low
  // three bits, 2 B per column.
  const auto tma_offset = [](int tok, int col) {
    const int box = col / 64, c = col % 64;
    return box * 8192 + tok * 128 + (((c / 8) ^ (tok & 7)) << 4) + (c % 8) * 2;
  };
  std::vector<int> hits(9 * 64 * 8, 0);  // every 16-byte chunk of the 72 KB stage
  for (int tid = 0; tid < 128; ++tid)
    for (int i = 0; i < 2; ++i)
      for (int kb = 0; kb < 9; ++kb)
        for (int e = 0; e < 2; ++e) {
          const int tok = mla::wide_fp8_token(tid, i), col = mla::wide_fp8_col(tid, kb, e);
          ASSERT_LT(tok, 64);
          ASSERT_EQ(col / 64, kb);
          ASSERT_EQ(col % 8, 0);
          const uint32_t dst = mla::wide_fp8_dst(tid, i, kb, e);
          ASSERT_EQ(static_cast<int>(dst), tma_offset(tok, col))
              << "tid " << tid << " i " << i << " kb " << kb << " e " << e;
          ++hits[dst / 16];
        }
  for (size_t c = 0; c < hits.size(); ++c) ASSERT_EQ(hits[c], 1) << "chunk " << c;
  // A 16-byte store serves 8 lanes a phase: lanes 8 k .. 8 k + 7 of a warp hit 8 distinct
  // 16-byte bank groups (byte offset / 16 mod 8) for every (i, kb, e).
  for (int i = 0; i < 2; ++i)
    for (int kb = 0; kb < 9; ++kb)
      for (int e = 0; e < 2; ++e)
        for (int phase = 0; phase < 16; ++phase) {
          int groups = 0;
          for (int l = 0; l < 8; ++l)
            groups |= 1 << ((mla::wide_fp8_dst(8 * phase + l, i, kb, e) / 16) % 8);
          ASSERT_EQ(groups, 0xFF) << "phase " << phase << " i " << i << " kb " << kb;
        }
  // The loads: lanes 4 k .. 4 k + 3 read one token's 64 contiguous bytes of a box.
  for (int tid = 0; tid < 128; tid += 4)
    for (int l = 0; l < 4; ++l) {
      ASSERT_EQ(mla::wide_fp8_token(tid + l, 0), mla::wide_fp8_token(tid, 0));
      ASSERT_EQ(mla::wide_fp8_col(tid + l, 3, 0), mla::wide_fp8_col(tid, 3, 0) + 16 * l);
    }
}

/// What the scheduler kernel (schedule.cu) decides for a batch, from the same rules: the cost per
/// part, each request's pieces, and whether every request is one piece (header[kHdrOnePiece]).
struct HostSchedule {
  int target = 0, W = 0;
  std::vector<int> pieces;
  bool one_piece = true;
  int max_part_pieces = 0;  // the most pieces any part holds
};

HostSchedule host_schedule(const std::vector<int>& lens, int num_parts,
                           int overhead = mla::kOverheadTiles) {
  HostSchedule h;
  int cmin = INT32_MAX, cmax = 0;
  std::vector<int> pre;
  for (const int len : lens) {
    pre.push_back(h.W);
    const int c = mla::request_cost(len, overhead);
    h.W += c;
    cmin = std::min(cmin, c);
    cmax = std::max(cmax, c);
  }
  h.target = mla::part_target(h.W, num_parts, static_cast<int>(lens.size()), cmin, cmax, overhead);
  std::vector<int> per_part(static_cast<size_t>(num_parts) + 1, 0);
  for (size_t b = 0; b < lens.size(); ++b) {
    const int tiles = mla::tiles_of(lens[b]);
    h.pieces.push_back(mla::pieces_of(pre[b], tiles, h.target));
    h.one_piece = h.one_piece && h.pieces.back() == 1;
    if (tiles > 0)
      for (int g = pre[b] / h.target; g <= (pre[b] + tiles - 1) / h.target; ++g) ++per_part[g];
  }
  h.max_part_pieces = *std::max_element(per_part.begin(), per_part.end());
  return h;
}

TEST(MlaSchedule, BarShapesKeepEveryRequestInOnePiece) {
  // Issue 13's bar shapes on a 132-SM part: memory-bound B 128 over 132 parts (16 rows, one row
  // block), compute-bound B 64 over 33 parts (256 rows, four row blocks): every request one piece,
  // so a plain bf16 output skips the combine (bench/NOTES.md M16). One request more than parts
  // (equal lengths) splits one; a request without a token has no piece.
  for (const int S : {4096, 16384}) {
    // (B, parts, rows a block)
    for (const auto& [B, parts, rows] :
         {std::tuple{128, 132, 16}, std::tuple{64, 33, 64}, std::tuple{132, 132, 16}}) {
      const HostSchedule h =
          host_schedule(std::vector<int>(B, S), parts, mla::piece_overhead(rows));
      EXPECT_TRUE(h.one_piece) << "B " << B << " parts " << parts << " S " << S;
      EXPECT_LE((h.W - 1) / h.target + 1, parts) << "more parts than the grid has";
    }
    EXPECT_FALSE(host_schedule(std::vector<int>(133, S), 132).one_piece) << S;
  }
  const HostSchedule mixed = host_schedule({1, 63, 64, 65, 1000, 4097, 0}, 132);
  EXPECT_FALSE(mixed.one_piece);
  EXPECT_EQ(mixed.pieces.back(), 0);
  EXPECT_GT(mixed.pieces[5], 1);  // the longest request of a small batch is split
  EXPECT_LE((mixed.W - 1) / mixed.target + 1, 132);
}

/// The benchmark's mixed batch (bench/mla_decode/routines.cu): n lengths spread log-uniformly
/// over [1, 32768].
std::vector<int> log_spread_lens(int n) {
  std::vector<int> lens;
  for (int b = 0; b < n; ++b)
    lens.push_back(std::max(
        1, static_cast<int>(std::lround(std::pow(32768.0, static_cast<double>(b) / (n - 1))))));
  return lens;
}

TEST(MlaSchedule, WidePiecesCostMoreSoFewerShareAPart) {
  // The benchmark's mixed batch at 128 heads, s_q 2 (64 rows a block, four row blocks: 33 parts
  // on 132 SMs): 64 lengths spread log-uniformly over [1, 32768]. With the 16-row overhead one
  // part holds the 33 shortest requests, one piece each (measured 2x the batch's equal-length
  // twin, bench/NOTES.md M18); with the 64-row overhead (6 tiles a piece) about half as many,
  // and the schedule still fits the grid.
  const std::vector<int> lens = log_spread_lens(64);
  const HostSchedule narrow = host_schedule(lens, 33, mla::piece_overhead(16));
  const HostSchedule wide = host_schedule(lens, 33, mla::piece_overhead(64));
  EXPECT_EQ(narrow.max_part_pieces, 33);
  EXPECT_LT(wide.max_part_pieces, narrow.max_part_pieces * 2 / 3);
  EXPECT_LE((wide.W - 1) / wide.target + 1, 33);
}

TEST(MlaSchedule, Fp8NarrowPiecesCostMoreSoFewerShareAPart) {
  // The benchmark's mixed batch at 16 heads, s_q 1 (16 rows a block, 132 parts): 128 lengths
  // spread log-uniformly over [1, 32768]. An FP8 cache's piece costs more tiles than a bf16 one's
  // (its tiles read half the bytes; bench/NOTES.md M19), so its fullest part holds fewer pieces,
  // and the schedule still fits the grid.
  const std::vector<int> lens = log_spread_lens(128);
  const int ov_bf16 = mla::piece_overhead(16),
            ov_fp8 = mla::piece_overhead(16, mla::CacheKind::kFp8);
  EXPECT_GT(ov_fp8, ov_bf16);
  EXPECT_EQ(mla::piece_overhead(64, mla::CacheKind::kFp8), mla::piece_overhead(64));
  const HostSchedule bf16 = host_schedule(lens, 132, ov_bf16);
  const HostSchedule fp8 = host_schedule(lens, 132, ov_fp8);
  EXPECT_LT(fp8.max_part_pieces, bf16.max_part_pieces);
  EXPECT_LE((fp8.W - 1) / fp8.target + 1, 132);
}

TEST(MlaFp8Convert, QuerySplitFactorIsTheSmallestPowerOfTwoAbove) {
  // Form 3's s_hi = 2^e for every finite bf16 magnitude as the row's amax: amax <= 448 s_hi (the
  // codes never saturate), and the smallest such (amax > 224 s_hi) unless e is clamped at -122.
  for (uint32_t bits = 0; bits < 0x7F80; ++bits) {
    const int e = mla::q_hilo_exponent(bits);
    const double amax = ref::bf16_value(static_cast<uint16_t>(bits));
    ASSERT_LE(amax, std::ldexp(448.0, e)) << "amax bits 0x" << std::hex << bits;
    if (e > -122) {
      ASSERT_GT(amax, std::ldexp(448.0, e - 1)) << "amax bits 0x" << std::hex << bits;
    }
  }
}

TEST(MlaFp8Convert, QuerySplitHoldsEveryBf16Exactly) {
  // hi = e4m3(q / s_hi), lo = e4m3((q - hi s_hi) / s_lo), s_lo = s_hi / 16, in fp32 as the kernel
  // computes them (the host E4M3 rounding is the hardware's: test_quant), for amax values across
  // the range and every bf16 q of either sign up to amax: hi s_hi + lo s_lo == q wherever
  // |q| / s_hi >= 2^-6, else within 2^-14 s_hi (docs/tolerances.md).
  int exact = 0, small = 0;
  for (uint32_t abits = 0x0001; abits < 0x7F80; abits += 0x4F) {
    const int e = mla::q_hilo_exponent(abits);
    const float s_hi = std::ldexp(1.0f, e), inv_hi = std::ldexp(1.0f, -e);
    const float s_lo = std::ldexp(1.0f, e - 4), inv_lo = std::ldexp(1.0f, 4 - e);
    for (uint32_t qb = 0; qb <= abits; qb += 1 + (abits >> 12)) {
      for (const uint32_t sign : {0u, 0x8000u}) {
        const float q = ref::bf16_value(static_cast<uint16_t>(qb | sign));
        const float hi = rules::e4m3_value(ref::e4m3_encode(q * inv_hi));
        const float lo = rules::e4m3_value(ref::e4m3_encode((q - hi * s_hi) * inv_lo));
        const double back = static_cast<double>(hi) * s_hi + static_cast<double>(lo) * s_lo;
        if (std::fabs(q) * inv_hi >= std::ldexp(1.0f, -6)) {
          ASSERT_EQ(back, static_cast<double>(q))
              << "amax 0x" << std::hex << abits << " q 0x" << qb;
          ++exact;
        } else {
          ASSERT_LE(std::fabs(back - q), std::ldexp(static_cast<double>(s_hi), -14))
              << "amax 0x" << std::hex << abits << " q 0x" << qb;
          ++small;
        }
      }
    }
  }
  EXPECT_GT(exact, 100000);
  EXPECT_GT(small, 1000);
}

TEST(MlaFp8Convert, QueryExponentKeepsTheBlockInsideFp16) {
  // Every finite bf16 magnitude as the block's amax: scaled by 2^k it stays below 2^15 (fp16's
  // largest finite is 65504, and rounding to fp16 cannot cross 2^15) and reaches 2^14 unless k
  // is capped (amax below 2^-113).
  for (uint32_t bits = 0; bits < 0x7F80; ++bits) {
    const int k = mla::q_f16_exponent(bits);
    const double amax = ref::bf16_value(static_cast<uint16_t>(bits));
    const double scaled = std::ldexp(amax, k);
    ASSERT_LE(k, 127) << bits;
    ASSERT_LT(scaled, 32768.0) << "amax bits 0x" << std::hex << bits;
    if (amax >= std::ldexp(1.0, -113)) {
      ASSERT_GE(scaled, 16384.0) << "amax bits 0x" << std::hex << bits;
    }
  }
}

TEST(MlaReference, OneKeyGivesItsValueRow) {
  TinyCache tc(2);
  const std::vector<uint16_t> q = random_q(1, 2, 0.25f);
  const int32_t bt[1] = {1}, len[1] = {1};
  std::vector<double> out, lse;
  ref::mla_decode(q.data(), 1, 1, 2, tc.c, bt, 1, len, 0.1, &out, &lse);
  for (int h = 0; h < 2; ++h) {
    double dot = 0.0;
    for (int e = 0; e < kMlaHeadDim; ++e)
      dot += ref::bf16_value(q[h * kMlaHeadDim + e]) * ref::mla_cache_value(tc.c, 1, 0, e);
    EXPECT_NEAR(lse[h], 0.1 * dot, 1e-12);
    for (int d = 0; d < kMlaLatentDim; ++d)
      EXPECT_EQ(out[h * kMlaLatentDim + d], ref::mla_cache_value(tc.c, 1, 0, d));
  }
}

TEST(MlaReference, CausalAmongQueryTokensAndEmptyRows) {
  TinyCache tc(2);
  // s_q 2, L 1: token 0 sees no key (zeros, -inf), token 1 sees key 0. A second request of L 0.
  const std::vector<uint16_t> q = random_q(4, 1, 0.5f);
  const int32_t bt[2] = {0, 1}, len[2] = {1, 0};
  std::vector<double> out, lse;
  ref::mla_decode(q.data(), 2, 2, 1, tc.c, bt, 1, len, 0.3, &out, &lse);
  EXPECT_EQ(lse[0], -kInf);
  EXPECT_TRUE(std::isfinite(lse[1]));
  EXPECT_EQ(lse[2], -kInf);
  EXPECT_EQ(lse[3], -kInf);
  for (int d = 0; d < kMlaLatentDim; ++d) {
    EXPECT_EQ(out[d], 0.0);
    EXPECT_EQ(out[kMlaLatentDim + d], ref::mla_cache_value(tc.c, 0, 0, d));
    EXPECT_EQ(out[2 * kMlaLatentDim + d], 0.0);
  }
}

TEST(MlaReference, TwoEqualKeysAddLogTwo) {
  TinyCache tc(1);
  // Slots 0 and 13 of block 0 hold the same row ((0*7) % 13 == (13*576*7) % 13).
  std::vector<uint16_t> cache2 = tc.data;
  for (int e = 0; e < kMlaHeadDim; ++e) cache2[1 * kMlaHeadDim + e] = cache2[e];
  tc.c.data = cache2.data();
  const std::vector<uint16_t> q = random_q(1, 1, 0.125f);
  const int32_t bt[1] = {0}, len1[1] = {1}, len2[1] = {2};
  std::vector<double> o1, l1, o2, l2;
  ref::mla_decode(q.data(), 1, 1, 1, tc.c, bt, 1, len1, 0.2, &o1, &l1);
  ref::mla_decode(q.data(), 1, 1, 1, tc.c, bt, 1, len2, 0.2, &o2, &l2);
  EXPECT_NEAR(l2[0], l1[0] + std::log(2.0), 1e-12);
  for (int d = 0; d < kMlaLatentDim; ++d) EXPECT_NEAR(o2[d], o1[d], 1e-15);
}

TEST(MlaReference, BadBlockReadsZeroRowsBadLengthIsEmpty) {
  TinyCache tc(2);
  const std::vector<uint16_t> q = random_q(2, 1, 0.5f);
  const int32_t bt[2] = {7, 0}, len[2] = {1, 17};  // block 7 does not exist; 17 > 1 * 16
  std::vector<double> out, lse;
  ref::mla_decode(q.data(), 2, 1, 1, tc.c, bt, 1, len, 0.3, &out, &lse);
  EXPECT_EQ(lse[0], 0.0);  // one key of logit 0
  EXPECT_EQ(lse[1], -kInf);
  for (int d = 0; d < kMlaLatentDim; ++d) {
    EXPECT_EQ(out[d], 0.0);
    EXPECT_EQ(out[kMlaLatentDim + d], 0.0);
  }
}

TEST(MlaReference, CacheWriterRules) {
  const int64_t T = 3;
  std::vector<uint16_t> kv_c(T * 512), k_pe(T * 64);
  for (size_t i = 0; i < kv_c.size(); ++i) kv_c[i] = ref::bf16_bits(0.01f * (i % 97) - 0.3f);
  for (size_t i = 0; i < k_pe.size(); ++i) k_pe[i] = ref::bf16_bits(-0.02f * (i % 31) + 0.1f);
  const int64_t slots[3] = {5, -1, 16};
  ref::MlaHostCache c;
  c.num_blocks = 2;
  c.block_size = 16;
  c.stride_block = 16 * 576;
  c.stride_token = 576;
  c.k_scale = 0.01f;
  for (DType d : {DType::kBF16, DType::kE4M3}) {
    c.dtype = d;
    const size_t es = d == DType::kBF16 ? 2 : 1;
    std::vector<uint8_t> cache(2 * 16 * 576 * es, 0xAB);
    ref::mla_write_cache(kv_c.data(), 512, k_pe.data(), 64, slots, T, c, cache.data());
    for (int e = 0; e < kMlaHeadDim; ++e) {
      const uint16_t b0 = e < 512 ? kv_c[e] : k_pe[e - 512];
      const uint16_t b2 = e < 512 ? kv_c[2 * 512 + e] : k_pe[2 * 64 + e - 512];
      if (d == DType::kBF16) {
        const uint16_t* cc = reinterpret_cast<const uint16_t*>(cache.data());
        EXPECT_EQ(cc[5 * 576 + e], b0);
        EXPECT_EQ(cc[16 * 576 + e], b2);
      } else {
        EXPECT_EQ(cache[5 * 576 + e], ref::e4m3_encode(ref::bf16_value(b0) / 0.01f));
        EXPECT_EQ(cache[16 * 576 + e], ref::e4m3_encode(ref::bf16_value(b2) / 0.01f));
      }
    }
    // Token 1 (slot -1) is skipped; every other slot keeps its bytes.
    int64_t touched = 0;
    for (size_t i = 0; i < cache.size(); ++i) {
      const size_t slot = i / (576 * es);
      if (slot != 5 && slot != 16) touched += cache[i] != 0xAB;
    }
    EXPECT_EQ(touched, 0);
  }
}

// ---- the up-projection kernel's layout, emulated ------------------------------------------

/// The up-projection kernel's data movement and tensor-core fragments (up_proj.cu, through the lane
/// maps of up_proj.h) executed on the host with ldmatrix, ldmatrix.trans and mma.sync.m16n8k16
/// modelled from the PTX ISA: the 16 x 128 tile it assembles must be A . W for every row and
/// column, every chunk written once, and each ldmatrix phase's 8 rows in 8 distinct bank groups.
TEST(MlaUpProjLayout, EmulatedKernelProductEqualsTheReference) {
  using namespace mla::up;
  using mla::kLatent;
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<int> small(-8, 8);
  // Distinct small integers: every product and sum is exact in double.
  std::vector<double> A(kRows * kLatent), W(kLatent * mla::kVHead);
  for (auto& x : A) x = small(rng);
  for (auto& x : W) x = small(rng);
  // A in shared memory as the merge writes it: chunk (r, ch) = A[r][8 ch .. 8 ch + 8).
  std::vector<std::array<double, 8>> sa(kRows * kChunksA);
  std::vector<int> written(sa.size(), 0);
  for (int tid = 0; tid < kThreads; ++tid)
    for (int i = 0; i < 8; ++i) {
      const int r = merge_row(tid), ch = merge_chunk(tid, i);
      for (int e = 0; e < 8; ++e) sa[a_slot(r, ch)][e] = A[r * kLatent + 8 * ch + e];
      ++written[a_slot(r, ch)];
    }
  for (int x : written) ASSERT_EQ(x, 1) << "A chunks written once each";
  // Every stage of W as the copy lays it out.
  std::vector<std::vector<std::array<double, 8>>> sw(
      kSteps, std::vector<std::array<double, 8>>(kK * kChunksW));
  for (int st = 0; st < kSteps; ++st) {
    std::vector<int> w_written(kK * kChunksW, 0);
    for (int tid = 0; tid < kThreads; ++tid)
      for (int i = 0; i < kK * kChunksW / kThreads; ++i) {
        const int r = wcopy_row(tid, i), ch = wcopy_chunk(tid, i);
        for (int e = 0; e < 8; ++e)
          sw[st][w_slot(r, ch)][e] = W[(st * kK + r) * mla::kVHead + 8 * ch + e];
        ++w_written[w_slot(r, ch)];
      }
    for (int x : w_written) ASSERT_EQ(x, 1) << "W chunks written once each";
  }
  // ldmatrix.x4: matrix m's row j is the chunk lane 8 m + j addresses; without .trans, thread t
  // gets (row t / 4, columns 2 (t % 4) + {0, 1}) of matrix m in register m; with .trans, (rows
  // 2 (t % 4) + {0, 1}, column t / 4). Bank group of a chunk: its index mod 8 (rows are
  // multiples of 128 bytes).
  using Reg = std::array<double, 2>;
  auto ldsm = [](const std::vector<std::array<double, 8>>& mem, auto slot_of_lane, bool trans,
                 std::array<std::array<Reg, 4>, 32>* out) {
    for (int m = 0; m < 4; ++m) {
      std::vector<int> groups;
      for (int j = 0; j < 8; ++j) groups.push_back(slot_of_lane(8 * m + j) % 8);
      std::sort(groups.begin(), groups.end());
      EXPECT_EQ(std::unique(groups.begin(), groups.end()) - groups.begin(), 8)
          << "ldmatrix phase " << m << " has a bank conflict";
      for (int t = 0; t < 32; ++t)
        for (int e = 0; e < 2; ++e) {
          const int row = trans ? 2 * (t % 4) + e : t / 4;
          const int col = trans ? t / 4 : 2 * (t % 4) + e;
          (*out)[t][m][e] = mem[slot_of_lane(8 * m + row)][col];
        }
    }
  };
  // mma.m16n8k16 (row.col): a regs {a0a1, a2a3, a4a5, a6a7} hold (g, 2c + e), (g + 8, 2c + e),
  // (g, 2c + 8 + e), (g + 8, 2c + 8 + e); b regs {b0b1, b2b3} hold (k 2c + e, n g), (k 2c + 8 +
  // e, n g); d holds (g, 2c + e), (g + 8, 2c + e) (g = lane / 4, c = lane % 4).
  std::vector<double> tile(kRows * mla::kVHead, std::nan(""));
  for (int warp = 0; warp < kThreads / 32; ++warp) {
    std::array<std::array<std::array<double, 4>, 4>, 32> acc{};
    for (int st = 0; st < kSteps; ++st)
      for (int ks = 0; ks < kK / 16; ++ks) {
        std::array<std::array<Reg, 4>, 32> a{};
        ldsm(
            sa, [&](int lane) { return a_ldsm_slot(lane, st * (kK / 16) + ks); }, false, &a);
        for (int p = 0; p < 2; ++p) {
          std::array<std::array<Reg, 4>, 32> b{};
          ldsm(
              sw[st], [&](int lane) { return w_ldsm_slot(lane, ks, warp, p); }, true, &b);
          for (int half = 0; half < 2; ++half) {  // n8 tiles 2 p (b regs 0, 1), 2 p + 1 (2, 3)
            double Am[16][16], Bm[16][8];
            for (int t = 0; t < 32; ++t) {
              const int g = t / 4, c = t % 4;
              for (int e = 0; e < 2; ++e) {
                Am[g][2 * c + e] = a[t][0][e];
                Am[g + 8][2 * c + e] = a[t][1][e];
                Am[g][2 * c + 8 + e] = a[t][2][e];
                Am[g + 8][2 * c + 8 + e] = a[t][3][e];
                Bm[2 * c + e][g] = b[t][2 * half][e];
                Bm[2 * c + 8 + e][g] = b[t][2 * half + 1][e];
              }
            }
            for (int t = 0; t < 32; ++t)
              for (int e = 0; e < 4; ++e) {
                const int row = t / 4 + 8 * (e >> 1), col = 2 * (t % 4) + (e & 1);
                for (int k = 0; k < 16; ++k) acc[t][2 * p + half][e] += Am[row][k] * Bm[k][col];
              }
          }
        }
      }
    for (int lane = 0; lane < 32; ++lane)
      for (int q = 0; q < 4; ++q)
        for (int e = 0; e < 4; ++e)
          tile[acc_row(lane, e) * mla::kVHead + acc_col(warp, lane, q, e)] = acc[lane][q][e];
  }
  int64_t bad = 0;
  for (int r = 0; r < kRows; ++r)
    for (int j = 0; j < mla::kVHead; ++j) {
      double want = 0.0;
      for (int d = 0; d < kLatent; ++d) want += A[r * kLatent + d] * W[d * mla::kVHead + j];
      bad += tile[r * mla::kVHead + j] != want;  // NaN (never assembled) counts as wrong
    }
  EXPECT_EQ(bad, 0) << "tile values differ from A . W";
}

// ---- validation ---------------------------------------------------------------------------

char* fake(uintptr_t a) {
  return reinterpret_cast<char*>(a);
}

/// A structurally valid call: B = 3 requests, s_q 2, 16 heads, bf16 cache of 10 blocks of 64.
struct Call {
  MlaDecodeArgs a;
  MlaDecodeOptions opt;
  Call() {
    a.q = TensorRef::contiguous(fake(0x100000), DType::kBF16, {6, 16, 576});
    a.cache = TensorRef::contiguous(fake(0x200000), DType::kBF16, {10, 64, 576});
    a.block_table = TensorRef::contiguous(fake(0x300000), DType::kI32, {3, 8});
    a.seq_lens = TensorRef::contiguous(fake(0x400000), DType::kI32, {3});
    a.s_q = 2;
    a.softmax_scale = 0.07f;
    a.out.out = TensorRef::contiguous(fake(0x500000), DType::kBF16, {6, 16, 512});
    a.lse = TensorRef::contiguous(fake(0x600000), DType::kF32, {6, 16});
  }
  Status run() const { return mla_decode_can_implement(a, MlaWorkspace{fake(0x700000), 1}, opt); }
};

using test::expect_invalid_argument;

TEST(MlaValidation, Q) {
  {
    Call c;
    c.a.q = TensorRef::contiguous(fake(0x100000), DType::kBF16, {6, 16 * 576});
    expect_invalid_argument(c.run(), "q.rank");
  }
  {
    Call c;
    c.a.q.dtype = DType::kF16;
    expect_invalid_argument(c.run(), "q.dtype");
  }
  {
    Call c;
    c.a.q.dtype = DType::kE4M3;
    EXPECT_EQ(c.run().code(), StatusCode::kNotSupported);
  }
  {
    Call c;
    c.a.q = TensorRef::contiguous(fake(0x100000), DType::kBF16, {6, 16, 512});
    expect_invalid_argument(c.run(), "q.sizes[2]");
  }
  {
    Call c;
    c.a.q = TensorRef::contiguous(fake(0x100000), DType::kBF16, {6, 24, 576});
    expect_invalid_argument(c.run(), "q.sizes[1]", "16, 32, 64, 128");
  }
  {
    Call c;
    c.a.q.strides[2] = 2;
    expect_invalid_argument(c.run(), "q.strides[2]");
  }
  {
    Call c;
    c.a.q = TensorRef::strided(fake(0x100000), DType::kBF16, {6, 16, 576}, {16 * 580, 580, 1});
    expect_invalid_argument(c.run(), "q.strides[1]");
  }
  {
    Call c;
    c.a.q.data = fake(0x100008);
    expect_invalid_argument(c.run(), "q.data");
  }
}

TEST(MlaValidation, SqAndBatch) {
  {
    Call c;
    c.a.s_q = 3;
    expect_invalid_argument(c.run(), "s_q");
  }
  {
    Call c;
    c.a.q = TensorRef::contiguous(fake(0x100000), DType::kBF16, {5, 16, 576});
    expect_invalid_argument(c.run(), "q.sizes[0]", "multiple of s_q");
  }
}

TEST(MlaValidation, Cache) {
  {
    Call c;
    c.a.cache = TensorRef::contiguous(fake(0x200000), DType::kBF16, {640, 576});
    expect_invalid_argument(c.run(), "cache.rank");
  }
  {
    Call c;
    c.a.cache.dtype = DType::kF16;
    expect_invalid_argument(c.run(), "cache.dtype");
  }
  {
    Call c;
    c.a.cache = TensorRef::contiguous(fake(0x200000), DType::kBF16, {10, 64, 512});
    expect_invalid_argument(c.run(), "cache.sizes[2]");
  }
  {
    Call c;
    c.a.cache = TensorRef::contiguous(fake(0x200000), DType::kBF16, {10, 48, 576});
    expect_invalid_argument(c.run(), "cache.sizes[1]", "16, 32, 64, 128");
  }
  {
    Call c;
    c.a.cache = TensorRef::strided(fake(0x200000), DType::kBF16, {10, 64, 576}, {64 * 580, 580, 1});
    expect_invalid_argument(c.run(), "cache.strides[1]");
  }
  {
    Call c;
    c.a.cache = TensorRef::strided(fake(0x200000), DType::kBF16, {10, 64, 576}, {576, 576, 1});
    expect_invalid_argument(c.run(), "cache.strides[0]");
  }
  {
    Call c;
    c.a.cache.data = fake(0x200002);
    expect_invalid_argument(c.run(), "cache.data");
  }
  {
    Call c;
    c.a.cache.dtype = DType::kE4M3;
    expect_invalid_argument(c.run(), "k_scale", "e4m3");
  }
  {
    Call c;
    c.a.k_scale = reinterpret_cast<const float*>(0x800000);
    expect_invalid_argument(c.run(), "k_scale", "bf16");
  }
}

TEST(MlaValidation, BlockTableAndSeqLens) {
  {
    Call c;
    c.a.block_table.dtype = DType::kF32;
    expect_invalid_argument(c.run(), "block_table.dtype");
  }
  {
    Call c;
    c.a.block_table = TensorRef::contiguous(fake(0x300000), DType::kI32, {4, 8});
    expect_invalid_argument(c.run(), "block_table.sizes[0]");
  }
  {
    Call c;
    c.a.block_table = TensorRef::contiguous(fake(0x300000), DType::kI32, {24});
    expect_invalid_argument(c.run(), "block_table.rank");
  }
  {
    Call c;
    c.a.seq_lens.dtype = DType::kF32;
    expect_invalid_argument(c.run(), "seq_lens.dtype");
  }
  {
    Call c;
    c.a.seq_lens = TensorRef::contiguous(fake(0x400000), DType::kI32, {2});
    expect_invalid_argument(c.run(), "seq_lens.sizes[0]");
  }
}

TEST(MlaValidation, ScaleOutputLse) {
  for (float s : {0.0f, -1.0f, std::numeric_limits<float>::quiet_NaN(),
                  std::numeric_limits<float>::infinity()}) {
    Call c;
    c.a.softmax_scale = s;
    expect_invalid_argument(c.run(), "softmax_scale");
  }
  {
    Call c;
    c.a.out.out = TensorRef::contiguous(fake(0x500000), DType::kBF16, {6, 16, 256});
    expect_invalid_argument(c.run(), "out.sizes[1]");
  }
  {
    Call c;
    c.a.out.out =
        TensorRef::strided(fake(0x500000), DType::kBF16, {6, 16, 512}, {16 * 520, 520, 1});
    expect_invalid_argument(c.run(), "out.out.strides[1]");
  }
  {
    Call c;
    c.a.out.spec = QuantSpec::fp8_per_tensor();  // bf16 values, no scale
    expect_invalid_argument(c.run(), "out.dtype");
  }
  {
    Call c;
    c.a.lse = TensorRef::contiguous(fake(0x600000), DType::kF32, {6, 8});
    expect_invalid_argument(c.run(), "lse.sizes[1]");
  }
  {
    Call c;  // a quantized output needs the combine
    c.opt.split = MlaSplitMode::kNone;
    c.a.out.spec = QuantSpec::fp8_per_tensor();
    c.a.out.out = TensorRef::contiguous(fake(0x500000), DType::kE4M3, {6, 16 * 512});
    c.a.out.scale = reinterpret_cast<const float*>(0x800000);
    EXPECT_EQ(c.run().code(), StatusCode::kNotSupported);
  }
}

/// The call of Call with W_UV: o [6, 16 * 128] bf16.
Call up_call() {
  Call c;
  c.a.w_uv = TensorRef::contiguous(fake(0x900000), DType::kBF16, {16, 512, 128});
  c.a.out.out = TensorRef::contiguous(fake(0x500000), DType::kBF16, {6, 16, 128});
  return c;
}

TEST(MlaValidation, UpProjection) {
  {
    Call c = up_call();
    c.a.w_uv = TensorRef::contiguous(fake(0x900000), DType::kBF16, {16, 512 * 128});
    expect_invalid_argument(c.run(), "w_uv.rank");
  }
  {
    Call c = up_call();
    c.a.w_uv.dtype = DType::kF16;
    expect_invalid_argument(c.run(), "w_uv.dtype");
  }
  for (const auto& [n, d, j] :
       {std::tuple<int64_t, int64_t, int64_t>{32, 512, 128}, {16, 576, 128}, {16, 512, 64}}) {
    Call c = up_call();
    c.a.w_uv = TensorRef::contiguous(fake(0x900000), DType::kBF16, {n, d, j});
    expect_invalid_argument(c.run(), "w_uv.sizes", "[16, 512, 128]");
  }
  {
    Call c = up_call();
    c.a.w_uv.strides[2] = 2;
    expect_invalid_argument(c.run(), "w_uv.strides[2]");
  }
  {
    Call c = up_call();  // rows not 16-byte aligned
    c.a.w_uv =
        TensorRef::strided(fake(0x900000), DType::kBF16, {16, 512, 128}, {512 * 132, 132, 1});
    expect_invalid_argument(c.run(), "w_uv.strides[1]");
  }
  {
    Call c = up_call();  // heads overlapping
    c.a.w_uv =
        TensorRef::strided(fake(0x900000), DType::kBF16, {16, 512, 128}, {511 * 128, 128, 1});
    expect_invalid_argument(c.run(), "w_uv.strides[0]");
  }
  {
    Call c = up_call();
    c.a.w_uv.data = fake(0x900008);
    expect_invalid_argument(c.run(), "w_uv.data");
  }
  {
    Call c = up_call();  // o_latent's shape where o [T, N, 128] is written
    c.a.out.out = TensorRef::contiguous(fake(0x500000), DType::kBF16, {6, 16, 512});
    expect_invalid_argument(c.run(), "out.sizes[1]");
  }
  {
    Call c = up_call();  // the engine's rule is not one of the fused op's kinds
    c.a.out.spec = QuantSpec::fp8_per_token().with_rule(QuantRule::kEngine);
    c.a.out.out = TensorRef::contiguous(fake(0x500000), DType::kE4M3, {6, 16 * 128});
    c.a.out.scales = TensorRef::contiguous(fake(0x800000), DType::kF32, {6});
    const Status st = c.run();
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("mla_decode_up_proj"), std::string::npos) << st.to_string();
  }
  {
    Call c = up_call();  // the up-projection lives in the combine
    c.opt.split = MlaSplitMode::kNone;
    EXPECT_EQ(c.run().code(), StatusCode::kNotSupported);
  }
  // The output's kind (issue 14's bad input): values of the wrong dtype, NVFP4 without its
  // global scale, a scale buffer too small.
  {
    Call c = up_call();
    c.a.out.spec = QuantSpec::fp8_per_tensor();
    c.a.out.scale = reinterpret_cast<const float*>(0x800000);  // bf16 values for an FP8 kind
    expect_invalid_argument(c.run(), "out.dtype");
  }
  {
    Call c = up_call();
    c.a.out.spec = QuantSpec::nvfp4();
    c.a.out.out = TensorRef::contiguous(fake(0x500000), DType::kE2M1x2, {6, 16 * 64});
    c.a.out.scales = TensorRef::contiguous(fake(0x600000), DType::kE4M3, {128, 128});
    expect_invalid_argument(c.run(), "out.scale");
  }
  {
    Call c = up_call();
    c.a.out.spec = QuantSpec::fp8_per_group(128);
    c.a.out.out = TensorRef::contiguous(fake(0x500000), DType::kE4M3, {6, 16 * 128});
    c.a.out.scales = TensorRef::contiguous(fake(0x600000), DType::kF32, {6, 8});  // needs 16
    expect_invalid_argument(c.run(), "out.scales");
  }
}

/// A structurally valid mla_attention call: 8 token rows, 6 real, all decode (3 requests of 2).
struct AttnCall {
  MlaAttentionArgs a;
  MlaAttentionMetadata m;
  AttnCall() {
    a.q = TensorRef::contiguous(fake(0x100000), DType::kBF16, {8, 16, 576});
    a.kv_cache = TensorRef::contiguous(fake(0x200000), DType::kBF16, {10, 64, 576});
    a.w_uv = TensorRef::contiguous(fake(0x900000), DType::kBF16, {16, 512, 128});
    a.softmax_scale = 0.07f;
    a.output.spec = QuantSpec::fp8_per_tensor();
    a.output.out = TensorRef::contiguous(fake(0x500000), DType::kE4M3, {8, 16 * 128});
    a.output.scale = reinterpret_cast<const float*>(0x800000);
    m.num_actual_tokens = 6;
    m.num_decode_tokens = 6;
    m.decode_s_q = 2;
    m.block_table = TensorRef::contiguous(fake(0x300000), DType::kI32, {3, 8});
    m.seq_lens = TensorRef::contiguous(fake(0x400000), DType::kI32, {3});
  }
  Status run() const { return mla_attention(a, m, MlaWorkspace{fake(0x700000), 1}, nullptr); }
};

TEST(MlaValidation, AttentionOpContract) {
  {
    AttnCall c;
    c.m.num_actual_tokens = 9;
    expect_invalid_argument(c.run(), "metadata.num_actual_tokens", "num_tokens = 8");
  }
  {
    AttnCall c;
    c.m.num_decode_tokens = 7;
    expect_invalid_argument(c.run(), "metadata.num_decode_tokens");
  }
  {
    AttnCall c;  // prefill rows after the decode rows
    c.m.num_decode_tokens = 4;
    c.m.block_table = TensorRef::contiguous(fake(0x300000), DType::kI32, {2, 8});
    c.m.seq_lens = TensorRef::contiguous(fake(0x400000), DType::kI32, {2});
    const Status st = c.run();
    EXPECT_EQ(st.code(), StatusCode::kNotSupported);
    EXPECT_NE(st.message().find("prefill"), std::string::npos) << st.to_string();
  }
  {
    AttnCall c;
    c.a.w_uv = TensorRef{};
    expect_invalid_argument(c.run(), "w_uv");
  }
  {
    AttnCall c;  // the output must hold num_tokens rows
    c.a.output.out = TensorRef::contiguous(fake(0x500000), DType::kE4M3, {6, 16 * 128});
    expect_invalid_argument(c.run(), "out.sizes[0]");
  }
  {
    AttnCall c;  // column-major scales over 8 rows: the 6 real rows' scales are not a prefix
    c.a.output.spec = QuantSpec::fp8_per_group(128, ScaleLayout::kColMajor);
    c.a.output.scale = nullptr;
    c.a.output.scales = TensorRef::contiguous(fake(0x600000), DType::kF32, {16, 8});
    EXPECT_EQ(c.run().code(), StatusCode::kNotSupported);
    c.m.num_actual_tokens = c.m.num_decode_tokens = 8;  // every row real: fine up to the decode
    c.m.block_table = TensorRef::contiguous(fake(0x300000), DType::kI32, {4, 8});
    c.m.seq_lens = TensorRef::contiguous(fake(0x400000), DType::kI32, {4});
    EXPECT_NE(c.run().code(), StatusCode::kNotSupported);
  }
  {
    AttnCall c;  // kv_c without k_pe
    c.a.kv_c = TensorRef::contiguous(fake(0xA00000), DType::kBF16, {8, 512});
    expect_invalid_argument(c.run(), "kv_c / k_pe");
    c.a.k_pe = TensorRef::contiguous(fake(0xB00000), DType::kBF16, {8, 64});
    expect_invalid_argument(c.run(), "metadata.slot_mapping");
    c.a.k_pe = TensorRef::contiguous(fake(0xB00000), DType::kBF16, {6, 64});
    expect_invalid_argument(c.run(), "k_pe.sizes");
  }
  {
    AttnCall c;  // the decode's own checks run before anything (the cache write) is launched
    c.m.block_table = TensorRef::contiguous(fake(0x300000), DType::kI32, {4, 8});
    c.a.kv_c = TensorRef::contiguous(fake(0xA00000), DType::kBF16, {8, 512});
    c.a.k_pe = TensorRef::contiguous(fake(0xB00000), DType::kBF16, {8, 64});
    c.m.slot_mapping = reinterpret_cast<const int64_t*>(0xC00000);
    expect_invalid_argument(c.run(), "block_table.sizes[0]");
  }
  {
    AttnCall c;  // the engine's rule is not a kind of the fused op
    c.a.output.spec = QuantSpec::nvfp4().with_rule(QuantRule::kEngine);
    c.a.output.out = TensorRef::contiguous(fake(0x500000), DType::kE2M1x2, {8, 16 * 64});
    c.a.output.scales = TensorRef::contiguous(fake(0x600000), DType::kE4M3, {128, 128});
    const Status st = c.run();
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("mla_decode_up_proj"), std::string::npos) << st.to_string();
  }
}

TEST(MlaReference, UpProjectionIsThePerHeadProduct) {
  // T = 2, N = 16: o_latent row (t, n) is e_d at d = (t + n) % 512 scaled by (t + 1); W_UV[n]
  // row d is j + n (exact in bf16): o[t, n, j] = (t + 1) * (j + n); with the bf16 operand, a
  // latent value 1 + 2^-10 rounds to 1.
  const int64_t T = 2, N = 16;
  std::vector<double> lat(T * N * 512, 0.0);
  std::vector<uint16_t> w(N * 512 * 128);
  for (int64_t n = 0; n < N; ++n)
    for (int d = 0; d < 512; ++d)
      for (int j = 0; j < 128; ++j)
        w[(n * 512 + d) * 128 + j] = ref::bf16_bits(static_cast<float>(j + n));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n)
      lat[(t * N + n) * 512 + (t + n) % 512] = (t + 1) * (1 + 0x1p-10);
  std::vector<double> exact, rounded;
  ref::mla_up_proj(lat, w.data(), T, N, false, &exact);
  ref::mla_up_proj(lat, w.data(), T, N, true, &rounded);
  ASSERT_EQ(exact.size(), static_cast<size_t>(T * N * 128));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n)
      for (int j = 0; j < 128; ++j) {
        const size_t i = (t * N + n) * 128 + j;
        EXPECT_EQ(rounded[i], static_cast<double>((t + 1) * (j + n)));
        EXPECT_EQ(exact[i], (t + 1) * (1 + 0x1p-10) * (j + n));
      }
}

TEST(MlaValidation, EmptyBatchIsANoOp) {
  Call c;
  c.a.q = TensorRef::contiguous(fake(0x100000), DType::kBF16, {0, 16, 576});
  c.a.block_table = TensorRef::contiguous(fake(0x300000), DType::kI32, {0, 8});
  c.a.seq_lens = TensorRef::contiguous(fake(0x400000), DType::kI32, {0});
  c.a.out.out = TensorRef::contiguous(fake(0x500000), DType::kBF16, {0, 16, 512});
  c.a.lse = TensorRef::contiguous(fake(0x600000), DType::kF32, {0, 16});
  EXPECT_TRUE(mla_decode(c.a, MlaWorkspace{}, {}, nullptr).ok());
}

TEST(MlaValidation, ScheduleReuse) {
  Call c;
  // No MlaSchedule to fill, or an invalid call: rejected before anything is launched.
  expect_invalid_argument(
      mla_decode_schedule(c.a, MlaWorkspace{fake(0x700000), 1}, {}, nullptr, nullptr), "schedule");
  MlaSchedule s;
  Call bad;
  bad.a.s_q = 3;
  expect_invalid_argument(
      mla_decode_schedule(bad.a, MlaWorkspace{fake(0x700000), 1}, {}, &s, nullptr), "s_q");
  EXPECT_EQ(s.ws, nullptr) << "a failed call must leave the schedule as it was";
  // An empty batch (no device needed): the schedule names its workspace and is reused on it
  // only; another batch is rejected.
  c.a.q = TensorRef::contiguous(fake(0x100000), DType::kBF16, {0, 16, 576});
  c.a.block_table = TensorRef::contiguous(fake(0x300000), DType::kI32, {0, 8});
  c.a.seq_lens = TensorRef::contiguous(fake(0x400000), DType::kI32, {0});
  c.a.out.out = TensorRef::contiguous(fake(0x500000), DType::kBF16, {0, 16, 512});
  c.a.lse = TensorRef::contiguous(fake(0x600000), DType::kF32, {0, 16});
  const MlaWorkspace ws{fake(0x700000), 256};
  ASSERT_TRUE(mla_decode_schedule(c.a, ws, {}, &s, nullptr).ok());
  EXPECT_EQ(s.ws, ws.data);
  EXPECT_EQ(s.batch, 0);
  MlaDecodeOptions opt;
  opt.schedule = &s;
  EXPECT_TRUE(mla_decode(c.a, ws, opt, nullptr).ok());
  expect_invalid_argument(mla_decode(c.a, MlaWorkspace{fake(0x800000), 256}, opt, nullptr),
                          "opt.schedule");
  MlaSchedule other = s;
  other.batch = 3;
  opt.schedule = &other;
  expect_invalid_argument(mla_decode(c.a, ws, opt, nullptr), "opt.schedule");
}

TEST(MlaValidation, CacheWriter) {
  const auto base = [] {
    MlaCacheWriteArgs a;
    a.kv_c = TensorRef::contiguous(fake(0x100000), DType::kBF16, {4, 512});
    a.k_pe = TensorRef::contiguous(fake(0x200000), DType::kBF16, {4, 64});
    a.slot_mapping = reinterpret_cast<const int64_t*>(0x300000);
    a.cache = TensorRef::contiguous(fake(0x400000), DType::kE4M3, {3, 16, 576});
    a.k_scale = reinterpret_cast<const float*>(0x500000);
    return a;
  };
  {
    auto a = base();
    a.kv_c.dtype = DType::kF16;
    expect_invalid_argument(mla_write_cache(a, nullptr), "kv_c.dtype");
  }
  {
    auto a = base();
    a.kv_c = TensorRef::contiguous(fake(0x100000), DType::kBF16, {4, 576});
    expect_invalid_argument(mla_write_cache(a, nullptr), "kv_c.sizes[1]");
  }
  {
    auto a = base();
    a.k_pe = TensorRef::contiguous(fake(0x200000), DType::kBF16, {3, 64});
    expect_invalid_argument(mla_write_cache(a, nullptr), "k_pe.sizes[0]");
  }
  {
    auto a = base();
    a.cache = TensorRef::contiguous(fake(0x400000), DType::kE4M3, {3, 8, 576});
    expect_invalid_argument(mla_write_cache(a, nullptr), "cache.sizes[1]");
  }
  {
    auto a = base();
    a.k_scale = nullptr;
    expect_invalid_argument(mla_write_cache(a, nullptr), "k_scale");
  }
  {
    auto a = base();
    a.cache.dtype = DType::kBF16;
    expect_invalid_argument(mla_write_cache(a, nullptr), "k_scale");
  }
  {
    auto a = base();
    a.slot_mapping = nullptr;
    expect_invalid_argument(mla_write_cache(a, nullptr), "slot_mapping");
  }
}

}  // namespace
}  // namespace qfuse
