// The ViT attention layer entry (layer.h): config errors and scale-file checks at create (host),
// and on the GPU the FP8 layer path against its parts run by hand, the one save of dynamic scales
// when a history first wraps, and the BF16 path.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/gpu.h"
#include "qfuse/quant/reference.h"
#include "qfuse/vit_attention/layer.h"
#include "vit_attention/settings.h"

namespace qfuse::test {
namespace {

namespace fs = std::filesystem;

class VitLayer : public ::testing::Test {
 public:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("qfuse_vit_layer_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }
  fs::path dir_;
};

graph::FusionConfig fp8_config() {
  graph::FusionConfig c;
  c.vit_attn_dtype = "fp8";
  return c;
}

TEST_F(VitLayer, ConfigErrorsComeFromCreate) {
  std::unique_ptr<vit::EncoderAttention> e;
  graph::FusionConfig c;
  c.vit_scale_path = write("s.json", R"({"l0": {"q": 1, "k": 1, "v": 1}})");
  Status st = vit::EncoderAttention::create(c, {"l0"}, &e);  // a scale path without fp8
  EXPECT_NE(st.message().find("needs vit_attn_dtype fp8"), std::string::npos) << st.to_string();
  c = fp8_config();
  c.vit_scale_path = (dir_ / "missing.json").string();
  st = vit::EncoderAttention::create(c, {"l0"}, &e);
  EXPECT_NE(st.message().find("does not exist"), std::string::npos) << st.to_string();
  c = fp8_config();
  c.vit_save_path = (dir_ / "no_such_dir" / "out.json").string();
  st = vit::EncoderAttention::create(c, {"l0"}, &e);
  EXPECT_NE(st.message().find("no_such_dir"), std::string::npos) << st.to_string();
  c = fp8_config();
  c.vit_scale_path = write("a.json", "{}");
  c.vit_save_path = (dir_ / "out.json").string();
  st = vit::EncoderAttention::create(c, {"l0"}, &e);
  EXPECT_NE(st.message().find("not both"), std::string::npos) << st.to_string();
  EXPECT_EQ(e, nullptr);
  c = graph::FusionConfig{};
  EXPECT_FALSE(vit::EncoderAttention::create(c, {}, &e).ok());
  EXPECT_FALSE(vit::EncoderAttention::create(c, {"l0"}, nullptr).ok());
}

TEST_F(VitLayer, EveryLayerMustBeInTheScaleFile) {
  graph::FusionConfig c = fp8_config();
  c.vit_scale_path = write("s.json", R"({"layers": {"blocks.0.attn": {"q": 0.5, "k": 0.25,
      "v_scale": 0.125}, "blocks.1.attn": {"q": 1, "k": 1, "v": 1}}})");
  std::unique_ptr<vit::EncoderAttention> e;
  const Status st = vit::EncoderAttention::create(c, {"blocks.0.attn", "blocks.2.attn"}, &e);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("blocks.2.attn"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("blocks.1.attn"), std::string::npos) << st.message();  // listed
  c.vit_scale_path = write("bad.json", R"({"blocks.0.attn": {"q": 0.5, "k": -1, "v": 1}})");
  const Status bad = vit::EncoderAttention::create(c, {"blocks.0.attn"}, &e);
  EXPECT_NE(bad.message().find("blocks.0.attn"), std::string::npos) << bad.message();
  EXPECT_EQ(e, nullptr);
}

TEST_F(VitLayer, Bf16NeedsNoDeviceStateAndChecksTheLayerIndex) {
  std::unique_ptr<vit::EncoderAttention> e;
  ASSERT_TRUE(vit::EncoderAttention::create(graph::FusionConfig{}, {"a", "b"}, &e).ok());
  EXPECT_FALSE(e->fp8());
  vit::LayerIo io;
  const Status st = e->forward(2, io, nullptr, 0, nullptr);
  EXPECT_NE(st.message().find("layer"), std::string::npos) << st.to_string();
  EXPECT_EQ(vit::layer_workspace_bytes("bf16", 100, 16, 72), 0u);
  // 128 keys (100 rounded up to 32, room for a transposed V) x 3 x 80 = 30720 bytes a tensor,
  // then the attention's stream-K scratch (none without a device).
  EXPECT_EQ(vit::layer_workspace_bytes("fp8", 100, 3, 72),
            3u * 30720u + vit_attention_workspace_bytes(100, 3, 72));
  if (!gpu_available()) {
    EXPECT_EQ(vit_attention_workspace_bytes(100, 3, 72), 0u);
  }
}

