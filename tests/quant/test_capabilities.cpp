// The capability table (one source for dispatch, the fusion pass and `qfuse info`) and the
// launch policy switch.
#include <gtest/gtest.h>

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
  EXPECT_EQ(names,
            (std::set<std::string>{"merge_states", "quantize", "silu_and_mul", "silu_mul_quant"}));
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
