// The reference engine's rule (QuantRule::kEngine): its spec grammar, validation and capability
// rows, and its arithmetic (rules.h engine_*) through the host reference, checked against
// independent fp64 computations of the engine's formulas: inputs built to land exactly on E4M3
// ties (where e4m3(x / s) and e4m3(x * (1 / s)) differ), the per-group amax floor eps, scale_ub,
// the UE8M0 rounding through libdevice's log2f, the division's special operands, NVFP4's
// approximate reciprocals and the SiLU arithmetic. The native rule keeps its codes (the same
// ties, its own formula). Device against host: test_engine_rule_gpu.cu and the GPU tests of
// quantize and silu_mul_quant.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "common/compare.h"
#include "qfuse/act_quant/silu_mul.h"
#include "qfuse/quant/capabilities.h"
#include "qfuse/quant/kind.h"
#include "qfuse/quant/quantize.h"
#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"

namespace qfuse {
namespace {

using L = ScaleLayout;
using F = ScaleFormat;

// ---- independent fp64 models -----------------------------------------------------------------

/// Value of a finite non-negative E4M3 code c in [0, 0x7E], from the format's definition.
double e4m3_code_value(int c) {
  const int e = c >> 3, m = c & 7;
  return e == 0 ? std::ldexp(m, -9) : std::ldexp(1.0 + m / 8.0, e - 7);
}

/// E4M3 code of v: the nearest finite code by exhaustive search (ties to the even code),
/// saturating at 448, NaN -> 0x7F. Independent of ref::e4m3_encode and of the hardware.
uint8_t e4m3_nearest(double v) {
  if (std::isnan(v)) return 0x7F;
  const uint8_t sign = std::signbit(v) ? 0x80 : 0x00;
  const double a = std::fabs(v);
  if (a >= 448.0) return sign | 0x7E;
  int best = 0;
  double best_d = INFINITY;
  for (int c = 0; c <= 0x7E; ++c) {
    const double d = std::fabs(e4m3_code_value(c) - a);
    if (d < best_d || (d == best_d && c % 2 == 0)) {
      best_d = d;
      best = c;
    }
  }
  return static_cast<uint8_t>(sign | best);
}

/// RN32(x / s): the fp64 quotient rounded to fp32 (rounding twice is exact for a quotient of two
/// fp32 values: 53 >= 2 * 24 + 2).
float div32(float x, float s) {
  return static_cast<float>(static_cast<double>(x) / static_cast<double>(s));
}
/// RN32(x * y): exact in fp64, rounded once.
float mul32(float x, float y) {
  return static_cast<float>(static_cast<double>(x) * static_cast<double>(y));
}

float bits(uint32_t u) {
  return rules::bits_float(u);
}

bool same_bits(float a, float b) {
  return rules::float_bits(a) == rules::float_bits(b);
}

float read_f32(const std::vector<uint8_t>& b, int64_t i) {
  float f;
  std::memcpy(&f, &b.at(i * 4), 4);
  return f;
}

// ---- vocabulary ------------------------------------------------------------------------------

TEST(EngineRuleSpec, EngineSpecsAreTheKindsThatRoundDifferentlyAndRoundTrip) {
  const std::vector<QuantSpec> engine = engine_quant_specs();
  // per-token, 2 group sizes x 3 layouts x 3 formats, 2 NVFP4 layouts.
  EXPECT_EQ(engine.size(), 1u + 2u * 3u * 3u + 2u);
  std::set<std::string> names;
  for (const QuantSpec& s : all_quant_specs()) {
    EXPECT_EQ(s.rule, QuantRule::kNative) << to_string(s);
    names.insert(to_string(s));
  }
  for (const QuantSpec& s : engine) {
    const std::string name = to_string(s);
    EXPECT_EQ(s.rule, QuantRule::kEngine);
    EXPECT_TRUE(s.has_engine_rule()) << name;
    EXPECT_TRUE(s.validate().ok()) << name << ": " << s.validate().to_string();
    ASSERT_GT(name.size(), 7u);
    EXPECT_EQ(name.substr(name.size() - 7), ":engine");
    EXPECT_TRUE(names.insert(name).second) << "duplicate " << name;
    const QuantSpec native = s.with_rule(QuantRule::kNative);
    EXPECT_NE(native, s) << name;
    EXPECT_EQ(to_string(native) + ":engine", name);
    QuantSpec parsed = native;
    ASSERT_TRUE(parse_quant_spec(name, &parsed).ok()) << name;
    EXPECT_EQ(parsed, s) << name;
    ASSERT_TRUE(parse_quant_spec(to_string(native), &parsed).ok());
    EXPECT_EQ(parsed, native);
  }
  EXPECT_EQ(to_string(QuantSpec::fp8_per_token().with_rule(QuantRule::kEngine)),
            "fp8_per_token:engine");
  EXPECT_EQ(to_string(QuantSpec::fp8_per_group(128, L::kColMajorTma, F::kUe8m0Packed)
                          .with_rule(QuantRule::kEngine)),
            "fp8_group128:col_tma:ue8m0_packed:engine");
  EXPECT_EQ(to_string(QuantSpec::nvfp4(L::kRowMajor).with_rule(QuantRule::kEngine)),
            "nvfp4:linear:engine");
  EXPECT_EQ(to_string(QuantRule::kEngine), "engine");
  EXPECT_EQ(to_string(QuantRule::kNative), "native");
}

TEST(EngineRuleSpec, KindsWithoutAnEngineRuleAndBadSuffixesAreRejected) {
  // none and fp8_per_tensor round as the engine does: the suffix is an error that says so.
  for (const char* text : {"none:engine", "fp8_per_tensor:engine"}) {
    QuantSpec s = QuantSpec::fp8_per_token();
    const Status st = parse_quant_spec(text, &s);
    test::expect_invalid_argument(st, "quant", "no engine rule");
    EXPECT_NE(st.message().find(std::string("'") + text + "'"), std::string::npos)
        << st.to_string();
    EXPECT_EQ(s, QuantSpec::fp8_per_token()) << "output changed on error for " << text;
  }
  for (const char* text :
       {"fp8_per_token:engine:engine", "fp8_per_token:ENGINE", "fp8_per_token:native", "engine",
        ":engine", "fp8_per_token engine", "fp8_group128:row:engine", "nvfp4:engine",
        "fp8_per_token:engine ", "fp8_group128:row:f32:engine:f32"}) {
    QuantSpec s = QuantSpec::none();
    const Status st = parse_quant_spec(text, &s);
    test::expect_invalid_argument(st, "quant", "[:engine]");
    EXPECT_EQ(s, QuantSpec::none()) << "output changed on error for '" << text << "'";
  }
  // The fields: a rule on a kind without one, and a value outside the enum.
  test::expect_invalid_argument(
      QuantSpec::fp8_per_tensor().with_rule(QuantRule::kEngine).validate(), "quant.rule",
      "native for fp8_per_tensor");
  test::expect_invalid_argument(QuantSpec::none().with_rule(QuantRule::kEngine).validate(),
                                "quant.rule", "native for none");
  test::expect_invalid_argument(
      QuantSpec::fp8_per_token().with_rule(static_cast<QuantRule>(7)).validate(), "quant.rule",
      "native|engine");
  ScaleShape sh;
  test::expect_invalid_argument(
      scale_shape(QuantSpec::fp8_per_tensor().with_rule(QuantRule::kEngine), 4, 64, &sh),
      "quant.rule");
}

TEST(EngineRuleSpec, ScaleShapesAreTheNativeOnes) {
  for (const QuantSpec& s : engine_quant_specs()) {
    ScaleShape a, b;
    ASSERT_TRUE(scale_shape(s, 37, 1024, &a).ok()) << to_string(s);
    ASSERT_TRUE(scale_shape(s.with_rule(QuantRule::kNative), 37, 1024, &b).ok());
    EXPECT_EQ(a.dtype, b.dtype);
    EXPECT_EQ(a.rank, b.rank);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(a.sizes[i], b.sizes[i]) << to_string(s);
    EXPECT_EQ(quantized_dtype(s), quantized_dtype(s.with_rule(QuantRule::kNative)));
  }
}

TEST(EngineRuleSpec, OnlyTheDropInOpsWriteTheEngineRule) {
  const std::vector<QuantSpec> engine = engine_quant_specs();
  for (const OpCapability& op : op_capabilities()) {
    std::vector<QuantSpec> e;
    for (const QuantSpec& s : op.output_specs)
      if (s.rule == QuantRule::kEngine) e.push_back(s);
    if (op.op == "quantize") {
      EXPECT_EQ(e, engine);  // per-token, per-group, NVFP4
    } else if (op.op == "silu_mul_quant") {
      std::vector<QuantSpec> groups;  // silu_and_mul_per_block_quant: per-group only
      for (const QuantSpec& s : engine)
        if (s.kind == QuantKind::kFp8PerGroup) groups.push_back(s);
      EXPECT_EQ(e, groups);
    } else {
      EXPECT_TRUE(e.empty()) << op.op;
    }
    // Natives first, in all_quant_specs() order, unchanged.
    for (size_t i = 0; i + e.size() < op.output_specs.size(); ++i)
      EXPECT_EQ(op.output_specs[i].rule, QuantRule::kNative) << op.op;
  }
  OutputDelivery d;
  d.engine_rule_kinds = {QuantKind::kFp8PerTensor, QuantKind::kNvfp4};  // per-tensor: none
  const std::vector<QuantSpec> specs = derive_output_specs(d);
  EXPECT_EQ(specs.size(), all_quant_specs().size() + 2);
  EXPECT_EQ(specs.back(), QuantSpec::nvfp4(L::kRowMajor).with_rule(QuantRule::kEngine));
}

// ---- QuantOutput::eps ------------------------------------------------------------------------

QuantOutput fake_output(const QuantSpec& spec, int64_t rows, int64_t cols) {
  QuantOutput q;
  q.spec = spec;
  const int64_t width = spec.kind == QuantKind::kNvfp4 ? cols / 2 : cols;
  q.out = TensorRef::contiguous(reinterpret_cast<void*>(0x20000),
                                quantized_dtype(spec).value_or(DType::kBF16), {rows, width});
  ScaleShape sh;
  EXPECT_TRUE(scale_shape(spec, rows, cols, &sh).ok());
  if (sh.rank == 1)
    q.scales = TensorRef::contiguous(reinterpret_cast<void*>(0x30000), sh.dtype, {sh.sizes[0]});
  if (sh.rank == 2)
    q.scales = TensorRef::contiguous(reinterpret_cast<void*>(0x30000), sh.dtype,
                                     {sh.sizes[0], sh.sizes[1]});
  if (sh.rank == 3)
    q.scales = TensorRef::contiguous(reinterpret_cast<void*>(0x30000), sh.dtype,
                                     {sh.sizes[0], sh.sizes[1], sh.sizes[2]});
  if (spec.reads_scale()) q.scale = reinterpret_cast<const float*>(0x40000);
  return q;
}

TEST(EngineRuleValidation, EpsOnlyForEngineRulePerGroupAndFiniteNonNegative) {
  for (const QuantSpec& s : engine_quant_specs()) {
    QuantOutput q = fake_output(s, 5, 256);
    EXPECT_TRUE(validate_quant_output(q, 5, 256).ok()) << to_string(s);
    q.eps = 1e-10f;
    const Status st = validate_quant_output(q, 5, 256);
    if (s.kind == QuantKind::kFp8PerGroup)
      EXPECT_TRUE(st.ok()) << to_string(s) << ": " << st.to_string();
    else
      test::expect_invalid_argument(st, "out.eps", "only per-group FP8 with the engine rule");
    if (s.kind != QuantKind::kFp8PerGroup) continue;
    for (float bad : {-1e-10f, -0.0f + -1.0f, NAN, INFINITY}) {
      q.eps = bad;
      test::expect_invalid_argument(validate_quant_output(q, 5, 256), "out.eps",
                                    "a finite value >= 0");
    }
  }
  // An amax floor comes without a scale bound (the engine's per-group op has none).
  QuantOutput g = fake_output(QuantSpec::fp8_per_group(64).with_rule(QuantRule::kEngine), 5, 256);
  g.eps = 1e-10f;
  g.scale_ub = reinterpret_cast<const float*>(0x50000);
  test::expect_invalid_argument(validate_quant_output(g, 5, 256), "out.scale_ub",
                                "null with eps > 0");
  g.eps = 0.0f;
  EXPECT_TRUE(validate_quant_output(g, 5, 256).ok());
  for (const QuantSpec& s : all_quant_specs()) {  // the native rule has no amax floor
    QuantOutput q = fake_output(s, 5, 256);
    q.eps = 1e-10f;
    test::expect_invalid_argument(validate_quant_output(q, 5, 256), "out.eps");
  }
  // quantize() itself rejects it before any device call.
  QuantOutput q = fake_output(QuantSpec::fp8_per_group(128), 5, 256);
  q.eps = 1e-10f;
  const TensorRef x =
      TensorRef::contiguous(reinterpret_cast<void*>(0x10000), DType::kBF16, {5, 256});
  test::expect_invalid_argument(quantize(x, q, nullptr), "out.eps");
}

// ---- the division ---------------------------------------------------------------------------

TEST(EngineRuleNumerics, QuotientIsTheCorrectlyRoundedDivisionForEveryOperandClass) {
  const float xs[] = {0.0f,    -0.0f,    1.0f,      -3.5f,   448.0f,
                      3e38f,   -FLT_MAX, FLT_MIN,   bits(1), bits(0x007FFFFF),
                      1e-40f,  INFINITY, -INFINITY, NAN,     0.1f,
                      1.0625f, -7.0f};
  const float ss[] = {1.0f,   0.75f,   1e-3f,           FLT_MIN,  bits(1), bits(0x00400000),
                      1e-38f, 3e38f,   FLT_MAX,         INFINITY, 0.0f,    -0.0f,
                      NAN,    0.0917f, rules::kMinScale};
  for (float x : xs) {
    for (float s : ss) {
      const float q = rules::engine_fp8_quotient(x, s);
      const float want = div32(x, s);
      EXPECT_TRUE(same_bits(q, want) || (std::isnan(q) && std::isnan(want)))
          << x << " / " << s << ": " << q << " want " << want;
    }
  }
  // Huge quotients saturate; a subnormal x over a tiny scale is an ordinary quotient.
  EXPECT_EQ(ref::e4m3_encode(rules::engine_fp8_quotient(3e38f, 1e-3f)), 0x7E);
  EXPECT_EQ(ref::e4m3_encode(rules::engine_fp8_quotient(-3e38f, FLT_MIN)), 0xFE);
  EXPECT_EQ(rules::engine_fp8_quotient(bits(0x00000100), bits(0x00000080)), 2.0f);
  EXPECT_EQ(ref::e4m3_encode(rules::engine_fp8_quotient(1.0625f * 1e-39f, 1e-39f)),
            e4m3_nearest(div32(1.0625f * 1e-39f, 1e-39f)));
}

// ---- ties ------------------------------------------------------------------------------------

/// Scales with few significand bits (so that m * s is a bf16 value for every E4M3 midpoint m)
/// and an inexact reciprocal, and the amax that makes each the computed scale (amax = 448 s).
/// For s = 7 * 2^k the reciprocal's rounding error is large enough that RN(x * RN(1 / s)) leaves
/// some midpoints by an ulp; for the others it rounds back onto them.
struct TieScale {
  float s, amax;
};
const TieScale kTieScales[] = {{0.875f, 392.0f}, {0.0546875f, 24.5f}, {0.75f, 336.0f},
                               {0.625f, 280.0f}, {1.5f, 672.0f},      {0.046875f, 21.0f},
                               {0.3125f, 140.0f}};

/// The E4M3 midpoints between consecutive positive codes below 448 (126 of them).
std::vector<double> e4m3_midpoints() {
  std::vector<double> m;
  for (int c = 0; c < 0x7E; ++c) m.push_back((e4m3_code_value(c) + e4m3_code_value(c + 1)) / 2);
  return m;
}

/// A row of `cols` bf16-exact values: the amax first, then +-m * s for every midpoint m.
std::vector<float> tie_row(const TieScale& t, int64_t cols) {
  std::vector<float> row(cols, 0.0f);
  row[0] = t.amax;
  const std::vector<double> mids = e4m3_midpoints();
  for (int64_t c = 1; c < cols; ++c) {
    const double x = mids[(c - 1) % mids.size()] * t.s * ((c % 2) ? 1 : -1);
    row[c] = static_cast<float>(x);
    EXPECT_EQ(static_cast<double>(row[c]), x) << "not an fp32 value";
    EXPECT_EQ(ref::bf16_value(ref::bf16_bits(row[c])), row[c]) << "not a bf16 value: " << x;
    EXPECT_EQ(div32(row[c], t.s), std::fabs(x) / t.s * ((c % 2) ? 1 : -1)) << "not a tie";
  }
  return row;
}

/// Quantizes `row` (its amax first, the computed scale `s`) with `spec` through the host
/// reference and checks every code against the engine's formula e4m3(RN(x / s)) (engine rule) or
/// qfuse's e4m3(RN(x * RN(1 / s))) (native), both computed in fp64 with the independent encoder;
/// returns how many codes the two formulas give differently.
int64_t check_row(const QuantSpec& spec, const std::vector<float>& row, float s) {
  const int64_t cols = static_cast<int64_t>(row.size());
  const ref::QuantResult r = ref::quantize(row.data(), 1, cols, spec, ref::RefScalars{});
  EXPECT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(read_f32(r.scales, 0), s) << to_string(spec);
  const float inv = static_cast<float>(1.0 / static_cast<double>(s));
  int64_t differ = 0;
  for (int64_t c = 0; c < cols; ++c) {
    const uint8_t by_div = e4m3_nearest(div32(row[c], s));
    const uint8_t by_mul = e4m3_nearest(mul32(row[c], inv));
    const uint8_t want = spec.rule == QuantRule::kEngine ? by_div : by_mul;
    EXPECT_EQ(r.out.at(c), want) << to_string(spec) << " s=" << s << " x=" << row[c];
    differ += by_div != by_mul;
  }
  return differ;
}

// Per-token and per-group 128 (a group is the whole 128-column row), both rules.
const QuantSpec kTieSpecs[] = {QuantSpec::fp8_per_token(), QuantSpec::fp8_per_group(128),
                               QuantSpec::fp8_per_group(128, L::kColMajor)};

TEST(EngineRuleNumerics, ExactTiesRoundToEvenByDivisionWhereTheReciprocalLeavesThem) {
  for (const QuantSpec& native : kTieSpecs) {
    const QuantSpec engine = native.with_rule(QuantRule::kEngine);
    int64_t differ = 0;
    for (const TieScale& t : kTieScales) {
      const std::vector<float> row = tie_row(t, 128);
      const int64_t d = check_row(engine, row, t.s);
      EXPECT_EQ(check_row(native, row, t.s), d);
      if (t.amax == 392.0f || t.amax == 24.5f) {  // s = 7 * 2^k
        EXPECT_GT(d, 0) << "s = " << t.s;
      }
      differ += d;
    }
    EXPECT_GT(differ, 0) << to_string(engine);
  }
  // One tie by hand: s = 0.875 (amax 392), x = 0.341796875 = 0.390625 s. x / s = 0.390625, the
  // midpoint of 0.375 (0x2C) and 0.40625 (0x2D): the even code 0x2C. RN(1 / s) = 1.14285719 is
  // above 8 / 7 by enough that x * RN(1 / s) = 0.390625 + 1 ulp: 0x2D.
  const float x[2] = {392.0f, 0.341796875f};
  const auto eng = ref::quantize(x, 1, 2, QuantSpec::fp8_per_token().with_rule(QuantRule::kEngine),
                                 ref::RefScalars{});
  const auto nat = ref::quantize(x, 1, 2, QuantSpec::fp8_per_token(), ref::RefScalars{});
  EXPECT_EQ(eng.out.at(1), 0x2C);
  EXPECT_EQ(nat.out.at(1), 0x2D);
}

TEST(EngineRuleNumerics, NearTiesWhereProductAndQuotientRoundApart) {
  // Every positive bf16 x up to the amax of ordinary scales, kept where e4m3(RN(x / s)) and
  // e4m3(RN(x * RN(1 / s))) differ (one of the two fp32 values lands on a midpoint, the other an
  // ulp off it): the engine rule gives the first, the native rule the second.
  int64_t total = 0;
  for (float amax : {17.25f, 0.203125f, 0.96875f, 83.0f, 264.0f, 2.765625f, 1.0f, 300.0f}) {
    const float s = div32(amax, 448.0f);
    const float inv = static_cast<float>(1.0 / static_cast<double>(s));
    std::vector<float> row = {amax};
    for (uint32_t b = 1; b < 0x7F80u && row.size() < 128; ++b) {
      const float x = ref::bf16_value(static_cast<uint16_t>(b));
      if (x > amax) break;
      if (e4m3_nearest(div32(x, s)) != e4m3_nearest(mul32(x, inv)))
        row.push_back(row.size() % 2 ? x : -x);
    }
    for (const QuantSpec& native : kTieSpecs) {
      const int64_t d = check_row(native.with_rule(QuantRule::kEngine), row, s);
      EXPECT_EQ(check_row(native, row, s), d);
      EXPECT_EQ(d, static_cast<int64_t>(row.size()) - 1);  // all but the amax
    }
    total += static_cast<int64_t>(row.size()) - 1;
  }
  EXPECT_GT(total, 0);
}

// ---- scales ----------------------------------------------------------------------------------

TEST(EngineRuleNumerics, PerGroupAmaxFloorEpsAndScaleUpperBound) {
  const QuantSpec g = QuantSpec::fp8_per_group(64).with_rule(QuantRule::kEngine);
  std::vector<float> y(3 * 64, 0.0f);  // row 0: zeros; row 1: tiny; row 2: large
  for (int c = 0; c < 64; ++c) {
    y[64 + c] = 1e-4f * static_cast<float>(c % 7);
    y[128 + c] = 3.0f * static_cast<float>(c + 1);
  }
  const float tiny_amax = 1e-4f * 6.0f;
  ref::RefScalars sc;
  sc.eps = 1e-10f;
  ref::QuantResult r = ref::quantize(y.data(), 3, 64, g, sc);
  ASSERT_TRUE(r.status.ok());
  // max(amax, eps) / 448 in fp32, no scale floor (the engine's per_token_group_fp8_quant).
  EXPECT_TRUE(same_bits(read_f32(r.scales, 0), div32(1e-10f, 448.0f)));
  EXPECT_TRUE(same_bits(read_f32(r.scales, 1), div32(tiny_amax, 448.0f)));
  EXPECT_TRUE(same_bits(read_f32(r.scales, 2), div32(192.0f, 448.0f)));
  for (int c = 0; c < 64; ++c) {
    EXPECT_EQ(r.out.at(c), 0x00);
    EXPECT_EQ(r.out.at(64 + c), e4m3_nearest(div32(y[64 + c], div32(tiny_amax, 448.0f))));
  }
  // eps = 0: the scale floor 1 / (448 * 512) and scale_ub bounding the scale (the engine's
  // silu_and_mul_per_block_quant).
  sc.eps = 0.0f;
  sc.scale_ub = 0.25f;
  r = ref::quantize(y.data(), 3, 64, g, sc);
  EXPECT_EQ(read_f32(r.scales, 0), rules::kMinScale);
  EXPECT_EQ(read_f32(r.scales, 1), rules::kMinScale);  // 6e-4 / 448 is below the floor
  EXPECT_EQ(read_f32(r.scales, 2), 0.25f);             // 192 / 448 bounded
  for (int c = 0; c < 64; ++c)
    EXPECT_EQ(r.out.at(128 + c), e4m3_nearest(div32(y[128 + c], 0.25f))) << c;
  // The native rule ignores nothing here but has no eps: its zero group gets the scale floor.
  const ref::QuantResult n = ref::quantize(y.data(), 3, 64, QuantSpec::fp8_per_group(64), {});
  EXPECT_EQ(read_f32(n.scales, 0), rules::kMinScale);
  // Per-token, engine: scale_ub bounds the amax, min(amax, ub) / 448 (as the native rule).
  ref::RefScalars ub;
  ub.scale_ub = 100.0f;
  const ref::QuantResult t = ref::quantize(
      y.data() + 128, 1, 64, QuantSpec::fp8_per_token().with_rule(QuantRule::kEngine), ub);
  EXPECT_TRUE(same_bits(read_f32(t.scales, 0), div32(100.0f, 448.0f)));
  for (int c = 0; c < 64; ++c)
    EXPECT_EQ(t.out.at(c), e4m3_nearest(div32(y[128 + c], div32(100.0f, 448.0f)))) << c;
}

TEST(EngineRuleNumerics, Log2fTranscriptionIsWithinAnUlpOfLog2) {
  // A sweep of the positive floats the UE8M0 rounding sees (>= 1e-10) and beyond; exactness
  // against libdevice itself is the GPU test's.
  int64_t worst = 0;
  for (uint32_t u = 0x00000001u; u < 0x7F800000u; u += 9973u) {
    const float a = bits(u);
    const float l = rules::engine_log2f(a);
    const double want = std::log2(static_cast<double>(a));
    const double ulp = std::ldexp(1.0, std::ilogb(want == 0 ? 1.0 : want) - 23);
    const double err = std::fabs(l - want) / ulp;
    worst = std::max<int64_t>(worst, static_cast<int64_t>(std::ceil(err)));
    ASSERT_LE(err, 1.0) << "log2f(" << a << ") = " << l << ", log2 = " << want;
  }
  EXPECT_EQ(rules::engine_log2f(1.0f), 0.0f);
  EXPECT_EQ(rules::engine_log2f(0.0f), -INFINITY);
  EXPECT_EQ(rules::engine_log2f(INFINITY), INFINITY);
  EXPECT_TRUE(std::isnan(rules::engine_log2f(-1.0f)));
  for (int k = -126; k <= 127; ++k) EXPECT_EQ(rules::engine_log2f(std::ldexp(1.0f, k)), k);
}

TEST(EngineRuleNumerics, Ue8m0RoundsThroughLog2f) {
  for (int k = -33; k <= 120; ++k) {
    const float p = std::ldexp(1.0f, k);
    EXPECT_EQ(rules::engine_ue8m0(p), p) << k;  // a power of two is its own rounding
    // Well above 2^k: the next power, as the exact rule.
    const float above = p * 1.001f;
    EXPECT_EQ(rules::engine_ue8m0(above), 2 * p) << k;
    EXPECT_EQ(rules::engine_ue8m0(above), rules::ue8m0_round_up(above)) << k;
  }
  // One ulp above 2^k: log2 = k + 1.7e-7, which fp32 rounds to k itself where an ulp of
  // |k + 1.7e-7| exceeds 3.4e-7 (k <= -5 and k >= 4; for k = -4 the sum falls in the binade below
  // 4): the engine keeps 2^k where the exact rounding gives 2^(k+1). (Above 1e-10: the floor.)
  for (int k : {-5, -7, -8, -10, -12, -20, -30}) {
    const float s = std::nextafter(std::ldexp(1.0f, k), 1.0f);
    const double lg = std::log2(static_cast<double>(s));
    const float want_l = static_cast<float>(lg);  // RN32 of log2, far from a rounding boundary
    EXPECT_EQ(want_l, static_cast<float>(k)) << k;
    EXPECT_EQ(rules::engine_ue8m0(s), std::ldexp(1.0f, k)) << k;
    EXPECT_EQ(rules::ue8m0_round_up(s), std::ldexp(1.0f, k + 1)) << k;
  }
  // ... while for k in [-4, 2] the offset survives and both round up.
  for (int k : {-4, -3, -2, -1, 1, 2}) {
    const float s = std::nextafter(std::ldexp(1.0f, k), 1e9f);
    EXPECT_EQ(rules::engine_ue8m0(s), std::ldexp(1.0f, k + 1)) << k;
  }
  // Tiny scales: the engine floors |s| at 1e-10 before the log: 2^-33.
  EXPECT_EQ(rules::engine_ue8m0(1e-20f), std::ldexp(1.0f, -33));
  EXPECT_EQ(rules::engine_ue8m0(FLT_MAX), std::ldexp(1.0f, 127));  // capped (the engine: inf)
  EXPECT_TRUE(std::isnan(rules::engine_ue8m0(NAN)));
  // Through the reference: a group whose scale is one ulp above 2^-9 keeps 2^-9, so its amax
  // saturates; UE8M0 packed bytes are the exponents.
  const float s = std::nextafter(std::ldexp(1.0f, -9), 1.0f);
  const float amax = s * 448.0f;  // amax / 448 rounds back to s
  ASSERT_TRUE(same_bits(div32(amax, 448.0f), s));
  const float y[2] = {amax, -amax};
  for (F fmt : {F::kUe8m0F32, F::kUe8m0Packed}) {
    const QuantSpec spec = QuantSpec::fp8_per_group(64, L::kRowMajor, fmt);
    const auto e = ref::quantize(y, 1, 2, spec.with_rule(QuantRule::kEngine), ref::RefScalars{});
    const auto n = ref::quantize(y, 1, 2, spec, ref::RefScalars{});
    if (fmt == F::kUe8m0F32) {
      EXPECT_EQ(read_f32(e.scales, 0), std::ldexp(1.0f, -9));
      EXPECT_EQ(read_f32(n.scales, 0), std::ldexp(1.0f, -8));
    } else {
      EXPECT_EQ(e.scales.at(0), 127 - 9);
      EXPECT_EQ(n.scales.at(0), 127 - 8);
    }
    EXPECT_EQ(e.out.at(0), e4m3_nearest(div32(amax, std::ldexp(1.0f, -9))));  // 448 (saturated)
    EXPECT_EQ(e.out.at(0), 0x7E);
    EXPECT_EQ(e.out.at(1), 0xFE);
    EXPECT_EQ(n.out.at(0), e4m3_nearest(amax * 256.0));  // 224 + a bit
  }
}

// ---- special values: qfuse's policy under either rule ------------------------------------------

TEST(EngineRuleNumerics, NanAndInfinityFollowQfusesPolicy) {
  for (const QuantSpec& spec : engine_quant_specs()) {
    if (spec.kind == QuantKind::kNvfp4) continue;
    std::vector<float> y(2 * 128, 1.0f);
    y[3] = NAN;
    y[128 + 5] = INFINITY;
    ref::RefScalars sc;
    const auto e = ref::quantize(y.data(), 2, 128, spec, sc);
    const auto n = ref::quantize(y.data(), 2, 128, spec.with_rule(QuantRule::kNative), sc);
    ASSERT_TRUE(e.status.ok());
    EXPECT_EQ(e.scales, n.scales) << to_string(spec);  // NaN / FLT_MAX scales, same bits
    EXPECT_EQ(e.out, n.out) << to_string(spec);        // NaN codes, +-448 and 0
  }
}

// ---- NVFP4 -----------------------------------------------------------------------------------

/// The engine's NVFP4 block scale and factor from a reciprocal `rcp`, in fp64 with an explicit
/// fp32 rounding after each operation (its order of operations: gs * (bmax * rcp(6))).
struct Nvfp4Model {
  std::function<float(float)> rcp;
  uint8_t sf(float gs, float bmax) const {
    const float r6 = rcp(6.0f);
    return e4m3_nearest(mul32(gs, mul32(bmax, r6)));
  }
  float out_scale(uint8_t sf, float gs) const {
    const double v = e4m3_code_value(sf);
    return v == 0 ? 0.0f : rcp(mul32(static_cast<float>(v), rcp(gs)));
  }
};

TEST(EngineRuleNumerics, Nvfp4UsesTheGivenReciprocalInTheEnginesOrder) {
  std::vector<float> y(4 * 64);
  for (size_t i = 0; i < y.size(); ++i)
    y[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)) * (1 + i % 13) * 3.1);
  const float gs = 448.0f * 6.0f / 40.3f * 1.3f;
  // Two reciprocals: the host model (correctly rounded) and one an ulp off, as an approximate
  // instruction may be: the reference must follow whichever it is given.
  const std::function<float(float)> rn = [](float x) { return 1.0f / x; };
  const std::function<float(float)> off = [](float x) {
    return std::nextafter(1.0f / x, x > 0 ? 0.0f : -0.0f);
  };
  for (const auto& rcp : {rn, off}) {
    ref::RefScalars sc;
    sc.scale = gs;
    sc.rcp_approx = rcp;
    const QuantSpec spec = QuantSpec::nvfp4(L::kRowMajor).with_rule(QuantRule::kEngine);
    const auto r = ref::quantize(y.data(), 4, 64, spec, sc);
    ASSERT_TRUE(r.status.ok());
    const Nvfp4Model m{rcp};
    for (int t = 0; t < 4; ++t) {
      for (int k = 0; k < 4; ++k) {
        float bmax = 0;
        for (int i = 0; i < 16; ++i) bmax = std::fmax(bmax, std::fabs(y[t * 64 + k * 16 + i]));
        const uint8_t sf = m.sf(gs, bmax);
        EXPECT_EQ(r.scales.at(t * 4 + k), sf);
        const float os = m.out_scale(sf, gs);
        for (int i = 0; i < 16; ++i) {
          const int idx = t * 64 + k * 16 + i;
          const uint8_t code = (r.out.at(idx / 2) >> (4 * (idx & 1))) & 0xF;
          EXPECT_EQ(code, rules::e2m1_encode(mul32(y[idx], os))) << idx;
        }
      }
    }
  }
  // The default is the host model of rcp.approx.ftz: the correctly rounded reciprocal, flushing
  // subnormals.
  EXPECT_EQ(rules::RcpApproxFtz{}(6.0f), 1.0f / 6.0f);
  EXPECT_EQ(rules::RcpApproxFtz{}(bits(1)), INFINITY);
  EXPECT_EQ(rules::RcpApproxFtz{}(-bits(1)), -INFINITY);
  EXPECT_EQ(rules::RcpApproxFtz{}(3e38f), 0.0f);
  EXPECT_EQ(rules::RcpApproxFtz{}(INFINITY), 0.0f);
  // Zero block scale: factor 0 (codes 0).
  EXPECT_EQ(rules::engine_nvfp4_out_scale(0.0f, gs, rules::RcpApproxFtz{}), 0.0f);
}

