// `qfuse demo` for the act_quant family: silu_mul_quant on realistic gated-MLP shapes, fused and
// unfused, against the fp64 host reference (bench/demo_kit.h); without a GPU, the host reference
// on a small shape and what it writes.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "bench/demo_kit.h"
#include "bench/family.h"
#include "qfuse/act_quant/silu_mul.h"
#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"

namespace qfuse::bench {
namespace {

struct DemoShape {
  const char* label;
  int64_t T, H;
};
constexpr DemoShape kShapes[] = {
    {"DeepSeek-V3 dense-like", 4096, 7168}, {"Llama-3-70B", 4096, 14336}, {"decode", 16, 7168}};

bool run_shape(const DemoShape& s, int reps) {
  const int64_t T = s.T, H = s.H;
  std::printf("\nsilu_mul_quant, %s: T=%lld H=%lld (x [%lld, %lld] bf16)\n", s.label,
              static_cast<long long>(T), static_cast<long long>(H), static_cast<long long>(T),
              static_cast<long long>(2 * H));
  bench::DeviceBuffer x, tmp;
  DEMO_CHECK(x.allocate(T * 2 * H * 2));
  DEMO_CHECK(tmp.allocate(T * H * 2));
  DEMO_CHECK(bench::fill_random(x.get(), DType::kBF16, T * 2 * H, 7, 0));
  const TensorRef x_ref = TensorRef::contiguous(x.get(), DType::kBF16, {T, 2 * H});
  const TensorRef tmp_ref = TensorRef::contiguous(tmp.get(), DType::kBF16, {T, H});

  DemoCase dc;
  dc.T = T, dc.H = H, dc.rows = demo_rows(T), dc.y_bound = y_bound();
  const int64_t n = static_cast<int64_t>(dc.rows.size());
  std::vector<uint16_t> xh(n * 2 * H);
  for (int64_t i = 0; i < n; ++i)
    DEMO_CUDA(cudaMemcpy(&xh[i * 2 * H], x.as<uint16_t>() + dc.rows[i] * 2 * H, 2 * H * 2,
                         cudaMemcpyDeviceToHost));
  dc.y = ref::silu_and_mul(xh.data(), DType::kBF16, n, H, 2 * H);
  dc.fused = [&](const QuantOutput& q) { DEMO_CHECK(silu_mul_quant(x_ref, q, 0)); };
  dc.unfused = [&](const QuantOutput& q) {
    DEMO_CHECK(silu_and_mul(x_ref, tmp_ref, 0));
    DEMO_CHECK(quantize(tmp_ref, q, 0));
  };
  return run_case(dc, reps);
}

bool run_host() {
  bool ok = true;
  const int64_t T = 4, H = 256;
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint16_t> xh(T * 2 * H);
  for (uint16_t& b : xh) b = ref::bf16_bits(normal(rng));
  const std::vector<double> y = ref::silu_and_mul(xh.data(), DType::kBF16, T, H, 2 * H);
  double amax = 0.0;
  for (double v : y) amax = std::max(amax, std::fabs(v));
  std::printf("x [%lld, %lld] bf16 ~ N(0, 1); y = silu(gate) * up in fp64, amax %.4f\n",
              static_cast<long long>(T), static_cast<long long>(2 * H), amax);

  for (const char* text : kDemoSpecs) {
    QuantSpec spec;
    if (!parse_quant_spec(text, &spec).ok()) return false;
    const float given = demo_given_scale(spec, amax);
    const RowsOutput r = reference(spec, y, T, H, given);
    std::printf("\n%s", text);
    if (spec.reads_scale()) std::printf("  (given scale %.6g)", given);
    std::printf("\n  scales of row 0, groups 0-3:");
    for (int64_t g = 0; g < std::min<int64_t>(4, r.shape.num_groups); ++g)
      std::printf(" %.6g", scale_at(spec, r, 0, g));
    std::printf("\n  row 0, columns 0-7: y / code / dequantized\n");
    for (int64_t c = 0; c < 8; ++c) {
      const uint8_t code = code_at(spec, r, 0, c, H);
      const double value =
          spec.kind == QuantKind::kNvfp4 ? rules::e2m1_value(code) : rules::e4m3_value(code);
      const double deq = value * dequant_factor(spec, r, 0, c, H, given);
      std::printf("    %10.5f   0x%02x   %10.5f\n", y[c], code, deq);
    }
    const Accuracy a = check_rows(spec, y, H, r, r, given, true);
    std::printf(
        "  dequantization error over %lld values: max %s steps, max |x^ - y| %.4g, "
        "relative RMS %.3g\n",
        static_cast<long long>(a.values), steps(a.max_steps).c_str(), a.max_abs_err,
        std::sqrt(a.sum_sq_err / std::max(a.sum_sq_y, 1e-300)));
    ok = ok && a.ok();
  }
  return ok;
}

}  // namespace

/// This family's `qfuse demo` section (called from its tool registration in routines.cu).
void add_act_quant_demo(ToolRegistrar& r) {
  r.add_demo({"act_quant",
              [](int reps) {
                bool ok = true;
                for (const DemoShape& s : kShapes) ok = run_shape(s, reps) && ok;
                return ok;
              },
              run_host});
}

}  // namespace qfuse::bench
