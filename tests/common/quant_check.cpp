#include "common/quant_check.h"

#include <cmath>
#include <cstring>
#include <random>
#include <sstream>

#include "common/compare.h"
#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"
#include "qfuse/quant/scale_addr.h"

namespace qfuse::test {
namespace {

int64_t numel(const ScaleShape& s) {
  if (s.rank == 0) return 0;
  int64_t n = 1;
  for (int i = 0; i < s.rank; ++i) n *= s.sizes[i];
  return n;
}

/// Decoded value of scale (t, j) in a scale buffer.
float read_scale(const std::vector<uint8_t>& buf, const QuantSpec& spec, const ScaleAddr& sa,
                 int64_t t, int64_t j) {
  const int64_t off = sa.offset(t, j);
  if (spec.kind == QuantKind::kNvfp4) return rules::e4m3_value(buf.at(off));
  if (spec.format == ScaleFormat::kUe8m0Packed) return rules::ue8m0_value(buf.at(off));
  float s;
  std::memcpy(&s, &buf.at(off * 4), 4);
  return s;
}

bool same_bits_or_nan(float a, float b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  return std::memcmp(&a, &b, 4) == 0;
}

float read_plain(const std::vector<uint8_t>& buf, DType dt, int64_t idx) {
  if (dt == DType::kF32) {
    float f;
    std::memcpy(&f, &buf.at(idx * 4), 4);
    return f;
  }
  uint16_t b;
  std::memcpy(&b, &buf.at(idx * 2), 2);
  return dt == DType::kBF16 ? ref::bf16_value(b) : ref::f16_value(b);
}

double e2m1_step(double r) {
  const double a = std::fabs(r);
  return a < 2.0 ? 0.5 : (a < 4.0 ? 1.0 : 2.0);
}

double plain_ulp(double y, DType dt) {
  const int mant = dt == DType::kBF16 ? 7 : (dt == DType::kF16 ? 10 : 23);
  const double a = std::fabs(y);
  if (a == 0.0) return dt == DType::kF16 ? std::ldexp(1.0, -24) : std::ldexp(1.0, -133);
  int e = 0;
  std::frexp(a, &e);
  double u = std::ldexp(1.0, e - 1 - mant);
  if (dt == DType::kF16) u = std::fmax(u, std::ldexp(1.0, -24));
  return u;
}

}  // namespace

DeviceQuantOutput DeviceQuantOutput::make(const QuantSpec& spec, int64_t rows, int64_t cols,
                                          DType none_dtype, float scale_value,
                                          std::optional<float> ub, int64_t row_pad) {
  DeviceQuantOutput d;
  d.spec = spec;
  d.rows = rows;
  d.cols = cols;
  d.out_dtype = quantized_dtype(spec).value_or(none_dtype);
  const int64_t width = spec.kind == QuantKind::kNvfp4 ? cols / 2 : cols;
  d.out_ld = width + row_pad;
  d.out = DeviceBuffer(rows * d.out_ld * dtype_size(d.out_dtype));
  if (!scale_shape(spec, rows, cols, &d.shape).ok()) throw std::invalid_argument("scale_shape");
  if (d.shape.rank) d.scales = DeviceBuffer(numel(d.shape) * dtype_size(d.shape.dtype));
  if (spec.reads_scale()) {
    d.scale = DeviceBuffer(4);
    d.scale.upload(&scale_value, 4);
  }
  if (ub) {
    d.has_ub = true;
    d.scale_ub = DeviceBuffer(4);
    d.scale_ub.upload(&*ub, 4);
  }
  d.poison();
  return d;
}

void DeviceQuantOutput::poison() {
  out.fill(kPoison);
  if (scales.get()) scales.fill(kPoison);
}

QuantOutput DeviceQuantOutput::view() const {
  QuantOutput q;
  q.spec = spec;
  const int64_t width = spec.kind == QuantKind::kNvfp4 ? cols / 2 : cols;
  q.out = TensorRef::strided(out.get(), out_dtype, {rows, width}, {out_ld, 1});
  if (shape.rank) {
    q.scales.data = scales.get();
    q.scales.dtype = shape.dtype;
    q.scales.rank = shape.rank;
    int64_t stride = 1;
    for (int i = shape.rank - 1; i >= 0; --i) {
      q.scales.sizes[i] = shape.sizes[i];
      q.scales.strides[i] = stride;
      stride *= shape.sizes[i];
    }
  }
  q.scale = spec.reads_scale() ? scale.as<float>() : nullptr;
  q.scale_ub = has_ub ? scale_ub.as<float>() : nullptr;
  return q;
}

std::vector<int64_t> sample_rows(int64_t rows, int64_t cols, uint64_t seed) {
  std::vector<int64_t> r;
  if (rows * cols <= (int64_t{1} << 22)) {
    for (int64_t t = 0; t < rows; ++t) r.push_back(t);
    return r;
  }
  std::mt19937_64 rng(seed);
  // The first rows always: tests put their special values (NaN, inf, zero groups) there.
  for (int64_t t = 0; t < 8 && t < rows; ++t) r.push_back(t);
  for (int i = 0; i < 64; ++i) r.push_back(static_cast<int64_t>(rng() % rows));
  r.push_back(rows - 1);
  return r;
}

::testing::AssertionResult check_quant_output(const DeviceQuantOutput& d,
                                              const std::vector<double>& y,
                                              const CheckOptions& opt) {
  const QuantSpec& spec = d.spec;
  const int64_t T = d.rows, H = d.cols;
  if (static_cast<int64_t>(y.size()) != T * H)
    return ::testing::AssertionFailure() << "y has " << y.size() << " values, expected " << T * H;
  const std::vector<uint8_t> out = d.out.download();
  const std::vector<uint8_t> scales = d.scales.get() ? d.scales.download() : std::vector<uint8_t>{};
  const size_t es = dtype_size(d.out_dtype);
  const int64_t width = spec.kind == QuantKind::kNvfp4 ? H / 2 : H;
  std::vector<int64_t> rows = opt.rows;
  if (rows.empty())
    for (int64_t t = 0; t < T; ++t) rows.push_back(t);
  const int64_t n = static_cast<int64_t>(rows.size());

  // Reference on the selected rows.
  std::vector<float> yf(n * H);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < H; ++c) yf[i * H + c] = static_cast<float>(y[rows[i] * H + c]);
  ref::RefScalars sc;
  sc.scale = opt.scale_value;
  sc.scale_ub = opt.scale_ub;
  sc.none_dtype = opt.none_dtype;
  sc.eps = opt.eps;
  sc.rcp_approx = opt.rcp_approx;
  const ref::QuantResult R = ref::quantize(yf.data(), n, H, spec, sc);
  ScaleShape ref_shape;
  (void)scale_shape(spec, n, H, &ref_shape);
  const ScaleAddr sa_dev = ScaleAddr::make(spec, d.shape, T);
  const ScaleAddr sa_ref = ScaleAddr::make(spec, ref_shape, n);
  const int64_t G = d.shape.num_groups;
  const int64_t g = spec.kind == QuantKind::kFp8PerGroup ? spec.group_size
                    : spec.kind == QuantKind::kNvfp4     ? 16
                                                         : H;

