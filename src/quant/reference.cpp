// Host references of the quantizers (see reference.h). Scales and codes follow rules.h exactly;
// only the fp32 -> E4M3 conversion is the software encoder below (the device uses the hardware).
#include "qfuse/quant/reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "qfuse/quant/rules.h"
#include "qfuse/quant/scale_addr.h"

namespace qfuse::ref {

using rules::bits_float;
using rules::float_bits;

uint8_t e4m3_encode(float x) {
  if (std::isnan(x)) return 0x7F;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const double a = std::fabs(static_cast<double>(x));
  // NOTE: 448 < a <= 464 rounds to 448 (464 is a tie and 448's mantissa is even); beyond that
  // the rounded value would be 480, which e4m3fn lacks: saturate.
  if (a >= 448.0) return sign | 0x7E;
  if (a < std::ldexp(1.0, -6)) {  // subnormal: m * 2^-9, m in [0, 8]
    const int m = static_cast<int>(std::nearbyint(a * 512.0));
    return static_cast<uint8_t>(sign | m);  // m == 8 is the smallest normal, code 0x08
  }
  int e = 0;
  std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1)
  int E = e - 1;      // a = (1 + m/8) * 2^E
  int m = static_cast<int>(std::nearbyint((std::ldexp(a, -E) - 1.0) * 8.0));
  if (m == 8) {
    m = 0;
    ++E;
  }
  const int code = ((E + 7) << 3) | m;
  return static_cast<uint8_t>(sign | (code > 0x7E ? 0x7E : code));
}

uint16_t bf16_bits(float f) {
  uint32_t u = float_bits(f);
  if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float bf16_value(uint16_t b) {
  return bits_float(static_cast<uint32_t>(b) << 16);
}

uint16_t f16_bits(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return sign | 0x7e00;
  if (ax >= 0x477ff000u) return sign | 0x7c00;  // >= 65520 rounds to inf
  if (ax < 0x38800000u) {                       // below 2^-14: subnormal, unit 2^-24
    const double q = std::nearbyint(static_cast<double>(bits_float(ax)) * 16777216.0);
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(q));
  }
  uint32_t r = ax - 0x38000000u;  // rebias 127 -> 15
  r = r + 0xfffu + ((r >> 13) & 1u);
  return static_cast<uint16_t>(sign | (r >> 13));
}

float f16_value(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
  float v;
  if (e == 0)
    v = std::ldexp(static_cast<float>(m), -24);
  else if (e == 31)
    v = m ? NAN : INFINITY;
  else
    v = std::ldexp(1.0f + static_cast<float>(m) / 1024.0f, static_cast<int>(e) - 15);
  return (sign ? -v : v);
}

int64_t scale_offset(const QuantSpec& spec, const ScaleShape& shape, int64_t row, int64_t group) {
  return ScaleAddr::make(spec, shape, 0).offset(row, group);
}

namespace {

void put_scale(std::vector<uint8_t>& buf, const ScaleAddr& sa, int64_t row, int64_t group, float s,
               bool packed) {
  const int64_t off = sa.offset(row, group);
  if (packed) {
    buf.at(off) = rules::ue8m0_byte(s);
  } else {
    std::memcpy(&buf.at(off * 4), &s, 4);
  }
}

}  // namespace

