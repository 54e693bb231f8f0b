// The demo kit (bench/demo_kit.h).
#include "bench/demo_kit.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"

namespace qfuse::bench {

const char* const kDemoSpecs[3] = {"fp8_group128:col_tma:ue8m0_packed", "fp8_group128:row:f32",
                                   "nvfp4:swizzled"};

double e4m3_step(double a) {
  if (a < 0x1p-6) return 0x1p-9;
  return std::ldexp(1.0, std::min(static_cast<int>(std::floor(std::log2(a))), 8) - 3);
}
double e2m1_step(double a) {
  return a < 2.0 ? 0.5 : a < 4.0 ? 1.0 : 2.0;
}

float scale_at(const QuantSpec& spec, const RowsOutput& o, int64_t i, int64_t group) {
  const int64_t off = ref::scale_offset(spec, o.shape, o.scale_rows[i], group);
  switch (o.shape.dtype) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, &o.scales.at(off * 4), 4);
      return f;
    }
    case DType::kUE8M0:
      return rules::ue8m0_value(o.scales.at(off));
    default:
      return rules::e4m3_value(o.scales.at(off));
  }
}

uint8_t code_at(const QuantSpec& spec, const RowsOutput& o, int64_t i, int64_t c, int64_t H) {
  if (spec.kind != QuantKind::kNvfp4) return o.codes.at(i * H + c);
  const uint8_t b = o.codes.at(i * (H / 2) + c / 2);
  return c % 2 ? b >> 4 : b & 0xF;
}

/// Columns that share one scale.
int64_t group_width(const QuantSpec& spec, int64_t H) {
  if (spec.kind == QuantKind::kFp8PerGroup) return spec.group_size;
  if (spec.kind == QuantKind::kNvfp4) return rules::kNvfp4Block;
  return H;
}

/// The factor that dequantizes code (i, c): x ~= code value * factor.
double dequant_factor(const QuantSpec& spec, const RowsOutput& o, int64_t i, int64_t c, int64_t H,
                      float given_scale) {
  if (spec.kind == QuantKind::kFp8PerTensor) return given_scale;
  const float s = scale_at(spec, o, i, c / group_width(spec, H));
  return spec.kind == QuantKind::kNvfp4 ? s / static_cast<double>(given_scale) : s;
}

bool scale_close(const QuantSpec& spec, float d, float r, bool fused, double ulps) {
  if (std::isnan(d) || std::isnan(r)) return false;
  if (spec.kind == QuantKind::kNvfp4) return std::fabs(d - r) <= e4m3_step(std::fabs(r)) * 1.0001;
  if (spec.format != ScaleFormat::kF32)  // powers of two
    return d == r || (!fused && (d == 2.0f * r || 2.0f * d == r));
  const double tol = fused ? ulps * (std::nextafter(r, INFINITY) - r) : 0x1p-8 * std::fabs(r);
  return std::fabs(static_cast<double>(d) - r) <= tol;
}

