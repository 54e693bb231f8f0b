// The engine rule's device arithmetic (rules.h engine_*) against what nvcc compiles the reference
// engine's expressions to, and against the host: libdevice's log2f (transcribed in
// engine_log2f) on every positive float, exp2f of an integer (exact), the SiLU expression
// `gate * (1 / (1 + expf(-gate))) * up` (transcribed in engine_silu_mul) on every bf16 and fp16
// gate, the correctly rounded division on special and random operands, and the approximate
// instructions within their documented error of the host models.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/compare.h"
#include "common/engine_device.h"
#include "common/gpu.h"
#include "qfuse/quant/quantizer.cuh"
#include "qfuse/quant/reference.h"

namespace qfuse::test {
namespace {

/// What a sweep kernel reports: counters it adds to and the bits of its first mismatch.
struct Sweep {
  DeviceBuffer counts{3 * sizeof(unsigned long long)}, example{2 * sizeof(uint32_t)};
  Sweep() {
    counts.fill(0);
    example.fill(0);
  }
  unsigned long long* count(int i) { return counts.as<unsigned long long>() + i; }
  uint32_t* ex() { return example.as<uint32_t>(); }
  /// After the kernel's launch: waits for it, then the counters and the example.
  void read(unsigned long long (&c)[3], uint32_t (&e)[2]) {
    QFUSE_CUDA_OK(cudaGetLastError());
    QFUSE_CUDA_OK(cudaDeviceSynchronize());
    QFUSE_CUDA_OK(cudaMemcpy(c, counts.get(), sizeof(c), cudaMemcpyDeviceToHost));
    QFUSE_CUDA_OK(cudaMemcpy(e, example.get(), sizeof(e), cudaMemcpyDeviceToHost));
  }
};

/// Counts the positive floats (bit patterns [first, last)) where engine_log2f differs from
/// libdevice's log2f, or engine_ue8m0 from exp2f(ceilf(log2f(max(|s|, 1e-10)))), the engine's
/// own expression; keeps the first mismatching pattern.
__global__ void log2f_kernel(uint32_t first, uint32_t last, unsigned long long* bad,
                             unsigned long long* bad_ue8m0, uint32_t* example) {
  for (uint64_t u = first + blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; u < last;
       u += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    const float a = __uint_as_float(static_cast<uint32_t>(u));
    const float mine = rules::engine_log2f(a);
    const float lib = log2f(a);
    if (__float_as_uint(mine) != __float_as_uint(lib)) {
      if (atomicAdd(bad, 1ull) == 0) *example = static_cast<uint32_t>(u);
    }
    const float engine = exp2f(ceilf(log2f(fmaxf(fabsf(a), 1e-10f))));
    // Up to 2^127 (the engine's exp2f(128) is inf, where qfuse caps at 2^127).
    if (a <= 0x1p127f && __float_as_uint(rules::engine_ue8m0(a)) != __float_as_uint(engine))
      atomicAdd(bad_ue8m0, 1ull);
  }
}

TEST(EngineRuleGpu, Log2fTranscriptionIsLibdevicesOnEveryPositiveFloat) {
  QFUSE_REQUIRE_GPU();
  Sweep sw;
  log2f_kernel<<<1024, 256>>>(0u, 0x7F800001u, sw.count(0), sw.count(1), sw.ex());
  unsigned long long n[3];
  uint32_t e[2];
  sw.read(n, e);
  EXPECT_EQ(n[0], 0u) << "first at bits 0x" << std::hex << e[0];
  EXPECT_EQ(n[1], 0u) << "engine_ue8m0 != exp2f(ceilf(log2f(.)))";
}

__global__ void host_vs_device_kernel(const float* a, const float* b, int64_t n, float* log2_out,
                                      float* ue8m0_out, float* quot_out, uint8_t* code_out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    log2_out[i] = rules::engine_log2f(a[i]);
    ue8m0_out[i] = rules::engine_ue8m0(a[i]);
    quot_out[i] = rules::engine_fp8_quotient(a[i], b[i]);
    code_out[i] = quant::e4m3(quot_out[i]);
  }
}

TEST(EngineRuleGpu, HostAndDeviceComputeTheSameBits) {
  QFUSE_REQUIRE_GPU();
  std::vector<float> a, b;
  const float special[] = {
      0.0f,          -0.0f,         1.0f,     -3.5f,     448.0f, 3e38f, -3.4e38f, 1.17549435e-38f,
      1e-45f,        8e-39f,        INFINITY, -INFINITY, NAN,    0.1f,  1e-10f,   1.0000001f,
      0.0009765625f, 2.3283064e-10f};
  for (float x : special)
    for (float y : special) {
      a.push_back(x);
      b.push_back(y);
    }
  std::mt19937 rng(7);
  for (int i = 0; i < (1 << 20); ++i) {  // random bit patterns, then values near ties
    a.push_back(rules::bits_float(rng()));
    b.push_back(rules::bits_float(rng() & 0x7FFFFFFFu));
  }
  for (int c = 0; c < 0x7E; ++c) {
    const float mid = (rules::e4m3_value(c) + rules::e4m3_value(c + 1)) / 2;
    for (float s : {0.875f, 0.0546875f, 0.75f, 1.0f / 448.0f, 3.1e-5f}) {
      a.push_back(mid * s);
      b.push_back(s);
      a.push_back(std::nextafter(mid * s, 1e30f));
      b.push_back(s);
    }
  }
  const int64_t n = static_cast<int64_t>(a.size());
  DeviceBuffer da(n * 4), db(n * 4), dl(n * 4), du(n * 4), dq(n * 4), dc(n);
  da.upload(a.data(), n * 4);
  db.upload(b.data(), n * 4);
  host_vs_device_kernel<<<512, 256>>>(da.as<float>(), db.as<float>(), n, dl.as<float>(),
                                      du.as<float>(), dq.as<float>(), dc.as<uint8_t>());
  QFUSE_CUDA_OK(cudaGetLastError());
  QFUSE_CUDA_OK(cudaDeviceSynchronize());
  const auto l = dl.download(), u = du.download(), q = dq.download(), c = dc.download();
  Mismatches bad;
  auto same = [](float x, float y) {
    return rules::float_bits(x) == rules::float_bits(y) || (std::isnan(x) && std::isnan(y));
  };
  for (int64_t i = 0; i < n; ++i) {
    float dv[3];
    std::memcpy(&dv[0], &l[i * 4], 4);
    std::memcpy(&dv[1], &u[i * 4], 4);
    std::memcpy(&dv[2], &q[i * 4], 4);
    if (!same(dv[0], rules::engine_log2f(a[i]))) bad.add("log2f(" + std::to_string(a[i]) + ")");
    if (!same(dv[1], rules::engine_ue8m0(a[i]))) bad.add("ue8m0(" + std::to_string(a[i]) + ")");
    const float hq = rules::engine_fp8_quotient(a[i], b[i]);
    if (!same(dv[2], hq))
      bad.add(std::to_string(a[i]) + " / " + std::to_string(b[i]) + ": device " +
              std::to_string(dv[2]) + " host " + std::to_string(hq));
    const uint8_t hc = ref::e4m3_encode(hq);
    if (c[i] != hc && !((c[i] & 0x7F) == 0x7F && (hc & 0x7F) == 0x7F))
      bad.add("e4m3 of " + std::to_string(hq));
  }
  EXPECT_EQ(bad.count, 0) << bad.report;
}

__global__ void exp2_int_kernel(float* out) {
  const int n = static_cast<int>(threadIdx.x) - 126;  // -126 .. 129
  out[threadIdx.x] = exp2f(static_cast<float>(n));
}

TEST(EngineRuleGpu, Exp2fOfAnIntegerIsExact) {
  // engine_ue8m0 builds 2^n from its bits where the engine calls exp2f(n).
  QFUSE_REQUIRE_GPU();
  DeviceBuffer d(256 * 4);
  exp2_int_kernel<<<1, 256>>>(d.as<float>());
  QFUSE_CUDA_OK(cudaDeviceSynchronize());
  const auto v = d.download();
  for (int i = 0; i < 254; ++i) {
    float f;
    std::memcpy(&f, &v[i * 4], 4);
    EXPECT_EQ(f, std::ldexp(1.0f, i - 126)) << i - 126;
  }
}

/// The engine's expression, as its SiLU per-block kernel writes it, and the transcription.
__global__ void silu_kernel(const uint16_t* gates, bool bf16, float up, int n, float* lit,
                            float* mine, float* den) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const float gate = bf16 ? __uint_as_float(static_cast<uint32_t>(gates[i]) << 16)
                            : __half2float(__ushort_as_half(gates[i]));
    const float sigmoid_gate = 1.0f / (1.0f + expf(-gate));
    const float silu_gate = gate * sigmoid_gate;
    lit[i] = silu_gate * up;
    mine[i] = rules::engine_silu_mul(gate, up, rules::Ex2ApproxFtz{});
    den[i] = rules::engine_sigmoid_den(gate, rules::Ex2ApproxFtz{});
  }
}

