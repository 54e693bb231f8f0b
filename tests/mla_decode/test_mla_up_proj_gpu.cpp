// mla_decode with W_UV (the up-projection fused into the split-KV combine, issue 14) on the GPU:
//   - the fp32 output against the fp64 reference of the whole path (decode over the dequantized
//     cache, then o_latent . W_UV in fp64): relative L2 within the decode's tolerance
//     (docs/tolerances.md), rows without a visible key exactly zero, lse as the decode's;
//   - every quantization kind with qfuse's rules (and bf16 / fp16) within one quantization step
//     of the same kernel's fp32 values (the pre-quantization values: check_quant_output's fused
//     mode), scale-buffer padding zero, bytes between rows untouched;
// over heads {16, 128}, bf16 and FP8 caches, T {1, 7, 256}, a padded W_UV head stride; a
// CUDA-graph replay of the two-launch per-token form equal to eager; and mla_attention, the
// engine-contract op: its real rows equal the cache write + decode it is made of, its padding rows
// stay untouched, prefill rows are refused with nothing written.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/gpu.h"
#include "common/quant_check.h"
#include "mla_decode/mla_testing.h"
#include "qfuse/quant/reference.h"

namespace qfuse::test {
namespace {

constexpr int64_t kV = kMlaVHeadDim;

double tolerance(DType cache) {
  return cache == DType::kBF16 ? 1e-2 : 4e-2;
}

/// W_UV [N, 512, 128] bf16 ~ N(0, 1 / sqrt(512)) on the device, head stride padded by `pad` rows.
struct Wuv {
  std::vector<uint16_t> host;  // contiguous [N, 512, 128]
  DeviceBuffer dev;
  int64_t head_stride = 0;
  TensorRef view() const {
    return TensorRef::strided(
        dev.get(), DType::kBF16,
        {static_cast<int64_t>(host.size()) / (kMlaLatentDim * kV), kMlaLatentDim, kV},
        {head_stride, kV, 1});
  }
};

Wuv make_wuv(int64_t N, int64_t pad_rows, uint64_t seed) {
  Wuv w;
  w.host.resize(N * kMlaLatentDim * kV);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f / std::sqrt(512.0f));
  for (auto& x : w.host) x = ref::bf16_bits(nd(rng));
  w.head_stride = (kMlaLatentDim + pad_rows) * kV;
  std::vector<uint16_t> dev(N * w.head_stride, 0x7FC0);  // NaN in the padding rows
  for (int64_t n = 0; n < N; ++n)
    std::memcpy(dev.data() + n * w.head_stride, w.host.data() + n * kMlaLatentDim * kV,
                kMlaLatentDim * kV * 2);
  w.dev = DeviceBuffer(dev.size() * 2);
  w.dev.upload(dev.data(), dev.size() * 2);
  return w;
}

/// One fused call writing `q` (and lse [T, N + 3] when given).
Status run_up(const MlaProblem& p, const Wuv& w, const QuantOutput& q, DeviceBuffer* lse,
              cudaStream_t stream = nullptr) {
  MlaDecodeOptions opt;
  size_t bytes = 0;
  QFUSE_RETURN_IF_ERROR(
      mla_decode_workspace_size(p.B, p.c.s_q, static_cast<int>(p.N), opt, &bytes));
  DeviceBuffer ws(bytes);
  ws.fill(kPoison);
  MlaDecodeArgs a = p.args();
  a.w_uv = w.view();
  a.out = q;
  if (lse != nullptr) a.lse = TensorRef::strided(lse->get(), DType::kF32, {p.T, p.N}, {p.N + 3, 1});
  QFUSE_RETURN_IF_ERROR(mla_decode(a, MlaWorkspace{ws.get(), bytes}, opt, stream));
  if (cudaStreamSynchronize(stream) != cudaSuccess)
    return Status(StatusCode::kCudaError, cudaGetErrorString(cudaGetLastError()));
  return mla_decode_check(MlaWorkspace{ws.get(), bytes}, stream);
}

struct UpCase {
  MlaCase mc;
  int64_t w_pad = 0;
};

std::string name_of(const UpCase& u) {
  return describe(u.mc) + " w_pad=" + std::to_string(u.w_pad);
}

std::vector<int> random_lens(int n, int max_len, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int> l(n);
  for (auto& x : l) x = static_cast<int>(rng() % (max_len + 1));
  l[0] = 0;  // an empty request
  return l;
}

std::vector<UpCase> cases() {
  std::vector<UpCase> v;
  for (int heads : {16, 128})
    for (DType cache : {DType::kBF16, DType::kE4M3}) {
      UpCase one, seven, big;
      one.mc.lens = {1000};
      seven.mc.lens = {1, 63, 64, 65, 1000, 4097, 0};
      seven.w_pad = 8;
      big.mc.s_q = 2;
      big.mc.lens = random_lens(128, heads == 16 ? 2500 : 500, 7 + heads);
      big.mc.block_size = 16;
      for (UpCase* u : {&one, &seven, &big}) {
        u->mc.heads = heads;
        u->mc.cache = cache;
        u->mc.seed = static_cast<uint64_t>(heads) * 3 + (cache == DType::kBF16 ? 1 : 2);
        v.push_back(*u);
      }
    }
  return v;
}

class MlaUpProj : public ::testing::TestWithParam<UpCase> {};

TEST_P(MlaUpProj, EveryKindAgainstTheReference) {
  QFUSE_REQUIRE_GPU();
  const UpCase& u = GetParam();
  SCOPED_TRACE(name_of(u));
  MlaProblem p = make_problem(u.mc);
  p.compute_reference();
  const Wuv w = make_wuv(p.N, u.w_pad, u.mc.seed + 101);
  const int64_t C = p.N * kV;

  // The fp32 output (the pre-quantization values) against the fp64 whole path.
  auto f32 = DeviceQuantOutput::make(QuantSpec::none(), p.T, C, DType::kF32, 1.0f, std::nullopt, 3);
  DeviceBuffer lse(p.T * (p.N + 3) * 4);
  lse.fill(kPoison);
  {
    const Status st = run_up(p, w, f32.view(), &lse);
    ASSERT_TRUE(st.ok()) << st.to_string();
  }
  std::vector<double> ref;
  ref::mla_up_proj(p.ref_out, w.host.data(), p.T, p.N, false, &ref);
  const std::vector<uint8_t> raw = f32.out.download();
  std::vector<double> y(p.T * C);
  double err2 = 0.0, ref2 = 0.0, worst = 0.0;
  int64_t nonfinite = 0, bad_zero = 0;
  for (int64_t t = 0; t < p.T; ++t)
    for (int64_t n = 0; n < p.N; ++n) {
      double e2 = 0.0, r2 = 0.0;
      for (int64_t j = 0; j < kV; ++j) {
        float v;
        std::memcpy(&v, raw.data() + (t * f32.out_ld + n * kV + j) * 4, 4);
        const double r = ref[(t * p.N + n) * kV + j];
        y[t * C + n * kV + j] = v;
        nonfinite += !std::isfinite(v);
        e2 += (v - r) * (v - r);
        r2 += r * r;
      }
      err2 += e2;
      ref2 += r2;
      if (r2 == 0.0)
        bad_zero += e2 != 0.0;
      else
        worst = std::max(worst, std::sqrt(e2 / r2));
    }
  const double rel = std::sqrt(err2 / std::max(ref2, 1e-300));
  EXPECT_EQ(nonfinite, 0);
  EXPECT_EQ(bad_zero, 0) << "rows without a visible key must be zeros";
  EXPECT_LE(rel, tolerance(u.mc.cache)) << "relative L2 error of the fp32 output";
  EXPECT_LE(worst, 3 * tolerance(u.mc.cache)) << "worst (token, head) row";
  {
    const std::vector<uint8_t> lb = lse.download();
    std::vector<float> l(lb.size() / 4);
    std::memcpy(l.data(), lb.data(), lb.size());
    std::string first;
    EXPECT_EQ(lse_mismatches(l, p.N + 3, p, &first), 0) << "lse, first: " << first;
  }
  std::printf("[ mla up   ] %-70s rel_l2 %.2e worst row %.2e\n", name_of(u).c_str(), rel, worst);

  // Every kind within one step of the same kernel's fp32 values.
  double amax = 0.0;
  for (double v : y) amax = std::max(amax, std::fabs(v));
  const std::vector<int64_t> rows = sample_rows(p.T, C, u.mc.seed);
  std::vector<std::pair<QuantSpec, DType>> kinds = {{QuantSpec::none(), DType::kBF16},
                                                    {QuantSpec::none(), DType::kF16}};
  for (const QuantSpec& s : all_quant_specs())
    if (s.kind != QuantKind::kNone) kinds.push_back({s, DType::kBF16});
  for (const auto& [spec, none_dtype] : kinds) {
    SCOPED_TRACE(to_string(spec) + " " + std::string(to_string(none_dtype)));
    const float scale = spec.kind == QuantKind::kNvfp4
                            ? static_cast<float>(448.0 * 6.0 / std::max(amax, 1e-3) * 1.3)
                            : static_cast<float>(std::max(amax, 1e-3) / 448.0 * 0.77);
    auto d = DeviceQuantOutput::make(spec, p.T, C, none_dtype, scale, std::nullopt, 3);
    const Status st = run_up(p, w, d.view(), nullptr);
    ASSERT_TRUE(st.ok()) << st.to_string();
    CheckOptions co;
    co.exact = false;
    co.scale_value = scale;
    co.none_dtype = none_dtype;
    co.rows = rows;
    co.scale_ulps = 2;
    EXPECT_TRUE(check_quant_output(d, y, co));
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, MlaUpProj, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<UpCase>& i) {
                           return "c" + std::to_string(i.index);
                         });

TEST(MlaUpProjGpu, PerTokenGraphReplayEqualsEager) {
  QFUSE_REQUIRE_GPU();
  MlaCase c;
  c.heads = 32;
  c.s_q = 2;
  c.lens = {5, 700, 64, 0, 2100};
  MlaProblem p = make_problem(c);
  const Wuv w = make_wuv(p.N, 0, 5);
  const int64_t C = p.N * kV;
  const QuantSpec spec = QuantSpec::fp8_per_token();
  auto eager = DeviceQuantOutput::make(spec, p.T, C, DType::kBF16, 1.0f);
  ASSERT_TRUE(run_up(p, w, eager.view(), nullptr).ok());

  auto graphed = DeviceQuantOutput::make(spec, p.T, C, DType::kBF16, 1.0f);
  MlaDecodeOptions opt;
  size_t bytes = 0;
  ASSERT_TRUE(mla_decode_workspace_size(p.B, c.s_q, c.heads, opt, &bytes).ok());
  DeviceBuffer ws(bytes);
  MlaDecodeArgs a = p.args();
  a.w_uv = w.view();
  a.out = graphed.view();
  const CapturedGraph g([&](cudaStream_t s) {
    return mla_decode(a, MlaWorkspace{ws.get(), bytes}, opt, s);
  });
  ASSERT_TRUE(g.status().ok()) << g.status().to_string();
  for (int i = 0; i < 2; ++i) {
    graphed.poison();
    QFUSE_CUDA_OK(g.replay());
    EXPECT_EQ(graphed.out.download(), eager.out.download()) << "codes, replay " << i;
    EXPECT_EQ(graphed.scales.download(), eager.scales.download()) << "scales, replay " << i;
  }
}

/// mla_attention over a padded step (num_tokens = T + 5, the last rows padding): its real rows'
/// bytes equal mla_write_cache then mla_decode with W_UV on a copy of the same cache, and every
/// byte of the padding rows (values, per-token scales) stays as it was; prefill rows are refused
/// with nothing written (neither the cache nor the output).
TEST(MlaAttentionGpu, RealRowsEqualTheirPartsAndPaddingRowsStayUntouched) {
  QFUSE_REQUIRE_GPU();
  MlaCase c;
  c.heads = 16;
  c.s_q = 2;
  c.cache = DType::kE4M3;
  c.lens = {3, 700, 64, 129};
  MlaProblem p = make_problem(c);
  const Wuv w = make_wuv(p.N, 0, 9);
  const int64_t pad = 5, NT = p.T + pad, C = p.N * kV;
  // q with padding rows of NaN; this step's cache rows: kv_c / k_pe random, slots: each request's
  // last s_q positions (its new tokens); the padding rows' slots would be past the cache.
  std::vector<uint16_t> q(NT * p.N * kMlaHeadDim, 0x7FC0);
  for (int64_t t = 0; t < p.T; ++t)
    for (int64_t h = 0; h < p.N; ++h)
      std::memcpy(&q[(t * p.N + h) * kMlaHeadDim], &p.q[(t * p.N + h) * kMlaHeadDim],
                  kMlaHeadDim * 2);
  DeviceBuffer d_q(q.size() * 2);
  d_q.upload(q.data(), q.size() * 2);
  std::vector<float> kvf = random_floats(NT * (kMlaLatentDim + kMlaRopeDim), 17);
  std::vector<uint16_t> kv(kvf.size());
  for (size_t i = 0; i < kv.size(); ++i) kv[i] = ref::bf16_bits(kvf[i]);
  DeviceBuffer d_kv(kv.size() * 2);
  d_kv.upload(kv.data(), kv.size() * 2);
  std::vector<int64_t> slots(NT, int64_t{1} << 40);
  for (int64_t b = 0; b < p.B; ++b)
    for (int i = 0; i < c.s_q; ++i) {
      const int64_t pos = p.lens[b] - c.s_q + i;
      slots[b * c.s_q + i] =
          pos < 0 ? -1
                  : p.block_table[b * p.max_blocks + pos / c.block_size] * c.block_size +
                        pos % c.block_size;
    }
  DeviceBuffer d_slots(NT * 8);
  d_slots.upload(slots.data(), NT * 8);
  const int64_t cache_bytes = static_cast<int64_t>(p.d_cache.bytes());
  const TensorRef kv_c = TensorRef::strided(d_kv.get(), DType::kBF16, {NT, kMlaLatentDim},
                                            {kMlaLatentDim + kMlaRopeDim, 1});
  const TensorRef k_pe =
      TensorRef::strided(static_cast<char*>(d_kv.get()) + kMlaLatentDim * 2, DType::kBF16,
                         {NT, kMlaRopeDim}, {kMlaLatentDim + kMlaRopeDim, 1});
  size_t ws_bytes = 0;
  ASSERT_TRUE(mla_decode_workspace_size(p.B, c.s_q, c.heads, {}, &ws_bytes).ok());
  DeviceBuffer ws(ws_bytes);
  for (const QuantSpec& spec : {QuantSpec::fp8_per_tensor(), QuantSpec::fp8_per_token(),
                                QuantSpec::fp8_per_group(128), QuantSpec::none()}) {
    SCOPED_TRACE(to_string(spec));
    const float scale = 0.01f;
    // The parts: cache write, then the decode with W_UV over the T real rows.
    DeviceBuffer cache_a(cache_bytes), cache_b(cache_bytes);
    QFUSE_CUDA_OK(cudaMemcpy(cache_a.get(), p.d_cache.get(), cache_bytes, cudaMemcpyDefault));
    QFUSE_CUDA_OK(cudaMemcpy(cache_b.get(), p.d_cache.get(), cache_bytes, cudaMemcpyDefault));
    MlaDecodeArgs a = p.args();
    const int64_t off = static_cast<char*>(a.cache.data) - static_cast<char*>(p.d_cache.get());
    a.cache.data = static_cast<char*>(cache_a.get()) + off;
    MlaCacheWriteArgs wa;
    wa.kv_c = TensorRef::strided(kv_c.data, DType::kBF16, {p.T, kMlaLatentDim},
                                 {kMlaLatentDim + kMlaRopeDim, 1});
    wa.k_pe = TensorRef::strided(k_pe.data, DType::kBF16, {p.T, kMlaRopeDim},
                                 {kMlaLatentDim + kMlaRopeDim, 1});
    wa.slot_mapping = d_slots.as<int64_t>();
    wa.cache = a.cache;
    wa.k_scale = a.k_scale;
    ASSERT_TRUE(mla_write_cache(wa, nullptr).ok());
    auto parts = DeviceQuantOutput::make(spec, p.T, C, DType::kBF16, scale);
    a.w_uv = w.view();
    a.out = parts.view();
    ASSERT_TRUE(mla_decode(a, MlaWorkspace{ws.get(), ws_bytes}, {}, nullptr).ok());
    // The op over the padded step.
    auto whole = DeviceQuantOutput::make(spec, NT, C, DType::kBF16, scale);
    MlaAttentionArgs o;
    o.q = TensorRef::contiguous(d_q.get(), DType::kBF16, {NT, p.N, kMlaHeadDim});
    o.kv_c = kv_c;
    o.k_pe = k_pe;
    o.kv_cache = a.cache;
    o.kv_cache.data = static_cast<char*>(cache_b.get()) + off;
    o.k_scale = a.k_scale;
    o.w_uv = w.view();
    o.softmax_scale = a.softmax_scale;
    o.output = whole.view();
    MlaAttentionMetadata m;
    m.num_actual_tokens = m.num_decode_tokens = p.T;
    m.decode_s_q = c.s_q;
    m.slot_mapping = d_slots.as<int64_t>();
    m.block_table = a.block_table;
    m.seq_lens = a.seq_lens;
    ASSERT_TRUE(mla_attention(o, m, MlaWorkspace{ws.get(), ws_bytes}, nullptr).ok());
    QFUSE_CUDA_OK(cudaDeviceSynchronize());
    EXPECT_EQ(cache_a.download(), cache_b.download()) << "the cache writes";
    const std::vector<uint8_t> po = parts.out.download(), wo = whole.out.download();
    const size_t real = po.size();
    ASSERT_EQ(wo.size(), real * NT / p.T);
    EXPECT_TRUE(std::equal(po.begin(), po.end(), wo.begin())) << "the real rows' values";
    EXPECT_TRUE(std::all_of(wo.begin() + real, wo.end(), [](uint8_t b) { return b == kPoison; }))
        << "padding rows' values untouched";
    if (spec.writes_scales()) {
      const std::vector<uint8_t> ps = parts.scales.download(), ws_ = whole.scales.download();
      EXPECT_TRUE(std::equal(ps.begin(), ps.end(), ws_.begin())) << "the real rows' scales";
      EXPECT_TRUE(std::all_of(ws_.begin() + ps.size(), ws_.end(), [](uint8_t b) {
        return b == kPoison;
      })) << "padding rows' scales untouched";
    }
    // Prefill rows: refused, nothing written.
    whole.poison();
    const std::vector<uint8_t> before = cache_b.download();
    m.num_actual_tokens = p.T + 1;
    EXPECT_EQ(mla_attention(o, m, MlaWorkspace{ws.get(), ws_bytes}, nullptr).code(),
              StatusCode::kNotSupported);
    QFUSE_CUDA_OK(cudaDeviceSynchronize());
    EXPECT_EQ(changed_bytes(whole.out), 0);
    EXPECT_EQ(cache_b.download(), before);
  }
}

}  // namespace
}  // namespace qfuse::test
