// The block-scaled FP8 GEMM path (GemmPath::kFp8Block128) on the device:
// - ProbeScaleLayouts asks cuBLASLt itself which scale entry scales which block (one entry 2.0,
//   the rest 1.0) and prints the answer, so one device run tells the true orders even where the
//   executor's assumption (src/graph/gemm_block128.h) is wrong;
// - the executor's native path agrees with the fp64 host reference and with the dequantizing
//   path on shapes where a transposed or mis-strided scale order would show (M and N not
//   multiples of 128, N > 128, K > 128, distinct random scales per block);
// - nodes cuBLASLt cannot read fall back, and say why.
#include <cublasLt.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/gpu.h"
#include "graph/cublaslt_heuristic.h"
#include "graph/gemm_block128.h"
#include "graph/graph_testing.h"
#include "qfuse/core/arch.h"
#include "qfuse/graph/executor.h"
#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"

namespace qfuse::graph {
namespace {

using test::DeviceRun;

bool on_hopper() {
  DeviceInfo d;
  return current_device_info(&d).ok() && d.cc_major == 9 && d.cc_minor == 0;
}

// ---- the probe -------------------------------------------------------------------------------

#define LT_OK(call) ASSERT_EQ((call), CUBLAS_STATUS_SUCCESS) << #call

/// out [M, N] bf16 = a [M, K] . w [N, K]^T through cuBLASLt, called as the executor calls it:
/// A = the weight (transposed, BLK128x128 scales `sw`), B = the activation (VEC128 scales `sa`).
/// a[m][k] = 2^((k / 128) % 4), w = 1: every K block adds 128 * 2^kb, so a doubled scale shows
/// which K block it belongs to by the size of the change.
struct Probe {
  int64_t M, N, K;
  cublasLtHandle_t lt = nullptr;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo{};
  qfuse::test::DeviceBuffer a, w, sa, sw, out, ws;
  static constexpr int64_t kScaleElems = 4096;  // larger than any plausible layout
  static constexpr size_t kWorkspace = size_t{32} << 20;

  Probe(int64_t m, int64_t n, int64_t k) : M(m), N(n), K(k) {}
  Probe(const Probe&) = delete;
  Probe& operator=(const Probe&) = delete;
  ~Probe() {
    if (desc) cublasLtMatmulDescDestroy(desc);
    for (auto l : {la, lb, lc})
      if (l) cublasLtMatrixLayoutDestroy(l);
    if (lt) cublasLtDestroy(lt);
  }

