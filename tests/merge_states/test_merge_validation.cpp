// Negative tests of merge_states (SPEC §2, §7): every bad argument gives kInvalidArgument naming
// the argument before any device call (fake pointers on the host, so these run in CI), and on a
// GPU a rejected call leaves the poisoned outputs untouched.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <string>

#include "common/compare.h"
#include "common/gpu.h"
#include "qfuse/merge_states/merge_states.h"

namespace qfuse {
namespace {

char* fake(uintptr_t a) {
  return reinterpret_cast<char*>(a);
}

constexpr int64_t kT = 5, kH = 4, kD = 64;

/// A structurally valid 3-way merge into FP8 per-tensor, fake pointers.
struct Call {
  MergePartials p;
  QuantOutput q;
  MergeOptions opt;

  Call() {
    p.n = 3;
    for (int i = 0; i < 3; ++i) {
      p.o[i] = TensorRef::contiguous(fake(0x100000 * (i + 1)), DType::kBF16, {kT, kH, kD});
      p.lse[i] = TensorRef::contiguous(fake(0x1000000 + 0x1000 * i), DType::kF32, {kH, kT});
    }
    q.spec = QuantSpec::fp8_per_tensor();
    q.out = TensorRef::contiguous(fake(0x2000000), DType::kE4M3, {kT, kH * kD});
    q.scale = reinterpret_cast<const float*>(0x3000000);
  }
  Status run() const { return merge_states(p, q, opt, nullptr); }
};

void expect_rejected(const Call& c, const std::string& arg, const std::string& also = "") {
  test::expect_invalid_argument(c.run(), arg, also);
}

TEST(MergeValidation, NumberOfPartials) {
  for (int n : {0, 1, 9, -1}) {
    Call c;
    c.p.n = n;
    expect_rejected(c, "in.n", "[2, 8]");
  }
}

TEST(MergeValidation, PartialShapesAndDtypes) {
  Call c;
  c.p.o[1].sizes[0] = kT + 1;
  expect_rejected(c, "o[1].sizes");
  c = Call();
  c.p.o[2].sizes[1] = kH - 1;
  expect_rejected(c, "o[2].sizes");
  c = Call();
  c.p.o[1].sizes[2] = kD * 2;
  expect_rejected(c, "o[1].sizes");
  c = Call();
  c.p.o[1].dtype = DType::kF16;
  expect_rejected(c, "o[1].dtype", "bf16 (dtype of o[0])");
  c = Call();
  for (int i = 0; i < 3; ++i) c.p.o[i].dtype = DType::kE4M3;
  expect_rejected(c, "o[0].dtype", "bf16|fp16|fp32");
  c = Call();
  c.p.o[0] = TensorRef::contiguous(fake(0x100000), DType::kBF16, {kT, kH * kD});
  expect_rejected(c, "o[0].rank");
}

TEST(MergeValidation, PartialStrides) {
  Call c;
  c.p.o[1] = TensorRef::strided(fake(0x200000), DType::kBF16, {kT, kH, kD}, {kH * kD, kD - 1, 1});
  expect_rejected(c, "o[1].strides[1]", ">= 64");
  c = Call();
  c.p.o[2] =
      TensorRef::strided(fake(0x300000), DType::kBF16, {kT, kH, kD}, {kH * kD * 2, kD * 2, 2});
  expect_rejected(c, "o[2].strides[2]");
  c = Call();
  c.p.o[0].data = fake(0x100001);
  expect_rejected(c, "o[0].data", "2-byte aligned");
  c = Call();
  c.p.o[2].data = nullptr;
  expect_rejected(c, "o[2].data", "non-null");
}

TEST(MergeValidation, Lse) {
  Call c;
  c.p.lse[1] = TensorRef::contiguous(fake(0x1001000), DType::kF32, {kT, kH});  // [T, H]
  expect_rejected(c, "lse[1].sizes", "[4, 5]");
  c = Call();
  c.p.lse[0].dtype = DType::kBF16;
  expect_rejected(c, "lse[0].dtype", "fp32");
  c = Call();
  c.p.lse[2] = TensorRef::contiguous(fake(0x1002000), DType::kF32, {kH * kT});
  expect_rejected(c, "lse[2].rank");
  c = Call();
  c.p.lse[2] = TensorRef::strided(fake(0x1002000), DType::kF32, {kH, kT}, {kT, 2});
  expect_rejected(c, "lse[2].strides[1]");
  c = Call();
  c.p.lse[2].data = nullptr;
  expect_rejected(c, "lse[2].data");
}

TEST(MergeValidation, Output) {
  Call c;
  c.q.out = TensorRef::contiguous(fake(0x2000000), DType::kE4M3, {kT, kH * kD - 8});
  expect_rejected(c, "out.sizes[1]", "256");
  c = Call();
  c.q.out.dtype = DType::kBF16;  // fp8 kind with a bf16 buffer
  expect_rejected(c, "out.dtype", "e4m3");
  c = Call();
  c.q.scale = nullptr;  // fp8 output without a scale
  expect_rejected(c, "out.scale");
  c = Call();
  c.q.spec = QuantSpec::none();
  c.q.scale = nullptr;
  c.q.out = TensorRef::contiguous(fake(0x2000000), DType::kE4M3, {kT, kH * kD});
  expect_rejected(c, "out.dtype", "bf16|fp16|fp32");
  c = Call();
  c.q.spec = QuantSpec::fp8_per_group(128);
  c.q.scale = nullptr;
  c.q.scales = TensorRef::contiguous(fake(0x4000000), DType::kF32, {kT, 3});
  expect_rejected(c, "out.scales", "[5, 2]");
  // A 3-D output must have contiguous heads.
  c = Call();
  c.q.out = TensorRef::strided(fake(0x2000000), DType::kE4M3, {kT, kH, kD}, {kH * 128, 128, 1});
  expect_rejected(c, "out.strides[1]", "heads contiguous");
  // ...and a contiguous 3-D output is accepted like the 2-D one (the call gets past every
  // output check and fails only at the device-pointer check of the fake inputs).
  c = Call();
  c.q.out = TensorRef::contiguous(fake(0x2000000), DType::kE4M3, {kT, kH, kD});
  const Status st = c.run();
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.to_string().find("out."), std::string::npos) << st.to_string();
}

TEST(MergeValidation, OptionsAndOutLse) {
  Call c;
  c.opt.copy_from = kT + 1;
  expect_rejected(c, "opt.copy_from", "[0, T = 5]");
  c.opt.copy_from = -2;
  expect_rejected(c, "opt.copy_from");
  c = Call();
  c.opt.out_lse = TensorRef::contiguous(fake(0x5000000), DType::kF32, {kT, kH});
  expect_rejected(c, "opt.out_lse.sizes[0]", "4");
  c = Call();
  c.opt.out_lse = TensorRef::contiguous(fake(0x5000000), DType::kBF16, {kH, kT});
  expect_rejected(c, "opt.out_lse.dtype");
}

// out_lse is written by blocks of its own while row tasks read the partials' lse: no overlap with
// any of them (in place over lse[1], or one row into lse[2]); adjacent is fine (it then fails at
// the fake pointers, later).
TEST(MergeValidation, OutLseMustNotOverlapAnInputLse) {
  Call c;
  c.opt.out_lse = TensorRef::contiguous(fake(0x1000000 + 0x1000), DType::kF32, {kH, kT});
  expect_rejected(c, "opt.out_lse.data", "lse[1]");
  c.opt.out_lse = TensorRef::contiguous(fake(0x1000000 + 0x2000 - 4 * kT), DType::kF32, {kH, kT});
  expect_rejected(c, "opt.out_lse.data", "lse[2]");
  c.opt.out_lse =
      TensorRef::contiguous(fake(0x1000000 + 0x3000 - 4 * kH * kT), DType::kF32, {kH, kT});
  const Status st = c.run();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.to_string().find("overlapping"), std::string::npos) << st.to_string();
}

