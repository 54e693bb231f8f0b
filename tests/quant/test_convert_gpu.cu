// The one rule with two implementations: fp32 -> E4M3 in hardware (device) and in software
// (host reference). They must agree on every input class: a sweep of fp32 bit patterns, every
// tie between adjacent codes and its neighbours, saturation, NaN, infinities. Also checks the
// device builds of the shared rules (E2M1 rounding, NaN-propagating max) against the host.
#include <cmath>
#include <cstring>
#include <vector>

#include "common/gpu.h"
#include "qfuse/quant/quantizer.cuh"
#include "qfuse/quant/reference.h"

namespace qfuse::test {
namespace {

__global__ void convert_kernel(const float* x, int64_t n, uint8_t* e4m3_out, uint8_t* e2m1_out,
                               float* max_out) {
  for (int64_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    e4m3_out[i] = quant::e4m3(x[i]);
    e2m1_out[i] = rules::e2m1_encode(x[i]);
    max_out[i] = rules::nan_max(x[i], x[n - 1 - i]);
  }
}

std::vector<float> conversion_inputs() {
  std::vector<float> v;
  for (uint32_t i = 0; i < (1u << 20); ++i) v.push_back(rules::bits_float(i << 12));
  for (int code = 0; code < 0x7E; ++code) {  // ties between adjacent positive codes, both signs
    const float a = rules::e4m3_value(code), b = rules::e4m3_value(code + 1);
    const float mid = (a + b) / 2;
    for (float s : {1.0f, -1.0f})
      for (float f : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f), a, b})
        v.push_back(s * f);
  }
  for (float f :
       {448.0f, 449.0f, 464.0f, 465.0f, 480.0f, 1e6f, INFINITY, -INFINITY, NAN,  -NAN, 0.0f,
        -0.0f,  0.25f,  0.75f,  1.25f,  1.75f,  2.5f, 3.5f,     5.0f,      6.0f, 7.0f})
    v.push_back(f);
  return v;
}

TEST(ConvertGpu, E4M3HardwareMatchesHostEncoderAndSharedRules) {
  QFUSE_REQUIRE_GPU();
  const std::vector<float> x = conversion_inputs();
  const int64_t n = static_cast<int64_t>(x.size());
  DeviceBuffer dx(n * 4), d8(n), d4(n), dm(n * 4);
  dx.upload(x.data(), n * 4);
  d8.fill(0xAA);
  convert_kernel<<<256, 256>>>(dx.as<float>(), n, d8.as<uint8_t>(), d4.as<uint8_t>(),
                               dm.as<float>());
  QFUSE_CUDA_OK(cudaGetLastError());
  QFUSE_CUDA_OK(cudaDeviceSynchronize());
  const auto e8 = d8.download(), e4 = d4.download(), mx = dm.download();
  int64_t bad8 = 0, bad4 = 0, badm = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t want = ref::e4m3_encode(x[i]);
    const bool nan_pair = (want & 0x7F) == 0x7F && (e8[i] & 0x7F) == 0x7F;
    if (e8[i] != want && !nan_pair && bad8++ < 5)
      ADD_FAILURE() << "e4m3(" << x[i] << "): device 0x" << std::hex << int(e8[i]) << " host 0x"
                    << int(want);
    if (e4[i] != rules::e2m1_encode(x[i]) && bad4++ < 5)
      ADD_FAILURE() << "e2m1(" << x[i] << "): device " << int(e4[i]);
    float m;
    std::memcpy(&m, &mx[i * 4], 4);
    const float want_m = rules::nan_max(x[i], x[n - 1 - i]);
    if (!(m == want_m || (std::isnan(m) && std::isnan(want_m))) && badm++ < 5)
      ADD_FAILURE() << "nan_max(" << x[i] << ", " << x[n - 1 - i] << "): device " << m;
  }
  EXPECT_EQ(bad8, 0);
  EXPECT_EQ(bad4, 0);
  EXPECT_EQ(badm, 0);
}

/// Word i = e2m1_encode8 of the 8 fp32 bit patterns first + stride * (8 i + lane); where every
/// |x| < 7, e2m1_encode8_below7 must give the same word (else the word is inverted).
__global__ void encode8_kernel(uint32_t first, uint32_t stride, int64_t words, uint32_t* out) {
  for (int64_t i = blockIdx.x * blockDim.x + threadIdx.x; i < words;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float x[8];
    bool below7 = true;
    for (int l = 0; l < 8; ++l) {
      x[l] = __uint_as_float(first + stride * static_cast<uint32_t>(8 * i + l));
      below7 = below7 && fabsf(x[l]) < 7.0f;  // false for NaN
    }
    const uint32_t w = rules::e2m1_encode8(x);
    out[i] = !below7 || rules::e2m1_encode8_below7(x) == w ? w : ~w;
  }
}