  /// Sets everything up. `found_as_executor`: the heuristic offers an algorithm with placeholder
  /// scale pointers, as the executor asks it at create(); `found`: it does with the real ones.
  void init(bool* found_as_executor, bool* found) {
    LT_OK(cublasLtCreate(&lt));
    LT_OK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    LT_OK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LT_OK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    const int32_t mode_w = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
    const int32_t mode_a = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    LT_OK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode_w,
                                         sizeof mode_w));
    LT_OK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode_a,
                                         sizeof mode_a));
    LT_OK(cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, K, N, K));
    LT_OK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, K, M, K));
    LT_OK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, N, M, N));
    std::vector<uint8_t> ha(M * K), hw(N * K, 0x38);   // e4m3 1.0
    const uint8_t pow2[4] = {0x38, 0x40, 0x48, 0x50};  // 1, 2, 4, 8
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) ha[m * K + k] = pow2[(k / 128) % 4];
    a = qfuse::test::DeviceBuffer(ha.size());
    a.upload(ha.data(), ha.size());
    w = qfuse::test::DeviceBuffer(hw.size());
    w.upload(hw.data(), hw.size());
    sa = qfuse::test::DeviceBuffer(kScaleElems * 4);
    sw = qfuse::test::DeviceBuffer(kScaleElems * 4);
    out = qfuse::test::DeviceBuffer(M * N * 2);
    ws = qfuse::test::DeviceBuffer(kWorkspace);
    // As the executor asks at create(): placeholder scale pointers (cuBLASLt finds nothing while
    // they are unset); then, as NVIDIA's sample asks, with the real ones.
    set_pointers(graph::detail::heuristic_scale_placeholder(),
                 graph::detail::heuristic_scale_placeholder());
    *found_as_executor = heuristic();
    set_pointers(sw.get(), sa.get());
    *found = heuristic();
  }

  bool heuristic() {
    int n = 0;
    return graph::detail::first_algo(lt, desc, la, lb, lc, kWorkspace, &algo, &n) ==
               CUBLAS_STATUS_SUCCESS &&
           n > 0;
  }

  void set_pointers(const void* pw, const void* pa) {
    EXPECT_EQ(
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &pw, sizeof pw),
        CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &pa, sizeof pa),
        CUBLAS_STATUS_SUCCESS);
  }

  /// Runs with every scale 1 except entry `at` (-1: none) of the weight's (`weight`) or the
  /// activation's scales, which is 2; returns out as floats.
  std::vector<float> run(bool weight, int64_t at) {
    std::vector<float> ones(kScaleElems, 1.0f), two = ones;
    if (at >= 0) two[at] = 2.0f;
    sa.upload((weight ? ones : two).data(), kScaleElems * 4);
    sw.upload((weight ? two : ones).data(), kScaleElems * 4);
    set_pointers(sw.get(), sa.get());
    out.fill(0);
    const float alpha = 1.0f, beta = 0.0f;
    EXPECT_EQ(cublasLtMatmul(lt, desc, &alpha, w.get(), la, a.get(), lb, &beta, out.get(), lc,
                             out.get(), lc, &algo, ws.get(), kWorkspace, nullptr),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<uint8_t> raw = out.download();
    std::vector<float> y(M * N);
    for (int64_t i = 0; i < M * N; ++i) {
      uint16_t b;
      std::memcpy(&b, raw.data() + 2 * i, 2);
      y[i] = static_cast<float>(ref::bf16_value(b));
    }
    return y;
  }
};

/// What doubling one scale entry did to out: the rows m and columns n that changed and by how
/// much, as "m [lo, hi] n [lo, hi] k block kb" (kb from the change 128 * 2^kb), or "no effect".
std::string effect(const std::vector<float>& y, const std::vector<float>& base, int64_t M,
                   int64_t N) {
  int64_t m_lo = M, m_hi = -1, n_lo = N, n_hi = -1, count = 0;
  float delta = 0;
  bool one_delta = true;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      const float d = y[m * N + n] - base[m * N + n];
      if (d == 0) continue;
      if (count++ > 0 && d != delta) one_delta = false;
      delta = d;
      m_lo = std::min(m_lo, m), m_hi = std::max(m_hi, m);
      n_lo = std::min(n_lo, n), n_hi = std::max(n_hi, n);
    }
  if (count == 0) return "no effect";
  char buf[160];
  const double kb = std::log2(delta / 128.0);
  const bool full = count == (m_hi - m_lo + 1) * (n_hi - n_lo + 1);
  if (one_delta && full && kb == std::floor(kb))
    std::snprintf(buf, sizeof buf, "m [%lld, %lld] n [%lld, %lld] k block %d",
                  static_cast<long long>(m_lo), static_cast<long long>(m_hi),
                  static_cast<long long>(n_lo), static_cast<long long>(n_hi), static_cast<int>(kb));
  else
    std::snprintf(buf, sizeof buf, "irregular: %lld outputs in m [%lld, %lld] n [%lld, %lld]",
                  static_cast<long long>(count), static_cast<long long>(m_lo),
                  static_cast<long long>(m_hi), static_cast<long long>(n_lo),
                  static_cast<long long>(n_hi));
  return buf;
}