TEST(EngineRuleGpu, SiluTranscriptionIsTheEnginesExpressionOnEveryGate) {
  QFUSE_REQUIRE_GPU();
  std::vector<uint16_t> gates(0x10000);
  for (uint32_t b = 0; b < 0x10000u; ++b) gates[b] = static_cast<uint16_t>(b);
  DeviceBuffer dg(gates.size() * 2), dl(gates.size() * 4), dm(gates.size() * 4),
      dd(gates.size() * 4);
  dg.upload(gates.data(), gates.size() * 2);
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    // The host reference with the device's ex2: the same bits as the device's transcription.
    const auto ex2 = device_ex2_hook(dtype);
    for (float up : {1.0f, -0.3125f, 7.1e3f}) {
      silu_kernel<<<256, 256>>>(dg.as<uint16_t>(), dtype == DType::kBF16, up, 0x10000,
                                dl.as<float>(), dm.as<float>(), dd.as<float>());
      QFUSE_CUDA_OK(cudaGetLastError());
      QFUSE_CUDA_OK(cudaDeviceSynchronize());
      const auto l = dl.download(), m = dm.download(), d = dd.download();
      Mismatches bad;
      for (uint32_t i = 0; i < 0x10000u; ++i) {
        uint32_t lb, mb, db;
        std::memcpy(&lb, &l[i * 4], 4);
        std::memcpy(&mb, &m[i * 4], 4);
        std::memcpy(&db, &d[i * 4], 4);
        const float g = dtype == DType::kBF16 ? ref::bf16_value(static_cast<uint16_t>(i))
                                              : ref::f16_value(static_cast<uint16_t>(i));
        const bool nan = std::isnan(rules::bits_float(lb)) && std::isnan(rules::bits_float(mb));
        if (lb != mb && !nan) bad.add("gate " + std::to_string(g) + " up " + std::to_string(up));
        const float hd = rules::engine_sigmoid_den(g, ex2);
        if (rules::float_bits(hd) != db && !(std::isnan(hd) && std::isnan(rules::bits_float(db))))
          bad.add("host den of gate " + std::to_string(g));
        const float hy = rules::engine_silu_mul(g, up, ex2);
        if (rules::float_bits(hy) != mb && !(std::isnan(hy) && std::isnan(rules::bits_float(mb))))
          bad.add("host silu of gate " + std::to_string(g));
      }
      EXPECT_EQ(bad.count, 0) << to_string(dtype) << "\n" << bad.report;
    }
  }
}

