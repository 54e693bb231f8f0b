// Negative tests of silu_and_mul / silu_mul_quant (SPEC §1, §7): bad arguments give
// kInvalidArgument naming the argument before any device call (fake pointers on the host), and on
// a GPU a rejected call leaves poisoned outputs untouched.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/compare.h"
#include "common/gpu.h"
#include "qfuse/act_quant/silu_mul.h"
#include "qfuse/quant/kind.h"

namespace qfuse {
namespace {

using L = ScaleLayout;

void* fake(uintptr_t a) {
  return reinterpret_cast<void*>(a);
}

constexpr int64_t kT = 5, kH = 256;

/// A structurally valid silu_mul_quant call for `spec` on x [kT, 2*kH] bf16, fake pointers.
struct Call {
  TensorRef x = TensorRef::contiguous(fake(0x10000), DType::kBF16, {kT, 2 * kH});
  QuantOutput q;

  explicit Call(const QuantSpec& spec) {
    q.spec = spec;
    const int64_t out_cols = spec.kind == QuantKind::kNvfp4 ? kH / 2 : kH;
    q.out = TensorRef::contiguous(fake(0x20000), quantized_dtype(spec).value_or(DType::kBF16),
                                  {kT, out_cols});
    ScaleShape sh;
    EXPECT_TRUE(scale_shape(spec, kT, kH, &sh).ok());
    if (sh.rank == 1) q.scales = TensorRef::contiguous(fake(0x30000), sh.dtype, {sh.sizes[0]});
    if (sh.rank == 2)
      q.scales = TensorRef::contiguous(fake(0x30000), sh.dtype, {sh.sizes[0], sh.sizes[1]});
    if (sh.rank == 3)
      q.scales =
          TensorRef::contiguous(fake(0x30000), sh.dtype, {sh.sizes[0], sh.sizes[1], sh.sizes[2]});
    if (spec.reads_scale()) q.scale = reinterpret_cast<const float*>(0x40000);
  }
};

void expect_invalid(const Status& st, const std::string& arg, const std::string& also = "") {
  test::expect_invalid_argument(st, arg, also);
}

void expect_rejected(const Call& c, const std::string& arg, const std::string& also = "") {
  expect_invalid(silu_mul_quant(c.x, c.q, nullptr), arg, also);
}

const QuantSpec kGroupTma = QuantSpec::fp8_per_group(128, L::kColMajorTma);

TEST(SiluMulValidation, BaselineOutputsAreValidForHalfWidth) {
  for (const QuantSpec& s : all_quant_specs()) {
    const Call c(s);
    const Status st = validate_quant_output(c.q, kT, kH);
    EXPECT_TRUE(st.ok()) << to_string(s) << ": " << st.to_string();
  }
}

TEST(SiluMulValidation, InputTensor) {
  Call c(kGroupTma);
  c.x = TensorRef::contiguous(fake(0x10000), DType::kBF16, {kT, 2 * kH + 1});
  expect_rejected(c, "x.sizes[1]", "even");
  c = Call(kGroupTma);
  c.x.dtype = DType::kF32;
  expect_rejected(c, "x.dtype", "expected bf16|fp16, got fp32");
  c = Call(kGroupTma);
  c.x.dtype = DType::kE4M3;
  expect_rejected(c, "x.dtype");
  c = Call(kGroupTma);
  c.x = TensorRef::strided(fake(0x10000), DType::kF16, {kT, 2 * kH}, {2 * kH - 2, 1});
  expect_rejected(c, "x.strides[0]");
  c = Call(kGroupTma);
  c.x = TensorRef::strided(fake(0x10000), DType::kF16, {kT, 2 * kH}, {4 * kH, 2});
  expect_rejected(c, "x.strides[1]");
  c = Call(kGroupTma);
  c.x = TensorRef::contiguous(fake(0x10000), DType::kBF16, {2, kT, 2 * kH});
  expect_rejected(c, "x.rank");
  c = Call(kGroupTma);
  c.x.data = fake(0x10001);
  expect_rejected(c, "x.data", "2-byte aligned");
  c = Call(kGroupTma);
  c.x.data = nullptr;
  expect_rejected(c, "x.data");
}

TEST(SiluMulValidation, OutputShapeIsHalfTheInputWidth) {
  // out [T, 2H] instead of [T, H].
  Call c(kGroupTma);
  c.q.out = TensorRef::contiguous(fake(0x20000), DType::kE4M3, {kT, 2 * kH});
  expect_rejected(c, "out.sizes[1]", "expected 256, got 512");
  const TensorRef x = TensorRef::contiguous(fake(0x10000), DType::kBF16, {kT, 2 * kH});
  expect_invalid(
      silu_and_mul(x, TensorRef::contiguous(fake(0x20000), DType::kBF16, {kT, 2 * kH}), nullptr),
      "out.sizes[1]", "expected 256, got 512");
  expect_invalid(
      silu_and_mul(x, TensorRef::contiguous(fake(0x20000), DType::kBF16, {kT - 1, kH}), nullptr),
      "out.sizes[0]");
  expect_invalid(
      silu_and_mul(x, TensorRef::contiguous(fake(0x20000), DType::kE4M3, {kT, kH}), nullptr),
      "out.dtype", "expected bf16|fp16|fp32, got e4m3");
}

TEST(SiluMulValidation, QuantOutputChecks) {
  Call c(kGroupTma);
  c.q.scales = TensorRef::contiguous(fake(0x30000), DType::kF32, {kT, 2});  // row-major
  expect_rejected(c, "out.scales", "[2, 8] fp32");
  c = Call(QuantSpec::fp8_per_tensor());
  c.q.scale = nullptr;
  expect_rejected(c, "out.scale");
  c = Call(QuantSpec::nvfp4());
  c.q.scale = nullptr;
  expect_rejected(c, "out.scale");
  c = Call(QuantSpec::fp8_per_token());
  c.q.scales = TensorRef::contiguous(fake(0x30000), DType::kF32, {2 * kT});
  expect_rejected(c, "out.scales");
  c = Call(QuantSpec::fp8_per_group(64));
  c.q.out.dtype = DType::kBF16;
  expect_rejected(c, "out.dtype", "expected e4m3, got bf16");
  c = Call(kGroupTma);
  c.q.spec.group_size = 32;
  expect_rejected(c, "quant.group_size");
  // nvfp4 needs H (not 2H) to be a multiple of 16: 2H = 40 -> H = 20.
  c = Call(QuantSpec::nvfp4());
  c.x = TensorRef::contiguous(fake(0x10000), DType::kBF16, {kT, 40});
  c.q.out = TensorRef::contiguous(fake(0x20000), DType::kE2M1x2, {kT, 10});
  expect_rejected(c, "out.cols", "got 20");
}

TEST(SiluMulValidation, EmptyInputIsANoOpWithoutDevice) {
  // Without a GPU any device call fails, so Ok proves none was made.
  const TensorRef x = TensorRef::contiguous(nullptr, DType::kBF16, {0, 2 * kH});
  EXPECT_TRUE(silu_and_mul(x, TensorRef::contiguous(nullptr, DType::kBF16, {0, kH}), nullptr).ok());
  QuantOutput q;
  q.spec = kGroupTma;
  q.out = TensorRef::contiguous(nullptr, DType::kE4M3, {0, kH});
  q.scales = TensorRef::contiguous(nullptr, DType::kF32, {2, 0});
  const Status st = silu_mul_quant(x, q, nullptr);
  EXPECT_TRUE(st.ok()) << st.to_string();
  // Still validated: a wrong output width is rejected even when T = 0.
  q.out = TensorRef::contiguous(nullptr, DType::kE4M3, {0, 2 * kH});
  expect_invalid(silu_mul_quant(x, q, nullptr), "out.sizes[1]");
}

// ---- GPU: rejected calls write nothing ---------------------------------------------------------

struct DeviceCall {
  test::DeviceBuffer x{kT * 2 * kH * 2}, out{kT * kH * 4}, scales{4096}, scale{4};
  Call call;