/// The effect gemm_block128.h predicts for entry `at` of the weight's / activation's scales.
std::string predicted(bool weight, int64_t at, int64_t M, int64_t N, int64_t K) {
  const int64_t kbs = ceil_div(K, 128), nbs = ceil_div(N, 128);
  char buf[160];
  for (int64_t kb = 0; kb < kbs; ++kb) {
    if (weight) {
      for (int64_t nb = 0; nb < nbs; ++nb)
        if (detail::cublas_blk128_offset(nb, kb, nbs, kbs) == at) {
          std::snprintf(buf, sizeof buf, "m [0, %lld] n [%lld, %lld] k block %lld",
                        static_cast<long long>(M - 1), static_cast<long long>(nb * 128),
                        static_cast<long long>(std::min(N, nb * 128 + 128) - 1),
                        static_cast<long long>(kb));
          return buf;
        }
    } else {
      for (int64_t m = 0; m < M; ++m)
        if (detail::cublas_vec128_offset(m, kb, M, kbs) == at) {
          std::snprintf(buf, sizeof buf, "m [%lld, %lld] n [0, %lld] k block %lld",
                        static_cast<long long>(m), static_cast<long long>(m),
                        static_cast<long long>(N - 1), static_cast<long long>(kb));
          return buf;
        }
    }
  }
  return "no effect";
}

TEST(GpuGemmBlock128, ProbeScaleLayouts) {
  QFUSE_REQUIRE_GPU();
  if (!on_hopper()) GTEST_SKIP() << "cuBLASLt's VEC128 / BLK128x128 modes are for sm_90";
  // NOTE: ceil(K/128) = 4 then 3 tells whether row blocks of the weight scales are padded to 4;
  // ceil(N/128) != ceil(K/128) tells which block index is contiguous; M not a multiple of 128
  // tells whether the activation scales' columns are padded beyond M; N not a multiple of 128
  // shows the partial last row block.
  struct Shape {
    int64_t M, N, K;
  };
  for (const Shape& s : {Shape{260, 320, 512}, Shape{132, 520, 384}}) {
    Probe p(s.M, s.N, s.K);
    bool found_as_executor = false, found = false;
    p.init(&found_as_executor, &found);
    std::printf(
        "probe M=%lld N=%lld K=%lld: heuristic with placeholder scale pointers: %s, real: %s\n",
        static_cast<long long>(s.M), static_cast<long long>(s.N), static_cast<long long>(s.K),
        found_as_executor ? "found" : "none", found ? "found" : "none");
    EXPECT_TRUE(found_as_executor) << "the executor asks the heuristic with placeholder pointers";
    ASSERT_TRUE(found) << "cuBLASLt offers no algorithm for BLK128x128 x VEC128 at M=" << s.M
                       << " N=" << s.N << " K=" << s.K;
    const std::vector<float> base = p.run(true, -1);
    std::printf("probe M=%lld N=%lld K=%lld: base output %.0f (expected %.0f)\n",
                static_cast<long long>(s.M), static_cast<long long>(s.N),
                static_cast<long long>(s.K), base[0],
                128.0 * ((1 << std::min<int64_t>(ceil_div(s.K, 128), 4)) - 1));
    const int64_t kbs = ceil_div(s.K, 128), nbs = ceil_div(s.N, 128);
    const int64_t w_probes = std::max(nbs * round_up(kbs, 4), kbs * round_up(nbs, 4)) + 4;
    const int64_t a_probes[] = {
        0, 1, 3, 4, 5, s.M - 1, s.M, s.M + 1, 2 * s.M + 5, kbs * s.M - 1, kbs * s.M, kbs * s.M + 1};
    int mismatches = 0;
    std::string summary;
    for (int pass = 0; pass < 2; ++pass) {
      const bool weight = pass == 0;
      std::vector<int64_t> offsets;
      if (weight)
        for (int64_t o = 0; o < w_probes; ++o) offsets.push_back(o);
      else
        offsets.assign(std::begin(a_probes), std::end(a_probes));
      for (int64_t o : offsets) {
        const std::string seen = effect(p.run(weight, o), base, s.M, s.N);
        const std::string want = predicted(weight, o, s.M, s.N, s.K);
        const bool ok = seen == want;
        mismatches += !ok;
        std::printf(
            "probe M=%lld N=%lld K=%lld %s scale[%lld] -> %s%s%s\n", static_cast<long long>(s.M),
            static_cast<long long>(s.N), static_cast<long long>(s.K),
            weight ? "weight (BLK128x128)" : "activation (VEC128)", static_cast<long long>(o),
            seen.c_str(), ok ? "" : "   EXPECTED ", ok ? "" : want.c_str());
        summary += std::string(weight ? "w" : "a") + "[" + std::to_string(o) + "]=" + seen + "; ";
      }
    }
    ::testing::Test::RecordProperty(
        "probe_M" + std::to_string(s.M) + "_N" + std::to_string(s.N) + "_K" + std::to_string(s.K),
        summary);
    EXPECT_EQ(mismatches, 0) << "cuBLASLt's scale order differs from src/graph/gemm_block128.h "
                                "(see the probe lines above)";
  }
}