// ---- SiLU ------------------------------------------------------------------------------------

TEST(EngineRuleNumerics, SiluTranscriptionTracksTheExactFunction) {
  // With the host model of ex2.approx, the engine's 1 + exp(-g) is within 2 ulps of the exact
  // value for every bf16 gate where it is finite, and its silu * u within 4 ulps (the device's
  // own bits are the GPU test's).
  int64_t checked = 0;
  for (uint32_t b = 0; b < 0x10000u; ++b) {
    const float g = ref::bf16_value(static_cast<uint16_t>(b));
    if (!std::isfinite(g)) continue;
    const float den = rules::engine_sigmoid_den(g, rules::Ex2ApproxFtz{});
    const double exact = 1.0 + std::exp(-static_cast<double>(g));
    if (exact > 1e38) {
      EXPECT_TRUE(den > 1e37f || std::isinf(den)) << g;
      continue;
    }
    ASSERT_LE(test::ulp_distance(den, static_cast<float>(exact)), 2.0) << "g = " << g;
    const float y = rules::engine_silu_mul(g, 1.5f, rules::Ex2ApproxFtz{});
    const double want = static_cast<double>(g) / exact * 1.5;
    if (std::fabs(want) > FLT_MAX) {  // overflows fp32 (g near the bf16 maximum)
      EXPECT_TRUE(std::isinf(y)) << g;
      continue;
    }
    const double ulp = want == 0 ? 0.0 : std::ldexp(1.0, std::ilogb(want) - 23);
    ASSERT_LE(std::fabs(y - want), 4 * ulp + 1e-38) << "g = " << g;
    ++checked;
  }
  EXPECT_GT(checked, 45000);  // the rest: gates below -88, where 1 + exp(-g) overflows
  EXPECT_TRUE(std::isnan(rules::engine_silu_mul(NAN, 1.0f, rules::Ex2ApproxFtz{})));
  // Large negative gates: exp(-g) overflows, 1 / inf = 0, silu = -0.
  EXPECT_EQ(rules::engine_silu_mul(-100.0f, 1.0f, rules::Ex2ApproxFtz{}), 0.0f);
}