/// Device e2m1_encode8 over `words` * 8 patterns against the host's scalar encoder.
int64_t encode8_device_mismatches(uint32_t first, uint32_t stride, int64_t words) {
  DeviceBuffer d(words * 4);
  d.fill(0xAA);
  encode8_kernel<<<1024, 256>>>(first, stride, words, d.as<uint32_t>());
  const cudaError_t launched = cudaGetLastError();
  const cudaError_t done = cudaDeviceSynchronize();
  if (launched != cudaSuccess || done != cudaSuccess) {
    ADD_FAILURE() << "encode8_kernel: "
                  << cudaGetErrorString(launched != cudaSuccess ? launched : done);
    return words * 8;
  }
  const auto bytes = d.download();
  int64_t bad = 0;
  for (int64_t i = 0; i < words; ++i) {
    uint32_t w;
    std::memcpy(&w, &bytes[i * 4], 4);
    for (int l = 0; l < 8; ++l) {
      const uint32_t b = first + stride * static_cast<uint32_t>(8 * i + l);
      const uint32_t want = rules::e2m1_encode(rules::bits_float(b));
      if (((w >> (4 * l)) & 0xf) != want && bad++ < 5)
        ADD_FAILURE() << "e2m1_encode8 of bits 0x" << std::hex << b << " (lane " << l
                      << "): device " << ((w >> (4 * l)) & 0xf) << ", host " << want;
    }
  }
  return bad;
}

TEST(ConvertGpu, E2M1EightWideEncoderOnTheDeviceMatchesTheScalarRule) {
  QFUSE_REQUIRE_GPU();
  // Every float with 0.25 <= |x| < 8 (all rounding boundaries, the saturation edge), both signs.
  const int64_t range_words = (0x41000000 - 0x3e800000) / 8;
  EXPECT_EQ(encode8_device_mismatches(0x3e800000u, 1, range_words), 0);
  EXPECT_EQ(encode8_device_mismatches(0xbe800000u, 1, range_words), 0);
  // A sweep of all bit patterns (stride prime to 8), and runs from the specials: zeros,
  // denormals, infinities, quiet and signalling NaNs of both signs.
  EXPECT_EQ(encode8_device_mismatches(0u, 4099, (1ll << 32) / 4099 / 8), 0);
  for (uint32_t b : {0x00000000u, 0x80000000u, 0x007ffff8u, 0x807ffff8u, 0x7f7ffff8u, 0xff7ffff8u,
                     0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u, 0x7ffffff8u, 0xfffffff8u})
    EXPECT_EQ(encode8_device_mismatches(b, 1, 1), 0) << std::hex << b;
}

/// Counts the (E4M3 code, global scale) pairs where the division-free NVFP4 factor differs from
/// the IEEE one, both computed on the device, over the 2^23 global scales first_bits + i, and
/// the scale input's E4M3 encoding over the same floats taken as block amax (global scale 1).
__global__ void nvfp4_scale_kernel(uint32_t first_bits, unsigned long long* bad) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (1u << 23)) return;
  const float g = __uint_as_float(first_bits + i);
  const float inv = rules::rcp_rn_normal(g);
  unsigned n = 0;
  for (int c = 0; c <= 0x7F; ++c) {
    const float sf = rules::e4m3_value(static_cast<uint8_t>(c));
    const float fast = rules::nvfp4_out_scale_fma(sf, g, inv);
    const float ieee = rules::nvfp4_out_scale(sf, g);
    n += __float_as_uint(fast) != __float_as_uint(ieee) && !(isnan(fast) && isnan(ieee));
  }
  n += quant::e4m3(rules::nvfp4_sf_input_fma(1.0f, g)) !=
       quant::e4m3(rules::nvfp4_sf_input(1.0f, g));
  if (n) atomicAdd(bad, n);
}

TEST(ConvertGpu, Nvfp4DivisionFreeBlockScaleMatchesIeeeOnWholeBinades) {
  QFUSE_REQUIRE_GPU();
  DeviceBuffer d(8);
  // [1, 2) covers every global scale by power-of-two scaling; the ends of the allowed range and
  // a binade around the usual 448 * 6 / amax check that nothing there over- or underflows.
  for (uint32_t first : {0x3F800000u, 0x21800000u, 0x5D800000u - (1u << 23), 0x45000000u}) {
    d.fill(0);
    nvfp4_scale_kernel<<<(1 << 23) / 256, 256>>>(first, d.as<unsigned long long>());
    QFUSE_CUDA_OK(cudaGetLastError());
    QFUSE_CUDA_OK(cudaDeviceSynchronize());
    const auto bytes = d.download();
    unsigned long long bad;
    std::memcpy(&bad, bytes.data(), 8);
    EXPECT_EQ(bad, 0u) << "binade from 0x" << std::hex << first;
  }
}

}  // namespace
}  // namespace qfuse::test
