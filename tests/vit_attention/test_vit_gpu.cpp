// The ViT attention family on the GPU against its host references (issue 15's tests):
//   - Q/K/V quantization byte for byte (codes and zero pad columns) on slices of one interleaved
//     QKV buffer, 3-D and 4-D views, D {72, 80, 128}, 16-byte and scalar load paths, distinct
//     non-unit scales, NaN / inf / saturating values, outputs poisoned;
//   - dynamic scaling: constant inputs give exactly amax / 448, 18 forwards wrap the history as a
//     host simulation says, other layers untouched, the same under CUDA-graph replay;
//   - the BF16 tensor-core kernel (every head size, kTensorCore and kAuto) against fp64 over the
//     bf16 inputs and against the CUDA-core kernel; 4-D views; the fallback for unaligned views;
//   - attention (CUDA-core rung): packed sequences of lengths {1, 37, 64, 130} against the fp64
//     reference over the dequantized inputs through every output kind tried, cosine > 0.99 against
//     fp64 over the bf16 inputs, and the FP8 path against the BF16 path (max |diff| < 0.5, mean
//     < 0.05).
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <numeric>
#include <ostream>
#include <random>
#include <tuple>
#include <vector>

#include "common/gpu.h"
#include "common/quant_check.h"
#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"
#include "qfuse/vit_attention/vit_attention.h"
#include "vit_attention/launch.h"
#include "vit_attention/settings.h"

namespace qfuse::test {
namespace {

/// An interleaved QKV projection output [B, S, 3, H, D] bf16 (token rows padded by `pad`
/// elements) on host and device, and the q / k / v views into it.
struct Qkv {
  int64_t B = 1, S = 0, H = 0, D = 0, pad = 0;
  int rank = 3;
  std::vector<uint16_t> host;
  DeviceBuffer dev;

  int64_t ss() const { return 3 * H * D + pad; }
  int64_t sb() const { return S * ss(); }
  int64_t total() const { return B * S; }

