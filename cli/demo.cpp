// `qfuse demo`: silu_mul_quant on realistic gated-MLP shapes and merge_states on split-KV / DCP
// shapes, fused and unfused, each checked against the fp64 host reference on the first and last
// 16 rows, with a simple timing.
// Without a GPU it runs the host reference on a small shape and shows what it writes.
//
// Accuracy (SPEC §0.4): the reference is ref::silu_and_mul / ref::merge_states in fp64, rounded
// to fp32 and written by ref::quantize. For each value, v = y / scale (FP8) or y * out_scale
// (NVFP4) with the scale the device wrote, saturated to the format's range; the error is |code
// value - v| in steps of the format at |v| and must be <= 1 step. Scales: fp32 within 8 ulps
// (merge: 64) of the reference for the fused path; the unfused path quantizes bf16(y), so its fp32
// scales may differ by 2^-8 relative and power-of-two scales by a factor of 2. NVFP4 block scales
// may differ by one E4M3 code.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "bench/routines.h"
#include "cli/commands.h"
#include "qfuse/act_quant/silu_mul.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/merge_states/merge_states.h"
#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"

namespace qfuse::cli {
namespace {

const char* const kSpecs[] = {"fp8_group128:col_tma:ue8m0_packed", "fp8_group128:row:f32",
                              "nvfp4:swizzled"};

struct DemoShape {
  const char* label;
  int64_t T, H;
};
constexpr DemoShape kShapes[] = {
    {"DeepSeek-V3 dense-like", 4096, 7168}, {"Llama-3-70B", 4096, 14336}, {"decode", 16, 7168}};

/// Outputs of some rows of a T-row op: their codes and the whole scale buffer.
struct RowsOutput {
  std::vector<uint8_t> codes;       // rows x bytes per row
  std::vector<uint8_t> scales;      // the scale buffer, storage form of `shape`
  ScaleShape shape;                 // scale_shape() for the op's T rows
  std::vector<int64_t> scale_rows;  // row index in the scale buffer of each row of `codes`
};

struct Accuracy {
  int64_t values = 0, bad_values = 0, codes_differ = 0;
  int64_t scales = 0, bad_scales = 0, scales_differ = 0;
  double max_steps = 0.0;  // +inf when a value is NaN
  double max_abs_err = 0.0, sum_sq_err = 0.0, sum_sq_y = 0.0;
  bool ok() const { return bad_values == 0 && bad_scales == 0; }
};

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
                    double scale_ulps = 8.0) {
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

// ---- GPU path -------------------------------------------------------------------------------

#define DEMO_CHECK(expr)                                                        \
  do {                                                                          \
    const ::qfuse::Status demo_status_ = (expr);                                \
    if (!demo_status_.ok()) throw std::runtime_error(demo_status_.to_string()); \
  } while (0)
#define DEMO_CUDA(call) DEMO_CHECK(::qfuse::cuda_status((call), #call))

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

/// One demo case: an op writing [T, H] values, the fp64 reference of some of its rows, and the
/// fused and unfused ways of writing them through a QuantOutput.
struct DemoCase {
  int64_t T = 0, H = 0;
  std::vector<int64_t> rows;
  std::vector<double> y;    // rows.size() x H
  double y_bound = 0.0;     // bound of |y| (sets the given scales)
  double scale_ulps = 8.0;  // fused fp32 scales vs the reference
  std::function<void(const QuantOutput&)> fused, unfused;
};

bool run_case(const DemoCase& dc, const DemoOptions& opt) {
  const int64_t T = dc.T, H = dc.H;
  const int64_t n = static_cast<int64_t>(dc.rows.size());
  print_cells({"spec", "path", "max err", "bad/values", "codes≠ref", "bad/scales", "µs/call",
               "unfused/fused"});
  bool ok = true;
  for (const char* text : kSpecs) {
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
    const double us_f = time_us(fused, opt.reps);
    const double us_u = time_us(unfused, opt.reps);
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

bool run_shape(const DemoShape& s, const DemoOptions& opt) {
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
  return run_case(dc, opt);
}

struct MergeShape {
  const char* label;
  int64_t N, T, H, D;
};
constexpr MergeShape kMergeShapes[] = {{"cascade / DCP 2-way", 2, 4096, 32, 128},
                                       {"split-KV decode 4-way", 4, 64, 128, 128},
                                       {"DCP 8-way, MLA latent", 8, 256, 16, 512}};

/// merge_states of N stacked bf16 partials (random values, lse in [-4, 4] with every 11th
/// entry -inf), fused into the quantizer vs merge to bf16 then quantize.
bool run_merge_shape(const MergeShape& s, const DemoOptions& opt) {
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
  return run_case(dc, opt);
}

int run_gpu(const DemoOptions& opt) {
  DeviceInfo d;
  DEMO_CHECK(current_device_info(&d));
  DEMO_CHECK(bench::check_kernel_image());
  std::printf("qfuse demo on %s (sm_%d%d, %d SMs)\n", d.name.c_str(), d.cc_major, d.cc_minor,
              d.sm_count);
  std::printf(
      "accuracy: first and last 16 rows vs the fp64 host reference; max err in steps of "
      "the output format (<= 1 passes); timing: mean of %d calls after a warm-up "
      "(`qfuse bench` for real numbers)\n",
      opt.reps);
  bool ok = true;
  for (const DemoShape& s : kShapes) ok = run_shape(s, opt) && ok;
  for (const MergeShape& s : kMergeShapes) ok = run_merge_shape(s, opt) && ok;
  std::printf("\n%s\n", ok ? "all accuracy checks passed" : "ACCURACY CHECK FAILED");
  return ok ? 0 : 1;
}

// ---- host path ------------------------------------------------------------------------------

/// A 3-way merge on the host: the fp64 reference with an empty partial and an all-empty row,
/// then written as FP8 per-tensor by the host quantizer.
int run_host_merge() {
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
  return a.ok() ? 0 : 1;
}

int run_host() {
  std::printf("no CUDA device: running the host reference path on small shapes\n");
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

  for (const char* text : kSpecs) {
    QuantSpec spec;
    if (!parse_quant_spec(text, &spec).ok()) return 1;
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
  }
  return run_host_merge();
}

}  // namespace

int run_demo(const DemoOptions& opt) {
  if (!gpu_available()) return run_host();
  try {
    return run_gpu(opt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qfuse demo: %s\n", e.what());
    return 1;
  }
}

}  // namespace qfuse::cli