  explicit DeviceCall(const QuantSpec& spec) : call(spec) {
    const auto bits = test::encode(test::random_floats(kT * 2 * kH, 7), DType::kBF16, nullptr);
    x.upload(bits.data(), bits.size());
    const float s = 0.37f;
    scale.upload(&s, 4);
    out.fill(test::kPoison);
    scales.fill(test::kPoison);
    call.x.data = x.get();
    call.q.out.data = out.get();
    if (!call.q.scales.empty_ref()) call.q.scales.data = scales.get();
    if (call.q.scale) call.q.scale = scale.as<float>();
  }

  void expect_rejected_untouched(const std::string& arg) {
    const Status st = silu_mul_quant(call.x, call.q, nullptr);
    EXPECT_FALSE(st.ok());
    expect_invalid(st, arg);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    for (const test::DeviceBuffer* b : {&out, &scales})
      EXPECT_EQ(test::changed_bytes(*b), 0) << "bytes written by a rejected call";
  }
};

TEST(SiluMulValidationGpu, ValidBaselineWrites) {
  QFUSE_REQUIRE_GPU();
  DeviceCall d(kGroupTma);
  ASSERT_TRUE(silu_mul_quant(d.call.x, d.call.q, nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_GT(test::changed_bytes(d.out, kT * kH), 0);  // the poison checks below can detect writes
}

TEST(SiluMulValidationGpu, BadDtypeWritesNothing) {
  QFUSE_REQUIRE_GPU();
  DeviceCall d(kGroupTma);
  d.call.x.dtype = DType::kF32;
  d.call.x.sizes[1] = kH;  // same bytes per row
  d.call.x.strides[0] = kH;
  d.expect_rejected_untouched("x.dtype");
}

TEST(SiluMulValidationGpu, BadShapeWritesNothing) {
  QFUSE_REQUIRE_GPU();
  DeviceCall d(kGroupTma);
  d.call.x.sizes[1] = 2 * kH - 1;  // odd width
  d.expect_rejected_untouched("x.sizes[1]");
}

TEST(SiluMulValidationGpu, BadScaleLayoutWritesNothing) {
  QFUSE_REQUIRE_GPU();
  DeviceCall d(kGroupTma);
  d.call.q.scales = TensorRef::contiguous(d.scales.get(), DType::kF32, {kT, 2});
  d.expect_rejected_untouched("out.scales");
}

TEST(SiluMulValidationGpu, MissingScaleWritesNothing) {
  QFUSE_REQUIRE_GPU();
  DeviceCall d(QuantSpec::fp8_per_tensor());
  d.call.q.scale = nullptr;
  d.expect_rejected_untouched("out.scale");
}

TEST(SiluMulValidationGpu, HostPointerRejected) {
  QFUSE_REQUIRE_GPU();
  std::vector<uint16_t> host(kT * 2 * kH, 0x3F80);
  DeviceCall d(QuantSpec::nvfp4());
  d.call.x.data = host.data();
  d.expect_rejected_untouched("x.data");
  float host_scale = 1.0f;
  DeviceCall e(QuantSpec::fp8_per_tensor());
  e.call.q.scale = &host_scale;
  e.expect_rejected_untouched("out.scale");
}

}  // namespace
}  // namespace qfuse
