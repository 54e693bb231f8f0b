// Negative tests of qfuse::quantize() (SPEC §7): every bad argument gives kInvalidArgument naming
// the argument, before any device call. Host-only tests use fake, suitably aligned pointers: a
// structural check that let a bad call through would reach the device and fail differently
// (kCudaError without a GPU). The GPU section checks that rejected calls write nothing.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/compare.h"
#include "common/gpu.h"
#include "qfuse/quant/kind.h"
#include "qfuse/quant/quantize.h"

namespace qfuse {
namespace {

using L = ScaleLayout;
using F = ScaleFormat;

void* fake(uintptr_t a) {
  return reinterpret_cast<void*>(a);
}
const float* fake_f(uintptr_t a) {
  return reinterpret_cast<const float*>(a);
}

constexpr int64_t kT = 5, kH = 256;

/// A structurally valid call for `spec` on x [kT, kH] bf16, with fake pointers.
struct Call {
  TensorRef x = TensorRef::contiguous(fake(0x10000), DType::kBF16, {kT, kH});
  QuantOutput q;

  explicit Call(const QuantSpec& spec) {
    q.spec = spec;
    const int64_t out_cols = spec.kind == QuantKind::kNvfp4 ? kH / 2 : kH;
    const DType out_dtype = quantized_dtype(spec).value_or(DType::kBF16);
    q.out = TensorRef::contiguous(fake(0x20000), out_dtype, {kT, out_cols});
    ScaleShape sh;
    EXPECT_TRUE(scale_shape(spec, kT, kH, &sh).ok());
    if (sh.rank == 1) q.scales = TensorRef::contiguous(fake(0x30000), sh.dtype, {sh.sizes[0]});
    if (sh.rank == 2)
      q.scales = TensorRef::contiguous(fake(0x30000), sh.dtype, {sh.sizes[0], sh.sizes[1]});
    if (sh.rank == 3)
      q.scales =
          TensorRef::contiguous(fake(0x30000), sh.dtype, {sh.sizes[0], sh.sizes[1], sh.sizes[2]});
    if (spec.reads_scale()) q.scale = fake_f(0x40000);
  }
};

/// The call fails structurally, naming `arg` (quoted, as Status::InvalidArgument writes it).
void expect_rejected(const Call& c, const std::string& arg, const std::string& also = "") {
  test::expect_invalid_argument(quantize(c.x, c.q, nullptr), arg, also);
}

const QuantSpec kGroupRow = QuantSpec::fp8_per_group(128);
const QuantSpec kGroupTma = QuantSpec::fp8_per_group(128, L::kColMajorTma);

TEST(QuantizeValidation, BaselineCallsPassStructuralValidation) {
  for (const QuantSpec& s : all_quant_specs()) {
    const Call c(s);
    const Status st = validate_quant_output(c.q, kT, kH);
    EXPECT_TRUE(st.ok()) << to_string(s) << ": " << st.to_string();
  }
}

TEST(QuantizeValidation, InputTensor) {
  Call c(kGroupRow);
  c.x.dtype = DType::kE4M3;
  expect_rejected(c, "x.dtype", "expected bf16|fp16|fp32, got e4m3");
  c = Call(kGroupRow);
  c.x = TensorRef::contiguous(fake(0x10000), DType::kBF16, {1, kT, kH});
  expect_rejected(c, "x.rank", "expected 2, got 3");
  c = Call(kGroupRow);
  c.x = TensorRef::strided(fake(0x10000), DType::kBF16, {-1, kH}, {kH, 1});
  expect_rejected(c, "x.sizes[0]", "expected a size >= 0, got -1");
  c = Call(kGroupRow);
  c.x = TensorRef::strided(fake(0x10000), DType::kBF16, {kT, kH}, {2 * kH, 2});
  expect_rejected(c, "x.strides[1]");
  c = Call(kGroupRow);
  c.x = TensorRef::strided(fake(0x10000), DType::kBF16, {kT, kH}, {kH - 1, 1});
  expect_rejected(c, "x.strides[0]");
  c = Call(kGroupRow);
  c.x.data = nullptr;
  expect_rejected(c, "x.data", "null");
  c = Call(kGroupRow);
  c.x.data = fake(0x10001);  // odd address for 2-byte elements
  expect_rejected(c, "x.data", "2-byte aligned");
  c = Call(kGroupRow);
  c.x.dtype = DType::kF32;
  c.x.data = fake(0x10002);
  expect_rejected(c, "x.data", "4-byte aligned");
}

TEST(QuantizeValidation, OutputTensor) {
  Call c(kGroupRow);
  c.q.out.dtype = DType::kBF16;
  expect_rejected(c, "out.dtype", "expected e4m3, got bf16");
  c = Call(kGroupRow);
  c.q.out = TensorRef::contiguous(fake(0x20000), DType::kE4M3, {kT, kH - 1});
  expect_rejected(c, "out.sizes[1]", "expected 256, got 255");
  c = Call(kGroupRow);
  c.q.out = TensorRef::contiguous(fake(0x20000), DType::kE4M3, {kT + 1, kH});
  expect_rejected(c, "out.sizes[0]");
  c = Call(kGroupRow);
  c.q.out.data = nullptr;
  expect_rejected(c, "out.data");
  c = Call(QuantSpec::nvfp4());
  c.q.out = TensorRef::contiguous(fake(0x20000), DType::kE2M1x2, {kT, kH});  // [T, H], not H/2
  expect_rejected(c, "out.sizes[1]", "expected 128, got 256");
  c = Call(QuantSpec::nvfp4());
  c.q.out.dtype = DType::kE4M3;
  expect_rejected(c, "out.dtype");
  c = Call(QuantSpec::none());
  c.q.out.dtype = DType::kE4M3;
  expect_rejected(c, "out.dtype");
}

TEST(QuantizeValidation, Nvfp4ColsMultipleOf16) {
  Call c(QuantSpec::nvfp4());
  c.x = TensorRef::contiguous(fake(0x10000), DType::kBF16, {kT, 40});
  c.q.out = TensorRef::contiguous(fake(0x20000), DType::kE2M1x2, {kT, 20});
  expect_rejected(c, "out.cols", "got 40");
}

TEST(QuantizeValidation, GivenScalePointers) {
  Call c(QuantSpec::fp8_per_tensor());
  c.q.scale = nullptr;
  expect_rejected(c, "out.scale");
  c = Call(QuantSpec::nvfp4());
  c.q.scale = nullptr;
  expect_rejected(c, "out.scale");
  c = Call(QuantSpec::fp8_per_token());
  c.q.scale = fake_f(0x40000);
  expect_rejected(c, "out.scale");
  c = Call(QuantSpec::fp8_per_tensor());
  c.q.scale_ub = fake_f(0x50000);
  expect_rejected(c, "out.scale_ub");
  c = Call(QuantSpec::nvfp4());
  c.q.scale_ub = fake_f(0x50000);
  expect_rejected(c, "out.scale_ub");
  c = Call(QuantSpec::fp8_per_tensor());
  c.q.scale = fake_f(0x40002);
  expect_rejected(c, "out.scale", "4-byte aligned");
  c = Call(kGroupRow);
  c.q.scale_ub = fake_f(0x50001);
  expect_rejected(c, "out.scale_ub", "4-byte aligned");
}

TEST(QuantizeValidation, ScaleBuffers) {
  Call c(QuantSpec::fp8_per_tensor());
  c.q.scales = TensorRef::contiguous(fake(0x30000), DType::kF32, {kT});
  expect_rejected(c, "out.scales");
  // Row-major [T, G] passed where col_tma [G, round_up(T, 4)] = [2, 8] is required.
  c = Call(kGroupTma);
  c.q.scales = TensorRef::contiguous(fake(0x30000), DType::kF32, {kT, 2});
  expect_rejected(c, "out.scales", "[2, 8] fp32");
  // [G, T] (ld = T = 5) where the TMA-aligned ld = 8 is required.
  c = Call(kGroupTma);
  c.q.scales = TensorRef::contiguous(fake(0x30000), DType::kF32, {2, kT});
  expect_rejected(c, "out.scales", "[2, 8] fp32");
  // Column-major [G, T] given as a transposed (non-contiguous) view of [T, G].
  c = Call(QuantSpec::fp8_per_group(128, L::kColMajor));
  c.q.scales = TensorRef::strided(fake(0x30000), DType::kF32, {2, kT}, {1, 2});
  expect_rejected(c, "out.scales", "contiguous");
  c = Call(QuantSpec::fp8_per_group(128, L::kRowMajor, F::kUe8m0Packed));
  c.q.scales.dtype = DType::kF32;
  expect_rejected(c, "out.scales", "ue8m0");
  c = Call(QuantSpec::fp8_per_token());
  c.q.scales = TensorRef();
  expect_rejected(c, "out.scales");
  c = Call(QuantSpec::nvfp4());
  c.q.scales = TensorRef::contiguous(fake(0x30000), DType::kE4M3, {kT, kH / 16});  // linear
  expect_rejected(c, "out.scales", "[128, 16] e4m3");
  c = Call(kGroupRow);
  c.q.scales.data = nullptr;
  expect_rejected(c, "out.scales.data");
  c = Call(kGroupRow);
  c.q.scales.data = fake(0x30002);
  expect_rejected(c, "out.scales.data", "4-byte aligned");
}

TEST(QuantizeValidation, InvalidSpec) {
  Call c(kGroupRow);
  c.q.spec.group_size = 32;
  expect_rejected(c, "quant.group_size", "got 32");
  c = Call(QuantSpec::nvfp4());
  c.q.spec.layout = L::kColMajor;
  expect_rejected(c, "quant.layout");
}

TEST(QuantizeValidation, EmptyInputIsANoOpWithoutDevice) {
  // Without a GPU any device call fails, so Ok proves none was made.
  for (const QuantSpec& s : all_quant_specs()) {
    QuantOutput q;
    q.spec = s;
    const int64_t out_cols = s.kind == QuantKind::kNvfp4 ? kH / 2 : kH;
    q.out = TensorRef::contiguous(nullptr, quantized_dtype(s).value_or(DType::kF16), {0, out_cols});
    ScaleShape sh;
    ASSERT_TRUE(scale_shape(s, 0, kH, &sh).ok());
    if (sh.rank == 1) q.scales = TensorRef::contiguous(nullptr, sh.dtype, {sh.sizes[0]});
    if (sh.rank == 2)
      q.scales = TensorRef::contiguous(nullptr, sh.dtype, {sh.sizes[0], sh.sizes[1]});
    if (sh.rank == 3)
      q.scales = TensorRef::contiguous(nullptr, sh.dtype, {sh.sizes[0], sh.sizes[1], sh.sizes[2]});
    if (s.reads_scale()) q.scale = fake_f(0x40000);
    const TensorRef x = TensorRef::contiguous(nullptr, DType::kBF16, {0, kH});
    const Status st = quantize(x, q, nullptr);
    EXPECT_TRUE(st.ok()) << to_string(s) << ": " << st.to_string();
  }
}

TEST(QuantizeValidation, EmptyInputStillValidatesShapes) {
  Call c(kGroupRow);
  c.x = TensorRef::contiguous(nullptr, DType::kBF16, {0, kH});
  c.q.out = TensorRef::contiguous(nullptr, DType::kE4M3, {0, kH + 1});
  c.q.scales = TensorRef::contiguous(nullptr, DType::kF32, {0, 2});
  expect_rejected(c, "out.sizes[1]");
}

// ---- GPU: rejected calls write nothing ---------------------------------------------------------

/// Real device buffers for x [kT, kH] bf16 -> `spec`, outputs poisoned.
struct DeviceCall {
  test::DeviceBuffer x{kT * kH * 2}, out{kT * kH * 4}, scales{4096}, scale{4};
  Call call;