/// Interleaved QKV [S, 3, H, D] bf16 on the device.
struct Inputs {
  int64_t S, H, D;
  std::vector<uint16_t> host;
  DeviceBuffer dev;
  Inputs(int64_t s, int64_t h, int64_t d, uint64_t seed) : S(s), H(h), D(d) {
    std::vector<float> r;
    const std::vector<uint8_t> b = encode(random_floats(S * 3 * H * D, seed), DType::kBF16, &r);
    host.resize(S * 3 * H * D);
    std::memcpy(host.data(), b.data(), b.size());
    dev = DeviceBuffer(b.size());
    dev.upload(b.data(), b.size());
  }
  TensorRef view(int w) const {
    return TensorRef::strided(dev.as<uint16_t>() + w * H * D, DType::kBF16, {S, H, D},
                              {3 * H * D, D, 1});
  }
};

TEST_F(VitLayer, DynamicScalesAreSavedOnceWhenAHistoryFirstWraps) {
  QFUSE_REQUIRE_GPU();
  graph::FusionConfig c = fp8_config();
  c.vit_save_path = (dir_ / "scales.json").string();
  c.vit_margin = 1.25;
  std::unique_ptr<vit::EncoderAttention> e;
  const Status created = vit::EncoderAttention::create(c, {"l0", "l1"}, &e);
  ASSERT_TRUE(created.ok()) << created.to_string();
  ASSERT_TRUE(e->dynamic());
  const int64_t S = 45, H = 3, D = 72;
  Inputs x(S, H, D, 5);
  const std::vector<int32_t> cu{0, 1, 20, 45};
  DeviceBuffer cu_dev(cu.size() * 4);
  cu_dev.upload(cu.data(), cu.size() * 4);
  DeviceBuffer ws(vit::layer_workspace_bytes("fp8", S, H, D));
  DeviceBuffer out(S * H * D * 2);
  vit::LayerIo io;
  io.q = x.view(0), io.k = x.view(1), io.v = x.view(2);
  io.cu_seqlens = cu_dev.as<int32_t>(), io.cu_seqlens_host = cu.data(), io.num_seqs = 3;
  io.out.out = TensorRef::contiguous(out.get(), DType::kBF16, {S, H, D});
  for (int f = 0; f < 15; ++f) {
    ASSERT_TRUE(e->forward(0, io, ws.get(), ws.bytes(), nullptr).ok());
    ASSERT_TRUE(e->forward(1, io, ws.get(), ws.bytes(), nullptr).ok());
  }
  EXPECT_FALSE(fs::exists(c.vit_save_path));
  EXPECT_FALSE(e->saved());
  out.fill(kPoison);
  ASSERT_TRUE(e->forward(0, io, ws.get(), ws.bytes(), nullptr).ok());  // l0's 16th
  EXPECT_TRUE(e->saved());
  EXPECT_EQ(changed_elements(out, 2), static_cast<int64_t>(out.bytes() / 2));
  vit::ScaleTable saved;
  ASSERT_TRUE(vit::ScaleTable::load(c.vit_save_path, &saved).ok());
  std::vector<VitLayerScaleState> st;
  ASSERT_TRUE(e->dynamic_state(nullptr, &st).ok());
  for (int l = 0; l < 2; ++l) {
    vit::QkvScales s;
    ASSERT_TRUE(saved.get(l == 0 ? "l0" : "l1", &s).ok());
    EXPECT_EQ(s.q, static_cast<float>(double(st[l].scales[0]) * 1.25));
    EXPECT_EQ(s.v, static_cast<float>(double(st[l].scales[2]) * 1.25));
  }
  // Written once: later wraps leave the file alone.
  fs::remove(c.vit_save_path);
  for (int f = 0; f < 17; ++f) ASSERT_TRUE(e->forward(1, io, ws.get(), ws.bytes(), nullptr).ok());
  EXPECT_FALSE(fs::exists(c.vit_save_path));
}