/// rcp_rn_fast against __frcp_rn on the floats [first, last) (bit patterns): mismatches where its
/// fast path claims to hold, and how often it does.
__global__ void rcp_fast_kernel(uint64_t first, uint64_t last, unsigned long long* bad,
                                unsigned long long* fast, uint32_t* example) {
  unsigned long long nfast = 0;
  for (uint64_t u = first + blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; u < last;
       u += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    const float x = __uint_as_float(static_cast<uint32_t>(u));
    bool slow = false;
    const float r = quant::rcp_rn_fast(x, slow);
    if (slow) continue;
    ++nfast;
    if (__float_as_uint(r) != __float_as_uint(__frcp_rn(x)) && atomicAdd(bad, 1ull) == 0)
      *example = static_cast<uint32_t>(u);
  }
  atomicAdd(fast, nfast);
}

TEST(EngineRuleGpu, RcpFastPathIsFrcpRnOnEveryFloat) {
  QFUSE_REQUIRE_GPU();
  Sweep sw;
  rcp_fast_kernel<<<2048, 256>>>(0, uint64_t{1} << 32, sw.count(0), sw.count(1), sw.ex());
  unsigned long long n[3];
  uint32_t e[2];
  sw.read(n, e);
  EXPECT_EQ(n[0], 0u) << "first at bits 0x" << std::hex << e[0];
  // Every float but biased exponents 0 and 253-255 (2 x 4 x 2^23 patterns) takes the fast path.
  EXPECT_EQ(n[1], (uint64_t{1} << 32) - 8 * (uint64_t{1} << 23));
}