// The lse side pass splits (h, t) with 32-bit arithmetic: H x T >= 2^30 with out_lse is refused
// (kNotSupported, naming opt.out_lse), one entry fewer is not (it fails later, at the fake
// pointers).
TEST(MergeValidation, OutLseEntriesBound) {
  constexpr int64_t kBigH = 256, kSmallD = 8;
  for (const int64_t T : {int64_t{1} << 22, (int64_t{1} << 22) - 1}) {
    Call c;
    for (int i = 0; i < 3; ++i) {
      c.p.o[i] = TensorRef::contiguous(fake(0x100000 * (i + 1)), DType::kBF16, {T, kBigH, kSmallD});
      c.p.lse[i] = TensorRef::contiguous(fake(0x1000000 + 0x1000 * i), DType::kF32, {kBigH, T});
    }
    c.q.out = TensorRef::contiguous(fake(0x2000000), DType::kE4M3, {T, kBigH * kSmallD});
    c.opt.out_lse = TensorRef::contiguous(fake(0x5000000), DType::kF32, {kBigH, T});
    const Status st = c.run();
    ASSERT_FALSE(st.ok());
    if (T * kBigH >= (int64_t{1} << 30)) {
      EXPECT_EQ(st.code(), StatusCode::kNotSupported) << st.to_string();
      EXPECT_NE(st.to_string().find("opt.out_lse"), std::string::npos) << st.to_string();
    } else {
      EXPECT_NE(st.code(), StatusCode::kNotSupported) << st.to_string();
      EXPECT_EQ(st.to_string().find("2^30"), std::string::npos) << st.to_string();
    }
  }
}