/// The static FP8 layer (scales from a file) on packed sequences `cu` against its parts run by
/// hand: quantize with the file's scales, then attention, both as kAuto does (V transposed for the
/// tensor cores, which can run these calls on an sm_90 device), the attention with a workspace of
/// its own where `stream_k` (the setting forced to that many blocks for both). The same bytes,
/// and again in a second forward over the same (then stale) workspace. fused_q: the layer
/// quantizes Q in the attention kernel (checked to take that path), its parts as ever. fp8_out:
/// the output static fp8_per_tensor (scale 0.02) instead of bf16.
void expect_layer_equals_parts(VitLayer& t, const std::vector<int32_t>& cu, int64_t H, int64_t D,
                               int stream_k, bool fused_q = false, bool fp8_out = false) {
  graph::FusionConfig c = fp8_config();
  c.vit_scale_path = t.write("s.json", R"({"enc.0": {"q": 0.011, "k": 0.017, "v": 0.0063}})");
  std::unique_ptr<vit::EncoderAttention> e;
  ASSERT_TRUE(vit::EncoderAttention::create(c, {"enc.0"}, &e).ok());
  const int64_t S = cu.back();
  const int64_t n = static_cast<int64_t>(cu.size()) - 1;
  const ForceStreamK sk(stream_k);
  const ForceFusedQ fq(fused_q ? 1 : 0);
  Inputs x(S, H, D, 8);
  DeviceBuffer cu_dev(cu.size() * 4);
  cu_dev.upload(cu.data(), cu.size() * 4);
  DeviceBuffer ws(vit::layer_workspace_bytes("fp8", S, H, D));
  ws.fill(0xA5);  // any content: the layer zeroes what the attention needs
  DeviceBuffer out(S * H * D * 2), by_hand(S * H * D * 2);
  out.fill(kPoison);
  by_hand.fill(kPoison);  // an FP8 output fills half of the buffer: the rest compares as poison
  const float out_scale = 0.02f;
  DeviceBuffer os(4);
  os.upload(&out_scale, 4);
  auto output = [&](DeviceBuffer& buf) {
    QuantOutput o;
    o.out = TensorRef::contiguous(buf.get(), fp8_out ? DType::kE4M3 : DType::kBF16, {S, H, D});
    if (fp8_out) o.spec = QuantSpec::fp8_per_tensor(), o.scale = os.as<float>();
    return o;
  };
  vit::LayerIo io;
  io.q = x.view(0), io.k = x.view(1), io.v = x.view(2);
  io.cu_seqlens = cu_dev.as<int32_t>(), io.cu_seqlens_host = cu.data(), io.num_seqs = n;
  io.out = output(out);
  ASSERT_TRUE(e->forward(0, io, ws.get(), ws.bytes(), nullptr).ok());
  const std::vector<float> scales{0.011f, 0.017f, 0.0063f};
  DeviceBuffer sd(12);
  sd.upload(scales.data(), 12);
  const int64_t Dp = vit_padded_head_dim(D), Sp = vit_vt_keys(S);
  DeviceBuffer f8[3] = {DeviceBuffer(S * H * Dp), DeviceBuffer(S * H * Dp),
                        DeviceBuffer(H * Dp * Sp)};
  VitQkvQuantArgs qa;
  qa.q = x.view(0), qa.k = x.view(1), qa.v = x.view(2);
  qa.q_out = TensorRef::contiguous(f8[0].get(), DType::kE4M3, {S, H, Dp});
  qa.k_out = TensorRef::contiguous(f8[1].get(), DType::kE4M3, {S, H, Dp});
  qa.v_out = TensorRef::contiguous(f8[2].get(), DType::kE4M3, {H, Dp, Sp});
  qa.v_layout = VitVLayout::kTransposed;
  qa.q_scale = sd.as<float>(), qa.k_scale = sd.as<float>() + 1, qa.v_scale = sd.as<float>() + 2;
  ASSERT_TRUE(vit_quantize_qkv(qa, nullptr).ok());
  VitAttentionArgs a;
  a.q = qa.q_out, a.k = qa.k_out, a.v = qa.v_out;
  a.v_layout = VitVLayout::kTransposed;
  a.head_dim = static_cast<int>(D);
  a.q_scale = qa.q_scale, a.k_scale = qa.k_scale, a.v_scale = qa.v_scale;
  a.cu_seqlens = io.cu_seqlens, a.cu_seqlens_host = cu.data(), a.num_seqs = n;
  a.softmax_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  a.out = output(by_hand);
  DeviceBuffer own(stream_k > 0 ? vit_attention_workspace_bytes(S, H, static_cast<int>(D)) : 0);
  if (stream_k > 0) a.workspace = own.get(), a.workspace_bytes = own.bytes();
  if (fused_q) {
    vit::FusedQCall call;
    const Status fusable = vit::fused_q_prepare(a, x.view(0), &call);
    EXPECT_TRUE(fusable.ok()) << fusable.to_string();
  }
  ASSERT_TRUE(vit_attention(a, nullptr).ok());
  const std::vector<uint8_t> want = by_hand.download();
  EXPECT_EQ(out.download(), want);
  out.fill(kPoison);
  ASSERT_TRUE(e->forward(0, io, ws.get(), ws.bytes(), nullptr).ok());
  EXPECT_EQ(out.download(), want) << "second forward";
}