/// div_rn_chunk against __fdiv_rn: chunks of 8 consecutive floats (bit patterns from `first`,
/// stepping by `step` between chunks) over each divisor.
__global__ void div_chunk_kernel(const float* divisors, int ndiv, uint64_t first, uint64_t nchunks,
                                 uint32_t step, unsigned long long* bad, unsigned long long* fast,
                                 uint32_t* example) {
  unsigned long long nfast = 0;
  for (uint64_t c = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x;
       c < nchunks * ndiv; c += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    const float s = divisors[c % ndiv];
    const uint64_t base = first + (c / ndiv) * step;
    float v[quant::kChunk], q[quant::kChunk];
#pragma unroll
    for (int i = 0; i < quant::kChunk; ++i) v[i] = __uint_as_float(static_cast<uint32_t>(base + i));
    quant::div_rn_chunk(v, s, q);
    nfast += quant::div_rn_fast_ok(v, s);
#pragma unroll
    for (int i = 0; i < quant::kChunk; ++i) {
      const float want = __fdiv_rn(v[i], s);
      const bool same =
          __float_as_uint(q[i]) == __float_as_uint(want) || (want != want && q[i] != q[i]);
      if (!same && atomicAdd(bad, 1ull) == 0) {
        example[0] = __float_as_uint(v[i]);
        example[1] = __float_as_uint(s);
      }
    }
  }
  atomicAdd(fast, nfast);
}

TEST(EngineRuleGpu, DivChunkIsFdivRnOnEveryFloatOverEdgeDivisors) {
  QFUSE_REQUIRE_GPU();
  // Scales the engine rule divides by: 1, 448 and 1/448, the smallest scale, a mantissa of all
  // ones, the fast path's edges (2^-63, just below 2^64) and just outside them, and random ones.
  std::vector<float> divisors = {1.0f,          448.0f,   1.0f / 448.0f,  rules::kMinScale,
                                 0x1.fffffep0f, 0x1p-63f, 0x1.fffffep63f, 0x1.fffffep-64f,
                                 0x1p64f,       3.0f,     0x1.8p-20f};
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  std::uniform_int_distribution<int> ex(-40, 40);
  for (int i = 0; i < 5; ++i) divisors.push_back(std::ldexp(mant(rng), ex(rng)));
  DeviceBuffer dd(divisors.size() * 4);
  dd.upload(divisors.data(), divisors.size() * 4);
  Sweep sw;
  div_chunk_kernel<<<4096, 256>>>(dd.as<float>(), static_cast<int>(divisors.size()), 0,
                                  (uint64_t{1} << 32) / quant::kChunk, quant::kChunk, sw.count(0),
                                  sw.count(1), sw.ex());
  unsigned long long n[3];
  uint32_t e[2];
  sw.read(n, e);
  EXPECT_EQ(n[0], 0u) << "first: 0x" << std::hex << e[0] << " / 0x" << e[1];
  // The fast path served most chunks (it is the one being tested).
  EXPECT_GT(n[1], (uint64_t{1} << 32) / quant::kChunk * 4);
}

