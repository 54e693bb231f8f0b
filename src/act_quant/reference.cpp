// Host references of silu(gate) * up: fp64 (qfuse's rules are compared with it within their
// tolerance), and the engine rule's fp32 arithmetic (exact, given the device's ex2.approx).
#include <cmath>

#include "qfuse/act_quant/silu_mul.h"
#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"

namespace qfuse::ref {

std::vector<double> silu_and_mul(const uint16_t* x, DType dtype, int64_t T, int64_t H, int64_t ld) {
  std::vector<double> y(T * H);
  auto val = [&](uint16_t b) -> double {
    return dtype == DType::kBF16 ? bf16_value(b) : f16_value(b);
  };
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < H; ++i) {
      const double a = val(x[t * ld + i]);
      const double b = val(x[t * ld + H + i]);
      y[t * H + i] = a / (1.0 + std::exp(-a)) * b;
    }
  }
  return y;
}

std::vector<float> silu_and_mul_engine(const uint16_t* x, DType dtype, int64_t T, int64_t H,
                                       int64_t ld, const std::function<float(float)>& ex2) {
  std::vector<float> y(T * H);
  auto val = [&](uint16_t b) -> float {
    return dtype == DType::kBF16 ? bf16_value(b) : f16_value(b);
  };
  const auto e2 = [&ex2](float v) { return ex2 ? ex2(v) : rules::Ex2ApproxFtz{}(v); };
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < H; ++i)
      y[t * H + i] = rules::engine_silu_mul(val(x[t * ld + i]), val(x[t * ld + H + i]), e2);
  return y;
}

}  // namespace qfuse::ref