TEST_F(VitLayer, StaticFp8LayerEqualsItsParts) {
  QFUSE_REQUIRE_GPU();
  expect_layer_equals_parts(*this, {0, 70}, 2, 80, -1);
}

/// Stream-K forced (a grid of 7 blocks: query tiles split between blocks) over a poisoned layer
/// workspace: the layer's quantizer zeroes the tickets and the attention trusts them.
TEST_F(VitLayer, StreamKLayerEqualsItsParts) {
  QFUSE_REQUIRE_GPU();
  expect_layer_equals_parts(*this, {0, 37, 1100, 1500}, 3, 72, 7);
}

/// Dynamic scaling with stream-K forced (7 blocks: split query tiles, so the tickets decide who
/// merges): over a poisoned workspace the layer writes every element, and the bytes of the same
/// first forward over a zeroed one (its quantizer zeroes the tickets; the attention trusts them).
TEST_F(VitLayer, DynamicStreamKLayerZeroesItsTickets) {
  QFUSE_REQUIRE_GPU();
  const ForceStreamK sk(7);
  const int64_t H = 3, D = 72;
  const std::vector<int32_t> cu{0, 37, 1100, 1500};
  const int64_t S = cu.back();
  Inputs x(S, H, D, 21);
  DeviceBuffer cu_dev(cu.size() * 4);
  cu_dev.upload(cu.data(), cu.size() * 4);
  std::vector<uint8_t> got[2];
  for (int poisoned = 0; poisoned < 2; ++poisoned) {
    std::unique_ptr<vit::EncoderAttention> e;
    ASSERT_TRUE(vit::EncoderAttention::create(fp8_config(), {"enc.0"}, &e).ok());
    ASSERT_TRUE(e->dynamic());
    DeviceBuffer ws(vit::layer_workspace_bytes("fp8", S, H, D));
    ws.fill(poisoned ? 0xA5 : 0x00);
    DeviceBuffer out(S * H * D * 2);
    out.fill(kPoison);
    vit::LayerIo io;
    io.q = x.view(0), io.k = x.view(1), io.v = x.view(2);
    io.cu_seqlens = cu_dev.as<int32_t>(), io.cu_seqlens_host = cu.data(), io.num_seqs = 3;
    io.out.out = TensorRef::contiguous(out.get(), DType::kBF16, {S, H, D});
    const Status st = e->forward(0, io, ws.get(), ws.bytes(), nullptr);
    ASSERT_TRUE(st.ok()) << st.to_string();
    EXPECT_EQ(changed_elements(out, 2), S * H * D);
    got[poisoned] = out.download();
  }
  EXPECT_EQ(got[1], got[0]);
}

