// fp64 host reference of merge_states (SPEC §2), the rule the GPU tests compare against.
#include <cmath>
#include <cstring>
#include <limits>

#include "qfuse/merge_states/merge_states.h"
#include "qfuse/quant/reference.h"

namespace qfuse::ref {
namespace {

double element(const void* base, DType dtype, int64_t i) {
  if (dtype == DType::kF32) return static_cast<const float*>(base)[i];
  const uint16_t bits = static_cast<const uint16_t*>(base)[i];
  return dtype == DType::kBF16 ? bf16_value(bits) : f16_value(bits);
}

}  // namespace

std::vector<double> merge_states(const MergeHostInput& in, const MergeOptions& opt,
                                 std::vector<double>* out_lse) {
  const int64_t T = in.T, H = in.H, D = in.D;
  const double kNegInf = -std::numeric_limits<double>::infinity();
  const bool base2 = opt.lse_base == LseBase::kBase2;
  const int64_t copy_from = opt.copy_from < 0 ? T : opt.copy_from;
  std::vector<double> out(T * H * D, 0.0);
  if (out_lse) out_lse->assign(H * T, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      double w[kMaxMergeStates] = {};
      double lse_out;
      if (t >= copy_from) {
        w[in.n - 1] = 1.0;
        lse_out = in.lse[in.n - 1][h * in.ld_lse[in.n - 1] + t];
      } else {
        double l[kMaxMergeStates];
        double m = kNegInf;
        bool nan = false;
        for (int i = 0; i < in.n; ++i) {
          const double x = in.lse[i][h * in.ld_lse[i] + t];
          l[i] = std::isinf(x) ? kNegInf : x;
          nan |= std::isnan(x);
          if (l[i] > m) m = l[i];
        }
        if (nan) {
          for (int i = 0; i < in.n; ++i) w[i] = std::nan("");
          lse_out = std::nan("");
        } else if (m == kNegInf) {
          lse_out = kNegInf;  // all partials empty: zeros, never NaN
        } else {
          double sum = 0;
          for (int i = 0; i < in.n; ++i) {
            w[i] = l[i] == kNegInf ? 0.0 : (base2 ? std::exp2(l[i] - m) : std::exp(l[i] - m));
            sum += w[i];
          }
          for (int i = 0; i < in.n; ++i) w[i] /= sum;
          lse_out = (base2 ? std::log2(sum) : std::log(sum)) + m;
        }
      }
      if (out_lse) (*out_lse)[h * T + t] = lse_out;
      for (int i = 0; i < in.n; ++i) {
        if (w[i] == 0.0) continue;  // empty partials are not read
        for (int64_t d = 0; d < D; ++d)
          out[(t * H + h) * D + d] +=
              w[i] * element(in.o[i], in.dtype, t * in.st[i] + h * in.sh[i] + d);
      }
    }
  }
  return out;
}

}  // namespace qfuse::ref