/// Checks `dev` against the reference `ref` of the same rows; y holds those rows in fp64.
Accuracy check_rows(const QuantSpec& spec, const std::vector<double>& y, int64_t H,
                    const RowsOutput& dev, const RowsOutput& ref, float given_scale, bool fused,
                    double scale_ulps) {
  Accuracy a;
  const int64_t rows = static_cast<int64_t>(dev.scale_rows.size());
  const int64_t group = group_width(spec, H);
  for (int64_t i = 0; i < rows; ++i) {
    if (spec.writes_scales()) {
      for (int64_t g = 0; g < dev.shape.num_groups; ++g) {
        const float d = scale_at(spec, dev, i, g), r = scale_at(spec, ref, i, g);
        ++a.scales;
        a.scales_differ += std::memcmp(&d, &r, 4) != 0;
        a.bad_scales += !scale_close(spec, d, r, fused, scale_ulps);
      }
    }
    for (int64_t c = 0; c < H; ++c) {
      const double yv = y[i * H + c];
      const uint8_t code = code_at(spec, dev, i, c, H);
      double v, q, step, deq;
      if (spec.kind == QuantKind::kNvfp4) {
        const float sf = scale_at(spec, dev, i, c / group);
        const double os = rules::nvfp4_out_scale(sf, given_scale);
        v = std::clamp(yv * os, -6.0, 6.0);
        q = rules::e2m1_value(code);
        step = e2m1_step(std::fabs(v));
        deq = q * sf / given_scale;
      } else {
        const double s =
            spec.kind == QuantKind::kFp8PerTensor ? given_scale : scale_at(spec, dev, i, c / group);
        v = std::clamp(yv / s, -448.0, 448.0);
        q = rules::e4m3_value(code);
        step = e4m3_step(std::fabs(v));
        deq = q * s;
      }
      const double err = std::fabs(q - v) / step;
      ++a.values;
      a.codes_differ += code != code_at(spec, ref, i, c, H);
      if (!(err <= 1.0 + 1e-9)) ++a.bad_values;
      a.max_steps = std::isnan(err) ? INFINITY : std::max(a.max_steps, err);
      const double e = std::fabs(deq - yv);
      a.max_abs_err = std::isnan(e) ? INFINITY : std::max(a.max_abs_err, e);
      a.sum_sq_err += e * e;
      a.sum_sq_y += yv * yv;
    }
  }
  return a;
}

/// Reference outputs of `rows` rows of y (fp64) for `spec`.
RowsOutput reference(const QuantSpec& spec, const std::vector<double>& y, int64_t rows, int64_t H,
                     float given_scale) {
  const std::vector<float> yf(y.begin(), y.end());
  ref::RefScalars sc;
  sc.scale = given_scale;
  ref::QuantResult r = ref::quantize(yf.data(), rows, H, spec, sc);
  RowsOutput o;
  o.codes = std::move(r.out);
  o.scales = std::move(r.scales);
  if (!scale_shape(spec, rows, H, &o.shape).ok()) throw std::logic_error("scale_shape");
  for (int64_t i = 0; i < rows; ++i) o.scale_rows.push_back(i);
  return o;
}

/// The given scale of the demo: the data's bound keeps NVFP4 block scales and per-tensor codes
/// inside their ranges.
float demo_given_scale(const QuantSpec& spec, double y_bound) {
  if (spec.kind == QuantKind::kNvfp4) return static_cast<float>(448.0 * 6.0 / y_bound);
  if (spec.kind == QuantKind::kFp8PerTensor) return static_cast<float>(y_bound / 448.0);
  return 1.0f;
}

double y_bound() {
  const double b = bench::kRandomBound;
  return b / (1.0 + std::exp(-b)) * b;
}

std::string steps(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, std::isinf(s) ? "NaN" : "%.3f", s);
  return buf;
}

RowsOutput download(const bench::QuantBuffers& b, const std::vector<int64_t>& rows, int64_t T,
                    int64_t H) {
  RowsOutput o;
  const int64_t row_bytes = b.q.spec.kind == QuantKind::kNvfp4 ? H / 2 : H;
  o.codes.resize(rows.size() * row_bytes);
  for (size_t i = 0; i < rows.size(); ++i)
    DEMO_CUDA(cudaMemcpy(&o.codes[i * row_bytes], b.out.as<uint8_t>() + rows[i] * row_bytes,
                         row_bytes, cudaMemcpyDeviceToHost));
  DEMO_CHECK(scale_shape(b.q.spec, T, H, &o.shape));
  o.scales.resize(b.scales.bytes());
  if (b.scales.get() != nullptr)
    DEMO_CUDA(cudaMemcpy(o.scales.data(), b.scales.get(), o.scales.size(), cudaMemcpyDeviceToHost));
  o.scale_rows = rows;
  return o;
}

void poison(const bench::QuantBuffers& b) {
  DEMO_CUDA(cudaMemset(b.out.get(), 0x7F, b.out.bytes()));  // 0x7F: E4M3 NaN, no valid scale
  if (b.scales.get() != nullptr) DEMO_CUDA(cudaMemset(b.scales.get(), 0x7F, b.scales.bytes()));
}

