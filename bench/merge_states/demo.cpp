// `qfuse demo` for the merge_states family: merges on split-KV / DCP shapes, fused and unfused,
// against the fp64 host reference (bench/demo_kit.h); without a GPU, a 3-way merge on the host
// with empty partials.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "bench/demo_kit.h"
#include "bench/family.h"
#include "qfuse/merge_states/merge_states.h"
#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"

namespace qfuse::bench {
namespace {

struct MergeShape {
  const char* label;
  int64_t N, T, H, D;
};
constexpr MergeShape kMergeShapes[] = {{"cascade / DCP 2-way", 2, 4096, 32, 128},
                                       {"split-KV decode 4-way", 4, 64, 128, 128},
                                       {"DCP 8-way, MLA latent", 8, 256, 16, 512}};

/// merge_states of N stacked bf16 partials (random values, lse in [-4, 4] with every 11th
/// entry -inf), fused into the quantizer vs merge to bf16 then quantize.
bool run_merge_shape(const MergeShape& s, int reps) {
  const int64_t N = s.N, T = s.T, H = s.H, D = s.D, cols = s.H * s.D;
  std::printf("\nmerge_states, %s: N=%lld T=%lld H=%lld D=%lld (o [N, T, H, D] bf16)\n", s.label,
              static_cast<long long>(N), static_cast<long long>(T), static_cast<long long>(H),
              static_cast<long long>(D));
  bench::DeviceBuffer o, lse, tmp;
  DEMO_CHECK(o.allocate(N * T * cols * 2));
  DEMO_CHECK(lse.allocate(N * H * T * 4));
  DEMO_CHECK(tmp.allocate(T * cols * 2));
  DEMO_CHECK(bench::fill_random(o.get(), DType::kBF16, N * T * cols, 11, 0));
  std::vector<float> lse_h(N * H * T);
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<float> uni(-4.0f, 4.0f);
  for (size_t i = 0; i < lse_h.size(); ++i) lse_h[i] = i % 11 == 3 ? -INFINITY : uni(rng);
  DEMO_CUDA(cudaMemcpy(lse.get(), lse_h.data(), lse_h.size() * 4, cudaMemcpyHostToDevice));
  const TensorRef o_ref = TensorRef::contiguous(o.get(), DType::kBF16, {N, T, H, D});
  const TensorRef lse_ref = TensorRef::contiguous(lse.get(), DType::kF32, {N, H, T});
  const TensorRef tmp_ref = TensorRef::contiguous(tmp.get(), DType::kBF16, {T, cols});

  DemoCase dc;
  dc.T = T, dc.H = cols, dc.rows = demo_rows(T), dc.y_bound = bench::kRandomBound;
  // NOTE: the fused scales carry the fp32 weights' error (exp of an fp32 lse difference, ~1e-6).
  dc.scale_ulps = 64.0;
  std::vector<uint16_t> row(N * cols);
  for (int64_t t : dc.rows) {
    ref::MergeHostInput in;
    in.n = static_cast<int>(N), in.dtype = DType::kBF16, in.T = 1, in.H = H, in.D = D;
    for (int64_t i = 0; i < N; ++i) {
      DEMO_CUDA(cudaMemcpy(&row[i * cols], o.as<uint16_t>() + (i * T + t) * cols, cols * 2,
                           cudaMemcpyDeviceToHost));
      in.o[i] = &row[i * cols], in.st[i] = cols, in.sh[i] = D;
      in.lse[i] = &lse_h[i * H * T + t], in.ld_lse[i] = T;
    }
    const std::vector<double> y = ref::merge_states(in, {}, nullptr);
    dc.y.insert(dc.y.end(), y.begin(), y.end());
  }
  dc.fused = [&](const QuantOutput& q) {
    DEMO_CHECK(merge_states_stacked(o_ref, lse_ref, q, {}, 0));
  };
  dc.unfused = [&](const QuantOutput& q) {
    QuantOutput plain;
    plain.out = tmp_ref;
    DEMO_CHECK(merge_states_stacked(o_ref, lse_ref, plain, {}, 0));
    DEMO_CHECK(quantize(tmp_ref, q, 0));
  };
  return run_case(dc, reps);
}

/// A 3-way merge on the host: the fp64 reference with an empty partial and an all-empty row,
/// then written as FP8 per-tensor by the host quantizer.
bool run_host_merge() {
  constexpr int kN = 3;
  const int64_t T = 3, H = 2, D = 64;
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(-3.0f, 3.0f);
  std::vector<std::vector<uint16_t>> o(kN, std::vector<uint16_t>(T * H * D));
  std::vector<std::vector<float>> lse(kN, std::vector<float>(H * T));
  for (int i = 0; i < kN; ++i) {
    for (uint16_t& b : o[i]) b = ref::bf16_bits(normal(rng));
    for (float& l : lse[i]) l = uni(rng);
  }
  lse[1][0 * T + 1] = INFINITY;  // head 0, token 1: partial 1 is empty (+inf convention)
  for (int i = 0; i < kN; ++i) lse[i][1 * T + 2] = -INFINITY;  // head 1, token 2: all empty
  ref::MergeHostInput in;
  in.n = kN, in.dtype = DType::kBF16, in.T = T, in.H = H, in.D = D;
  for (int i = 0; i < kN; ++i) {
    in.o[i] = o[i].data(), in.st[i] = H * D, in.sh[i] = D;
    in.lse[i] = lse[i].data(), in.ld_lse[i] = T;
  }
  std::vector<double> out_lse;
  const std::vector<double> y = ref::merge_states(in, {}, &out_lse);
  double amax = 0.0;
  for (double v : y) amax = std::max(amax, std::fabs(v));
  const QuantSpec spec = QuantSpec::fp8_per_tensor();
  const float given = demo_given_scale(spec, amax);
  const RowsOutput r = reference(spec, y, T, H * D, given);
  std::printf(
      "\nmerge_states, 3 partials o_i [T=%lld, H=%lld, D=%lld] bf16 with lse_i [H, T] in [-3, 3]; "
      "(h=0, t=1) has an empty partial (+inf), (h=1, t=2) only empty ones; fp8_per_tensor, "
      "given scale %.6g\n",
      static_cast<long long>(T), static_cast<long long>(H), static_cast<long long>(D), given);
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t t = 0; t < T; ++t) {
      std::printf("  h=%lld t=%lld  lse", static_cast<long long>(h), static_cast<long long>(t));
      for (int i = 0; i < kN; ++i) std::printf(" %7.3f", lse[i][h * T + t]);
      std::printf("  -> merged lse %8.4f; out[0..3]", out_lse[h * T + t]);
      for (int64_t d = 0; d < 4; ++d) {
        const int64_t c = h * D + d;
        std::printf(" %8.4f/0x%02x", y[t * H * D + c], code_at(spec, r, t, c, H * D));
      }
      std::printf("\n");
    }
  }
  const Accuracy a = check_rows(spec, y, H * D, r, r, given, true);
  std::printf("  dequantization error over %lld values: max %s steps, max |x^ - y| %.4g\n",
              static_cast<long long>(a.values), steps(a.max_steps).c_str(), a.max_abs_err);
  return a.ok();
}

}  // namespace

/// This family's `qfuse demo` section (called from its tool registration in routines.cu).
void add_merge_states_demo(ToolRegistrar& r) {
  r.add_demo({"merge_states",
              [](int reps) {
                bool ok = true;
                for (const MergeShape& s : kMergeShapes) ok = run_merge_shape(s, reps) && ok;
                return ok;
              },
              run_host_merge});
}

}  // namespace qfuse::bench
