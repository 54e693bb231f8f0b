// quantize_fp8_dynamic_per_tensor(): the scale max(amax / 448, FLT_MIN) and the codes against an
// fp64-checked host reference, byte for byte (bf16/fp16/fp32, strided rows, odd sizes, NaN, an
// all-zero tensor, CUDA graph capture); negative tests of its validation (host-only, fake
// pointers) and that a rejected call writes nothing (GPU).
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <array>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/compare.h"
#include "common/gpu.h"
#include "qfuse/quant/quantize.h"
#include "qfuse/quant/reference.h"

namespace qfuse::test {
namespace {

/// The reference: amax in fp64 of the rounded inputs (exact), the scale in fp32 as the rule says,
/// the codes through the static per-tensor host reference (x * (1 / scale)).
float ref_scale(const std::vector<float>& v) {
  double amax = 0;
  bool nan = false;
  for (float f : v) {
    nan |= std::isnan(f);
    amax = std::fmax(amax, std::fabs(static_cast<double>(f)));
  }
  if (nan) return NAN;
  const float s = static_cast<float>(amax) / 448.0f;
  // NOTE: amax / 448 in fp32 is the correctly rounded quotient: check it against fp64.
  EXPECT_NEAR(s, amax / 448.0, amax / 448.0 * 1e-7 + 1e-45);
  return std::fmax(s, FLT_MIN);
}

struct Case {
  DType dtype;
  int64_t T, H, pad;
};

void run(const Case& c, std::vector<float> v, bool graph = false) {
  SCOPED_TRACE(std::string(to_string(c.dtype)) + " T=" + std::to_string(c.T) +
               " H=" + std::to_string(c.H));
  std::vector<float> rounded;
  const std::vector<uint8_t> bytes = encode(v, c.dtype, &rounded);
  const int64_t es = dtype_size(c.dtype), ld = c.H + c.pad;
  DeviceBuffer dx(c.T * ld * es + 16), dout(c.T * c.H + 16), dscale(4);
  dx.fill(0x55);
  for (int64_t t = 0; t < c.T; ++t)
    QFUSE_CUDA_OK(cudaMemcpy(dx.as<uint8_t>() + t * ld * es, &bytes[t * c.H * es], c.H * es,
                             cudaMemcpyHostToDevice));
  dout.fill(kPoison);
  dscale.fill(kPoison);
  const TensorRef x = TensorRef::strided(dx.get(), c.dtype, {c.T, c.H}, {ld, 1});
  const TensorRef out = TensorRef::contiguous(dout.get(), DType::kE4M3, {c.T, c.H});
  if (graph) {
    cudaStream_t s;
    QFUSE_CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cudaGraph_t g;
    cudaGraphExec_t ge;
    QFUSE_CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    const Status st = quantize_fp8_dynamic_per_tensor(x, out, dscale.as<float>(), s);
    QFUSE_CUDA_OK(cudaStreamEndCapture(s, &g));
    ASSERT_TRUE(st.ok()) << st.to_string();
    EXPECT_EQ(changed_bytes(dout, c.T * c.H), 0) << "capture ran the kernels";
    QFUSE_CUDA_OK(cudaGraphInstantiate(&ge, g, 0));
    for (int i = 0; i < 2; ++i) QFUSE_CUDA_OK(cudaGraphLaunch(ge, s));  // replays start anew
    QFUSE_CUDA_OK(cudaStreamSynchronize(s));
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    cudaStreamDestroy(s);
  } else {
    const Status st = quantize_fp8_dynamic_per_tensor(x, out, dscale.as<float>(), nullptr);
    ASSERT_TRUE(st.ok()) << st.to_string();
  }
  QFUSE_CUDA_OK(cudaDeviceSynchronize());
  float got_scale;
  std::memcpy(&got_scale, dscale.download().data(), 4);
  const float want = ref_scale(rounded);
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got_scale));
    const std::vector<uint8_t> got = dout.download();
    int64_t not_nan = 0;
    for (int64_t i = 0; i < c.T * c.H; ++i) not_nan += (got[i] & 0x7F) != 0x7F;
    EXPECT_EQ(not_nan, 0) << "a NaN scale must give NaN codes";
    return;
  }
  EXPECT_EQ(got_scale, want);
  ref::RefScalars sc;
  sc.scale = want;
  const ref::QuantResult r =
      ref::quantize(rounded.data(), c.T, c.H, QuantSpec::fp8_per_tensor(), sc);
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  const std::vector<uint8_t> got = dout.download();
  int64_t diff = 0;
  for (int64_t i = 0; i < c.T * c.H; ++i) diff += got[i] != r.out[i];
  EXPECT_EQ(diff, 0) << "codes differing from the host reference";
}