  Mismatches bad;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = rows[i];
    // Scales.
    std::vector<float> s_dev(G > 0 ? G : 1, opt.scale_value);
    for (int64_t j = 0; j < G && spec.writes_scales(); ++j) {
      s_dev[j] = read_scale(scales, spec, sa_dev, t, j);
      const float s_ref = read_scale(R.scales, spec, sa_ref, i, j);
      bool ok;
      if (opt.exact) {
        ok = same_bits_or_nan(s_dev[j], s_ref);
      } else if (spec.kind == QuantKind::kNvfp4) {
        ok = std::isnan(s_ref) ? std::isnan(s_dev[j])
                               : std::fabs(s_dev[j] - s_ref) <= fp8_step(s_ref) * 1.000001;
      } else if (spec.format != ScaleFormat::kF32) {
        // A power of two may flip to its neighbour only when the unrounded scale sits within
        // fp32 rounding of a power of two.
        ok = same_bits_or_nan(s_dev[j], s_ref);
        if (!ok && (s_dev[j] == 2 * s_ref || 2 * s_dev[j] == s_ref)) {
          double amax = 0;
          for (int64_t c = j * g; c < std::min(H, (j + 1) * g); ++c)
            amax = std::fmax(amax, std::fabs(y[t * H + c]));
          const double raw = spec.kind == QuantKind::kFp8PerToken
                                 ? std::fmin(amax, opt.scale_ub) / 448.0
                                 : std::fmin(amax / 448.0, opt.scale_ub);
          const double p = std::ldexp(1.0, std::ilogb(raw));
          ok = std::fabs(raw - p) <= raw * 1e-5 || std::fabs(raw - 2 * p) <= raw * 1e-5;
        }
      } else {
        ok = ulp_distance(s_dev[j], s_ref) <= opt.scale_ulps;
      }
      if (!ok) {
        std::ostringstream os;
        os << "scale (row " << t << ", group " << j << "): device " << s_dev[j] << " reference "
           << s_ref;
        bad.add(os.str());
      }
    }
    // Values.
    for (int64_t c = 0; c < H; ++c) {
      const double yv = y[t * H + c];
      bool ok = true;
      if (spec.kind == QuantKind::kNone) {
        const float dv = read_plain(out, d.out_dtype, t * d.out_ld + c);
        if (opt.exact) {
          const float rv = read_plain(R.out, d.out_dtype, i * H + c);
          ok = same_bits_or_nan(dv, rv);
          if (!ok) {
            std::ostringstream os;
            os << "value (" << t << ", " << c << "): device " << dv << " reference " << rv;
            bad.add(os.str());
          }
        } else {
          // NOTE: fp32 outputs carry the device's expf error (a few ulps); values below 1e-30
          // may flush to zero (exp(-gate) overflows fp32 for gates below -88).
          const double ulps = d.out_dtype == DType::kF32 ? 8.0 : 1.0;
          ok = std::isnan(yv) ? std::isnan(dv)
                              : dv == yv || std::fabs(dv - yv) <=
                                                ulps * plain_ulp(yv, d.out_dtype) + 1e-30 +
                                                    opt.abs_tol + opt.rel_tol * std::fabs(yv);
          if (!ok) {
            std::ostringstream os;
            os << "value (" << t << ", " << c << "): device " << dv << " exact " << yv;
            bad.add(os.str());
          }
        }
      } else if (spec.kind == QuantKind::kNvfp4) {
        const uint8_t dc = (out.at(t * d.out_ld + c / 2) >> (4 * (c & 1))) & 0xF;
        if (opt.exact) {
          const uint8_t rc = (R.out.at((i * H + c) / 2) >> (4 * (c & 1))) & 0xF;
          ok = dc == rc;
          if (!ok) {
            std::ostringstream os;
            os << "e2m1 (" << t << ", " << c << "): device 0x" << std::hex << int(dc)
               << " reference 0x" << int(rc);
            bad.add(os.str());
          }
        } else {
          const float os_dev = rules::nvfp4_out_scale(s_dev[c / 16], opt.scale_value);
          const double r = yv * os_dev;
          const float dv = rules::e2m1_value(dc);
          if (std::isnan(r))
            ok = dc == 0x7;
          else if (std::fabs(r) >= 6.0)
            ok = dv == (r > 0 ? 6.0f : -6.0f);
          else
            ok = std::fabs(dv - r) <= e2m1_step(r) * 1.000001;
          if (!ok) {
            std::ostringstream os;
            os << "e2m1 (" << t << ", " << c << "): device " << dv << " exact " << r;
            bad.add(os.str());
          }
        }
      } else {
        const uint8_t dc = out.at(t * d.out_ld + c);
        if (opt.exact) {
          const uint8_t rc = R.out.at(i * H + c);
          ok = dc == rc || ((dc & 0x7F) == 0x7F && (rc & 0x7F) == 0x7F);
          if (!ok) {
            std::ostringstream os;
            os << "e4m3 (" << t << ", " << c << "): device 0x" << std::hex << int(dc)
               << " reference 0x" << int(rc);
            bad.add(os.str());
          }
        } else {
          const float s = spec.kind == QuantKind::kFp8PerTensor  ? opt.scale_value
                          : spec.kind == QuantKind::kFp8PerToken ? s_dev[0]
                                                                 : s_dev[c / g];
          const double r = yv / s;
          ok = fp8_code_near(dc, r);
          if (!ok) {
            std::ostringstream os;
            os << "e4m3 (" << t << ", " << c << "): device " << rules::e4m3_value(dc) << " exact "
               << r;
            bad.add(os.str());
          }
        }
      }
    }
  }
  // Bytes between rows of a strided output are untouched.
  for (int64_t t = 0; t < T; ++t)
    for (int64_t b = width * es; b < d.out_ld * static_cast<int64_t>(es); ++b)
      if (out[t * d.out_ld * es + b] != kPoison) {
        std::ostringstream os;
        os << "row gap byte " << b << " written at row " << t << ": row bytes" << std::hex;
        for (int64_t k = 0; k < d.out_ld * static_cast<int64_t>(es) && k < 64; ++k)
          os << " " << int(out[t * d.out_ld * es + k]);
        bad.add(os.str());
        break;
      }
  // Rows not compared were still written (poison 0x7F is an E4M3 NaN; inputs here are finite
  // unless the test put NaN in them).
  if (spec.is_fp8()) {
    std::vector<bool> chosen(T, false);
    for (int64_t t : rows) chosen[t] = true;
    for (int64_t t = 0; t < T; ++t) {
      if (chosen[t]) continue;
      for (int64_t c = 0; c < H; ++c)
        if (out[t * d.out_ld + c] == kPoison && !std::isnan(y[t * H + c])) {
          bad.add("unwritten value at row " + std::to_string(t));
          break;
        }
    }
  }
  // Scale padding is zero.
  if (spec.writes_scales()) {
    const int64_t eb = sa_dev.elem_bytes;
    auto check_zero = [&](int64_t r, int64_t j) {
      const int64_t off = sa_dev.offset(r, j) * eb;
      for (int64_t b = 0; b < eb; ++b)
        if (scales.at(off + b) != 0) {
          bad.add("scale padding (" + std::to_string(r) + ", " + std::to_string(j) + ") not zero");
          return;
        }
    };
    for (int64_t r = T; r < sa_dev.padded_rows; ++r)
      for (int64_t j = 0; j < sa_dev.padded_groups; ++j) check_zero(r, j);
    for (int64_t r = 0; r < T; ++r)
      for (int64_t j = sa_dev.groups; j < sa_dev.padded_groups; ++j) check_zero(r, j);
  }
  if (bad.count == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << to_string(spec) << " [" << T << ", " << H << "]: " << bad.count << " mismatches\n"
         << bad.report;
}

}  // namespace qfuse::test