/// Q quantized in the attention kernel (static scales, stream-K): the layer writes the bytes of
/// quantize-then-attention, so the kernel's codes are the quantizer's; three consumers at D 72,
/// two at D 80 and 128, packed sequences with partial query tiles.
TEST_F(VitLayer, FusedQLayerEqualsItsParts) {
  QFUSE_REQUIRE_GPU();
  expect_layer_equals_parts(*this, {0, 37, 1100, 1500}, 3, 72, 7, true);
  expect_layer_equals_parts(*this, {0, 300, 301, 1000}, 2, 80, 5, true);
  expect_layer_equals_parts(*this, {0, 900, 1333}, 2, 128, 1024, true);
  expect_layer_equals_parts(*this, {0, 37, 1100, 1500}, 3, 72, 7, true, true);  // FP8 output
}

/// vit::fused_q_prepare and attention_fused_q take only calls the kernel form can run, each
/// refusal NotSupported with nothing written (the layer then quantizes Q itself): no workspace or
/// stream-K off (the one-unit grid has no fused form), V row-major, a Q that is not bf16 of the
/// call's geometry, a token stride TMA cannot take.
TEST_F(VitLayer, FusedQRefusesWhatItCannotTake) {
  QFUSE_REQUIRE_GPU();
  const int64_t S = 1500, H = 3, D = 72, Dp = 80, Sp = vit_vt_keys(S);
  const ForceStreamK sk(7);
  Inputs x(S, H, D, 5);
  const std::vector<int32_t> cu{0, 37, 1100, 1500};
  DeviceBuffer cu_dev(cu.size() * 4), q8(S * H * Dp), k8(S * H * Dp), vt(H * Dp * Sp),
      v8(S * H * Dp);
  cu_dev.upload(cu.data(), cu.size() * 4);
  const std::vector<float> scales{0.011f, 0.017f, 0.0063f};
  DeviceBuffer sd(12), out(S * H * D * 2);
  sd.upload(scales.data(), 12);
  DeviceBuffer ws(vit_attention_workspace_bytes(S, H, static_cast<int>(D)));
  VitAttentionArgs a;
  a.q = TensorRef::contiguous(q8.get(), DType::kE4M3, {S, H, Dp});
  a.k = TensorRef::contiguous(k8.get(), DType::kE4M3, {S, H, Dp});
  a.v = TensorRef::contiguous(vt.get(), DType::kE4M3, {H, Dp, Sp});
  a.v_layout = VitVLayout::kTransposed;
  a.head_dim = static_cast<int>(D);
  a.q_scale = sd.as<float>(), a.k_scale = sd.as<float>() + 1, a.v_scale = sd.as<float>() + 2;
  a.cu_seqlens = cu_dev.as<int32_t>(), a.cu_seqlens_host = cu.data(), a.num_seqs = 3;
  a.softmax_scale = 0.1f;
  a.out.out = TensorRef::contiguous(out.get(), DType::kBF16, {S, H, D});
  a.workspace = ws.get(), a.workspace_bytes = ws.bytes();
  const TensorRef q = x.view(0);
  out.fill(kPoison);
  vit::FusedQCall call;
  const Status ok = vit::fused_q_prepare(a, q, &call);
  ASSERT_TRUE(ok.ok()) << ok.to_string();
  auto refused = [&](const VitAttentionArgs& b, const TensorRef& qb, const char* what) {
    const Status st = vit::fused_q_prepare(b, qb, &call);
    EXPECT_EQ(st.code(), StatusCode::kNotSupported) << what << ": " << st.to_string();
    const Status run = vit::attention_fused_q(b, qb, nullptr);
    EXPECT_EQ(run.code(), StatusCode::kNotSupported) << what << ": " << run.to_string();
  };
  VitAttentionArgs b = a;
  b.workspace = nullptr, b.workspace_bytes = 0;
  refused(b, q, "no workspace");
  {
    const ForceStreamK off(-1);
    refused(a, q, "stream-K off");
  }
  b = a;
  b.v = TensorRef::contiguous(v8.get(), DType::kE4M3, {S, H, Dp});
  b.v_layout = VitVLayout::kRowMajor;
  refused(b, q, "V row-major");
  refused(a, a.q, "Q in e4m3");
  refused(a, TensorRef::strided(q.data, DType::kBF16, {S - 1, H, D}, {3 * H * D, D, 1}),
          "one token short");
  refused(a, TensorRef::strided(q.data, DType::kBF16, {S, H, D}, {3 * H * D + 4, D, 1}),
          "a token stride of 8 bytes past a multiple of 16");
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (uint8_t byte : out.download()) ASSERT_EQ(byte, kPoison) << "a refused call wrote";
}

