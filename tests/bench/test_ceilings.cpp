// The benchmark's bandwidth ceilings (bench/ceilings.cu): the ratio a row is set against, and on
// a GPU that the copy and read-mostly kernels move the bytes they are charged for.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>
#include <cmath>

#include "bench/harness.h"
#include "bench/routines.h"
#include "common/gpu.h"

namespace qfuse::bench {
namespace {

TEST(CeilingRatio, RoundsReadsOverWrites) {
  EXPECT_EQ(ceiling_ratio(200, 100), 2.0);
  EXPECT_EQ(ceiling_ratio(388, 100), 4.0);    // silu_mul_quant bf16 -> fp8 group 128: 3.88
  EXPECT_EQ(ceiling_ratio(356, 100), 3.5);    // quantize bf16 -> nvfp4: 3.56
  EXPECT_EQ(ceiling_ratio(722, 100), 7.25);   // 2-way merge -> nvfp4: 7.22
  EXPECT_EQ(ceiling_ratio(1625, 100), 16.0);  // 8-way merge -> fp8: 16.25
  EXPECT_EQ(ceiling_ratio(100, 100), 1.0);
  EXPECT_TRUE(std::isinf(ceiling_ratio(100, 0)));
  EXPECT_TRUE(std::isinf(ceiling_ratio(6400, 100)));
  EXPECT_EQ(ceiling_ratio(99, 100), 0.0);  // writes more than it reads: no read-mostly ceiling
  EXPECT_EQ(ceiling_ratio(-1, 100), 0.0);  // not stated
}

TEST(CeilingRatio, Labels) {
  EXPECT_EQ(ratio_label(4.0), "4:1");
  EXPECT_EQ(ratio_label(7.25), "7.25:1");
  EXPECT_EQ(ratio_label(INFINITY), "read-only");
  EXPECT_EQ(ratio_label(0.0), "");
}

TEST(CeilingRatio, RoutinesStateTheirReadBytes) {
  register_all_routines();
  const Shape th{{{"T", 4096}, {"H", 7168}}};
  const Shape nthd{{{"N", 2}, {"T", 4096}, {"H", 128}, {"D", 128}}};
  const struct {
    const char* routine;
    const Shape* shape;
    double ratio;
  } cases[] = {{"silu_mul_quant/fp8_group128:row:f32", &th, 4.0},
               {"silu_and_mul+quantize/fp8_group128:row:f32", &th, 4.0},
               {"silu_mul_quant/nvfp4:swizzled", &th, 7.0},
               {"quantize/fp8_per_tensor", &th, 2.0},
               {"silu_and_mul", &th, 2.0},
               {"merge_states/fp8_per_tensor", &nthd, 4.0},
               {"merge_states/nvfp4:swizzled", &nthd, 7.25},
               {"merge_states", &nthd, 2.0}};
  for (const auto& c : cases) {
    const Routine* r = find_routine(c.routine);
    ASSERT_NE(r, nullptr) << c.routine;
    std::unique_ptr<Instance> inst;
    ASSERT_TRUE(r->make(*c.shape, &inst).ok()) << c.routine;
    const int64_t read = inst->read_bytes();
    ASSERT_GT(read, 0) << c.routine;
    ASSERT_LT(read, inst->min_bytes()) << c.routine;
    EXPECT_EQ(ceiling_ratio(read, inst->min_bytes() - read), c.ratio) << c.routine;
  }
}

TEST(CeilingGpu, CopyKernelsCopyAndReadMostlyKernelsWriteTheirShare) {
  QFUSE_REQUIRE_GPU();
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  TimingOptions opt;
  opt.min_calls = 2;
  opt.replays = 3;
  opt.warmup = 1;
  // measure_*_ceiling check every kernel form's output (copy: equal to the input; read-mostly:
  // every charged byte written, nothing after it) and fail otherwise.
  CopyCeiling copy;
  const Status st = measure_copy_ceiling(opt, stream, &copy);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_GT(copy.memcpy.timing.gbps(), 0.0);
  ASSERT_FALSE(copy.kernels.empty());
  EXPECT_EQ(copy.kernels.front().timing.bytes, 2 * kCeilingCopyBytes);
  for (const double ratio : {1.0, 2.0, 3.5, 4.0, 7.25, 16.0, double(INFINITY)}) {
    ReadMostlyCeiling rm;
    const Status rst = measure_read_mostly_ceiling(ratio, opt, stream, &rm);
    ASSERT_TRUE(rst.ok()) << ratio << ": " << rst.to_string();
    ASSERT_FALSE(rm.forms.empty());
    if (std::isinf(ratio)) {
      EXPECT_TRUE(std::isinf(rm.measured_ratio));
      EXPECT_EQ(rm.best().timing.bytes, kCeilingReadBytes);
    } else {
      EXPECT_NEAR(rm.measured_ratio, ratio, 0.01 * ratio) << ratio;
    }
    EXPECT_GT(rm.gbps(), 0.0);
  }
  cudaStreamDestroy(stream);
}

}  // namespace
}  // namespace qfuse::bench