  explicit DeviceCall(const QuantSpec& spec) : call(spec) {
    const std::vector<float> v = test::random_floats(kT * kH, 42);
    const auto bits = test::encode(v, DType::kBF16, nullptr);
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

  void expect_untouched() {
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    for (const test::DeviceBuffer* b : {&out, &scales})
      EXPECT_EQ(test::changed_bytes(*b), 0) << "bytes written by a rejected call";
  }
};

void expect_rejected_untouched(DeviceCall& d, const std::string& arg) {
  const Status st = quantize(d.call.x, d.call.q, nullptr);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  EXPECT_NE(st.message().find("'" + arg + "'"), std::string::npos) << st.message();
  d.expect_untouched();
}

TEST(QuantizeValidationGpu, ValidBaselineWrites) {
  QFUSE_REQUIRE_GPU();
  DeviceCall d(kGroupTma);
  ASSERT_TRUE(quantize(d.call.x, d.call.q, nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_GT(test::changed_bytes(d.out, kT * kH), 0);  // the poison check below can detect writes
}

TEST(QuantizeValidationGpu, BadDtypeWritesNothing) {
  QFUSE_REQUIRE_GPU();
  DeviceCall d(kGroupTma);
  d.call.q.out.dtype = DType::kBF16;
  expect_rejected_untouched(d, "out.dtype");
}

TEST(QuantizeValidationGpu, BadShapeWritesNothing) {
  QFUSE_REQUIRE_GPU();
  DeviceCall d(kGroupTma);
  d.call.q.out.sizes[1] = kH - 128;
  d.call.q.out.strides[0] = kH - 128;
  expect_rejected_untouched(d, "out.sizes[1]");
}

TEST(QuantizeValidationGpu, BadScaleLayoutWritesNothing) {
  QFUSE_REQUIRE_GPU();
  DeviceCall d(kGroupTma);
  d.call.q.scales = TensorRef::contiguous(d.scales.get(), DType::kF32, {2, kT});  // ld = T
  expect_rejected_untouched(d, "out.scales");
}

TEST(QuantizeValidationGpu, MissingScaleWritesNothing) {
  QFUSE_REQUIRE_GPU();
  DeviceCall d(QuantSpec::nvfp4());
  d.call.q.scale = nullptr;
  expect_rejected_untouched(d, "out.scale");
}

TEST(QuantizeValidationGpu, HostPointerRejected) {
  QFUSE_REQUIRE_GPU();
  std::vector<uint16_t> host(kT * kH, 0x3F80);
  DeviceCall d(kGroupTma);
  d.call.x.data = host.data();
  expect_rejected_untouched(d, "x.data");
  std::vector<uint8_t> host_out(kT * kH);
  DeviceCall e(QuantSpec::fp8_per_token());
  e.call.q.out.data = host_out.data();
  expect_rejected_untouched(e, "out.data");
}

// The pointer checks ask the driver directly: a CUDA error the caller left pending is neither
// cleared nor reported as this call's.
TEST(QuantizeValidationGpu, PendingCallerErrorIsLeftAlone) {
  QFUSE_REQUIRE_GPU();
  std::vector<uint16_t> host(kT * kH, 0x3F80);
  DeviceCall d(kGroupTma), ok(kGroupTma);
  d.call.x.data = host.data();
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  ASSERT_NE(cudaSetDevice(count + 7), cudaSuccess);  // leaves cudaErrorInvalidDevice pending
  const Status st = quantize(d.call.x, d.call.q, nullptr);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  EXPECT_EQ(cudaPeekAtLastError(), cudaErrorInvalidDevice);
  EXPECT_TRUE(quantize(ok.call.x, ok.call.q, nullptr).ok());
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidDevice) << "still the caller's to read";
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

}  // namespace
}  // namespace qfuse