TEST(MergeValidation, StackedForm) {
  const TensorRef lse = TensorRef::contiguous(fake(0x1000000), DType::kF32, {3, kH, kT});
  QuantOutput q = Call().q;
  test::expect_invalid_argument(
      merge_states_stacked(TensorRef::contiguous(fake(0x100000), DType::kBF16, {9, kT, kH, kD}),
                           TensorRef::contiguous(fake(0x1000000), DType::kF32, {9, kH, kT}), q, {},
                           nullptr),
      "o.sizes[0]", "[2, 8]");
  test::expect_invalid_argument(
      merge_states_stacked(TensorRef::contiguous(fake(0x100000), DType::kBF16, {2, kT, kH, kD}),
                           lse, q, {}, nullptr),
      "lse.sizes[0]");
  test::expect_invalid_argument(
      merge_states_stacked(TensorRef::contiguous(fake(0x100000), DType::kBF16, {2, kT, kH * kD}),
                           lse, q, {}, nullptr),
      "o.rank");
}

TEST(MergeValidation, ValidatedEvenWhenEmpty) {
  // T = 0 is a no-op without any device call (Ok without a GPU proves it), but arguments are
  // still checked.
  Call c;
  for (int i = 0; i < 3; ++i) {
    c.p.o[i] = TensorRef::contiguous(nullptr, DType::kBF16, {0, kH, kD});
    c.p.lse[i] = TensorRef::contiguous(nullptr, DType::kF32, {kH, 0});
  }
  c.q.out = TensorRef::contiguous(nullptr, DType::kE4M3, {0, kH * kD});
  const Status st = c.run();
  EXPECT_TRUE(st.ok()) << st.to_string();
  c.q.out = TensorRef::contiguous(nullptr, DType::kE4M3, {0, kH * kD + 1});
  expect_rejected(c, "out.sizes[1]");
}

// ---- GPU: rejected calls write nothing ---------------------------------------------------------

TEST(MergeValidationGpu, RejectedCallsWriteNothing) {
  QFUSE_REQUIRE_GPU();
  test::DeviceBuffer o(3 * kT * kH * kD * 2), lse(3 * kH * kT * 4), out(kT * kH * kD), scale(4),
      out_lse(kH * kT * 4);
  const auto bits = test::encode(test::random_floats(3 * kT * kH * kD, 3), DType::kBF16, nullptr);
  o.upload(bits.data(), bits.size());
  const auto lv = test::random_floats(3 * kH * kT, 4);
  lse.upload(lv.data(), lv.size() * 4);
  const float s = 0.29f;
  scale.upload(&s, 4);
  auto make = [&] {
    Call c;
    for (int i = 0; i < 3; ++i) {
      c.p.o[i].data = o.as<char>() + i * kT * kH * kD * 2;
      c.p.lse[i].data = lse.as<char>() + i * kH * kT * 4;
    }
    c.q.out.data = out.get();
    c.q.scale = scale.as<float>();
    c.opt.out_lse = TensorRef::contiguous(out_lse.get(), DType::kF32, {kH, kT});
    return c;
  };
  auto reject = [&](const Call& c, const std::string& arg) {
    out.fill(test::kPoison);
    out_lse.fill(test::kPoison);
    expect_rejected(c, arg);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(test::changed_bytes(out), 0) << arg;
    EXPECT_EQ(test::changed_bytes(out_lse), 0) << arg;
  };
  // The baseline writes (so the checks below can see writes).
  out.fill(test::kPoison);
  out_lse.fill(test::kPoison);
  ASSERT_TRUE(make().run().ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_GT(test::changed_bytes(out), 0);
  EXPECT_GT(test::changed_bytes(out_lse), 0);

  Call c = make();
  c.p.o[2].sizes[1] = kH + 1;
  reject(c, "o[2].sizes");
  c = make();
  c.p.lse[1].dtype = DType::kF16;
  reject(c, "lse[1].dtype");
  c = make();
  c.opt.copy_from = kT + 3;
  reject(c, "opt.copy_from");
  c = make();
  c.q.scale = nullptr;
  reject(c, "out.scale");
  c = make();
  std::vector<float> host(16);
  c.p.o[1].data = host.data();  // host memory
  reject(c, "o[1].data");
}

}  // namespace
}  // namespace qfuse