TEST_F(VitLayer, TensorCoreLayerAgreesWithTheSimpleOne) {
  QFUSE_REQUIRE_GPU();
  graph::FusionConfig c = fp8_config();
  c.vit_scale_path = write("s.json", R"({"enc.0": {"q": 0.011, "k": 0.017, "v": 0.0063}})");
  std::unique_ptr<vit::EncoderAttention> simple, tc;
  ASSERT_TRUE(vit::EncoderAttention::create(c, {"enc.0"}, &simple).ok());
  ASSERT_TRUE(vit::EncoderAttention::create(c, {"enc.0"}, &tc).ok());
  simple->set_kernel(VitKernel::kSimple);
  tc->set_kernel(VitKernel::kTensorCore);
  const int64_t S = 300, H = 4, D = 72;
  Inputs x(S, H, D, 12);
  const std::vector<int32_t> cu{0, 100, 101, 300};
  DeviceBuffer cu_dev(cu.size() * 4);
  cu_dev.upload(cu.data(), cu.size() * 4);
  DeviceBuffer ws(vit::layer_workspace_bytes("fp8", S, H, D));
  DeviceBuffer out_s(S * H * D * 2), out_t(S * H * D * 2);
  out_t.fill(kPoison);
  vit::LayerIo io;
  io.q = x.view(0), io.k = x.view(1), io.v = x.view(2);
  io.cu_seqlens = cu_dev.as<int32_t>(), io.cu_seqlens_host = cu.data(), io.num_seqs = 3;
  io.out.out = TensorRef::contiguous(out_s.get(), DType::kBF16, {S, H, D});
  ASSERT_TRUE(simple->forward(0, io, ws.get(), ws.bytes(), nullptr).ok());
  io.out.out = TensorRef::contiguous(out_t.get(), DType::kBF16, {S, H, D});
  const Status st = tc->forward(0, io, ws.get(), ws.bytes(), nullptr);
  ASSERT_TRUE(st.ok()) << st.to_string();
  const std::vector<uint8_t> a = out_s.download(), b = out_t.download();
  double max_diff = 0, sum = 0;
  for (size_t i = 0; i < a.size(); i += 2) {
    uint16_t ua, ub;
    std::memcpy(&ua, &a[i], 2);
    std::memcpy(&ub, &b[i], 2);
    const double d = std::fabs(double(ref::bf16_value(ua)) - ref::bf16_value(ub));
    max_diff = std::max(max_diff, d);
    sum += d;
  }
  EXPECT_LT(max_diff, 0.5);
  EXPECT_LT(sum / (a.size() / 2), 0.05);
}

}  // namespace
}  // namespace qfuse::test