  static Qkv make(int64_t B, int64_t S, int64_t H, int64_t D, int rank, int64_t pad, uint64_t seed,
                  float sigma = 1.0f) {
    Qkv x;
    x.B = B, x.S = S, x.H = H, x.D = D, x.rank = rank, x.pad = pad;
    const size_t n = static_cast<size_t>(B * x.sb()) + 8;
    std::vector<float> rounded;
    const std::vector<uint8_t> bytes =
        encode(random_floats(n, seed, sigma), DType::kBF16, &rounded);
    x.host.resize(n);
    std::memcpy(x.host.data(), bytes.data(), n * 2);
    x.upload();
    return x;
  }
  /// Copies the host values to the device, into the same buffer once it exists (a captured CUDA
  /// graph keeps reading the address it was captured with).
  void upload() {
    if (dev.bytes() != host.size() * 2) dev = DeviceBuffer(host.size() * 2);
    dev.upload(host.data(), host.size() * 2);
  }
  uint16_t& at(int which, int64_t t, int64_t h, int64_t d) {
    return host[static_cast<size_t>((t / S) * sb() + (t % S) * ss() + which * H * D + h * D + d)];
  }
  TensorRef view(int which) const {
    uint16_t* p = dev.as<uint16_t>() + which * H * D;
    if (rank == 4) return TensorRef::strided(p, DType::kBF16, {B, S, H, D}, {sb(), ss(), D, 1});
    return TensorRef::strided(p, DType::kBF16, {B * S, H, D}, {ss(), D, 1});
  }
  ref::VitHostView host_view(int which) const {
    ref::VitHostView v;
    v.data = host.data() + which * H * D;
    v.B = B, v.S = S, v.H = H, v.D = D;
    v.sb = sb(), v.ss = ss(), v.sh = D;
    return v;
  }
};

struct Fp8Qkv {
  int64_t T = 0, H = 0, Dp = 0;
  DeviceBuffer out[3];
  static Fp8Qkv make(int64_t T, int64_t H, int64_t D) {
    Fp8Qkv f;
    f.T = T, f.H = H, f.Dp = vit_padded_head_dim(D);
    for (auto& b : f.out) {
      b = DeviceBuffer(std::max<int64_t>(T * H * f.Dp, 1));
      b.fill(kPoison);
    }
    return f;
  }
  TensorRef view(int which) const {
    return TensorRef::contiguous(out[which].get(), DType::kE4M3, {T, H, Dp});
  }
};

float bf16_round(float x) {
  return ref::bf16_value(ref::bf16_bits(x));
}

DeviceBuffer device_floats(const std::vector<float>& v) {
  DeviceBuffer b(v.size() * 4);
  b.upload(v.data(), v.size() * 4);
  return b;
}

VitQkvQuantArgs quant_args(const Qkv& x, const Fp8Qkv& f) {
  VitQkvQuantArgs a;
  a.q = x.view(0), a.k = x.view(1), a.v = x.view(2);
  a.q_out = f.view(0), a.k_out = f.view(1), a.v_out = f.view(2);
  return a;
}

struct QuantCase {
  int64_t B, S, H, D;
  int rank;
  int64_t pad;  // odd: the scalar load path
};

void PrintTo(const QuantCase& c, std::ostream* os) {
  *os << "B" << c.B << "_S" << c.S << "_H" << c.H << "_D" << c.D << "_rank" << c.rank << "_pad"
      << c.pad;
}

class VitQuant : public ::testing::TestWithParam<QuantCase> {};

TEST_P(VitQuant, MatchesTheReferenceByteForByte) {
  QFUSE_REQUIRE_GPU();
  const QuantCase c = GetParam();
  Qkv x = Qkv::make(c.B, c.S, c.H, c.D, c.rank, c.pad, 11 + c.D + c.pad, 3.0f);
  // NaN, infinities and values that saturate, in each tensor.
  x.at(0, 0, 0, 0) = 0x7fc0;                             // NaN
  x.at(1, 0, 0, 1) = 0x7f80;                             // +inf
  x.at(2, 0, 0, 2) = 0xff80;                             // -inf
  x.at(0, 1, c.H - 1, c.D - 1) = ref::bf16_bits(60.0f);  // 60 / 0.011 > 448: saturates
  x.upload();
  const std::array<float, 3> scales{0.011f, 0.023f, 0.0057f};
  DeviceBuffer s = device_floats({scales[0], scales[1], scales[2]});
  Fp8Qkv f = Fp8Qkv::make(x.total(), c.H, c.D);
  VitQkvQuantArgs a = quant_args(x, f);
  a.q_scale = s.as<float>(), a.k_scale = s.as<float>() + 1, a.v_scale = s.as<float>() + 2;
  ASSERT_TRUE(vit_quantize_qkv(a, nullptr).ok());
  QFUSE_CUDA_OK(cudaDeviceSynchronize());
  for (int w = 0; w < 3; ++w) {
    const std::vector<uint8_t> want = ref::vit_quantize(x.host_view(w), scales[w]);
    const std::vector<uint8_t> got = f.out[w].download();
    ASSERT_EQ(want.size(), got.size());
    int64_t bad = 0, first = -1;
    for (size_t i = 0; i < want.size(); ++i)
      if (want[i] != got[i] && bad++ == 0) first = static_cast<int64_t>(i);
    EXPECT_EQ(bad, 0) << "tensor " << w << ": first mismatch at byte " << first << " want "
                      << int(want[first]) << " got " << int(got[first]);
  }
  // V transposed for the tensor cores: [H, Dp, S_pad], keys permuted, pad keys zero.
  const int64_t Sp = vit_vt_keys(x.total()), Dp = vit_padded_head_dim(c.D);
  DeviceBuffer vt(c.H * Dp * Sp);
  vt.fill(kPoison);
  a.v_layout = VitVLayout::kTransposed;
  a.v_out = TensorRef::contiguous(vt.get(), DType::kE4M3, {c.H, Dp, Sp});
  ASSERT_TRUE(vit_quantize_qkv(a, nullptr).ok());
  EXPECT_EQ(vt.download(), ref::vit_quantize(x.host_view(2), scales[2], VitVLayout::kTransposed));
  a.v_layout = VitVLayout::kRowMajor;
  a.v_out = f.view(2);
  // Scale 1.0: a plain saturating cast.
  DeviceBuffer one = device_floats({1.0f});
  a.q_scale = a.k_scale = a.v_scale = one.as<float>();
  for (auto& b : f.out) b.fill(kPoison);
  ASSERT_TRUE(vit_quantize_qkv(a, nullptr).ok());
  const std::vector<uint8_t> got = f.out[1].download();
  EXPECT_EQ(got, ref::vit_quantize(x.host_view(1), 1.0f));
}

INSTANTIATE_TEST_SUITE_P(Shapes, VitQuant,
                         ::testing::Values(QuantCase{1, 77, 16, 72, 3, 0},
                                           QuantCase{1, 50, 4, 80, 3, 0},
                                           QuantCase{3, 21, 5, 128, 4, 0},
                                           QuantCase{2, 33, 3, 72, 4, 1},
                                           QuantCase{1, 9, 2, 20, 3, 3},
                                           // more chunks than the grid's threads hold in one
                                           // tile: the grid-stride loops
                                           QuantCase{1, 1500, 16, 72, 3, 0}));

TEST(VitQuant, EmptyIsANoOp) {
  QFUSE_REQUIRE_GPU();
  Qkv x = Qkv::make(1, 0, 4, 72, 3, 0, 5);
  Fp8Qkv f = Fp8Qkv::make(0, 4, 72);
  VitQkvQuantArgs a = quant_args(x, f);
  DeviceBuffer s = device_floats({1.0f});
  a.q_scale = a.k_scale = a.v_scale = s.as<float>();
  EXPECT_TRUE(vit_quantize_qkv(a, nullptr).ok());
  EXPECT_EQ(changed_bytes(f.out[0]), 0);
}

/// The device state against a host simulation of dynamic scaling.
/// `requantized` counts the forwards whose scale differs from the provisional one (the history
/// without this forward's amax), which the device quantizes a second time.
struct Sim {
  std::array<std::array<float, kVitHistory>, 3> hist{};
  uint32_t forwards = 0;
  std::array<int, 3> requantized{};
  std::array<float, 3> forward(const std::array<float, 3>& amax) {
    std::array<float, 3> s{};
    for (int t = 0; t < 3; ++t) {
      hist[t][forwards % kVitHistory] = 0.0f;
      const float provisional = ref::vit_dynamic_scale(hist[t]);
      hist[t][forwards % kVitHistory] = amax[t];
      s[t] = ref::vit_dynamic_scale(hist[t]);
      if (rules::float_bits(s[t]) != rules::float_bits(provisional)) ++requantized[t];
    }
    ++forwards;
    return s;
  }
};

/// Sets element (0, 0, 0) of each tensor to a chosen magnitude, which must be the tensor's amax
/// (the random values around it small enough: sigma kPeakSigma).
constexpr float kPeakSigma = 0.02f;  // |x| <= ~2 with the 20x outliers of random_floats
void set_peaks(Qkv& x, const std::array<float, 3>& peak) {
  for (int t = 0; t < 3; ++t) x.at(t, 0, 0, 0) = ref::bf16_bits(t == 1 ? -peak[t] : peak[t]);
  x.upload();
  for (int t = 0; t < 3; ++t) EXPECT_EQ(ref::vit_amax(x.host_view(t)), peak[t]) << "tensor " << t;
}

class VitDynamic : public ::testing::TestWithParam<VitVLayout> {};

TEST_P(VitDynamic, NineteenForwardsWrapTheHistory) {
  QFUSE_REQUIRE_GPU();
  const int layers = 3, layer = 1;
  DeviceBuffer st_buf(vit_scale_state_bytes(layers));
  const VitScaleState st{st_buf.get(), st_buf.bytes(), layers};
  ASSERT_TRUE(vit_scale_state_reset(st, nullptr).ok());
  Qkv x = Qkv::make(1, 40, 4, 72, 3, 0, 21, kPeakSigma);
  Fp8Qkv f = Fp8Qkv::make(x.total(), 4, 72);
  const VitVLayout layout = GetParam();
  const int64_t Dp = vit_padded_head_dim(72), Sp = vit_vt_keys(x.total());
  DeviceBuffer vt(4 * Dp * Sp);
  auto args = [&] {
    VitQkvQuantArgs a = quant_args(x, f);
    if (layout == VitVLayout::kTransposed) {
      a.v_layout = layout;
      a.v_out = TensorRef::contiguous(vt.get(), DType::kE4M3, {4, Dp, Sp});
    }
    return a;
  };
  Sim sim;
  std::vector<float> v_scales;  // the device's v scale after each forward
  for (int fwd = 0; fwd < 19; ++fwd) {
    // Peaks that rise and fall, so the max of the window changes when the oldest leaves it.
    const std::array<float, 3> peak{bf16_round(10.0f + (fwd * 7 % 11)),
                                    bf16_round(4.0f + (fwd * 5 % 13)),
                                    bf16_round(fwd == 2 ? 200.0f : 3.0f + fwd % 4)};
    set_peaks(x, peak);
    for (auto& b : f.out) b.fill(kPoison);
    vt.fill(kPoison);
    ASSERT_TRUE(vit_quantize_qkv_dynamic(args(), st, layer, nullptr).ok());
    const std::array<float, 3> want = sim.forward(peak);
    std::vector<VitLayerScaleState> got;
    ASSERT_TRUE(vit_scale_state_read(st, nullptr, &got).ok());
    ASSERT_EQ(got.size(), size_t{layers});
    EXPECT_EQ(got[layer].forwards, sim.forwards);
    for (int t = 0; t < 3; ++t) {
      EXPECT_EQ(got[layer].scales[t], want[t]) << "forward " << fwd << " tensor " << t;
      EXPECT_EQ(got[layer].history[t], sim.hist[t]) << "forward " << fwd << " tensor " << t;
      if (t == 2 && layout == VitVLayout::kTransposed) {
        EXPECT_EQ(vt.download(), ref::vit_quantize(x.host_view(t), want[t], layout))
            << "forward " << fwd << " transposed v";
      } else {
        EXPECT_EQ(f.out[t].download(), ref::vit_quantize(x.host_view(t), want[t]))
            << "forward " << fwd << " tensor " << t;
      }
    }
    EXPECT_EQ(got[0].forwards, 0u);
    EXPECT_EQ(got[2].forwards, 0u);
    // The scales the attention reads are the ones this forward used.
    std::array<float, 3> dev_scales{};
    QFUSE_CUDA_OK(
        cudaMemcpy(dev_scales.data(), vit_dynamic_scales(st, layer), 12, cudaMemcpyDeviceToHost));
    EXPECT_EQ(dev_scales, want);
    v_scales.push_back(dev_scales[2]);
  }
  // Forward 2's peak of 200 sets v's scale while it is in the window (forwards 2..17) and leaves
  // it when forward 18 takes its slot (16 forwards later).
  ASSERT_EQ(v_scales.size(), 19u);
  EXPECT_EQ(v_scales[17], 200.0f / 448.0f);
  EXPECT_LT(v_scales[18], 200.0f / 448.0f);
  // Both paths ran for every tensor: quantized once with the history's scale, and again because
  // this forward's amax raised it.
  for (int t = 0; t < 3; ++t) {
    EXPECT_GT(sim.requantized[t], 1) << "tensor " << t;
    EXPECT_LT(sim.requantized[t], 18) << "tensor " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(VLayouts, VitDynamic,
                         ::testing::Values(VitVLayout::kRowMajor, VitVLayout::kTransposed),
                         [](const auto& info) {
                           return info.param == VitVLayout::kRowMajor ? "RowMajor" : "Transposed";
                         });

TEST(VitDynamic, ConstantInputsGiveAmaxOver448) {
  QFUSE_REQUIRE_GPU();
  DeviceBuffer st_buf(vit_scale_state_bytes(1));
  const VitScaleState st{st_buf.get(), st_buf.bytes(), 1};
  ASSERT_TRUE(vit_scale_state_reset(st, nullptr).ok());
  Qkv x = Qkv::make(1, 16, 2, 80, 3, 0, 1);
  const float c = 3.25f;
  for (int w = 0; w < 3; ++w)
    for (int64_t t = 0; t < x.total(); ++t)
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t d = 0; d < 80; ++d) x.at(w, t, h, d) = ref::bf16_bits(w == 2 ? -c : c);
  x.upload();
  Fp8Qkv f = Fp8Qkv::make(x.total(), 2, 80);
  ASSERT_TRUE(vit_quantize_qkv_dynamic(quant_args(x, f), st, 0, nullptr).ok());
  std::vector<VitLayerScaleState> got;
  ASSERT_TRUE(vit_scale_state_read(st, nullptr, &got).ok());
  for (int t = 0; t < 3; ++t) EXPECT_EQ(got[0].scales[t], c / 448.0f);
  // Every code is +-448 (0x7E / 0xFE).
  EXPECT_EQ(f.out[0].download(), std::vector<uint8_t>(x.total() * 2 * 80, 0x7E));
  EXPECT_EQ(f.out[2].download(), std::vector<uint8_t>(x.total() * 2 * 80, 0xFE));
}

TEST(VitDynamic, CudaGraphReplayEqualsEager) {
  QFUSE_REQUIRE_GPU();
  DeviceBuffer st_buf(vit_scale_state_bytes(2));
  const VitScaleState st{st_buf.get(), st_buf.bytes(), 2};
  Qkv x = Qkv::make(2, 24, 3, 72, 4, 0, 9, kPeakSigma);
  Fp8Qkv f = Fp8Qkv::make(x.total(), 3, 72);
  cudaStream_t stream;
  QFUSE_CUDA_OK(cudaStreamCreate(&stream));
  ASSERT_TRUE(vit_scale_state_reset(st, stream).ok());
  cudaGraph_t graph;
  QFUSE_CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  const Status captured = vit_quantize_qkv_dynamic(quant_args(x, f), st, 1, stream);
  QFUSE_CUDA_OK(cudaStreamEndCapture(stream, &graph));
  ASSERT_TRUE(captured.ok()) << captured.to_string();
  cudaGraphExec_t exec;
  QFUSE_CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  Sim sim;
  for (int r = 0; r < 18; ++r) {
    const std::array<float, 3> peak{bf16_round(5.0f + r % 7), bf16_round(9.0f - r % 5),
                                    bf16_round(2.0f + r)};
    set_peaks(x, peak);
    QFUSE_CUDA_OK(cudaGraphLaunch(exec, stream));
    sim.forward(peak);
  }
  std::vector<VitLayerScaleState> got;
  ASSERT_TRUE(vit_scale_state_read(st, stream, &got).ok());
  EXPECT_EQ(got[1].forwards, 18u);
  for (int t = 0; t < 3; ++t) {
    EXPECT_EQ(got[1].history[t], sim.hist[t]);
    EXPECT_EQ(got[1].scales[t], ref::vit_dynamic_scale(sim.hist[t]));
    // The last replay's codes are those of its scale (k's peak fell: the history's scale, v's
    // rose: quantized again).
    EXPECT_EQ(f.out[t].download(), ref::vit_quantize(x.host_view(t), got[1].scales[t]))
        << "tensor " << t;
  }
  EXPECT_EQ(got[0].forwards, 0u);
  QFUSE_CUDA_OK(cudaGraphExecDestroy(exec));
  QFUSE_CUDA_OK(cudaGraphDestroy(graph));
  QFUSE_CUDA_OK(cudaStreamDestroy(stream));
}

// ---- attention ------------------------------------------------------------------------------

struct AttnCase {
  int64_t H, D;
};

/// Per-tensor FP8 scales from each tensor's amax with distinct margins, so that nothing saturates.
/// NOTE: random_floats' 20x outliers carry most of V's variance: with a saturating scale the FP8
/// result is a different function of the inputs than the bf16 one (cosine ~0.15-0.26 measured).
std::array<float, 3> amax_scales(const Qkv& x) {
  std::array<float, 3> scales{};
  for (int t = 0; t < 3; ++t)
    scales[t] = ref::vit_amax(x.host_view(t)) / 448.0f * (1.0f + 0.125f * static_cast<float>(t));
  return scales;
}

/// max |a - b| and mean |a - b| over max |b|.
void relative_diffs(const std::vector<double>& a, const std::vector<double>& b, double* max_rel,
                    double* mean_rel) {
  double mx = 0, sum = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(a[i] - b[i]);
    mx = std::max(mx, d);
    sum += d;
    scale = std::max(scale, std::fabs(b[i]));
  }
  *max_rel = scale > 0 ? mx / scale : mx;
  *mean_rel = scale > 0 && !a.empty() ? sum / a.size() / scale : 0;
}

// NOTE: FP8 against bf16: E4M3 keeps 3 mantissa bits (relative rms error ~3.6 % per input, up
// to 1/16), and the tensor-core kernel also rounds P to E4M3; bounds relative to the largest
// output. A wrong kernel gives errors of the order of the output itself.
// The largest single difference is loose (measured up to 0.20 of the largest output on the
// H200 for 37..130-key sequences, where E4M3 Q and K move a peaky softmax's weights); the cosine
// and the mean carry the check.
constexpr double kFp8VsBf16Cosine = 0.98;
constexpr double kFp8VsBf16MaxRel = 0.35, kFp8VsBf16MeanRel = 0.01;

/// Dequantized values [T, H, D] of an e4m3 [T, H, Dp] buffer.
std::vector<double> dequant(const std::vector<uint8_t>& codes, int64_t T, int64_t H, int64_t D,
                            float scale) {
  const int64_t Dp = vit_padded_head_dim(D);
  std::vector<double> v(static_cast<size_t>(T * H * D));
  for (int64_t r = 0; r < T * H; ++r)
    for (int64_t d = 0; d < D; ++d)
      v[r * D + d] = double(rules::e4m3_value(codes[r * Dp + d])) * scale;
  return v;
}

std::vector<double> bf16_values(const Qkv& x, int which) {
  const ref::VitHostView v = x.host_view(which);
  std::vector<double> out(static_cast<size_t>(x.total() * x.H * x.D));
  for (int64_t t = 0; t < x.total(); ++t)
    for (int64_t h = 0; h < x.H; ++h)
      for (int64_t d = 0; d < x.D; ++d) out[(t * x.H + h) * x.D + d] = v.value(t, h, d);
  return out;
}

/// fp64 attention over the dequantized row-major FP8 codes of `f` and over the bf16 inputs `x`.
void references(const Qkv& x, const Fp8Qkv& f, const std::array<float, 3>& scales,
                const std::vector<int32_t>& cu, double softmax_scale, std::vector<double>* fp8,
                std::vector<double>* bf16) {
  const int64_t T = x.total(), H = x.H, D = x.D;
  ref::vit_attention(dequant(f.out[0].download(), T, H, D, scales[0]),
                     dequant(f.out[1].download(), T, H, D, scales[1]),
                     dequant(f.out[2].download(), T, H, D, scales[2]), H, D, cu, softmax_scale,
                     fp8);
  ref::vit_attention(bf16_values(x, 0), bf16_values(x, 1), bf16_values(x, 2), H, D, cu,
                     softmax_scale, bf16);
}

double cosine(const std::vector<double>& a, const std::vector<double>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) ab += a[i] * b[i], aa += a[i] * a[i], bb += b[i] * b[i];
  return ab / std::sqrt(aa * bb);
}

std::vector<double> bf16_output(const DeviceQuantOutput& o) {
  std::vector<uint8_t> bytes = o.out.download();
  std::vector<double> v(static_cast<size_t>(o.rows * o.cols));
  for (int64_t r = 0; r < o.rows; ++r)
    for (int64_t c = 0; c < o.cols; ++c) {
      uint16_t b;
      std::memcpy(&b, bytes.data() + (r * o.out_ld + c) * 2, 2);
      v[r * o.cols + c] = ref::bf16_value(b);
    }
  return v;
}

void PrintTo(const AttnCase& c, std::ostream* os) {
  *os << "H" << c.H << "_D" << c.D;
}

class VitAttention : public ::testing::TestWithParam<AttnCase> {};

TEST_P(VitAttention, PackedSequencesAgainstTheReference) {
  QFUSE_REQUIRE_GPU();
  const AttnCase c = GetParam();
  const std::vector<int32_t> cu{0, 1, 38, 102, 232};  // lengths 1, 37, 64, 130
  const int64_t T = cu.back(), H = c.H, D = c.D, cols = H * D;
  Qkv x = Qkv::make(1, T, H, D, 3, 0, 100 + D);
  DeviceBuffer cu_dev(cu.size() * 4);
  cu_dev.upload(cu.data(), cu.size() * 4);
  const std::array<float, 3> scales = amax_scales(x);
  DeviceBuffer s = device_floats({scales[0], scales[1], scales[2]});
  Fp8Qkv f = Fp8Qkv::make(T, H, D);
  VitQkvQuantArgs qa = quant_args(x, f);
  qa.q_scale = s.as<float>(), qa.k_scale = s.as<float>() + 1, qa.v_scale = s.as<float>() + 2;
  ASSERT_TRUE(vit_quantize_qkv(qa, nullptr).ok());
  const double softmax_scale = 1.0 / std::sqrt(double(D));

  // The exact result over the dequantized FP8 inputs, and over the bf16 inputs.
  std::vector<double> want_fp8, want_bf16;
  references(x, f, scales, cu, softmax_scale, &want_fp8, &want_bf16);

  VitAttentionArgs a;
  a.q = f.view(0), a.k = f.view(1), a.v = f.view(2);
  a.head_dim = static_cast<int>(D);
  a.q_scale = qa.q_scale, a.k_scale = qa.k_scale, a.v_scale = qa.v_scale;
  a.cu_seqlens = cu_dev.as<int32_t>(), a.cu_seqlens_host = cu.data();
  a.num_seqs = static_cast<int64_t>(cu.size()) - 1;
  a.softmax_scale = static_cast<float>(softmax_scale);

  std::vector<double> fp8_bf16_out;
  for (const char* name : {"none", "fp8_per_tensor", "fp8_per_token", "fp8_group128:row:f32",
                           "fp8_group64:col_tma:ue8m0", "nvfp4:swizzled"}) {
    SCOPED_TRACE(name);
    QuantSpec spec;
    ASSERT_TRUE(parse_quant_spec(name, &spec).ok());
    if (spec.group_size > 0 && cols % spec.group_size != 0) continue;
    DeviceQuantOutput o = DeviceQuantOutput::make(spec, T, cols, DType::kBF16, 0.0173f);
    a.out = o.view();
    const Status st = vit_attention(a, nullptr);
    ASSERT_TRUE(st.ok()) << st.to_string();
    QFUSE_CUDA_OK(cudaDeviceSynchronize());
    CheckOptions opt;
    opt.exact = false;
    opt.scale_value = 0.0173f;
    opt.abs_tol = 2e-4;
    opt.rel_tol = 2e-4;
    // A dynamic scale is the row's (group's) amax / 448: as close to the fp64 one as the values
    // are (rel_tol), i.e. 2e-4 * 2^23 ulps, not the 8 of an exact fp32 pipeline.
    opt.scale_ulps = opt.rel_tol * 8388608.0;
    EXPECT_TRUE(check_quant_output(o, want_fp8, opt));
    if (spec.kind == QuantKind::kNone) fp8_bf16_out = bf16_output(o);
  }
  ASSERT_FALSE(fp8_bf16_out.empty());
  {  // The same FP8 inputs with V transposed (the tensor cores' layout) give the same output.
    SCOPED_TRACE("transposed V");
    const int64_t Sp = vit_vt_keys(T), Dp = vit_padded_head_dim(D);
    DeviceBuffer vt(H * Dp * Sp);
    vt.fill(kPoison);
    VitQkvQuantArgs qt = qa;
    qt.v_layout = VitVLayout::kTransposed;
    qt.v_out = TensorRef::contiguous(vt.get(), DType::kE4M3, {H, Dp, Sp});
    ASSERT_TRUE(vit_quantize_qkv(qt, nullptr).ok());
    VitAttentionArgs t = a;
    t.v = qt.v_out;
    t.v_layout = VitVLayout::kTransposed;
    DeviceQuantOutput o = DeviceQuantOutput::make(QuantSpec::none(), T, cols, DType::kBF16, 1.0f);
    t.out = o.view();
    ASSERT_TRUE(vit_attention(t, VitAttentionOptions{VitKernel::kSimple}, nullptr).ok());
    EXPECT_EQ(bf16_output(o), fp8_bf16_out);
  }
  EXPECT_GT(cosine(fp8_bf16_out, want_bf16), kFp8VsBf16Cosine);

  // The BF16 path of the same family on the bf16 views, against fp64 and against the FP8 path.
  VitAttentionArgs b = a;
  b.q = x.view(0), b.k = x.view(1), b.v = x.view(2);
  b.q_scale = b.k_scale = b.v_scale = nullptr;
  DeviceQuantOutput ob = DeviceQuantOutput::make(QuantSpec::none(), T, cols, DType::kBF16, 1.0f);
  b.out = ob.view();
  // NOTE: the CUDA-core kernel (P in fp32) by name: kAuto runs the BF16 tensor-core kernel on an
  // sm_90 device (VitAttentionTcBf16 below, with bounds for P in bf16).
  ASSERT_TRUE(vit_attention(b, VitAttentionOptions{VitKernel::kSimple}, nullptr).ok());
  CheckOptions opt;
  opt.exact = false;
  opt.abs_tol = 2e-4;
  opt.rel_tol = 2e-4;
  EXPECT_TRUE(check_quant_output(ob, want_bf16, opt));
  double max_rel = 0, mean_rel = 0;
  relative_diffs(fp8_bf16_out, bf16_output(ob), &max_rel, &mean_rel);
  EXPECT_LT(max_rel, kFp8VsBf16MaxRel);
  EXPECT_LT(mean_rel, kFp8VsBf16MeanRel);
}

INSTANTIATE_TEST_SUITE_P(HeadDims, VitAttention,
                         ::testing::Values(AttnCase{4, 72}, AttnCase{3, 64}, AttnCase{2, 128},
                                           AttnCase{2, 80}, AttnCase{2, 96}));

/// The tensor-core kernel (FP8 wgmma, P rounded to E4M3 for P * V) against fp64 over the
/// dequantized inputs and over the bf16 inputs, and against the CUDA-core kernel's FP8 result:
/// sequences of many lengths (one tile, several, partial tiles, length 1), every head size.
/// The tensor-core kernel's static FP8 output (scale 0.0173) of the call `a` (its output
/// replaced): codes within one E4M3 step of `bf16` (the same kernel's bf16 output) / scale.
void expect_tc_fp8_output(VitAttentionArgs a, int64_t T, int64_t cols,
                          const std::vector<double>& bf16) {
  DeviceQuantOutput q8 =
      DeviceQuantOutput::make(QuantSpec::fp8_per_tensor(), T, cols, DType::kBF16, 0.0173f);
  a.out = q8.view();
  ASSERT_TRUE(vit_attention(a, VitAttentionOptions{VitKernel::kTensorCore}, nullptr).ok());
  CheckOptions opt;
  opt.exact = false;
  opt.scale_value = 0.0173f;
  opt.abs_tol = 0.01;  // bf16 rounding of the reference output, below one E4M3 step
  EXPECT_TRUE(check_quant_output(q8, bf16, opt));
}

/// An FP8 tensor-core call over packed sequences `cu` of H heads of size D: the inputs quantized
/// with their amax scales (V transposed, as the kernel reads it), the fp64 references over the
/// dequantized and the bf16 inputs, and the call's arguments (output not set).
struct TcCall {
  std::vector<int32_t> cu;
  int64_t D, H, T, cols;
  Qkv x;
  DeviceBuffer cu_dev, s, vt;
  Fp8Qkv f;
  std::vector<double> want_fp8, want_bf16;
  VitAttentionArgs a;

