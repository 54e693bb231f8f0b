// The capability table (one source for dispatch, the fusion pass and `qfuse info`) and the
// launch policy switch.
#include <gtest/gtest.h>

#include <cstdio>
#include <set>
#include <string>

#include "qfuse/core/launch.h"
#include "qfuse/quant/capabilities.h"

namespace qfuse {
namespace {

TEST(Capabilities, EveryOpIsFoundAndDeclaresValidSpecs) {
  std::set<std::string> names;
  for (const OpCapability& op : op_capabilities()) {
    EXPECT_TRUE(names.insert(std::string(op.op)).second) << "duplicate op " << op.op;
    EXPECT_EQ(find_op_capability(op.op), &op);
    EXPECT_FALSE(op.input_dtypes.empty()) << op.op;
    EXPECT_FALSE(op.output_specs.empty()) << op.op;
    for (const QuantSpec& s : op.output_specs) {
      EXPECT_TRUE(s.validate().ok()) << op.op << " " << to_string(s);
      EXPECT_TRUE(fused_output_quant_supported(op.op, s));
    }
  }
  // Families add ops without editing this test: the row-wise families' ops are among them.
  for (const char* op : {"merge_states", "quantize", "silu_and_mul", "silu_mul_quant"})
    EXPECT_EQ(names.count(op), 1u) << op;
}

TEST(Capabilities, WhatEachOpWrites) {
  for (const QuantSpec& s : all_quant_specs()) {
    EXPECT_TRUE(fused_output_quant_supported("silu_mul_quant", s)) << to_string(s);
    EXPECT_TRUE(fused_output_quant_supported("quantize", s)) << to_string(s);
    EXPECT_TRUE(fused_output_quant_supported("merge_states", s)) << to_string(s);
    EXPECT_EQ(fused_output_quant_supported("silu_and_mul", s), s.kind == QuantKind::kNone)
        << to_string(s);
  }
  const QuantSpec group32{QuantKind::kFp8PerGroup, 32, ScaleLayout::kRowMajor, ScaleFormat::kF32};
  EXPECT_FALSE(fused_output_quant_supported("silu_mul_quant", group32));
  EXPECT_FALSE(fused_output_quant_supported("merge_states", group32));
}

// The families the build found (src/<family>/family.cmake) and their capability rows, printed as
// the record a new family's diff is checked against: a family adds itself, nothing else.
TEST(Families, EveryFamilyRegistersItsOpsAndTheTableIsConsistent) {
  ASSERT_TRUE(kernel_registry().status().ok()) << kernel_registry().status().to_string();
  std::set<std::string> families;
  for (const FamilyInfo& f : registered_families()) {
    EXPECT_TRUE(families.insert(f.name).second) << "duplicate family " << f.name;
    EXPECT_FALSE(f.summary.empty()) << f.name;
    int ops = 0;
    for (const OpCapability& op : op_capabilities()) {
      if (op.family != f.name) continue;
      ++ops;
      std::string specs;
      for (const QuantSpec& q : op.output_specs) specs += " " + to_string(q);
      std::printf("family %-14s op %-16s writes%s\n", f.name.c_str(), op.op.c_str(), specs.c_str());
      EXPECT_EQ(op.output_specs, derive_output_specs(op.delivery)) << op.op;
    }
    EXPECT_GT(ops, 0) << "family " << f.name << " registers no op";
  }
  for (const OpCapability& op : op_capabilities())
    EXPECT_EQ(families.count(op.family), 1u) << op.op << " of unknown family " << op.family;
  for (const char* f : {"act_quant", "merge_states", "quantize"})
    EXPECT_EQ(families.count(f), 1u) << f;
}

TEST(Families, RegistrationErrorsAreKept) {
  KernelRegistry r;
  r.add_family({"fam", "a family"});
  EXPECT_TRUE(r.add_op({"op", "fam", "an op", {DType::kBF16}, OutputDelivery{}, {}}).ok());
  EXPECT_FALSE(r.add_op({"op", "fam", "again", {DType::kBF16}, OutputDelivery{}, {}}).ok());
  EXPECT_FALSE(r.add_op({"op2", "other", "no family", {DType::kBF16}, OutputDelivery{}, {}}).ok());
  OutputDelivery nothing;
  nothing.plain = nothing.quantized = false;
  EXPECT_FALSE(r.add_op({"op3", "fam", "writes nothing", {DType::kBF16}, nothing, {}}).ok());
  EXPECT_FALSE(r.status().ok());
  EXPECT_NE(r.status().message().find("already registered"), std::string::npos)
      << r.status().to_string();
  EXPECT_EQ(r.ops().size(), 1u);
}

// What a kind needs of a producer decides its capability row (quant_needs, derive_output_specs).
TEST(Capabilities, RowsAreDerivedFromHowValuesReachTheQuantizer) {
  auto has = [](const std::vector<QuantSpec>& v, const char* text) {
    QuantSpec s;
    EXPECT_TRUE(parse_quant_spec(text, &s).ok()) << text;
    for (const QuantSpec& q : v)
      if (q == s) return true;
    return false;
  };
  const std::vector<QuantSpec> all = derive_output_specs(OutputDelivery{});
  EXPECT_EQ(all.size(), all_quant_specs().size());
  OutputDelivery tile512;  // e.g. an attention epilogue: one head's 512 columns per instance
  tile512.whole_rows = false;
  tile512.tile_cols = 512;
  const std::vector<QuantSpec> t512 = derive_output_specs(tile512);
  EXPECT_TRUE(has(t512, "fp8_per_tensor"));
  EXPECT_TRUE(has(t512, "fp8_group128:col_tma:ue8m0_packed"));
  EXPECT_TRUE(has(t512, "nvfp4:swizzled"));
  EXPECT_TRUE(has(t512, "none"));
  EXPECT_FALSE(has(t512, "fp8_per_token")) << "a row scale needs the whole row";
  OutputDelivery tile64 = tile512;
  tile64.tile_cols = 64;
  tile64.plain = false;
  const std::vector<QuantSpec> t64 = derive_output_specs(tile64);
  EXPECT_TRUE(has(t64, "fp8_group64:row:f32"));
  EXPECT_FALSE(has(t64, "fp8_group128:row:f32")) << "a group of 128 spans two tiles";
  EXPECT_FALSE(has(t64, "none"));
  EXPECT_EQ(quant_needs(QuantSpec::fp8_per_token()).scope, ScaleScope::kRow);
  EXPECT_EQ(quant_needs(QuantSpec::nvfp4()).group_cols, 16);
  EXPECT_EQ(quant_needs(QuantSpec::fp8_per_tensor()).scope, ScaleScope::kTensor);
}

TEST(Capabilities, UnknownOpSupportsNothing) {
  EXPECT_EQ(find_op_capability("merge_states_v0"), nullptr);
  EXPECT_FALSE(fused_output_quant_supported("merge_states_v0", QuantSpec::none()));
  EXPECT_FALSE(fused_output_quant_supported("", QuantSpec::fp8_per_tensor()));
}

TEST(LaunchPolicy, ProgrammaticDependentLaunchCanBeSwitched) {
  const bool before = pdl_enabled();
  set_pdl_enabled(false);
  EXPECT_FALSE(pdl_enabled());
  set_pdl_enabled(true);
  EXPECT_TRUE(pdl_enabled());
  set_pdl_enabled(before);
}

}  // namespace
}  // namespace qfuse