QuantResult quantize(const float* y, int64_t rows, int64_t cols, const QuantSpec& spec,
                     const RefScalars& sc) {
  QuantResult r;
  ScaleShape shape;
  r.status = scale_shape(spec, rows, cols, &shape);
  if (!r.status.ok()) return r;
  int64_t scale_elems = shape.rank ? 1 : 0;
  for (int i = 0; i < shape.rank; ++i) scale_elems *= shape.sizes[i];
  r.scales.assign(scale_elems * dtype_size(shape.dtype), 0);
  const ScaleAddr sa = ScaleAddr::make(spec, shape, rows);

  switch (spec.kind) {
    case QuantKind::kNone: {
      r.out_dtype = sc.none_dtype;
      const size_t es = dtype_size(sc.none_dtype);
      r.out.resize(rows * cols * es);
      for (int64_t i = 0; i < rows * cols; ++i) {
        if (sc.none_dtype == DType::kF32) {
          std::memcpy(&r.out[i * 4], &y[i], 4);
        } else {
          const uint16_t b = sc.none_dtype == DType::kBF16 ? bf16_bits(y[i]) : f16_bits(y[i]);
          std::memcpy(&r.out[i * 2], &b, 2);
        }
      }
      break;
    }
    case QuantKind::kFp8PerTensor: {
      r.out.resize(rows * cols);
      const float inv = rules::fp8_inv_scale(sc.scale);
      for (int64_t i = 0; i < rows * cols; ++i) r.out[i] = e4m3_encode(y[i] * inv);
      break;
    }
    case QuantKind::kFp8PerToken:
    case QuantKind::kFp8PerGroup: {
      r.out.resize(rows * cols);
      const bool per_token = spec.kind == QuantKind::kFp8PerToken;
      const bool engine = spec.rule == QuantRule::kEngine;
      const int64_t g = per_token ? cols : spec.group_size;
      const bool packed = spec.format == ScaleFormat::kUe8m0Packed;
      const bool pow2 = spec.format != ScaleFormat::kF32;
      for (int64_t t = 0; t < rows; ++t) {
        for (int64_t j0 = 0, j = 0; j0 < cols; j0 += g, ++j) {
          const int64_t j1 = std::min(cols, j0 + g);
          float amax = 0.0f;
          for (int64_t c = j0; c < j1; ++c) amax = rules::nan_max(amax, std::fabs(y[t * cols + c]));
          const float s = per_token ? rules::fp8_dynamic_scale(amax, sc.scale_ub, pow2)
                          : engine  ? rules::engine_group_scale(amax, sc.eps, sc.scale_ub, pow2)
                                    : rules::fp8_group_scale(amax, sc.scale_ub, pow2);
          put_scale(r.scales, sa, t, j, s, packed);
          const float inv = rules::fp8_inv_scale(s);
          for (int64_t c = j0; c < j1; ++c) {
            const float v = y[t * cols + c];
            r.out[t * cols + c] = e4m3_encode(engine ? rules::engine_fp8_quotient(v, s) : v * inv);
          }
        }
      }
      break;
    }
    case QuantKind::kNvfp4: {
      r.out_dtype = DType::kE2M1x2;
      r.out.assign(rows * cols / 2, 0);
      const float gs = sc.scale;
      const bool engine = spec.rule == QuantRule::kEngine;
      const auto rcp = [&sc](float x) {
        return sc.rcp_approx ? sc.rcp_approx(x) : rules::RcpApproxFtz{}(x);
      };
      for (int64_t t = 0; t < rows; ++t) {
        for (int64_t k = 0; k < cols / 16; ++k) {
          const float* blk = y + t * cols + k * 16;
          float bmax = 0.0f;
          for (int i = 0; i < 16; ++i) bmax = rules::nan_max(bmax, std::fabs(blk[i]));
          const uint8_t sf = e4m3_encode(engine ? rules::engine_nvfp4_sf_input(gs, bmax, rcp)
                                                : rules::nvfp4_sf_input(gs, bmax));
          r.scales.at(sa.offset(t, k)) = sf;
          const float sfv = rules::e4m3_value(sf);
          const float os = engine ? rules::engine_nvfp4_out_scale(sfv, gs, rcp)
                                  : rules::nvfp4_out_scale(sfv, gs);
          for (int i = 0; i < 16; ++i) {
            const uint8_t code = rules::e2m1_encode(blk[i] * os);
            r.out[(t * cols + k * 16 + i) / 2] |= static_cast<uint8_t>(code << (4 * (i & 1)));
          }
        }
      }
      break;
    }
  }
  if (spec.kind != QuantKind::kNone && spec.kind != QuantKind::kNvfp4) r.out_dtype = DType::kE4M3;
  return r;
}

}  // namespace qfuse::ref