  TcCall(int64_t D_, int64_t H_, std::vector<int32_t> cu_, uint64_t seed)
      : cu(std::move(cu_)), D(D_), H(H_), T(cu.back()), cols(H_ * D_) {
    const int64_t Dp = vit_padded_head_dim(D), Sp = vit_vt_keys(T);
    x = Qkv::make(1, T, H, D, 3, 0, seed);
    cu_dev = DeviceBuffer(cu.size() * 4);
    cu_dev.upload(cu.data(), cu.size() * 4);
    const std::array<float, 3> scales = amax_scales(x);
    s = device_floats({scales[0], scales[1], scales[2]});
    f = Fp8Qkv::make(T, H, D);
    vt = DeviceBuffer(H * Dp * Sp);
    vt.fill(kPoison);
    VitQkvQuantArgs qa = quant_args(x, f);
    qa.q_scale = s.as<float>(), qa.k_scale = s.as<float>() + 1, qa.v_scale = s.as<float>() + 2;
    qa.v_layout = VitVLayout::kTransposed;
    qa.v_out = TensorRef::contiguous(vt.get(), DType::kE4M3, {H, Dp, Sp});
    EXPECT_TRUE(vit_quantize_qkv(qa, nullptr).ok());
    // Row-major V of the same codes, for the fp64 reference.
    VitQkvQuantArgs qr = quant_args(x, f);
    qr.q_scale = qa.q_scale, qr.k_scale = qa.k_scale, qr.v_scale = qa.v_scale;
    EXPECT_TRUE(vit_quantize_qkv(qr, nullptr).ok());
    const double softmax_scale = 1.0 / std::sqrt(double(D));
    references(x, f, scales, cu, softmax_scale, &want_fp8, &want_bf16);
    a.q = qa.q_out, a.k = qa.k_out, a.v = qa.v_out;
    a.v_layout = VitVLayout::kTransposed;
    a.head_dim = static_cast<int>(D);
    a.q_scale = qa.q_scale, a.k_scale = qa.k_scale, a.v_scale = qa.v_scale;
    a.cu_seqlens = cu_dev.as<int32_t>(), a.cu_seqlens_host = cu.data();
    a.num_seqs = static_cast<int64_t>(cu.size()) - 1;
    a.softmax_scale = static_cast<float>(softmax_scale);
  }