TEST(EngineRuleNumerics, SiluReferenceUsesTheEnginesOrderAndTheGivenEx2) {
  // x [2, 2H] bf16 bits, H = 3: the engine reference is g * RN(1 / den) then times u, each
  // rounded, with den built from the given ex2; checked with an ex2 that is off by an ulp.
  const std::vector<float> vals = {-3.25f, 0.5f,  7.0f,   1.25f, -2.0f,   0.0078125f,
                                   2.5f,   -1.0f, 0.375f, 96.0f, -0.625f, 3.0f};
  std::vector<uint16_t> x;
  for (float v : vals) x.push_back(ref::bf16_bits(v));
  const std::function<float(float)> ex2 = [](float v) {
    return std::nextafter(static_cast<float>(std::exp2(static_cast<double>(v))), 0.0f);
  };
  const std::vector<float> y = ref::silu_and_mul_engine(x.data(), DType::kBF16, 2, 3, 6, ex2);
  ASSERT_EQ(y.size(), 6u);
  for (int t = 0; t < 2; ++t) {
    for (int i = 0; i < 3; ++i) {
      const float g = vals[t * 6 + i], u = vals[t * 6 + 3 + i];
      const float den = rules::engine_sigmoid_den(g, ex2);
      const float sig = div32(1.0f, den);
      EXPECT_TRUE(same_bits(y[t * 3 + i], mul32(mul32(g, sig), u))) << g << " " << u;
    }
  }
  // The denominator's last step is one fma: ex2(f) * 2^(k - 126) + 1 rounded once. For g = 0
  // the reduction gives k = 126 and f = 0, so den = ex2(0) + 1.
  EXPECT_EQ(rules::engine_sigmoid_den(0.0f, ex2), 1.0f + ex2(0.0f));
}

}  // namespace
}  // namespace qfuse