// ---- the executor's native path against the host reference and the dequantizing path ------

/// Σ_k |a_mk · w_nk| of the dequantized operands, per output: the scale of a GEMM's rounding
/// error (docs/tolerances.md, "GEMM nodes").
std::vector<double> abs_products(const HostTensors& t, const QuantSpec& spec, int64_t M, int64_t N,
                                 int64_t K) {
  const std::vector<double> a = test::dequantize(t.at("a"), &t.at("a_s"), spec, 1.0f);
  std::vector<double> w(N * K);
  const int64_t nbs = ceil_div(N, 128), kbs = ceil_div(K, 128);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      float s;
      std::memcpy(
          &s, t.at("w_s").data.data() + 4 * detail::qfuse_blk128_offset(n / 128, k / 128, nbs, kbs),
          4);
      w[n * K + k] = rules::e4m3_value(t.at("w").data[n * K + k]) * s;
    }
  std::vector<double> S(M * N, 0.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) S[m * N + n] += std::fabs(a[m * K + k] * w[n * K + k]);
  return S;
}

/// One unit in the last place of |v| in `dtype` (normal range; fp16's subnormal step below).
double ulp(double v, DType dtype) {
  const int mant = dtype == DType::kBF16 ? 7 : dtype == DType::kF16 ? 10 : 23;
  int e = 0;
  std::frexp(std::fabs(v), &e);
  const double u = std::ldexp(1.0, e - 1 - mant);
  return dtype == DType::kF16 ? std::max(u, 0x1p-24) : u;
}

/// Elements of y farther from ref than ulps * ulp(ref) + c * S (docs/tolerances.md).
int64_t check_gemm(const std::vector<double>& y, const std::vector<double>& ref,
                   const std::vector<double>& S, DType dtype, double ulps, double c,
                   std::string* report) {
  int64_t bad = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    const double tol = ulps * ulp(ref[i], dtype) + c * S[i];
    if (std::isfinite(y[i]) && std::fabs(y[i] - ref[i]) <= tol) continue;
    if (bad++ < 5)
      *report += "element " + std::to_string(i) + ": got " + std::to_string(y[i]) + ", reference " +
                 std::to_string(ref[i]) + ", bound " + std::to_string(tol) + "\n";
  }
  return bad;
}

// Error allowances (docs/tolerances.md "GEMM nodes"): both paths accumulate in fp32 and Hopper's
// FP8 tensor cores align the products of one MMA before adding (kAccum); the dequantizing path
// also rounds each operand to bf16, a relative 2^-9 each (kBf16Operands).
constexpr double kAccum = 0x1p-9;
constexpr double kBf16Operands = 0x1p-8;

struct GemmCase {
  const char* spec;
  int64_t M, N, K;
  const char* out_dtype;
  bool native;  // the path expected on sm_90
  const char* note;
};

void PrintTo(const GemmCase& c, std::ostream* os) {
  *os << c.spec << " M" << c.M << " N" << c.N << " K" << c.K << " " << c.out_dtype;
}

class GpuGemmBlock128Paths : public ::testing::TestWithParam<GemmCase> {};

