// Tests of the core vocabulary: DType names and sizes, TensorRef views, Status messages, the
// device-pointer checks and the scope that vouches for them.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/fast_div.h"
#include "qfuse/core/dtype.h"
#include "qfuse/core/pointer_checks.h"
#include "qfuse/core/status.h"
#include "qfuse/core/tensor.h"
#include "quant/validate.h"

namespace qfuse {
namespace {

struct DTypeCase {
  DType dtype;
  const char* name;
  size_t bytes;
};

// NOTE: names and sizes as documented in dtype.h; packed types count storage units (bytes).
const std::vector<DTypeCase> kDTypes = {
    {DType::kBF16, "bf16", 2}, {DType::kF16, "fp16", 2},      {DType::kF32, "fp32", 4},
    {DType::kE4M3, "e4m3", 1}, {DType::kE2M1x2, "e2m1x2", 1}, {DType::kUE8M0, "ue8m0", 1},
    {DType::kI32, "i32", 4},   {DType::kU8, "u8", 1},
};

TEST(FastDiv, MatchesDivisionBelow2To30ForEveryDivisorUpTo4096AndRandomOnes) {
  std::mt19937 rng(7);
  std::vector<uint32_t> divisors;
  for (uint32_t d = 1; d <= 4096; ++d) divisors.push_back(d);
  for (int i = 0; i < 2000; ++i) divisors.push_back(1 + rng() % ((1u << 30) - 1));
  for (uint32_t d : {(1u << 30) - 1, 1u << 30, (1u << 30) + 1, (1u << 31) - 1})
    divisors.push_back(d);
  int bad = 0;
  for (uint32_t d : divisors) {
    const FastDiv f = FastDiv::make(d);
    // Multiples and their neighbours (where a wrong multiplier shows first), the top of the
    // range, and random numerators.
    std::vector<uint32_t> ns = {0, 1, d - 1, d, d + 1, (1u << 30) - 1, (1u << 30) - d};
    for (uint32_t k = 1; k < 64; ++k) {
      const uint64_t m = static_cast<uint64_t>(d) * (((1u << 30) - 1) / d / k);
      for (int64_t o = -1; o <= 1; ++o)
        if (m + o < (1u << 30)) ns.push_back(static_cast<uint32_t>(m + o));
    }
    for (int i = 0; i < 64; ++i) ns.push_back(rng() >> 2);
    for (uint32_t n : ns)
      if (n < (1u << 30) && f.div(n) != n / d && bad++ < 5)
        ADD_FAILURE() << n << " / " << d << ": got " << f.div(n);
  }
  EXPECT_EQ(bad, 0);
}

TEST(DType, NamesAndSizes) {
  for (const auto& c : kDTypes) {
    EXPECT_EQ(to_string(c.dtype), c.name);
    EXPECT_EQ(dtype_size(c.dtype), c.bytes) << c.name;
  }
}

TEST(DType, ParseRoundTrip) {
  for (const auto& c : kDTypes) {
    const auto parsed = parse_dtype(c.name);
    ASSERT_TRUE(parsed.has_value()) << c.name;
    EXPECT_EQ(*parsed, c.dtype) << c.name;
    EXPECT_EQ(parse_dtype(to_string(c.dtype)), c.dtype);
  }
}

TEST(DType, ParseRejectsUnknownNames) {
  for (const char* bad : {"", "BF16", "float", "fp8", "e4m3fn", "bf16 ", "f32", "int32"})
    EXPECT_FALSE(parse_dtype(bad).has_value()) << "'" << bad << "'";
}

TEST(DType, NamesAreDistinct) {
  for (size_t i = 0; i < kDTypes.size(); ++i)
    for (size_t j = i + 1; j < kDTypes.size(); ++j)
      EXPECT_NE(to_string(kDTypes[i].dtype), to_string(kDTypes[j].dtype));
}

void* fake_ptr() {
  return reinterpret_cast<void*>(0x10000);
}

TEST(TensorRef, ContiguousStridesAreRowMajor) {
  const TensorRef t = TensorRef::contiguous(fake_ptr(), DType::kBF16, {3, 5, 7});
  EXPECT_EQ(t.data, fake_ptr());
  EXPECT_EQ(t.dtype, DType::kBF16);
  ASSERT_EQ(t.rank, 3);
  EXPECT_EQ(t.size(0), 3);
  EXPECT_EQ(t.size(1), 5);
  EXPECT_EQ(t.size(2), 7);
  EXPECT_EQ(t.stride(0), 35);
  EXPECT_EQ(t.stride(1), 7);
  EXPECT_EQ(t.stride(2), 1);
  EXPECT_EQ(t.numel(), 105);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_FALSE(t.empty_ref());
}

TEST(TensorRef, StridedKeepsGivenStrides) {
  const TensorRef t = TensorRef::strided(fake_ptr(), DType::kF16, {4, 6}, {10, 1});
  ASSERT_EQ(t.rank, 2);
  EXPECT_EQ(t.stride(0), 10);
  EXPECT_EQ(t.stride(1), 1);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_FALSE(t.is_contiguous());  // row stride 10 > width 6
}

TEST(TensorRef, StridedWithContiguousStridesIsContiguous) {
  EXPECT_TRUE(TensorRef::strided(fake_ptr(), DType::kF32, {4, 6}, {6, 1}).is_contiguous());
  // A transposed view is not contiguous.
  EXPECT_FALSE(TensorRef::strided(fake_ptr(), DType::kF32, {4, 6}, {1, 4}).is_contiguous());
}

TEST(TensorRef, SizeOneDimensionsIgnoreTheirStride) {
  // A dimension of size 1 is never stepped over, so its stride does not matter.
  EXPECT_TRUE(TensorRef::strided(fake_ptr(), DType::kF32, {1, 8}, {999, 1}).is_contiguous());
  EXPECT_TRUE(TensorRef::strided(fake_ptr(), DType::kF32, {8, 1}, {1, 5}).is_contiguous());
}

TEST(TensorRef, NumelOfEmptyAndRankZero) {
  EXPECT_EQ(TensorRef::contiguous(fake_ptr(), DType::kF32, {0, 16}).numel(), 0);
  EXPECT_EQ(TensorRef::contiguous(fake_ptr(), DType::kF32, {16, 0}).numel(), 0);
  const TensorRef none;
  EXPECT_EQ(none.rank, 0);
  EXPECT_EQ(none.numel(), 0);
  EXPECT_TRUE(none.empty_ref());
  EXPECT_EQ(TensorRef::contiguous(fake_ptr(), DType::kF32, {7}).numel(), 7);
}

TEST(TensorRef, DescribeAndShapeString) {
  const TensorRef t = TensorRef::contiguous(fake_ptr(), DType::kBF16, {4096, 7168});
  EXPECT_EQ(t.shape_string(), "[4096, 7168]");
  EXPECT_EQ(t.describe(), "[4096, 7168] bf16 strides [7168, 1]");
  const TensorRef s = TensorRef::strided(fake_ptr(), DType::kE4M3, {3, 5, 2}, {40, 8, 1});
  EXPECT_EQ(s.shape_string(), "[3, 5, 2]");
  EXPECT_EQ(s.describe(), "[3, 5, 2] e4m3 strides [40, 8, 1]");
  const TensorRef v = TensorRef::contiguous(fake_ptr(), DType::kF32, {9});
  EXPECT_EQ(v.describe(), "[9] fp32 strides [1]");
  EXPECT_EQ(TensorRef().shape_string(), "[]");
}

TEST(Status, DefaultIsOk) {
  const Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.message(), "");
  EXPECT_EQ(s.to_string(), "ok");
  EXPECT_TRUE(Status::Ok().ok());
}

TEST(Status, InvalidArgumentMessageFormat) {
  const Status s = Status::InvalidArgument("out.dtype", "e4m3", "bf16");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "argument 'out.dtype': expected e4m3, got bf16");
  EXPECT_EQ(s.to_string(), "invalid argument: argument 'out.dtype': expected e4m3, got bf16");
  EXPECT_EQ(Status::InvalidArgument("x", "A", "B").message(), "argument 'x': expected A, got B");
}

