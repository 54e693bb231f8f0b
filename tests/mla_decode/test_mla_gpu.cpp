// mla_decode and mla_write_cache on the GPU against the fp64 host references (docs/tolerances.md):
// seq lens {1, 63, 64, 65, 1000, 4097} in one batch, s_q {1, 2, 4}, heads {16, 128}, block sizes
// {16, 64}, shuffled block tables with garbage in unused entries, NaN in the cache slots past each
// sequence, bf16 and e4m3 caches (k_scale 0.037), padded q / layer-sliced cache views; every
// kernel (tensor-core, CUDA-core) and split mode (device scheduler + combine, one block per
// request). Outputs are poisoned; rows past T must stay poisoned. Also: CUDA-graph replay equals
// eager, device-side error flags, a quantized output through the combine, E4M3 subnormals, the
// cache writer byte for byte.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/compare.h"
#include "common/gpu.h"
#include "mla_decode/launch.h"
#include "mla_decode/mla_testing.h"
#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"

namespace qfuse::test {
namespace {

struct Variant {
  MlaKernel kernel;
  MlaSplitMode split;
  const char* name;
};
constexpr Variant kTcSplit{MlaKernel::kTensorCore, MlaSplitMode::kAuto, "tensor-core split"};
constexpr Variant kTcWhole{MlaKernel::kTensorCore, MlaSplitMode::kNone, "tensor-core whole"};
constexpr Variant kSimpleSplit{MlaKernel::kSimple, MlaSplitMode::kAuto, "simple split"};
constexpr Variant kSimpleWhole{MlaKernel::kSimple, MlaSplitMode::kNone, "simple whole"};

/// BF16 cache: bf16 P and bf16 output rounding (2^-9 each) over fp32 accumulation; FP8: the same
/// over the dequantized cache (the dequantization is exact). docs/tolerances.md.
double tolerance(DType cache) {
  return cache == DType::kBF16 ? 1e-2 : 4e-2;
}

struct RunResult {
  Status status;
  Status device_check;
  std::vector<uint16_t> out;  // [T + kExtraRows, N * 512]
  std::vector<float> lse;     // [T, N + kLsePad]
  int64_t ld = 0;
  int one_piece = -1;  // the schedule's header[kHdrOnePiece] (split mode)
};
constexpr int64_t kExtraRows = 3;
constexpr int64_t kLsePad = 5;

MlaDecodeOptions options(const Variant& v) {
  MlaDecodeOptions opt;
  opt.kernel = v.kernel;
  opt.split = v.split;
  return opt;
}

/// One call of mla_decode with options `opt` on workspace `ws` (poisoned outputs; see run).
RunResult run_on(const MlaProblem& p, const MlaDecodeOptions& opt, const MlaWorkspace& ws,
                 cudaStream_t stream = nullptr, int64_t ld_pad = 0) {
  RunResult r;
  r.ld = p.N * kMlaLatentDim + ld_pad;
  DeviceBuffer out((p.T + kExtraRows) * r.ld * 2);
  out.fill(kPoison);
  DeviceBuffer lse(p.T * (p.N + kLsePad) * 4);
  lse.fill(kPoison);
  MlaDecodeArgs a = p.args();
  a.out.out = TensorRef::strided(out.get(), DType::kBF16, {p.T, p.N, kMlaLatentDim},
                                 {r.ld, kMlaLatentDim, 1});
  a.lse = TensorRef::strided(lse.get(), DType::kF32, {p.T, p.N}, {p.N + kLsePad, 1});
  r.status = mla_decode(a, ws, opt, stream);
  if (!r.status.ok()) return r;
  if (cudaStreamSynchronize(stream) != cudaSuccess) {
    r.status = Status(StatusCode::kCudaError, cudaGetErrorString(cudaGetLastError()));
    return r;
  }
  r.device_check = mla_decode_check(ws, stream);
  if (cudaMemcpy(&r.one_piece, static_cast<const int*>(ws.data) + mla::kHdrOnePiece, 4,
                 cudaMemcpyDeviceToHost) != cudaSuccess)
    r.status = Status(StatusCode::kCudaError, "reading the schedule's header");
  const std::vector<uint8_t> ob = out.download();
  r.out.resize(ob.size() / 2);
  std::memcpy(r.out.data(), ob.data(), ob.size());
  const std::vector<uint8_t> lb = lse.download();
  r.lse.resize(lb.size() / 4);
  std::memcpy(r.lse.data(), lb.data(), lb.size());
  return r;
}

/// ld_pad: elements added to the output's token stride (1: every other token row starts at an
/// odd element, so 4-byte stores of a value pair are misaligned there).
RunResult run(const MlaProblem& p, const Variant& v, cudaStream_t stream = nullptr,
              int64_t ld_pad = 0) {
  const MlaDecodeOptions opt = options(v);
  size_t bytes = 0;
  RunResult r;
  r.status = mla_decode_workspace_size(p.B, p.c.s_q, static_cast<int>(p.N), opt, &bytes);
  if (!r.status.ok()) return r;
  DeviceBuffer ws(bytes);
  ws.fill(kPoison);
  return run_on(p, opt, MlaWorkspace{ws.get(), bytes}, stream, ld_pad);
}

/// Checks one run against the problem's reference.
void check_run(const MlaProblem& p, const RunResult& r, const Variant& v,
               bool expect_clean = true) {
  SCOPED_TRACE(std::string(v.name) + " " + describe(p.c));
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  if (expect_clean) {
    EXPECT_TRUE(r.device_check.ok()) << r.device_check.to_string();
  }
  const uint16_t poison = static_cast<uint16_t>(kPoison) * 0x101;
  int64_t unwritten = 0, extra_touched = 0;
  const int64_t width = p.N * kMlaLatentDim;  // r.ld - width: padding, never written
  for (int64_t t = 0; t < p.T + kExtraRows; ++t)
    for (int64_t c = 0; c < r.ld; ++c) {
      const bool is_poison = r.out[t * r.ld + c] == poison;
      if (t < p.T && c < width) {
        unwritten += is_poison;
      } else {
        extra_touched += !is_poison;
      }
    }
  EXPECT_EQ(unwritten, 0) << "output values left unwritten";
  EXPECT_EQ(extra_touched, 0) << "values written past row T or into a row's padding";
  const MlaError e = compare_bf16(r.out, r.ld, p);
  const double tol = tolerance(p.c.cache);
  EXPECT_EQ(e.nonfinite, 0);
  EXPECT_EQ(e.bad_zero_rows, 0) << "rows without a visible key must be zeros";
  EXPECT_LE(e.rel_l2, tol) << "relative L2 error";
  EXPECT_LE(e.worst_row, 3 * tol) << "worst row's relative L2 error";
  std::string first;
  EXPECT_EQ(lse_mismatches(r.lse, p.N + kLsePad, p, &first), 0)
      << "lse mismatches, first: " << first;
  std::printf("[ mla      ] %-20s %-60s rel_l2 %.2e worst row %.2e\n", v.name,
              describe(p.c).c_str(), e.rel_l2, e.worst_row);
}

/// Runs f once with each form of the FP8-cache tensor-core kernel (16 rows per block: one
/// consumer warpgroup, two taking alternate tiles, or those two with the QK on E4M3 products;
/// 64 rows or more: the swapped form at 32 rows per block, or the wide form converting tiles to
/// bf16), then restores the process's settings.
template <class F>
void each_fp8_form(F&& f) {
  const int saved = mla::fp8_form();
  const bool saved_wide = mla::fp8_wide();
  const struct {
    int form;
    bool wide;
  } forms[] = {{1, false}, {2, false}, {3, false}, {2, true}};
  for (const auto& fm : forms) {
    mla::set_fp8_form(fm.form);
    mla::set_fp8_wide(fm.wide);
    SCOPED_TRACE("FP8 kernel form " + std::to_string(fm.form) + (fm.wide ? ", wide" : ""));
    f();
  }
  mla::set_fp8_form(saved);
  mla::set_fp8_wide(saved_wide);
}

/// The bf16 wide forms the tests run: both (1, the default; 2, the pair form), or only the first
/// where QFUSE_TEST_WIDE_FORMS=1 (scripts/gpu.sh's sanitizer stage: racecheck reports the pair
/// form's named-barrier hand-overs, bench/NOTES.md M17).
std::vector<int> wide_forms() {
  const char* env = std::getenv("QFUSE_TEST_WIDE_FORMS");
  if (env != nullptr && std::string(env) == "1") return {1};
  return {1, 2};
}

/// Runs f once with each form of the tensor-core kernel that serves the problem: an FP8 cache's
/// (each_fp8_form); a bf16 cache with 64 rows or more, the wide forms (wide_forms()); else with
/// each stage release of the 16 / 32-row consumer (0, after the QK; 1, adaptive, the default; 2,
/// always early).
template <class F>
void each_form(const MlaProblem& p, F&& f) {
  if (p.c.cache == DType::kE4M3) return each_fp8_form(f);
  if (p.c.heads * p.c.s_q < 64) {
    const int saved = mla::bf16_release();
    for (const int mode : {0, 1, 2}) {
      mla::set_bf16_release(mode);
      SCOPED_TRACE("bf16 stage release " + std::to_string(mode));
      f();
    }
    mla::set_bf16_release(saved);
    return;
  }
  const int saved = mla::wide_form();
  for (const int form : wide_forms()) {
    mla::set_wide_form(form);
    SCOPED_TRACE("bf16 wide form " + std::to_string(form));
    f();
  }
  mla::set_wide_form(saved);
}

class MlaMatrix : public ::testing::TestWithParam<MlaCase> {};

TEST_P(MlaMatrix, AgainstReference) {
  QFUSE_REQUIRE_GPU();
  MlaProblem p = make_problem(GetParam());
  p.compute_reference();
  check_run(p, run(p, kSimpleSplit), kSimpleSplit);
  const auto tensor_core = [&] {
    for (const Variant& v : {kTcSplit, kTcWhole}) check_run(p, run(p, v), v);
  };
  each_form(p, tensor_core);
}

std::vector<MlaCase> matrix() {
  std::vector<MlaCase> cases;
  uint64_t seed = 1;
  // 16 heads: every s_q x block size x cache dtype; half of them through strided views.
  for (int s_q : {1, 2, 4})
    for (int bs : {16, 64})
      for (DType d : {DType::kBF16, DType::kE4M3}) {
        MlaCase c;
        c.heads = 16;
        c.s_q = s_q;
        c.block_size = bs;
        c.cache = d;
        c.strided = (s_q + bs / 16) % 2 == 0;
        c.seed = seed++;
        cases.push_back(c);
      }
  // 128 heads: each s_q, both block sizes and cache dtypes among them.
  const struct {
    int s_q, bs;
    DType d;
    bool strided;
  } big[] = {{1, 64, DType::kBF16, false},
             {2, 16, DType::kE4M3, true},
             {4, 64, DType::kE4M3, false},
             {2, 64, DType::kBF16, true}};
  for (const auto& b : big) {
    MlaCase c;
    c.heads = 128;
    c.s_q = b.s_q;
    c.block_size = b.bs;
    c.cache = b.d;
    c.strided = b.strided;
    c.seed = seed++;
    cases.push_back(c);
  }
  // 32 and 64 heads, block sizes 32 and 128, an empty request, requests shorter than s_q.
  MlaCase c;
  c.heads = 32;
  c.s_q = 4;
  c.block_size = 32;
  c.lens = {0, 3, 1, 130, 700};
  c.seed = seed++;
  cases.push_back(c);
  c.heads = 64;
  c.s_q = 1;
  c.block_size = 128;
  c.cache = DType::kE4M3;
  c.lens = {5, 0, 2000, 129};
  c.seed = seed++;
  cases.push_back(c);
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Cases, MlaMatrix, ::testing::ValuesIn(matrix()),
                         [](const ::testing::TestParamInfo<MlaCase>& info) {
                           const MlaCase& c = info.param;
                           return "N" + std::to_string(c.heads) + "_sq" + std::to_string(c.s_q) +
                                  "_bs" + std::to_string(c.block_size) + "_" +
                                  (c.cache == DType::kBF16 ? "bf16" : "fp8") +
                                  (c.strided ? "_strided" : "") + "_" + std::to_string(info.index);
                         });

TEST(MlaDecodeGpu, SimpleWholeRequests) {
  QFUSE_REQUIRE_GPU();
  MlaCase c;
  c.s_q = 2;
  c.cache = DType::kE4M3;
  MlaProblem p = make_problem(c);
  p.compute_reference();
  check_run(p, run(p, kSimpleWhole), kSimpleWhole);
}

TEST(MlaDecodeGpu, OddOutputRowStrideGivesTheSameBytes) {
  // The epilogues store a row's value pairs with 4-byte stores where the row is 4-byte aligned
  // (the FP8 forms' 16-value runs with 16-byte stores where it is 16-byte aligned) and with
  // 2-byte stores where it is not (validation asks 2-byte alignment only): an output whose
  // token stride is odd (every other row misaligned, 7 of 8 for the runs) gets the same bytes as
  // the aligned one, through every tensor-core form (16 rows; 64 rows: both bf16 wide forms, the
  // FP8 forms) and both split modes.
  QFUSE_REQUIRE_GPU();
  for (const int heads : {16, 128})
    for (const DType cache : {DType::kBF16, DType::kE4M3}) {
      MlaCase c;
      c.heads = heads;
      c.s_q = 2;
      c.cache = cache;
      c.lens = {1, 65, 700, 2100};
      c.seed = 77 + heads;
      MlaProblem p = make_problem(c);
      p.compute_reference();
      each_form(p, [&] {
        for (const Variant& v : {kTcSplit, kTcWhole}) {
          SCOPED_TRACE(std::string(v.name) + " " + describe(p.c));
          const RunResult aligned = run(p, v), odd = run(p, v, nullptr, 1);
          check_run(p, odd, v);
          ASSERT_TRUE(aligned.status.ok()) << aligned.status.to_string();
          int64_t differ = 0;
          for (int64_t t = 0; t < p.T; ++t)
            for (int64_t k = 0; k < p.N * kMlaLatentDim; ++k)
              differ += aligned.out[t * aligned.ld + k] != odd.out[t * odd.ld + k];
          EXPECT_EQ(differ, 0) << "values differ between the aligned and the odd stride";
        }
      });
    }
}

void graph_replay_equals_eager(int heads);

TEST(MlaDecodeGpu, GraphReplayEqualsEager) {
  QFUSE_REQUIRE_GPU();
  for (const int heads : {16, 128})
    for (const int form : wide_forms()) {
      if (heads == 16 && form == 2) continue;  // (the wide forms serve 64 rows and more)
      const int saved = mla::wide_form();
      mla::set_wide_form(form);
      SCOPED_TRACE(std::to_string(heads) + " heads, wide form " + std::to_string(form));
      graph_replay_equals_eager(heads);
      mla::set_wide_form(saved);
    }
}

void graph_replay_equals_eager(int heads) {
  MlaCase c;
  c.heads = heads;
  c.s_q = 2;
  c.lens = {1, 65, 1000, 3000};
  MlaProblem p = make_problem(c);
  for (const Variant& v : {kTcSplit, kTcWhole}) {
    SCOPED_TRACE(v.name);
    const RunResult eager = run(p, v);
    ASSERT_TRUE(eager.status.ok()) << eager.status.to_string();
    // The same call captured in a graph (outputs and workspace poisoned again), replayed twice.
    const int64_t ld = p.N * kMlaLatentDim;
    DeviceBuffer out((p.T + kExtraRows) * ld * 2), lse(p.T * (p.N + kLsePad) * 4);
    out.fill(kPoison);
    lse.fill(kPoison);
    MlaDecodeOptions opt;
    opt.kernel = v.kernel;
    opt.split = v.split;
    size_t bytes = 0;
    ASSERT_TRUE(mla_decode_workspace_size(p.B, c.s_q, c.heads, opt, &bytes).ok());
    DeviceBuffer ws(bytes);
    ws.fill(kPoison);
    MlaDecodeArgs a = p.args();
    a.out.out = TensorRef::strided(out.get(), DType::kBF16, {p.T, p.N, kMlaLatentDim},
                                   {ld, kMlaLatentDim, 1});
    a.lse = TensorRef::strided(lse.get(), DType::kF32, {p.T, p.N}, {p.N + kLsePad, 1});
    const CapturedGraph g([&](cudaStream_t s) {
      return mla_decode(a, MlaWorkspace{ws.get(), bytes}, opt, s);
    });
    ASSERT_TRUE(g.status().ok()) << g.status().to_string();
    QFUSE_CUDA_OK(g.replay(2));
    const std::vector<uint8_t> ob = out.download(), lb = lse.download();
    EXPECT_EQ(std::memcmp(ob.data(), eager.out.data(), ob.size()), 0) << "graph output != eager";
    EXPECT_EQ(std::memcmp(lb.data(), eager.lse.data(), lb.size()), 0) << "graph lse != eager";
  }
}

TEST(MlaDecodeGpu, BadBlockIdIsFlaggedAndReadsZeros) {
  QFUSE_REQUIRE_GPU();
  // 16 heads (the swapped form) and 128 (64 rows a block: both wide forms).
  for (const int heads : {16, 128}) {
    MlaCase c;
    c.heads = heads;
    c.lens = {70, 1000, 300};
    MlaProblem p = make_problem(c);
    p.block_table[1 * p.max_blocks + 3] = static_cast<int32_t>(p.num_blocks + 3);  // tokens 192..
    p.block_table[2 * p.max_blocks + 0] = -2;
    p.d_bt.upload(p.block_table.data(), p.block_table.size() * 4);
    p.compute_reference();  // the reference reads such blocks as zero rows too
    SCOPED_TRACE(std::to_string(heads) + " heads");
    each_form(p, [&] {
      for (const Variant& v : {kTcSplit, kTcWhole, kSimpleSplit}) {
        const RunResult r = run(p, v);
        check_run(p, r, v, /*expect_clean=*/false);
        EXPECT_EQ(r.device_check.code(), StatusCode::kInvalidArgument) << v.name;
        EXPECT_NE(r.device_check.message().find("block_table"), std::string::npos)
            << r.device_check.to_string();
      }
    });
  }
}

TEST(MlaDecodeGpu, BadSeqLenIsFlaggedAndEmpty) {
  QFUSE_REQUIRE_GPU();
  MlaCase c;
  c.lens = {70, 100, 300};
  MlaProblem p = make_problem(c);
  p.lens[0] = static_cast<int32_t>(p.max_blocks * c.block_size + 1);
  p.lens[2] = -5;
  p.d_lens.upload(p.lens.data(), p.lens.size() * 4);
  p.compute_reference();
  for (const Variant& v : {kTcSplit, kTcWhole, kSimpleSplit}) {
    const RunResult r = run(p, v);
    check_run(p, r, v, /*expect_clean=*/false);
    EXPECT_NE(r.device_check.message().find("seq_len beyond"), std::string::npos)
        << r.device_check.to_string();
    EXPECT_NE(r.device_check.message().find("negative seq_len"), std::string::npos)
        << r.device_check.to_string();
  }
}

TEST(MlaDecodeGpu, OnePiecePerRequestIsWrittenByTheDecodeKernel) {
  QFUSE_REQUIRE_GPU();
  // Equal lengths and as many requests as parts (16 rows: one row block, a part per SM): the
  // schedule leaves each request one piece, so with a plain bf16 output the decode kernel writes
  // it and the combine skips (DecodeParams::direct). The workspace is poisoned: a combine that
  // ran anyway would merge poison over the output. The same through the partials and the combine
  // (direct off) must agree with the reference as well, and a batch with one request more (one
  // split request) must go through them.
  int sms = 0;
  QFUSE_CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const bool saved = mla::direct_output();
  for (DType cache : {DType::kBF16, DType::kE4M3})
    for (const int extra : {0, 1}) {
      MlaCase c;
      c.cache = cache;
      c.lens.assign(static_cast<size_t>(sms + extra), 200);
      c.seed = 31 + extra;
      MlaProblem p = make_problem(c);
      p.compute_reference();
      for (const bool direct : {true, false}) {
        mla::set_direct_output(direct);
        SCOPED_TRACE(std::string(direct ? "direct" : "partials") + (extra ? ", one more" : ""));
        for (const Variant& v : {kTcSplit, kSimpleSplit}) {
          const RunResult r = run(p, v);
          check_run(p, r, v);
          EXPECT_EQ(r.one_piece, extra == 0 ? 1 : 0) << v.name;
        }
      }
    }
  mla::set_direct_output(saved);
}

TEST(MlaDecodeGpu, Fp8SubnormalCodes) {
  QFUSE_REQUIRE_GPU();
  // Every cache value an E4M3 subnormal (exponent field 0): a dequantization that flushed them
  // would give zeros (k_scale 64: values 64 * m * 2^-9, m in 1..7). 16 heads (16 rows a block)
  // and 64 (the wide form's bf16 conversion goes through bf16 subnormals).
  for (const int heads : {16, 64}) {
    MlaCase c;
    c.cache = DType::kE4M3;
    c.k_scale = 64.0f;
    c.heads = heads;
    c.lens = {1, 65, 700};
    MlaProblem p = make_problem(c);
    std::mt19937 rng(5);
    for (int64_t i = 0; i < static_cast<int64_t>(p.cache_bytes.size()); ++i)
      if (p.cache_bytes[i] != 0x7F)
        p.cache_bytes[i] = static_cast<uint8_t>((rng() % 7 + 1) | (rng() & 0x80));
    p.d_cache.upload(p.cache_bytes.data(), p.cache_bytes.size());
    p.compute_reference();
    SCOPED_TRACE(std::to_string(heads) + " heads");
    each_fp8_form([&] {
      for (const Variant& v : {kTcSplit, kTcWhole}) check_run(p, run(p, v), v);
    });
  }
}

TEST(MlaDecodeGpu, Fp8QueryMagnitudesOutsideFp16) {
  QFUSE_REQUIRE_GPU();
  // The FP8-cache consumer multiplies in fp16, q times a power of two chosen per block and piece
  // (mainloop_fp8.cuh). q scaled by 2^40 (far above fp16's 65504) or by 2^-40 (far below its
  // smallest normal), with the softmax scale divided by the same factor, gives the same scores,
  // hence the reference's output; without the per-block scaling the first overflows to inf and
  // the second flushes to zero. 16 heads (16 rows a block) and 128 heads with s_q 2 (32 rows).
  for (const int e : {40, -40}) {
    MlaCase c;
    c.cache = DType::kE4M3;
    c.lens = {1, 65, 700};
    c.heads = e > 0 ? 16 : 128;
    c.s_q = e > 0 ? 1 : 2;
    c.seed = 11 + (e > 0);
    MlaProblem p = make_problem(c);
    ASSERT_FALSE(c.strided);
    for (uint16_t& x : p.q) x = ref::bf16_bits(std::ldexp(ref::bf16_value(x), e));  // exact
    p.softmax_scale = std::ldexp(p.softmax_scale, -e);
    p.d_q.upload(p.q.data(), p.q.size() * 2);
    p.compute_reference();
    SCOPED_TRACE("q times 2^" + std::to_string(e));
    each_fp8_form([&] {
      for (const Variant& v : {kTcSplit, kTcWhole}) check_run(p, run(p, v), v);
    });
  }
}

/// How many (query row, head) columns meet, past their first tile, a tile whose largest score
/// exceeds the largest of every earlier tile by more than 8 (log2 units): tiles on which form 3's
/// one-barrier softmax must fall back (at least these: a consumer's running maximum covers only
/// its own tiles of its piece, never more than the whole prefix).
int64_t score_jumps(const MlaProblem& p) {
  const double f = static_cast<double>(p.softmax_scale) * p.c.k_scale * 1.4426950408889634;
  const int64_t bs = p.c.block_size;
  int64_t jumps = 0;
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t i = 0; i < p.c.s_q; ++i) {
      const int64_t t = b * p.c.s_q + i, limit = p.lens[b] - p.c.s_q + i + 1;
      for (int64_t h = 0; h < p.N; ++h) {
        const uint16_t* q = &p.q[(t * p.N + h) * kMlaHeadDim];
        double run = -INFINITY;
        for (int64_t t0 = 0; t0 < limit; t0 += 64) {
          double mx = -INFINITY;
          for (int64_t j = t0; j < std::min(t0 + 64, limit); ++j) {
            const int64_t blk = p.block_table[b * p.max_blocks + j / bs];
            const uint8_t* k = &p.cache_bytes[p.c_off + blk * p.c_sb + (j % bs) * p.c_st];
            double s = 0.0;
            for (int d = 0; d < kMlaHeadDim; ++d)
              s += ref::bf16_value(q[d]) * rules::e4m3_value(k[d]);
            mx = std::max(mx, s * f);
          }
          if (t0 > 0 && mx > run + 8.0) ++jumps;
          run = std::max(run, mx);
        }
      }
    }
  return jumps;
}

TEST(MlaDecodeGpu, Fp8ScoresJumpMidSequence) {
  QFUSE_REQUIRE_GPU();
  // Form 3's one-barrier softmax writes P against the running maxima as they stand and falls back
  // to the exchange of the tile's maxima (and O's rescale) only where a score exceeds its
  // column's maximum by 2^8 (bench/NOTES.md M46). A few keys late in each sequence (tiles 4, 10,
  // 18, 62) scaled up 16x (saturating at 448): scores ~6x the running maximum's distance jump
  // above it in the middle of pieces, on some heads' columns and not others, and the tiles after
  // them run the fast path against the new maxima. Every FP8 form, split and whole, s_q 1 and 2.
  for (const int s_q : {1, 2}) {
    MlaCase c;
    c.cache = DType::kE4M3;
    c.s_q = s_q;
    c.lens = {700, 1500, 323, 4097};
    c.seed = 21 + s_q;
    MlaProblem p = make_problem(c);
    const int64_t bs = c.block_size;
    int64_t changed = 0;
    for (int64_t b = 0; b < p.B; ++b)
      for (const int64_t j : {300, 301, 650, 1200, 4000}) {
        if (j >= p.lens[b]) continue;
        const int64_t blk = p.block_table[b * p.max_blocks + j / bs];
        const int64_t base = p.c_off + blk * p.c_sb + (j % bs) * p.c_st;
        for (int e = 0; e < kMlaHeadDim; ++e) {
          uint8_t& code = p.cache_bytes[base + e];
          code = ref::e4m3_encode(16.0f * rules::e4m3_value(code));
        }
        ++changed;
      }
    ASSERT_EQ(changed, 14);
    // The data itself has no such tile (0 before the change); after it, 56 of 64 columns at s_q 1,
    // 100 of 128 at s_q 2 (counted on the host when the test was written).
    EXPECT_GE(score_jumps(p), p.T * p.N / 2) << "too few mid-piece jumps to test the fallback";
    p.d_cache.upload(p.cache_bytes.data(), p.cache_bytes.size());
    p.compute_reference();
    SCOPED_TRACE("s_q " + std::to_string(s_q));
    each_fp8_form([&] {
      for (const Variant& v : {kTcSplit, kTcWhole}) check_run(p, run(p, v), v);
    });
  }
}

TEST(MlaDecodeGpu, QuantizedOutputThroughTheCombine) {
  QFUSE_REQUIRE_GPU();
  MlaCase c;
  c.s_q = 2;
  c.lens = {1, 64, 1000};
  MlaProblem p = make_problem(c);
  p.compute_reference();
  const float scale = 0.004f;
  DeviceBuffer d_scale(4);
  d_scale.upload(&scale, 4);
  const int64_t ld = p.N * kMlaLatentDim;
  for (MlaKernel k : {MlaKernel::kTensorCore, MlaKernel::kSimple}) {
    DeviceBuffer out(p.T * ld);
    out.fill(kPoison);
    MlaDecodeOptions opt;
    opt.kernel = k;
    size_t bytes = 0;
    ASSERT_TRUE(mla_decode_workspace_size(p.B, c.s_q, c.heads, opt, &bytes).ok());
    DeviceBuffer ws(bytes);
    MlaDecodeArgs a = p.args();
    a.out.spec = QuantSpec::fp8_per_tensor();
    a.out.out = TensorRef::contiguous(out.get(), DType::kE4M3, {p.T, ld});
    a.out.scale = d_scale.as<float>();
    const Status st = mla_decode(a, MlaWorkspace{ws.get(), bytes}, opt, nullptr);
    ASSERT_TRUE(st.ok()) << st.to_string();
    QFUSE_CUDA_OK(cudaDeviceSynchronize());
    // One E4M3 step of y_ref / scale, plus the kernel's own error: absolute, about 1e-3 of a
    // row's largest value (docs/tolerances.md), which matters for the small values of a row.
    const std::vector<uint8_t> codes = out.download();
    int64_t bad = 0, exact = 0;
    for (int64_t t = 0; t < p.T; ++t) {
      for (int64_t h = 0; h < p.N; ++h) {
        double amax = 0.0;
        for (int d = 0; d < kMlaLatentDim; ++d)
          amax = std::max(amax, std::fabs(p.ref_out[(t * p.N + h) * kMlaLatentDim + d]));
        for (int d = 0; d < kMlaLatentDim; ++d) {
          const int64_t i = t * ld + h * kMlaLatentDim + d;
          const double r = p.ref_out[i] / scale;
          const double got = rules::e4m3_value(codes[i]);
          const double allowed = fp8_step(std::min(std::fabs(r), 448.0)) + 4e-3 * amax / scale;
          const bool sat = std::fabs(r) >= 448.0 && std::fabs(got) == 448.0;
          bad += !(sat || std::fabs(got - std::clamp(r, -448.0, 448.0)) <= allowed);
          exact += fp8_code_near(codes[i], r);
        }
      }
    }
    EXPECT_EQ(bad, 0) << "codes farther than one E4M3 step (+ the kernel's error) from ref / scale";
    EXPECT_GT(exact, p.T * ld * 9 / 10) << "most codes within one step of ref / scale";
  }
}

TEST(MlaDecodeGpu, CacheWriterBytesExact) {
  QFUSE_REQUIRE_GPU();
  for (DType d : {DType::kBF16, DType::kE4M3})
    for (int bs : {16, 64})
      for (bool odd : {false, true}) {
        SCOPED_TRACE(std::string(to_string(d)) + " bs=" + std::to_string(bs) +
                     (odd ? " unaligned rows" : ""));
        // NOTE: more slots than tokens: every token gets its own slot (two tokens writing one
        // slot would race).
        const int64_t T = 300, num_blocks = 2 * T / bs + 3, es = d == DType::kE4M3 ? 1 : 2;
        const int64_t ld_c = odd ? 515 : 544, ld_pe = odd ? 67 : 72;
        // Cache: the second of two layers, rows padded to 640.
        const int64_t c_st = 640, c_sb = 2 * bs * c_st, off = bs * c_st;
        std::mt19937_64 rng(bs * 3 + odd + es);
        std::vector<uint8_t> cache(num_blocks * c_sb * es);
        for (auto& x : cache) x = static_cast<uint8_t>(rng());
        std::vector<uint16_t> kv_c(T * ld_c), k_pe(T * ld_pe);
        std::normal_distribution<float> nd(0.0f, 3.0f);
        for (auto& v : kv_c) v = ref::bf16_bits(nd(rng));
        for (auto& v : k_pe) v = ref::bf16_bits(nd(rng));
        // Unique slots, some tokens skipped (negative), a few ties of E4M3 rounding included by
        // the bf16 inputs.
        std::vector<int64_t> slots(num_blocks * bs);
        std::iota(slots.begin(), slots.end(), 0);
        std::shuffle(slots.begin(), slots.end(), rng);
        std::vector<int64_t> slot_mapping(T);
        for (int64_t t = 0; t < T; ++t) slot_mapping[t] = t % 7 == 3 ? -1 - t : slots[t];
        const float k_scale = 0.0173f;
        DeviceBuffer d_cache(cache.size()), d_c(kv_c.size() * 2), d_pe(k_pe.size() * 2),
            d_slots(T * 8), d_scale(4);
        d_cache.upload(cache.data(), cache.size());
        d_c.upload(kv_c.data(), kv_c.size() * 2);
        d_pe.upload(k_pe.data(), k_pe.size() * 2);
        d_slots.upload(slot_mapping.data(), T * 8);
        d_scale.upload(&k_scale, 4);
        MlaCacheWriteArgs a;
        a.kv_c = TensorRef::strided(d_c.get(), DType::kBF16, {T, kMlaLatentDim}, {ld_c, 1});
        a.k_pe = TensorRef::strided(d_pe.get(), DType::kBF16, {T, kMlaRopeDim}, {ld_pe, 1});
        a.slot_mapping = d_slots.as<int64_t>();
        a.cache = TensorRef::strided(static_cast<char*>(d_cache.get()) + off * es, d,
                                     {num_blocks, bs, kMlaHeadDim}, {c_sb, c_st, 1});
        a.k_scale = d == DType::kE4M3 ? d_scale.as<float>() : nullptr;
        const Status st = mla_write_cache(a, nullptr);
        ASSERT_TRUE(st.ok()) << st.to_string();
        QFUSE_CUDA_OK(cudaDeviceSynchronize());
        ref::MlaHostCache hc;
        hc.dtype = d;
        hc.num_blocks = num_blocks;
        hc.block_size = bs;
        hc.stride_block = c_sb;
        hc.stride_token = c_st;
        hc.k_scale = k_scale;
        ref::mla_write_cache(kv_c.data(), ld_c, k_pe.data(), ld_pe, slot_mapping.data(), T, hc,
                             cache.data() + off * es);
        const std::vector<uint8_t> got = d_cache.download();
        int64_t diff = 0;
        for (size_t i = 0; i < got.size(); ++i) diff += got[i] != cache[i];
        EXPECT_EQ(diff, 0) << "bytes differing from the host reference";
      }
}

TEST(MlaDecodeGpu, ReusedScheduleEqualsAFreshOneAndKeepsItsLengths) {
  QFUSE_REQUIRE_GPU();
  // Two "layers" of one decode step (other q and cache, the same lengths and shapes) through one
  // schedule: each call that reuses it must give the bytes of a call that computes its own. The
  // schedule captures the lengths: seq_lens overwritten after it (zeros, then a different batch)
  // must change nothing.
  for (const int heads : {16, 128})
    for (DType cache : {DType::kBF16, DType::kE4M3}) {
      MlaCase c;
      c.heads = heads;
      c.cache = cache;
      c.s_q = 2;
      c.lens = {1, 65, 1000, 3000, 200};
      MlaProblem layer0 = make_problem(c);
      c.seed = 9;
      MlaProblem layer1 = make_problem(c);
      ASSERT_EQ(layer0.max_blocks, layer1.max_blocks);
      for (const Variant& v : {kTcSplit, kTcWhole, kSimpleSplit}) {
        SCOPED_TRACE(std::string(v.name) + " " + describe(c));
        const RunResult fresh0 = run(layer0, v), fresh1 = run(layer1, v);
        ASSERT_TRUE(fresh0.status.ok()) << fresh0.status.to_string();
        ASSERT_TRUE(fresh1.status.ok()) << fresh1.status.to_string();
        MlaDecodeOptions opt = options(v);
        size_t bytes = 0;
        ASSERT_TRUE(mla_decode_workspace_size(layer0.B, c.s_q, heads, opt, &bytes).ok());
        DeviceBuffer ws(bytes);
        ws.fill(kPoison);
        const MlaWorkspace mws{ws.get(), bytes};
        MlaSchedule sched;
        MlaDecodeArgs a = layer0.args();
        DeviceBuffer scratch(layer0.T * layer0.N * kMlaLatentDim * 2);
        a.out.out =
            TensorRef::contiguous(scratch.get(), DType::kBF16, {layer0.T, layer0.N, kMlaLatentDim});
        ASSERT_TRUE(mla_decode_schedule(a, mws, opt, &sched, nullptr).ok());
        const std::vector<int32_t> zeros(layer0.lens.size(), 0);
        layer0.d_lens.upload(zeros.data(), zeros.size() * 4);
        std::vector<int32_t> other = layer1.lens;
        std::reverse(other.begin(), other.end());
        layer1.d_lens.upload(other.data(), other.size() * 4);
        opt.schedule = &sched;
        for (int layer = 0; layer < 2; ++layer) {
          const RunResult r = run_on(layer == 0 ? layer0 : layer1, opt, mws);
          const RunResult& fresh = layer == 0 ? fresh0 : fresh1;
          ASSERT_TRUE(r.status.ok()) << r.status.to_string();
          EXPECT_TRUE(r.device_check.ok()) << r.device_check.to_string();
          EXPECT_EQ(r.out, fresh.out) << "layer " << layer << ": output != a fresh schedule's";
          EXPECT_EQ(std::memcmp(r.lse.data(), fresh.lse.data(), r.lse.size() * 4), 0)
              << "layer " << layer << ": lse != a fresh schedule's";
        }
        layer0.d_lens.upload(layer0.lens.data(), layer0.lens.size() * 4);
        layer1.d_lens.upload(layer1.lens.data(), layer1.lens.size() * 4);
      }
    }
}

TEST(MlaDecodeGpu, ScheduleOfOtherShapesOrWorkspaceIsRejectedAndNothingWritten) {
  QFUSE_REQUIRE_GPU();
  MlaCase c;
  c.lens = {10, 200, 70};
  MlaProblem p = make_problem(c);
  size_t bytes = 0;
  ASSERT_TRUE(mla_decode_workspace_size(p.B, 1, 16, {}, &bytes).ok());
  DeviceBuffer ws(bytes), ws2(bytes), out(p.T * p.N * kMlaLatentDim * 2);
  out.fill(kPoison);
  MlaDecodeArgs a = p.args();
  a.out.out = TensorRef::contiguous(out.get(), DType::kBF16, {p.T, p.N, kMlaLatentDim});
  const MlaWorkspace mws{ws.get(), bytes};
  expect_invalid_argument(mla_decode_schedule(a, mws, {}, nullptr, nullptr), "schedule");
  MlaSchedule sched;
  ASSERT_TRUE(mla_decode_schedule(a, mws, {}, &sched, nullptr).ok());
  QFUSE_CUDA_OK(cudaDeviceSynchronize());
  MlaDecodeOptions opt;
  opt.schedule = &sched;
  // Another workspace.
  expect_invalid_argument(mla_decode(a, MlaWorkspace{ws2.get(), bytes}, opt, nullptr),
                          "opt.schedule");
  // Another split mode, kernel, or a schedule of another batch / capacity / s_q / head count.
  MlaDecodeOptions whole = opt;
  whole.split = MlaSplitMode::kNone;
  expect_invalid_argument(mla_decode(a, mws, whole, nullptr), "opt.schedule");
  MlaDecodeOptions simple = opt;
  simple.kernel = MlaKernel::kSimple;
  expect_invalid_argument(mla_decode(a, mws, simple, nullptr), "opt.schedule");
  for (int field = 0; field < 4; ++field) {
    MlaSchedule other = sched;
    if (field == 0) other.batch += 1;
    if (field == 1) other.capacity += 64;
    if (field == 2) other.s_q = 2;
    if (field == 3) other.heads = 32;
    MlaDecodeOptions o = opt;
    o.schedule = &other;
    expect_invalid_argument(mla_decode(a, mws, o, nullptr), "opt.schedule");
  }
  QFUSE_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_EQ(changed_bytes(out), 0);
  // The matching call goes through.
  EXPECT_TRUE(mla_decode(a, mws, opt, nullptr).ok());
  QFUSE_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_GT(changed_bytes(out), 0);
}

TEST(MlaDecodeGpu, WorkspaceTooSmallIsRejectedAndNothingWritten) {
  QFUSE_REQUIRE_GPU();
  MlaCase c;
  c.lens = {10, 20};
  MlaProblem p = make_problem(c);
  size_t bytes = 0;
  ASSERT_TRUE(mla_decode_workspace_size(p.B, 1, 16, {}, &bytes).ok());
  DeviceBuffer ws(bytes), out(p.T * p.N * kMlaLatentDim * 2);
  out.fill(kPoison);
  MlaDecodeArgs a = p.args();
  a.out.out = TensorRef::contiguous(out.get(), DType::kBF16, {p.T, p.N, kMlaLatentDim});
  expect_invalid_argument(mla_decode(a, MlaWorkspace{ws.get(), bytes - 256}, {}, nullptr),
                          "ws.bytes");
  expect_invalid_argument(mla_decode(a, MlaWorkspace{nullptr, bytes}, {}, nullptr), "ws.data");
  QFUSE_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_EQ(changed_bytes(out), 0);
}

}  // namespace
}  // namespace qfuse::test