  /// The call on the tensor cores into a fresh poisoned bf16 output, every element written.
  std::vector<double> run_bf16() {
    DeviceQuantOutput o = DeviceQuantOutput::make(QuantSpec::none(), T, cols, DType::kBF16, 1.0f);
    a.out = o.view();
    const Status st = vit_attention(a, VitAttentionOptions{VitKernel::kTensorCore}, nullptr);
    EXPECT_TRUE(st.ok()) << st.to_string();
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(changed_elements(o.out, 2), T * cols);
    return bf16_output(o);
  }
};

/// (head size, consumer warpgroups of the FP8 tensor-core kernel: 2, or 3 = 192 query rows).
class VitAttentionTc : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(VitAttentionTc, AgainstTheReferenceAndTheSimpleKernel) {
  QFUSE_REQUIRE_GPU();
  const int64_t D = std::get<0>(GetParam()), H = 2;
  const ForceTcConsumers force(std::get<1>(GetParam()));
  ASSERT_EQ(vit::tc_query_rows(static_cast<int>(D)), 64 * std::get<1>(GetParam()));
  // 1, 37, 64, 130, 300, 1000 tokens
  TcCall call(D, H, {0, 1, 38, 102, 232, 532, 1532}, 300 + D);
  VitAttentionArgs& a = call.a;
  const int64_t T = call.T, cols = call.cols;
  const std::vector<double>&want_fp8 = call.want_fp8, &want_bf16 = call.want_bf16;
  const std::vector<double> got = call.run_bf16();
  EXPECT_GT(cosine(got, want_fp8), 0.999);
  EXPECT_GT(cosine(got, want_bf16), kFp8VsBf16Cosine);
  DeviceQuantOutput simple =
      DeviceQuantOutput::make(QuantSpec::none(), T, cols, DType::kBF16, 1.0f);
  a.out = simple.view();
  ASSERT_TRUE(vit_attention(a, VitAttentionOptions{VitKernel::kSimple}, nullptr).ok());
  // The CUDA-core kernel keeps P in fp32, the tensor cores take it as E4M3 (relative error up to
  // 1/16 per probability).
  double max_rel = 0, mean_rel = 0;
  relative_diffs(got, bf16_output(simple), &max_rel, &mean_rel);
  EXPECT_LT(max_rel, 0.05);
  EXPECT_LT(mean_rel, 0.005);
  // The static FP8 output of the same kernel: codes within a step of the bf16 result / scale.
  expect_tc_fp8_output(a, T, cols, got);
}

INSTANTIATE_TEST_SUITE_P(HeadDims, VitAttentionTc,
                         ::testing::Values(std::tuple{64, 2}, std::tuple{72, 2}, std::tuple{80, 2},
                                           std::tuple{96, 2}, std::tuple{128, 2}, std::tuple{64, 3},
                                           std::tuple{72, 3}));

/// (head size, consumer warpgroups, stream-K blocks: a grid of at most that many, 1024 the
/// device's SM count; equal lengths: three images of 700 tokens, where the full waves of whole
/// query tiles stay and only the last wave's steps are spread, else six of 1 to 2000 tokens, every
/// step spread). Each grid must split a query tile (the test says so where none was): D 96 takes
/// 10 blocks, since on 7 the cost-balanced shares keep every tile whole (bench/NOTES.md V30).
class VitAttentionStreamK : public ::testing::TestWithParam<std::tuple<int, int, int, bool>> {};

/// With a workspace the FP8 tensor-core kernel splits query tiles between blocks and merges
/// their fp32 partials: the result matches the one-unit grid's up to P's rounding (and the fp64
/// reference as closely), every element written, the same bytes in a second call and
/// in a CUDA graph's replays, and its FP8 output within a step of its bf16 output.
TEST_P(VitAttentionStreamK, SplitQueryTilesMergeToTheOneUnitResult) {
  QFUSE_REQUIRE_GPU();
  const auto [D, consumers, blocks, equal] = GetParam();
  const ForceTcConsumers force(consumers);
  // 1, 37, 700, 130, 2000, 64 tokens (query tiles of 1 to 16 key tiles) or 3 x 700; 3 heads
  TcCall call(D, 3,
              equal ? std::vector<int32_t>{0, 700, 1400, 2100}
                    : std::vector<int32_t>{0, 1, 38, 738, 868, 2868, 2932},
              700 + D + blocks);
  const std::vector<double> one_unit = call.run_bf16();  // no workspace: a block a query tile
  const size_t bytes = vit_attention_workspace_bytes(call.T, call.H, D);
  ASSERT_GT(bytes, 0u);
  // A workspace that is too small is refused before anything runs.
  DeviceBuffer ws(bytes);
  call.a.workspace = ws.get(), call.a.workspace_bytes = bytes - 4;
  EXPECT_FALSE(vit_attention_can_implement(call.a).ok());
  call.a.workspace_bytes = bytes;
  ws.fill(0xA5);  // any content: the call zeroes its tickets
  const ForceStreamK sk(blocks);
  const std::vector<double> got = call.run_bf16();
  EXPECT_GT(cosine(got, call.want_fp8), 0.999);
  // A split query tile's parts round P to E4M3 against their own running maxima: the one-unit
  // grid's P differ by that rounding (up to 1/16 a probability), as the CUDA-core kernel's do.
  double max_rel = 0, mean_rel = 0;
  relative_diffs(got, one_unit, &max_rel, &mean_rel);
  EXPECT_LT(max_rel, 0.05);
  EXPECT_LT(mean_rel, 0.005);
  EXPECT_GT(mean_rel, 0.0) << "no query tile was split";
  EXPECT_EQ(call.run_bf16(), got);
  // Every call leaves its tickets zero: a caller that vouches for them skips the memset (a
  // ticket left over would keep its query tile from being merged: poison in the output).
  call.a.workspace_zeroed = true;
  EXPECT_EQ(call.run_bf16(), got) << "workspace_zeroed";
  call.a.workspace_zeroed = false;
  // Captured in a CUDA graph (the tickets' memset a node of it) and replayed twice.
  DeviceQuantOutput o =
      DeviceQuantOutput::make(QuantSpec::none(), call.T, call.cols, DType::kBF16, 1.0f);
  call.a.out = o.view();
  cudaStream_t stream;
  QFUSE_CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaGraph_t graph;
  QFUSE_CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  const Status st = vit_attention(call.a, VitAttentionOptions{VitKernel::kTensorCore}, stream);
  QFUSE_CUDA_OK(cudaStreamEndCapture(stream, &graph));
  ASSERT_TRUE(st.ok()) << st.to_string();
  cudaGraphExec_t exec;
  QFUSE_CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (int r = 0; r < 2; ++r) {
    o.poison();
    QFUSE_CUDA_OK(cudaGraphLaunch(exec, stream));
    QFUSE_CUDA_OK(cudaStreamSynchronize(stream));
    EXPECT_EQ(bf16_output(o), got) << "replay " << r;
  }
  QFUSE_CUDA_OK(cudaGraphExecDestroy(exec));
  QFUSE_CUDA_OK(cudaGraphDestroy(graph));
  QFUSE_CUDA_OK(cudaStreamDestroy(stream));
  expect_tc_fp8_output(call.a, call.T, call.cols, got);
}

INSTANTIATE_TEST_SUITE_P(
    Grids, VitAttentionStreamK,
    ::testing::Values(std::tuple{72, 3, 1024, false}, std::tuple{72, 3, 5, false},
                      std::tuple{72, 2, 7, false}, std::tuple{64, 3, 13, false},
                      std::tuple{128, 2, 1024, false}, std::tuple{80, 2, 4, false},
                      std::tuple{72, 3, 5, true}, std::tuple{72, 3, 1024, true},
                      std::tuple{96, 2, 10, true}, std::tuple{72, 2, 12, true}));

// ---- the BF16 tensor-core kernel ------------------------------------------------------------

// NOTE: the BF16 tensor-core kernel rounds P to bf16 for P V (relative error up to 2^-9 per
// probability) and writes bf16; bounds relative to the largest output. Reading a neighbour's
// columns (the next head, or K after Q in the interleaved buffer) or a wrong operand layout gives
// errors of the order of the output itself.
constexpr double kTcBf16MaxRel = 1e-2, kTcBf16MeanRel = 1e-3, kTcBf16Cosine = 0.999;

/// Runs `a` on `kernel` into a fresh poisoned bf16 [T, cols] output.
DeviceQuantOutput run_bf16(VitAttentionArgs a, VitKernel kernel, int64_t T, int64_t cols) {
  DeviceQuantOutput o = DeviceQuantOutput::make(QuantSpec::none(), T, cols, DType::kBF16, 1.0f);
  a.out = o.view();
  const Status st = vit_attention(a, VitAttentionOptions{kernel}, nullptr);
  EXPECT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return o;
}

/// The attention call over the q / k / v slices of `x`: packed sequences `cu` (on the device:
/// cu_dev), head size D.
VitAttentionArgs bf16_args(const Qkv& x, const DeviceBuffer& cu_dev, const std::vector<int32_t>& cu,
                           int64_t D, double softmax_scale) {
  VitAttentionArgs a;
  a.q = x.view(0), a.k = x.view(1), a.v = x.view(2);
  a.head_dim = static_cast<int>(D);
  a.cu_seqlens = cu_dev.as<int32_t>(), a.cu_seqlens_host = cu.data();
  a.num_seqs = static_cast<int64_t>(cu.size()) - 1;
  a.softmax_scale = static_cast<float>(softmax_scale);
  return a;
}

/// The BF16 tensor-core kernel's bounds against fp64 over the bf16 inputs.
void expect_bf16_tc_near(const std::vector<double>& got, const std::vector<double>& want) {
  double max_rel = 0, mean_rel = 0;
  relative_diffs(got, want, &max_rel, &mean_rel);
  EXPECT_LT(max_rel, kTcBf16MaxRel);
  EXPECT_LT(mean_rel, kTcBf16MeanRel);
  EXPECT_GT(cosine(got, want), kTcBf16Cosine);
}

/// The BF16 tensor-core kernel (bf16 wgmma, P rounded to bf16) on slices of one interleaved QKV
/// buffer, packed sequences of many lengths (length 1, partial tiles, more key tiles than
/// stages), every head size: explicitly and through kAuto (the same bytes), against fp64 over
/// the bf16 inputs and against the CUDA-core kernel, and its fp8_per_tensor output.
class VitAttentionTcBf16 : public ::testing::TestWithParam<int> {};

TEST_P(VitAttentionTcBf16, AgainstTheReferenceAndTheSimpleKernel) {
  QFUSE_REQUIRE_GPU();
  const int64_t D = GetParam(), H = 3, cols = H * D;
  const std::vector<int32_t> cu{0, 1, 38, 102, 232, 532, 1532, 1661};  // 1 .. 1000, 129
  const int64_t T = cu.back();
  Qkv x = Qkv::make(1, T, H, D, 3, 0, 500 + D);
  DeviceBuffer cu_dev(cu.size() * 4);
  cu_dev.upload(cu.data(), cu.size() * 4);
  const double softmax_scale = 1.0 / std::sqrt(double(D));
  std::vector<double> want;
  ref::vit_attention(bf16_values(x, 0), bf16_values(x, 1), bf16_values(x, 2), H, D, cu,
                     softmax_scale, &want);
  const VitAttentionArgs a = bf16_args(x, cu_dev, cu, D, softmax_scale);

  DeviceQuantOutput tc = run_bf16(a, VitKernel::kTensorCore, T, cols);
  EXPECT_EQ(changed_elements(tc.out, 2), T * cols);
  const std::vector<double> got = bf16_output(tc);
  expect_bf16_tc_near(got, want);
  // kAuto picks the same kernel on an sm_90 device: the same bytes.
  EXPECT_EQ(bf16_output(run_bf16(a, VitKernel::kAuto, T, cols)), got);
  // The CUDA-core kernel (P in fp32).
  const std::vector<double> simple = bf16_output(run_bf16(a, VitKernel::kSimple, T, cols));
  double max_rel = 0, mean_rel = 0;
  relative_diffs(got, simple, &max_rel, &mean_rel);
  EXPECT_LT(max_rel, kTcBf16MaxRel);
  EXPECT_LT(mean_rel, kTcBf16MeanRel);
  // The static FP8 output of the same kernel: codes within a step of the bf16 result / scale.
  expect_tc_fp8_output(a, T, cols, got);
}

INSTANTIATE_TEST_SUITE_P(HeadDims, VitAttentionTcBf16, ::testing::Values(64, 72, 80, 96, 128));

/// Clusters of two blocks sharing each K / V tile (one 64-token half each, multicast) against
/// blocks that load whole tiles alone (set_bf16_cluster): the same bytes, and the reference's
/// values. The sequences make every kind of pair: two tiles of one sequence (shared), tiles of
/// two sequences (each alone), and, with an odd tile count, the last tile with the grid's padding
/// block; D 64 has one box a row, D 72 / 128 two.
class VitAttentionTcBf16Cluster : public ::testing::TestWithParam<int> {};

TEST_P(VitAttentionTcBf16Cluster, PairsGiveTheBytesOfSingleBlocks) {
  QFUSE_REQUIRE_GPU();
  const int64_t D = GetParam(), H = 3, cols = H * D;
  // Tiles a sequence: 3, 1, 4, 3 (11: pairs 0-1, 4-5, 6-7, 8-9 shared; 2-3 across two sequences;
  // 10 with the padding block).
  const std::vector<int32_t> cu{0, 300, 301, 700, 1000};
  const int64_t T = cu.back();
  Qkv x = Qkv::make(1, T, H, D, 3, 0, 900 + D);
  DeviceBuffer cu_dev(cu.size() * 4);
  cu_dev.upload(cu.data(), cu.size() * 4);
  const double softmax_scale = 1.0 / std::sqrt(double(D));
  const VitAttentionArgs a = bf16_args(x, cu_dev, cu, D, softmax_scale);
  vit::set_bf16_cluster(1);
  const DeviceQuantOutput pairs = run_bf16(a, VitKernel::kTensorCore, T, cols);
  vit::set_bf16_cluster(0);
  const DeviceQuantOutput single = run_bf16(a, VitKernel::kTensorCore, T, cols);
  vit::set_bf16_cluster(-1);
  EXPECT_EQ(changed_elements(pairs.out, 2), T * cols);
  const std::vector<double> got = bf16_output(pairs);
  EXPECT_EQ(got, bf16_output(single));
  std::vector<double> want;
  ref::vit_attention(bf16_values(x, 0), bf16_values(x, 1), bf16_values(x, 2), H, D, cu,
                     softmax_scale, &want);
  expect_bf16_tc_near(got, want);
}

INSTANTIATE_TEST_SUITE_P(HeadDims, VitAttentionTcBf16Cluster, ::testing::Values(64, 72, 128));

/// 4-D [B, S, H, D] views (evenly spaced batches: one sequence per batch, no cu_seqlens), S not a
/// multiple of 128; and a view the TMA maps cannot describe (token stride not a multiple of 16
/// bytes) taken by kAuto to the CUDA-core kernel, refused by kTensorCore.
TEST(VitAttentionTcBf16, FourDimensionalViewsAndTheFallback) {
  QFUSE_REQUIRE_GPU();
  const int64_t B = 3, S = 200, H = 2, D = 80, cols = H * D;
  Qkv x = Qkv::make(B, S, H, D, 4, 0, 41);
  std::vector<int32_t> cu;
  for (int64_t b = 0; b <= B; ++b) cu.push_back(static_cast<int32_t>(b * S));
  std::vector<double> want;
  ref::vit_attention(bf16_values(x, 0), bf16_values(x, 1), bf16_values(x, 2), H, D, cu, 0.09,
                     &want);
  VitAttentionArgs a;
  a.q = x.view(0), a.k = x.view(1), a.v = x.view(2);
  a.head_dim = static_cast<int>(D);
  a.softmax_scale = 0.09f;
  const std::vector<double> got = bf16_output(run_bf16(a, VitKernel::kTensorCore, B * S, cols));
  expect_bf16_tc_near(got, want);

  Qkv odd = Qkv::make(1, 150, H, D, 3, 1, 42);  // token stride 3 H D + 1 elements
  VitAttentionArgs b = a;
  b.q = odd.view(0), b.k = odd.view(1), b.v = odd.view(2);
  DeviceQuantOutput o = DeviceQuantOutput::make(QuantSpec::none(), 150, cols, DType::kBF16, 1.0f);
  b.out = o.view();
  const Status st = vit_attention(b, VitAttentionOptions{VitKernel::kTensorCore}, nullptr);
  EXPECT_EQ(st.code(), StatusCode::kNotSupported) << st.to_string();
  const std::vector<double> simple = bf16_output(run_bf16(b, VitKernel::kSimple, 150, cols));
  EXPECT_EQ(bf16_output(run_bf16(b, VitKernel::kAuto, 150, cols)), simple);
}

TEST(VitAttention, FourDimensionalBf16ViewsAreEqualSequences) {
  QFUSE_REQUIRE_GPU();
  const int64_t B = 3, S = 29, H = 2, D = 72;
  Qkv x = Qkv::make(B, S, H, D, 4, 0, 77);
  std::vector<int32_t> cu;
  for (int64_t b = 0; b <= B; ++b) cu.push_back(static_cast<int32_t>(b * S));
  std::vector<double> want;
  ref::vit_attention(bf16_values(x, 0), bf16_values(x, 1), bf16_values(x, 2), H, D, cu, 0.11,
                     &want);
  VitAttentionArgs a;
  a.q = x.view(0), a.k = x.view(1), a.v = x.view(2);
  a.head_dim = static_cast<int>(D);
  a.softmax_scale = 0.11f;
  DeviceQuantOutput o = DeviceQuantOutput::make(QuantSpec::none(), B * S, H * D, DType::kF32, 1.0f);
  a.out = o.view();
  ASSERT_TRUE(vit_attention(a, nullptr).ok());
  CheckOptions opt;
  opt.exact = false;
  opt.none_dtype = DType::kF32;
  opt.abs_tol = 1e-5;
  opt.rel_tol = 1e-5;
  EXPECT_TRUE(check_quant_output(o, want, opt));
}

}  // namespace
}  // namespace qfuse::test
