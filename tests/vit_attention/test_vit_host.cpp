// The ViT attention family's argument checks (no device needed: every structural check comes
// before the device-pointer check, so fake pointers reach them) and its host references.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string>
#include <vector>

#include "qfuse/quant/reference.h"
#include "qfuse/vit_attention/vit_attention.h"
#include "vit_attention/fragment.h"
#include "vit_attention/launch.h"

namespace qfuse::test {
namespace {

void* fake(uintptr_t i) {
  return reinterpret_cast<void*>(0x10000 * i);
}
const float* fake_f(uintptr_t i) {
  return reinterpret_cast<const float*>(0x10000 * i);
}

/// A status that fails with `code` and a message containing every fragment.
::testing::AssertionResult fails_with(const Status& st, std::initializer_list<std::string> frags) {
  if (st.ok()) return ::testing::AssertionFailure() << "accepted";
  for (const std::string& f : frags)
    if (st.message().find(f) == std::string::npos)
      return ::testing::AssertionFailure() << "'" << f << "' not in: " << st.message();
  return ::testing::AssertionSuccess();
}

VitQkvQuantArgs good_quant(int64_t S = 10, int64_t H = 4, int64_t D = 72) {
  VitQkvQuantArgs a;
  const int64_t ss = 3 * H * D;
  a.q = TensorRef::strided(fake(1), DType::kBF16, {S, H, D}, {ss, D, 1});
  a.k = TensorRef::strided(fake(2), DType::kBF16, {S, H, D}, {ss, D, 1});
  a.v = TensorRef::strided(fake(3), DType::kBF16, {S, H, D}, {ss, D, 1});
  const int64_t Dp = vit_padded_head_dim(D);
  a.q_out = TensorRef::contiguous(fake(4), DType::kE4M3, {S, H, Dp});
  a.k_out = TensorRef::contiguous(fake(5), DType::kE4M3, {S, H, Dp});
  a.v_out = TensorRef::contiguous(fake(6), DType::kE4M3, {S, H, Dp});
  a.q_scale = fake_f(7), a.k_scale = fake_f(8), a.v_scale = fake_f(9);
  return a;
}

TEST(VitQuantArgs, BadArgumentsNameTheArgument) {
  auto q = good_quant();
  q.q.rank = 2;
  EXPECT_TRUE(fails_with(vit_quantize_qkv(q, nullptr), {"q.rank"}));
  q = good_quant();
  q.k.dtype = DType::kF16;
  EXPECT_TRUE(fails_with(vit_quantize_qkv(q, nullptr), {"k.dtype", "bf16", "fp16"}));
  q = good_quant();
  q.v.sizes[0] = 11;  // a different S
  EXPECT_TRUE(fails_with(vit_quantize_qkv(q, nullptr), {"v.sizes[0]", "10"}));
  q = good_quant();
  q.k.sizes[1] = 5;  // a different H
  EXPECT_TRUE(fails_with(vit_quantize_qkv(q, nullptr), {"k.sizes[1]"}));
  q = good_quant();
  q.q.strides[2] = 2;
  EXPECT_TRUE(fails_with(vit_quantize_qkv(q, nullptr), {"q.strides[2]", "contiguous"}));
  q = good_quant(10, 4, 300);
  EXPECT_TRUE(fails_with(vit_quantize_qkv(q, nullptr), {"q.sizes[2]", "256", "300"}));
  q = good_quant();
  q.q_out = TensorRef::contiguous(fake(4), DType::kE4M3, {10, 4, 72});  // not padded
  EXPECT_TRUE(fails_with(vit_quantize_qkv(q, nullptr), {"q_out.sizes", "[10, 4, 80]"}));
  q = good_quant();
  q.k_out.dtype = DType::kBF16;
  EXPECT_TRUE(fails_with(vit_quantize_qkv(q, nullptr), {"k_out.dtype", "e4m3"}));
  q = good_quant();
  q.v_out.strides[0] = 1000;
  EXPECT_TRUE(fails_with(vit_quantize_qkv(q, nullptr), {"v_out.strides", "contiguous"}));
  q = good_quant();
  q.q_out.data = reinterpret_cast<void*>(0x10008);
  EXPECT_TRUE(fails_with(vit_quantize_qkv(q, nullptr), {"q_out.data", "16-byte"}));
  q = good_quant();
  q.v_scale = nullptr;
  EXPECT_TRUE(fails_with(vit_quantize_qkv(q, nullptr), {"v_scale", "null"}));
  q = good_quant();
  q.q.data = nullptr;
  EXPECT_TRUE(fails_with(vit_quantize_qkv(q, nullptr), {"q.data", "null"}));
  q = good_quant();
  q.q.sizes[0] = INT64_MAX / 2;
  q.k.sizes[0] = q.v.sizes[0] = q.q.sizes[0];
  EXPECT_FALSE(vit_quantize_qkv(q, nullptr).ok());
}

TEST(VitQuantArgs, DynamicScalingChecksItsStateAndLayer) {
  auto q = good_quant();
  const VitScaleState st{fake(20), vit_scale_state_bytes(4), 4};
  EXPECT_TRUE(fails_with(vit_quantize_qkv_dynamic(q, st, 0, nullptr), {"q_scale", "null"}));
  q.q_scale = q.k_scale = q.v_scale = nullptr;
  EXPECT_TRUE(fails_with(vit_quantize_qkv_dynamic(q, st, 4, nullptr), {"layer", "[0, 4)", "4"}));
  EXPECT_TRUE(fails_with(vit_quantize_qkv_dynamic(q, st, -1, nullptr), {"layer"}));
  VitScaleState small = st;
  small.bytes = vit_scale_state_bytes(4) - 1;
  EXPECT_TRUE(fails_with(vit_quantize_qkv_dynamic(q, small, 0, nullptr), {"state.bytes"}));
  VitScaleState none = st;
  none.data = nullptr;
  EXPECT_TRUE(fails_with(vit_quantize_qkv_dynamic(q, none, 0, nullptr), {"state.data"}));
  VitScaleState zero = st;
  zero.num_layers = 0;
  EXPECT_TRUE(fails_with(vit_quantize_qkv_dynamic(q, zero, 0, nullptr), {"state.num_layers"}));
  EXPECT_EQ(vit_dynamic_scales(st, 4), nullptr);
  EXPECT_EQ(vit_dynamic_scales(st, 1),
            reinterpret_cast<const float*>(static_cast<char*>(fake(20)) + 256 + 51 * 4));
  EXPECT_EQ(vit_scale_state_bytes(0), 0u);
}

struct AttnFixture {
  std::vector<int32_t> cu{0, 3, 10, 17};
  VitAttentionArgs a;
  AttnFixture() {
    const int64_t T = 17, H = 4, D = 72, Dp = 80;
    a.q = TensorRef::contiguous(fake(1), DType::kE4M3, {T, H, Dp});
    a.k = TensorRef::contiguous(fake(2), DType::kE4M3, {T, H, Dp});
    a.v = TensorRef::contiguous(fake(3), DType::kE4M3, {T, H, Dp});
    a.head_dim = static_cast<int>(D);
    a.q_scale = fake_f(4), a.k_scale = fake_f(5), a.v_scale = fake_f(6);
    a.cu_seqlens = reinterpret_cast<const int32_t*>(fake(7));
    a.cu_seqlens_host = cu.data();
    a.num_seqs = 3;
    a.softmax_scale = 0.1178f;
    a.out.out = TensorRef::contiguous(fake(8), DType::kBF16, {T, H, D});
  }
};

TEST(VitAttentionArgs, BadArgumentsNameTheArgument) {
  auto check = [](auto&& mutate, std::initializer_list<std::string> frags) {
    AttnFixture f;
    mutate(f);
    f.a.cu_seqlens_host = f.cu.data();
    return fails_with(vit_attention(f.a, nullptr), frags);
  };
  EXPECT_TRUE(check([](AttnFixture& f) { f.a.head_dim = 48; },
                    {"head_dim", "expected 64, 72, 80, 96 or 128, got 48"}));
  EXPECT_TRUE(check([](AttnFixture& f) { f.a.q.dtype = DType::kF16; }, {"q.dtype"}));
  EXPECT_TRUE(check([](AttnFixture& f) { f.a.k.dtype = DType::kBF16; }, {"k.dtype", "as q"}));
  EXPECT_TRUE(check([](AttnFixture& f) { f.a.v.sizes[0] = 16; }, {"v.sizes[0]", "17"}));
  EXPECT_TRUE(check([](AttnFixture& f) { f.a.k.sizes[1] = 3; }, {"k.sizes[1]"}));
  EXPECT_TRUE(check(
      [](AttnFixture& f) {
        for (TensorRef* t : {&f.a.q, &f.a.k, &f.a.v})
          *t = TensorRef::contiguous(t->data, DType::kE4M3, {17, 4, 72});
      },
      {"q.sizes[2]", "80"}));
  EXPECT_TRUE(check([](AttnFixture& f) { f.a.q.strides[0] = 999; }, {"q.strides", "contiguous"}));
  EXPECT_TRUE(check([](AttnFixture& f) { f.a.v_scale = nullptr; }, {"v_scale"}));
  EXPECT_TRUE(check([](AttnFixture& f) { f.a.softmax_scale = 0.0f; }, {"softmax_scale"}));
  EXPECT_TRUE(check([](AttnFixture& f) { f.a.softmax_scale = NAN; }, {"softmax_scale"}));
  EXPECT_TRUE(check([](AttnFixture& f) { f.cu[0] = 1; }, {"cu_seqlens[0]", "0", "1"}));
  EXPECT_TRUE(check([](AttnFixture& f) { f.cu[2] = 2; }, {"cu_seqlens[2]", ">= cu_seqlens[1]"}));
  EXPECT_TRUE(check([](AttnFixture& f) { f.cu[3] = 16; }, {"cu_seqlens[3]", "17", "16"}));
  EXPECT_TRUE(check([](AttnFixture& f) { f.a.num_seqs = 0; }, {"num_seqs"}));
  EXPECT_TRUE(check([](AttnFixture& f) { f.a.cu_seqlens = nullptr; }, {"cu_seqlens", "host"}));
  EXPECT_TRUE(check(
      [](AttnFixture& f) {
        f.a.out.out = TensorRef::contiguous(fake(8), DType::kBF16, {17, 4, 80});
      },
      {"out"}));
  EXPECT_TRUE(check([](AttnFixture& f) { f.a.out.spec = QuantSpec::fp8_per_tensor(); },
                    {"out"}));  // per-tensor without its scale
  EXPECT_TRUE(check(            // H * D = 288: not a multiple of 128
      [](AttnFixture& f) {
        f.a.out.spec = QuantSpec::fp8_per_group(128);
        f.a.out.out.dtype = DType::kE4M3;
        f.a.out.scales = TensorRef::contiguous(fake(9), DType::kF32, {17, 3});
      },
      {"multiple of its group size", "288"}));
  // bf16 inputs take no scales.
  EXPECT_TRUE(check(
      [](AttnFixture& f) {
        for (TensorRef* t : {&f.a.q, &f.a.k, &f.a.v})
          *t = TensorRef::strided(t->data, DType::kBF16, {17, 4, 72}, {3 * 4 * 72, 72, 1});
      },
      {"q_scale", "bf16"}));
  // The stream-K workspace: a pointer and its size together, 16-byte aligned (its size against
  // vit_attention_workspace_bytes needs a device: test_vit_gpu.cpp).
  EXPECT_TRUE(check([](AttnFixture& f) { f.a.workspace = fake(10); },
                    {"workspace", "both given, or neither", "a pointer without bytes"}));
  EXPECT_TRUE(check([](AttnFixture& f) { f.a.workspace_bytes = 1 << 20; },
                    {"workspace", "both given, or neither", "bytes without a pointer"}));
  EXPECT_TRUE(check(
      [](AttnFixture& f) {
        f.a.workspace = static_cast<char*>(fake(10)) + 4;
        f.a.workspace_bytes = size_t{1} << 30;
      },
      {"workspace", "16-byte aligned"}));
}

TEST(VitAttentionArgs, TheTensorCoreKernelSaysWhatItCannotRun) {
  const VitAttentionOptions tc{VitKernel::kTensorCore};
  AttnFixture f;  // row-major V
  EXPECT_TRUE(fails_with(vit_attention(f.a, tc, nullptr), {"tensor-core", "transposed"}));
  f.a.v_layout = VitVLayout::kTransposed;
  f.a.v = TensorRef::contiguous(fake(3), DType::kE4M3, {4, 80, 32});
  f.a.out.spec = QuantSpec::fp8_per_token();
  f.a.out.out = TensorRef::contiguous(fake(8), DType::kE4M3, {17, 4 * 72});
  f.a.out.scales = TensorRef::contiguous(fake(9), DType::kF32, {17});
  EXPECT_TRUE(fails_with(vit_attention(f.a, tc, nullptr), {"tensor-core", "fp8_per_token"}));
  f.a.out.spec = QuantSpec::none();
  f.a.out.scales = TensorRef{};
  f.a.out.out = TensorRef::contiguous(fake(8), DType::kF32, {17, 4 * 72});
  EXPECT_TRUE(fails_with(vit_attention(f.a, tc, nullptr), {"tensor-core", "fp32"}));
  // bf16 inputs: the BF16 tensor-core kernel's TMA maps need 16-byte strides (checked before the
  // device, so the message is the same with or without one).
  AttnFixture b;
  for (TensorRef* t : {&b.a.q, &b.a.k, &b.a.v})
    *t = TensorRef::strided(t->data, DType::kBF16, {17, 4, 72}, {3 * 4 * 72 + 4, 72, 1});
  b.a.q_scale = b.a.k_scale = b.a.v_scale = nullptr;
  EXPECT_TRUE(fails_with(vit_attention(b.a, tc, nullptr), {"tensor-core", "strides", "16 bytes"}));
  for (TensorRef* t : {&b.a.q, &b.a.k, &b.a.v}) t->strides[1] = 76;  // head stride
  EXPECT_TRUE(fails_with(vit_attention(b.a, tc, nullptr), {"tensor-core", "strides", "16 bytes"}));
  for (TensorRef* t : {&b.a.q, &b.a.k, &b.a.v}) t->strides = {3 * 4 * 72, 72, 1};
  b.a.out.out = TensorRef::contiguous(fake(8), DType::kF32, {17, 4 * 72});
  EXPECT_TRUE(fails_with(vit_attention(b.a, tc, nullptr), {"tensor-core", "fp32"}));
  b.a.out.out = TensorRef::contiguous(fake(8), DType::kBF16, {17, 4 * 72});
  b.a.q.data = static_cast<char*>(b.a.q.data) + 8;  // 8-byte aligned
  EXPECT_TRUE(fails_with(vit_attention(b.a, tc, nullptr), {"tensor-core", "16-byte aligned"}));
  // A 4-D view whose batches are not evenly spaced cannot be read as [B * S, H, D].
  AttnFixture f4;
  f4.a.cu_seqlens = nullptr, f4.a.cu_seqlens_host = nullptr, f4.a.num_seqs = 0;
  for (TensorRef* t : {&f4.a.q, &f4.a.k, &f4.a.v})
    *t = TensorRef::strided(t->data, DType::kBF16, {2, 8, 4, 72},
                            {8 * 3 * 4 * 72 + 64, 3 * 4 * 72, 72, 1});
  f4.a.q_scale = f4.a.k_scale = f4.a.v_scale = nullptr;
  f4.a.out.out = TensorRef::contiguous(fake(8), DType::kBF16, {16, 4 * 72});
  EXPECT_TRUE(fails_with(vit_attention(f4.a, tc, nullptr), {"tensor-core", "4-D", "batch stride"}));
}

TEST(VitAttentionArgs, EmptyIsANoOpWithoutTheDevice) {
  AttnFixture f;
  f.cu = {0, 0};
  for (TensorRef* t : {&f.a.q, &f.a.k, &f.a.v}) t->sizes[0] = 0;
  f.a.out.out.sizes[0] = 0;
  f.a.cu_seqlens_host = f.cu.data();
  f.a.num_seqs = 1;
  const Status st = vit_attention(f.a, nullptr);
  EXPECT_TRUE(st.ok()) << st.to_string();
}

TEST(VitReference, TransposedVPositionsPermuteEachBlockOf16) {
  // Key 8 a + 2 t + b of a block sits at 4 t + 2 a + b (the A fragment column of its P value).
  EXPECT_EQ(vit_vt_position(0), 0);
  EXPECT_EQ(vit_vt_position(1), 1);
  EXPECT_EQ(vit_vt_position(2), 4);
  EXPECT_EQ(vit_vt_position(8), 2);
  EXPECT_EQ(vit_vt_position(9), 3);
  EXPECT_EQ(vit_vt_position(15), 15);
  EXPECT_EQ(vit_vt_position(16 + 10), 16 + 6);
  EXPECT_EQ(vit_vt_position(64 + 3), 64 + 5);
  for (int64_t base : {0, 16, 4096}) {
    std::vector<bool> seen(16, false);
    for (int64_t j = 0; j < 16; ++j) {
      const int64_t p = vit_vt_position(base + j) - base;
      ASSERT_TRUE(p >= 0 && p < 16);
      EXPECT_FALSE(seen[p]);
      seen[p] = true;
    }
  }
  EXPECT_EQ(vit_vt_keys(0), 0);
  EXPECT_EQ(vit_vt_keys(1), 32);
  EXPECT_EQ(vit_vt_keys(64), 64);
}

TEST(VitReference, PackedPKeysMeetTheirTransposedVRows) {
  // For every lane quad position, k32 step, A register and byte: the accumulator element pack_p
  // takes holds the key whose V row the quantizer put at that A column, in the same row.
  for (int qd = 0; qd < 4; ++qd)
    for (int ks = 0; ks < 4; ++ks)
      for (int slot = 0; slot < 4; ++slot)
        for (int u = 0; u < 4; ++u) {
          const int i = vit::p_source_index(ks, slot, u);
          ASSERT_TRUE(i >= 0 && i < 64);
          EXPECT_EQ((i >> 1) & 1, slot & 1) << "row half";
          EXPECT_EQ(vit_vt_position(vit::acc_column(i, qd)), vit::a_column(ks, slot, u, qd))
              << "qd " << qd << " ks " << ks << " slot " << slot << " byte " << u;
        }
}

TEST(VitQuantArgs, TransposedVHasItsOwnShape) {
  auto q = good_quant(10, 4, 72);
  q.v_layout = VitVLayout::kTransposed;
  EXPECT_TRUE(fails_with(vit_quantize_qkv(q, nullptr), {"v_out.sizes", "[4, 80, 32]"}));
  q.v_out = TensorRef::contiguous(fake(6), DType::kE4M3, {4, 80, 32});
  q.q.data = nullptr;  // the shapes pass: the next check is reached
  EXPECT_TRUE(fails_with(vit_quantize_qkv(q, nullptr), {"q.data"}));
  AttnFixture f;
  f.a.v_layout = VitVLayout::kTransposed;
  EXPECT_TRUE(fails_with(vit_attention(f.a, nullptr), {"v", "[4, 80, 32]"}));
}

TEST(VitReference, DynamicScaleIsTheWindowMaxOver448) {
  std::array<float, kVitHistory> h{};
  EXPECT_EQ(ref::vit_dynamic_scale(h), FLT_MIN);  // all zero: the floor
  h[3] = 7.0f;
  h[9] = 3.0f;
  EXPECT_EQ(ref::vit_dynamic_scale(h), 7.0f / 448.0f);
  h[5] = INFINITY;
  EXPECT_EQ(ref::vit_dynamic_scale(h), FLT_MAX);
  h[6] = NAN;
  EXPECT_TRUE(std::isnan(ref::vit_dynamic_scale(h)));
}

TEST(VitReference, QuantizePadsWithZeroCodes) {
  const std::vector<uint16_t> x{ref::bf16_bits(1.0f), ref::bf16_bits(-2.0f),
                                ref::bf16_bits(500.0f)};
  ref::VitHostView v;
  v.data = x.data();
  v.S = 1, v.H = 1, v.D = 3, v.ss = 3, v.sh = 3;
  const std::vector<uint8_t> q = ref::vit_quantize(v, 0.5f);
  ASSERT_EQ(q.size(), 16u);
  EXPECT_EQ(q[0], ref::e4m3_encode(2.0f));
  EXPECT_EQ(q[1], ref::e4m3_encode(-4.0f));
  EXPECT_EQ(q[2], 0x7E);  // 1000 saturates to 448
  for (int i = 3; i < 16; ++i) EXPECT_EQ(q[i], 0) << i;
}

TEST(VitReference, AttentionOfOneKeyIsItsValue) {
  const std::vector<double> q{1, 2}, k{3, 4}, v{5, -6};
  std::vector<double> out;
  ref::vit_attention(q, k, v, 1, 2, {0, 1}, 0.5, &out);
  EXPECT_EQ(out, (std::vector<double>{5, -6}));
}

// ---- the stream-K planner's shares (vit::balance_shares) ----------------------------------------

/// Each block's cost under shares `start` (its base, then seg a query tile it meets and w a step).
std::vector<double> share_costs(const std::vector<vit::SkRun>& runs,
                                const std::vector<double>& base, double seg,
                                const std::vector<int32_t>& start) {
  std::vector<double> cost = base;
  int64_t pos = 0;  // the first step of the current query tile
  for (const vit::SkRun& r : runs)
    for (int64_t u = 0; u < r.count; ++u, pos += r.nk)
      for (size_t b = 0; b < base.size(); ++b) {
        const int64_t s = std::max<int64_t>(start[b], pos),
                      e = std::min(start[b + 1], int32_t(pos + r.nk));
        if (s < e) cost[b] += seg + (e - s) * r.w;
      }
  return cost;
}

/// The shares of S 4096, 16 heads, D 72 on 132 SMs: 22 query tiles a head (the last of 64 rows:
/// one consumer busy), 32 key tiles each; two full waves whole, the last 88 query tiles spread.
TEST(VitStreamKPlan, SharesCoverTheStepsAndBeatUniformOnes) {
  const double seg = 2.75, w1 = 0.75;
  const int blocks = 132, tiles = 22, nk = 32;
  std::vector<double> base(blocks, 0.0);
  for (int b = 0; b < blocks; ++b)
    for (int k = 0; k < 2; ++k)
      base[b] += seg + nk * ((b + k * blocks) % tiles == tiles - 1 ? w1 : 1.0);
  std::vector<vit::SkRun> runs;
  for (int h = 12; h < 16; ++h) runs.push_back({tiles - 1, nk, 1.0}), runs.push_back({1, nk, w1});
  const int64_t steps = 88 * nk;
  std::vector<int32_t> start(blocks + 1, -7);
  ASSERT_TRUE(vit::balance_shares(runs, base, seg, start.data()));
  EXPECT_EQ(start[0], 0);
  EXPECT_EQ(start[blocks], steps);
  bool empty_seen = false;
  for (int b = 0; b < blocks; ++b) {
    ASSERT_LE(start[b], start[b + 1]) << b;
    if (start[b] == start[b + 1])
      empty_seen = true;
    else
      EXPECT_FALSE(empty_seen) << "an empty share before block " << b;
  }
  const std::vector<double> got = share_costs(runs, base, seg, start);
  // The uniform shares (ceil(steps / blocks) each) against the balanced ones.
  std::vector<int32_t> uniform(blocks + 1);
  const int64_t per = (steps + blocks - 1) / blocks;
  for (int b = 0; b <= blocks; ++b) uniform[b] = static_cast<int32_t>(std::min(b * per, steps));
  const std::vector<double> was = share_costs(runs, base, seg, uniform);
  double total = 0;
  for (double c : got) total += c;
  const double top = *std::max_element(got.begin(), got.end());
  EXPECT_LT(top, *std::max_element(was.begin(), was.end()) - 1.0);
  EXPECT_LT(top, total / blocks + seg + 1.0);  // within a segment and a step of the mean
}

/// Fewer steps than blocks: one step each, the rest of the blocks empty at the end; too many runs
/// or none are not planned.
// balance_shares keeps its last plan (a thread's): a repeated call must give the same shares, and
// a call with other runs or other base costs its own.
TEST(VitStreamKPlan, RepeatedAndChangedCallsGetTheirOwnShares) {
  const std::vector<vit::SkRun> a = {{3, 5, 1.0}, {1, 5, 0.75}}, b = {{3, 5, 1.0}, {1, 6, 0.75}};
  const std::vector<double> base(4, 1.0), other = {9.0, 1.0, 1.0, 1.0};
  std::vector<int32_t> first(5, -1), again(5, -1), changed(5, -1), dear(5, -1), last(5, -1);
  ASSERT_TRUE(vit::balance_shares(a, base, 2.0, first.data()));
  ASSERT_TRUE(vit::balance_shares(a, base, 2.0, again.data()));
  EXPECT_EQ(again, first);
  ASSERT_TRUE(vit::balance_shares(b, base, 2.0, changed.data()));
  EXPECT_EQ(changed[4], 21);  // b's steps, not a's 20
  EXPECT_EQ(first[4], 20);
  ASSERT_TRUE(vit::balance_shares(a, other, 2.0, dear.data()));
  EXPECT_LT(dear[1] - dear[0], first[1] - first[0]);  // the dearer first block takes less
  ASSERT_TRUE(vit::balance_shares(a, base, 2.0, last.data()));
  EXPECT_EQ(last, first);
}

TEST(VitStreamKPlan, SmallAndOversizedPlans) {
  std::vector<int32_t> start(11, -1);
  ASSERT_TRUE(vit::balance_shares({{1, 3, 1.0}}, std::vector<double>(10, 0.0), 2.0, start.data()));
  EXPECT_EQ(start, (std::vector<int32_t>{0, 1, 2, 3, 3, 3, 3, 3, 3, 3, 3}));
  // Whole query tiles stay whole where the costs allow: two blocks, two tiles of 4 steps.
  std::vector<int32_t> two(3);
  ASSERT_TRUE(vit::balance_shares({{2, 4, 1.0}}, {0.0, 0.0}, 3.0, two.data()));
  EXPECT_EQ(two, (std::vector<int32_t>{0, 4, 8}));
  // A block that starts dearer takes less.
  ASSERT_TRUE(vit::balance_shares({{1, 20, 1.0}}, {10.0, 0.0}, 0.0, two.data()));
  EXPECT_EQ(two, (std::vector<int32_t>{0, 5, 20}));
  EXPECT_FALSE(vit::balance_shares({}, {0.0}, 1.0, two.data()));
  EXPECT_FALSE(
      vit::balance_shares(std::vector<vit::SkRun>(5000, {1, 2, 1.0}), {0.0}, 1.0, two.data()));
}

}  // namespace
}  // namespace qfuse::test
