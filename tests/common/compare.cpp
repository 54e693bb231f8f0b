#include "common/compare.h"

#include <cmath>

#include "qfuse/quant/rules.h"

namespace qfuse::test {

double fp8_step(double r) {
  const double a = std::fabs(r);
  if (a < std::ldexp(1.0, -6)) return std::ldexp(1.0, -9);
  int e = 0;
  std::frexp(a, &e);  // a in [2^(e-1), 2^e)
  return std::ldexp(1.0, e - 1 - 3);
}

bool fp8_code_near(uint8_t code, double r) {
  const float d = rules::e4m3_value(code);
  if (std::isnan(r)) return std::isnan(d);
  if (std::isnan(d)) return false;
  if (std::fabs(r) >= 448.0) return d == (r > 0 ? 448.0f : -448.0f);
  return std::fabs(d - r) <= fp8_step(r) * (1.0 + 1e-9);
}

void expect_invalid_argument(const Status& st, const std::string& arg, const std::string& also) {
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  EXPECT_NE(st.message().find("argument '" + arg + "'"), std::string::npos) << st.message();
  if (!also.empty()) {
    EXPECT_NE(st.message().find(also), std::string::npos) << st.message();
  }
}

double ulp_distance(float a, float b) {
  if (std::isnan(a) && std::isnan(b)) return 0.0;
  if (std::isnan(a) || std::isnan(b)) return INFINITY;
  if (a == b) return 0.0;
  const double ulp = std::ldexp(1.0, std::ilogb(std::fmax(std::fabs(a), std::fabs(b))) - 23);
  return std::fabs(static_cast<double>(a) - b) / ulp;
}

}  // namespace qfuse::test
