// fp64 host reference of silu(gate) * up.
#include <cmath>

#include "qfuse/act_quant/silu_mul.h"
#include "qfuse/quant/reference.h"

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

}  // namespace qfuse::ref