TEST_P(GpuGemmBlock128Paths, NativeAndDequantizedAgreeWithTheHostReference) {
  QFUSE_REQUIRE_GPU();
  const GemmCase c = GetParam();
  QuantSpec spec;
  ASSERT_TRUE(parse_quant_spec(c.spec, &spec).ok());
  const Graph g =
      test::parse_or_fail(test::gemm_graph(c.spec, c.M, c.N, c.K, "block128", c.out_dtype));
  HostTensors host;
  ASSERT_TRUE(make_random_inputs(g, 17, &host).ok());
  HostTensors ref = host;
  ASSERT_TRUE(run_host(g, &ref).ok());
  std::vector<double> y_ref;
  ASSERT_TRUE(host_values(ref.at("y"), &y_ref).ok());
  const std::vector<double> S = abs_products(host, spec, c.M, c.N, c.K);
  const DType dtype = g.tensor("y")->dtype;

  ExecutorOptions dequant;
  dequant.native_block_scaled_fp8 = false;
  std::vector<double> y[2];
  for (int i = 0; i < 2; ++i) {
    const bool native = i == 0;
    DeviceRun d;
    const Status is = d.init(g, host, native ? ExecutorOptions{} : dequant);
    if (!native && dtype == DType::kF16) {
      // cuBLASLt has no bf16 x bf16 -> fp16 GEMM: the fallback refuses an fp16 output, clearly.
      EXPECT_EQ(is.code(), StatusCode::kNotSupported) << is.to_string();
      EXPECT_NE(is.message().find("fp16 output"), std::string::npos) << is.to_string();
      return;
    }
    ASSERT_TRUE(is.ok()) << is.to_string();
    const std::string note = d.ex->notes().at(0);
    std::printf("%s\n", note.c_str());
    ::testing::Test::RecordProperty(native ? "note_native" : "note_dequant", note);
    const bool took_native = note.find(to_string(GemmPath::kFp8Block128)) != std::string::npos;
    if (native) {
      EXPECT_EQ(took_native, c.native && on_hopper()) << note;
      if (c.note[0] != '\0' && (on_hopper() || !c.native)) {
        EXPECT_NE(note.find(c.note), std::string::npos) << note;
      }
    } else {
      EXPECT_FALSE(took_native) << note;
    }
    const Status st = d.run();
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    ASSERT_TRUE(host_values(d.download("y"), &y[i]).ok());
    const double c_path = took_native ? kAccum : kAccum + kBf16Operands;
    std::string report;
    EXPECT_EQ(check_gemm(y[i], y_ref, S, dtype, 1.0, c_path, &report), 0)
        << (native ? "native" : "dequant") << " vs host reference\n"
        << report;
    std::printf("  %s: rms difference to the host reference %.3g\n", native ? "native " : "dequant",
                compare_values(y[i], y_ref).rms_rel);
  }
  // Each within its bound of the reference, so within the sum of both of each other.
  std::string report;
  EXPECT_EQ(check_gemm(y[0], y[1], S, dtype, 2.0, kAccum + kAccum + kBf16Operands, &report), 0)
      << "native vs dequant\n"
      << report;
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GpuGemmBlock128Paths,
    ::testing::Values(
        // N, M not multiples of 128; ceil(K/128) = 4: the weight scales read in place.
        GemmCase{"fp8_group128:col:f32", 200, 320, 512, "bf16", true, "read in place"},
        // ceil(K/128) = 3: repacked (row blocks padded to 4); fp32 output.
        GemmCase{"fp8_group128:col_tma:f32", 132, 264, 384, "fp32", true, "repacked"},
        GemmCase{"fp8_group128:col:ue8m0", 256, 384, 1024, "fp16", true, "read in place"},
        // K % 128 != 0: the last K block holds 16 columns.
        GemmCase{"fp8_group128:col_tma:f32", 64, 256, 400, "bf16", true, ""},
        GemmCase{"fp8_group128:col:f32", 8, 136, 256, "bf16", true, "repacked"},
        // Not readable by cuBLASLt: the dequantizing path, with the reason in the note.
        GemmCase{"fp8_group128:col_tma:f32", 37, 256, 256, "bf16", false, "multiples of 4"},
        GemmCase{"fp8_group128:row:f32", 64, 256, 256, "bf16", false, "VEC128 order"}));

}  // namespace
}  // namespace qfuse::graph