TEST(DynamicPerTensor, MatchesReference) {
  QFUSE_REQUIRE_GPU();
  uint64_t seed = 11;
  for (DType d : {DType::kBF16, DType::kF16, DType::kF32})
    for (const auto& [T, H, pad] : std::vector<std::array<int64_t, 3>>{
             {1, 16, 0}, {7, 1000, 8}, {300, 4096, 0}, {2048, 7168, 0}, {33, 130, 3}}) {
      std::vector<float> v = random_floats(T * H, seed++, 3.7f);
      run({d, T, H, pad}, v);
    }
}

TEST(DynamicPerTensor, EdgeInputs) {
  QFUSE_REQUIRE_GPU();
  // The amax at the very last element; a negative amax; all zero (scale FLT_MIN, zero codes).
  std::vector<float> v = random_floats(9 * 333, 5, 0.5f);
  v.back() = 1234.5f;
  run({DType::kF32, 9, 333, 0}, v);
  v.back() = -1e4f;
  run({DType::kBF16, 9, 333, 0}, v);
  run({DType::kF16, 9, 333, 0}, std::vector<float>(9 * 333, 0.0f));
  // NaN anywhere: NaN scale (SPEC §0.1: NaN propagates).
  v[1000] = NAN;
  run({DType::kF32, 9, 333, 0}, v);
}

TEST(DynamicPerTensor, GraphReplay) {
  QFUSE_REQUIRE_GPU();
  run({DType::kBF16, 64, 512, 0}, random_floats(64 * 512, 3, 2.0f), true);
}

TEST(DynamicPerTensor, RejectsBadArguments) {
  auto fake = [](uintptr_t a) { return reinterpret_cast<void*>(a); };
  const TensorRef x = TensorRef::contiguous(fake(0x10000), DType::kBF16, {5, 256});
  const TensorRef out = TensorRef::contiguous(fake(0x20000), DType::kE4M3, {5, 256});
  float* scale = reinterpret_cast<float*>(0x30000);
  expect_invalid_argument(
      quantize_fp8_dynamic_per_tensor(TensorRef::contiguous(fake(0x10000), DType::kE4M3, {5, 256}),
                                      out, scale, nullptr),
      "x.dtype");
  expect_invalid_argument(
      quantize_fp8_dynamic_per_tensor(
          x, TensorRef::contiguous(fake(0x20000), DType::kBF16, {5, 256}), scale, nullptr),
      "out.dtype");
  expect_invalid_argument(
      quantize_fp8_dynamic_per_tensor(
          x, TensorRef::contiguous(fake(0x20000), DType::kE4M3, {5, 255}), scale, nullptr),
      "out.sizes[1]");
  expect_invalid_argument(quantize_fp8_dynamic_per_tensor(x, out, nullptr, nullptr), "out.scale");
  expect_invalid_argument(
      quantize_fp8_dynamic_per_tensor(x, out, reinterpret_cast<float*>(0x30002), nullptr),
      "out.scale");
  expect_invalid_argument(
      quantize_fp8_dynamic_per_tensor(
          TensorRef::strided(fake(0x10000), DType::kBF16, {5, 256}, {256, 2}), out, scale, nullptr),
      "x.strides[1]");
}

TEST(DynamicPerTensor, RejectedCallWritesNothing) {
  QFUSE_REQUIRE_GPU();
  DeviceBuffer dx(5 * 256 * 2), dout(5 * 256), dscale(4);
  dx.fill(0x3c);
  dout.fill(kPoison);
  dscale.fill(kPoison);
  const Status st = quantize_fp8_dynamic_per_tensor(
      TensorRef::contiguous(dx.get(), DType::kBF16, {5, 256}),
      TensorRef::contiguous(dout.get(), DType::kE4M3, {5, 128}), dscale.as<float>(), nullptr);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  QFUSE_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_EQ(changed_bytes(dout), 0);
  EXPECT_EQ(changed_bytes(dscale), 0);
}

}  // namespace
}  // namespace qfuse::test