/// Mean µs per call of `call` over `reps` calls after one warm-up call.
template <class F>
double time_us(F&& call, int reps) {
  cudaEvent_t start, stop;
  DEMO_CUDA(cudaEventCreate(&start));
  DEMO_CUDA(cudaEventCreate(&stop));
  call();
  DEMO_CUDA(cudaEventRecord(start, 0));
  for (int i = 0; i < reps; ++i) call();
  DEMO_CUDA(cudaEventRecord(stop, 0));
  DEMO_CUDA(cudaEventSynchronize(stop));
  float ms = 0.0f;
  DEMO_CUDA(cudaEventElapsedTime(&ms, start, stop));
  DEMO_CUDA(cudaEventDestroy(start));
  DEMO_CUDA(cudaEventDestroy(stop));
  return 1e3 * ms / reps;
}

/// Pads to a display width (UTF-8 aware: "µ" and "≠" count as one column).
std::string pad(const std::string& s, size_t w, bool right) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  if (n >= w) return s;
  return right ? std::string(w - n, ' ') + s : s + std::string(w - n, ' ');
}

std::string count_of(int64_t part, int64_t whole) {
  return std::to_string(part) + "/" + std::to_string(whole);
}

constexpr size_t kCols[] = {34, 8, 9, 16, 10, 12, 9, 14, 7};

void print_cells(const std::vector<std::string>& cells) {
  std::string line = " ";
  for (size_t i = 0; i < cells.size(); ++i) line += " " + pad(cells[i], kCols[i], i >= 2);
  while (!line.empty() && line.back() == ' ') line.pop_back();
  std::printf("%s\n", line.c_str());
}

void print_row(const char* spec, const char* path, const Accuracy& a, double us, double ratio) {
  char t[32], r[32];
  std::snprintf(t, sizeof t, "%.1f", us);
  std::snprintf(r, sizeof r, "%.2f×", ratio);
  print_cells({spec, path, steps(a.max_steps), count_of(a.bad_values, a.values),
               std::to_string(a.codes_differ), count_of(a.bad_scales, a.scales), t,
               ratio > 0.0 ? r : "", a.ok() ? "" : "FAILED"});
}

bool run_case(const DemoCase& dc, int reps) {
  const int64_t T = dc.T, H = dc.H;
  const int64_t n = static_cast<int64_t>(dc.rows.size());
  print_cells({"spec", "path", "max err", "bad/values", "codes≠ref", "bad/scales", "µs/call",
               "unfused/fused"});
  bool ok = true;
  for (const char* text : kDemoSpecs) {
    QuantSpec spec;
    DEMO_CHECK(parse_quant_spec(text, &spec));
    const float given = demo_given_scale(spec, dc.y_bound);
    bench::DeviceBuffer given_dev;
    DEMO_CHECK(bench::device_scalar(given, &given_dev));
    bench::QuantBuffers qb;
    DEMO_CHECK(bench::make_quant_buffers(spec, T, H, given_dev.as<float>(), &qb));
    const RowsOutput want = reference(spec, dc.y, n, H, given);

    auto fused = [&] { dc.fused(qb.q); };
    auto unfused = [&] { dc.unfused(qb.q); };
    poison(qb);
    fused();
    DEMO_CUDA(cudaDeviceSynchronize());
    const Accuracy af =
        check_rows(spec, dc.y, H, download(qb, dc.rows, T, H), want, given, true, dc.scale_ulps);
    poison(qb);
    unfused();
    DEMO_CUDA(cudaDeviceSynchronize());
    const Accuracy au = check_rows(spec, dc.y, H, download(qb, dc.rows, T, H), want, given, false);
    const double us_f = time_us(fused, reps);
    const double us_u = time_us(unfused, reps);
    print_row(text, "fused", af, us_f, 0.0);
    print_row("", "unfused", au, us_u, us_u / us_f);
    ok = ok && af.ok() && au.ok();
  }
  return ok;
}

/// The first and last 16 rows of T.
std::vector<int64_t> demo_rows(int64_t T) {
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < std::min<int64_t>(16, T); ++r) rows.push_back(r);
  for (int64_t r = std::max<int64_t>(16, T - 16); r < T; ++r) rows.push_back(r);
  return rows;
}

}  // namespace qfuse::bench
