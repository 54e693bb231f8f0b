// 2^x on the FMA pipe for the tensor-core ViT attention's softmax (tc_common.cuh), host and
// device, so that a host test can check its error over the range the softmax uses.
#pragma once

#include <cmath>
#include <cstdint>

#include "qfuse/quant/rules.h"

namespace qfuse::vit {

/// 2^x for x <= ~64 (-inf and anything below -125 give ~2^-125): x rounded to n by the 1.5 * 2^23
/// trick, a degree-3 polynomial of the rest f (|f| <= 0.5; relative error 1.4e-4, far below what
/// an E4M3 P keeps) and n added to the exponent.
/// NOTE: the floor is -125, not -127: p(f) can be just below 1 (exponent field 126), and adding
/// n < -125 to that field would borrow into the sign bit (-inf gave NaN: the host test caught it).
/// Relieves the 16-a-clock MUFU of part of the softmax's exponentials (FlashAttention-4's trick).
QFUSE_HD float exp2_poly(float x) {
  x = fmaxf(x, -125.0f);
  const float t = x + 12582912.0f;  // 1.5 * 2^23: round(x) in the low mantissa bits
  const float f = x - (t - 12582912.0f);
  float p = fmaf(f, 0.05502926558256149f, 0.2422569841146469f);
  p = fmaf(f, p, 0.6932530403137207f);
  p = fmaf(f, p, 0.9999513626098633f);
  return rules::bits_float(rules::float_bits(p) + (rules::float_bits(t) << 23));
}

}  // namespace qfuse::vit