TEST(Status, ToStringNamesEveryCode) {
  EXPECT_EQ(Status::NotSupported("no sm_100").to_string(), "not supported: no sm_100");
  EXPECT_EQ(Status::NotSupported("m").code(), StatusCode::kNotSupported);
  EXPECT_EQ(Status(StatusCode::kCudaError, "boom").to_string(), "CUDA error: boom");
  EXPECT_EQ(Status(StatusCode::kInternal, "oops").to_string(), "internal error: oops");
  EXPECT_FALSE(Status(StatusCode::kInternal, "").ok());
}

Status fails_at(int step, int* reached) {
  *reached = 0;
  QFUSE_RETURN_IF_ERROR(Status::Ok());
  *reached = 1;
  QFUSE_RETURN_IF_ERROR(step == 1 ? Status::InvalidArgument("a", "b", "c") : Status::Ok());
  *reached = 2;
  return Status::Ok();
}

TEST(Status, ReturnIfErrorStopsAtTheFirstError) {
  int reached = -1;
  const Status bad = fails_at(1, &reached);
  EXPECT_EQ(reached, 1);
  EXPECT_EQ(bad.message(), "argument 'a': expected b, got c");
  EXPECT_TRUE(fails_at(0, &reached).ok());
  EXPECT_EQ(reached, 2);
}

// A host stack address is never device memory of the current device: without a GPU the check
// fails on the device query, with one on the pointer's memory type; either way it is refused,
// unless a TrustedDevicePointers lives on this thread (the caller vouched for its pointers).
TEST(TrustedDevicePointers, SkipsTheDriverQueriesOnlyWhileItLivesOnThisThread) {
  int host_value = 0;
  const auto check = [&] { return detail::check_device_pointers({{&host_value, "x.data"}}); };
  EXPECT_FALSE(device_pointers_trusted());
  const Status untrusted = check();
  EXPECT_FALSE(untrusted.ok());
  {
    const TrustedDevicePointers outer;
    EXPECT_TRUE(device_pointers_trusted());
    EXPECT_TRUE(check().ok()) << check().to_string();
    {
      const TrustedDevicePointers inner;  // scopes nest
      EXPECT_TRUE(check().ok());
    }
    EXPECT_TRUE(device_pointers_trusted()) << "the inner scope's end restored the outer's state";
    bool other_thread_trusted = true;
    Status other_thread = Status::Ok();
    std::thread([&] {
      other_thread_trusted = device_pointers_trusted();
      other_thread = check();
    }).join();
    EXPECT_FALSE(other_thread_trusted) << "the scope is this thread's";
    EXPECT_FALSE(other_thread.ok());
  }
  EXPECT_FALSE(device_pointers_trusted());
  EXPECT_EQ(check().to_string(), untrusted.to_string());
}

// Null pointers are skipped either way, and an all-null list needs no device.
TEST(TrustedDevicePointers, NullPointersNeedNoDevice) {
  EXPECT_TRUE(detail::check_device_pointers({{nullptr, "a"}, {nullptr, "b"}}).ok());
  const TrustedDevicePointers trusted;
  EXPECT_TRUE(detail::check_device_pointers({{nullptr, "a"}}).ok());
}

}  // namespace
}  // namespace qfuse