/// engine_silu_mul_chunk on chunks of 8 consecutive gate patterns against the engine's own
/// expression value by value.
__global__ void silu_chunk_kernel(const uint16_t* gates, bool bf16, float up, int n, float* out) {
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c * quant::kChunk < n;
       c += gridDim.x * blockDim.x) {
    float g[quant::kChunk], u[quant::kChunk], v[quant::kChunk];
#pragma unroll
    for (int i = 0; i < quant::kChunk; ++i) {
      const uint16_t b = gates[c * quant::kChunk + i];
      g[i] = bf16 ? __uint_as_float(static_cast<uint32_t>(b) << 16)
                  : __half2float(__ushort_as_half(b));
      u[i] = up * (1.0f + 0.125f * i);
    }
    quant::engine_silu_mul_chunk(g, u, v);
#pragma unroll
    for (int i = 0; i < quant::kChunk; ++i) out[c * quant::kChunk + i] = v[i];
  }
}

TEST(EngineRuleGpu, SiluChunkIsTheEnginesExpressionOnEveryGate) {
  QFUSE_REQUIRE_GPU();
  std::vector<uint16_t> gates(0x10000);
  for (uint32_t b = 0; b < 0x10000u; ++b) gates[b] = static_cast<uint16_t>(b);
  DeviceBuffer dg(gates.size() * 2), dl(gates.size() * 4), dm(gates.size() * 4),
      dd(gates.size() * 4), dc(gates.size() * 4);
  dg.upload(gates.data(), gates.size() * 2);
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    for (float up : {1.0f, -0.3125f, 7.1e3f}) {
      // The literal expression per gate with u = up * (1 + i / 8), i the position in its chunk.
      for (int i = 0; i < quant::kChunk; ++i) {
        silu_kernel<<<256, 256>>>(dg.as<uint16_t>(), dtype == DType::kBF16,
                                  up * (1.0f + 0.125f * i), 0x10000, dl.as<float>(), dm.as<float>(),
                                  dd.as<float>());
        QFUSE_CUDA_OK(cudaGetLastError());
        QFUSE_CUDA_OK(cudaDeviceSynchronize());
        const auto l = dl.download();
        silu_chunk_kernel<<<64, 128>>>(dg.as<uint16_t>(), dtype == DType::kBF16, up, 0x10000,
                                       dc.as<float>());
        QFUSE_CUDA_OK(cudaGetLastError());
        QFUSE_CUDA_OK(cudaDeviceSynchronize());
        const auto c = dc.download();
        Mismatches bad;
        for (uint32_t k = static_cast<uint32_t>(i); k < 0x10000u; k += quant::kChunk) {
          uint32_t lb, cb;
          std::memcpy(&lb, &l[k * 4], 4);
          std::memcpy(&cb, &c[k * 4], 4);
          const bool nan = std::isnan(rules::bits_float(lb)) && std::isnan(rules::bits_float(cb));
          if (lb != cb && !nan)
            bad.add("gate bits " + std::to_string(k) + " up " + std::to_string(up));
        }
        EXPECT_EQ(bad.count, 0) << to_string(dtype) << "\n" << bad.report;
      }
    }
  }
}

TEST(EngineRuleGpu, ApproximateInstructionsAreWithinTheirErrorOfTheHostModels) {
  // rcp.approx: within an ulp of the correctly rounded reciprocal (PTX ISA); ex2.approx.ftz on
  // the reduced arguments of expf: within 2 ulps. The models stand in for them on the host.
  QFUSE_REQUIRE_GPU();
  std::vector<float> r, e;
  std::mt19937 rng(3);
  for (int i = 0; i < 100000; ++i) {
    r.push_back(
        std::ldexp(1.0f + (rng() & 0x7FFFFF) * 0x1p-23f, static_cast<int>(rng() % 200) - 100));
    e.push_back((static_cast<float>(rng() % 200001) - 100000.0f) * 1e-5f);  // [-1, 1]
  }
  for (float x : {6.0f, 1.0f, 448.0f, 0.001953125f}) r.push_back(x);
  const auto dr = device_rcp_approx(r), de = device_ex2_approx(e);
  for (size_t i = 0; i < r.size(); ++i)
    ASSERT_LE(ulp_distance(dr[i], rules::RcpApproxFtz{}(r[i])), 1.0) << "rcp(" << r[i] << ")";
  for (size_t i = 0; i < e.size(); ++i)
    ASSERT_LE(ulp_distance(de[i], rules::Ex2ApproxFtz{}(e[i])), 2.0) << "ex2(" << e[i] << ")";
}

}  // namespace
}  // namespace qfuse::test
