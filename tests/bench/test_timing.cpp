// The harness's time budget (plan_timing), the vit_attention family's routines as the plan sees
// them (bytes, FLOPs, image lengths), and which routines `qfuse bench --op` reaches, without a
// GPU.
#include <gtest/gtest.h>

#include <memory>
#include <numeric>
#include <vector>

#include "bench/family.h"
#include "bench/harness.h"
#include "bench/routines.h"
#include "bench/vit_attention/vit_tools.h"

namespace qfuse::bench {
namespace {

TEST(PlanTiming, FastCallsKeepTheRequestedCounts) {
  TimingOptions opt;  // 20 calls, 25 replays, 2 warm-up, 3 s
  for (double us : {0.0, 1.0, 100.0, 5000.0}) {
    const TimingPlan p = plan_timing(opt, 3, us);
    EXPECT_EQ(p.calls_per_graph, 21) << us;  // a multiple of the 3 sets
    EXPECT_EQ(p.replays, 25) << us;
    EXPECT_EQ(p.warmup, 2) << us;
    EXPECT_FALSE(p.budget_limited) << us;
  }
  opt.budget_s = 0.0;  // no limit
  EXPECT_FALSE(plan_timing(opt, 1, 1e7).budget_limited);
}

TEST(PlanTiming, SlowCallsFitTheBudget) {
  TimingOptions opt;
  // 30 ms a call, 4 sets: 20 calls x 27 replays would be 16 s; 3 s leaves 4 calls x 25 replays.
  TimingPlan p = plan_timing(opt, 4, 30e3);
  EXPECT_TRUE(p.budget_limited);
  EXPECT_EQ(p.warmup, 0);
  EXPECT_EQ(p.calls_per_graph % 4, 0);
  EXPECT_EQ(p.calls_per_graph, 4);
  EXPECT_EQ(p.replays, 25);
  EXPECT_LE(30e3 * p.calls_per_graph * p.replays, 3e6);
  // 10 ms, 1 set: fewer calls, every replay kept.
  p = plan_timing(opt, 1, 10e3);
  EXPECT_EQ(p.calls_per_graph, 12);
  EXPECT_EQ(p.replays, 25);
  // 0.5 s a call, 2 sets: one round of sets, the fewest replays.
  p = plan_timing(opt, 2, 5e5);
  EXPECT_EQ(p.calls_per_graph, 2);
  EXPECT_EQ(p.replays, kBudgetMinReplays);
  // 80 ms a call, 1 set: 1 call x 37 replays would fit; replays stay at most the 25 asked for.
  p = plan_timing(opt, 1, 80e3);
  EXPECT_EQ(p.calls_per_graph, 1);
  EXPECT_EQ(p.replays, 25);
  // Fewer replays asked for than the minimum: kept.
  opt.replays = 2;
  p = plan_timing(opt, 1, 5e6);
  EXPECT_EQ(p.replays, 2);
}

TEST(VitRoutines, ImageLengthsDifferAndSumToS) {
  std::vector<int32_t> lens;
  ASSERT_TRUE(vit_image_lengths(8192, 4, &lens).ok());
  EXPECT_EQ(lens, (std::vector<int32_t>{819, 1638, 2457, 3278}));
  for (int64_t n : {1, 2, 3, 7, 16}) {
    for (int64_t S : {n, n + 1, int64_t{100}, int64_t{4096}}) {
      if (S < n) continue;
      ASSERT_TRUE(vit_image_lengths(S, n, &lens).ok());
      ASSERT_EQ(static_cast<int64_t>(lens.size()), n);
      EXPECT_EQ(std::accumulate(lens.begin(), lens.end(), int64_t{0}), S);
      for (int32_t l : lens) EXPECT_GE(l, 1);
    }
  }
  EXPECT_FALSE(vit_image_lengths(4, 5, &lens).ok());
  EXPECT_FALSE(vit_image_lengths(4, 0, &lens).ok());
  EXPECT_EQ(vit_attention_flops({819, 1638, 2457, 3278}, 16, 72),
            4 * (819LL * 819 + 1638LL * 1638 + 2457LL * 2457 + 3278LL * 3278) * 16 * 72);
}

TEST(VitRoutines, BytesAndFlopsOfThePlan) {
  register_all_routines();
  const int64_t S = 16384, H = 16, D = 72, Dp = 80;
  const Shape shd{{{"S", S}, {"H", H}, {"D", D}}};
  const Shape img{{{"S", S}, {"H", H}, {"D", D}, {"NIMG", 1}}};
  const struct {
    const char* routine;
    const Shape* shape;
    int64_t bytes, flops;
  } cases[] = {
      {"vit_quant/static", &shd, 3 * S * H * D * 2 + 3 * S * H * Dp, 0},
      {"vit_quant/dynamic", &shd, 3 * S * H * D * 2 + 3 * S * H * Dp, 0},
      {"vit_attention/fp8", &img, 3 * S * H * Dp + S * H * D * 2, 4 * S * S * H * D},
      {"vit_attention/bf16:simple", &img, 4 * S * H * D * 2, 4 * S * S * H * D},
      {"vit_attention/fp8:tc", &img, 3 * S * H * Dp + S * H * D * 2, 4 * S * S * H * D},
      {"vit_layer/fp8_static", &img, 4 * S * H * D * 2, 4 * S * S * H * D},
      {"vit_layer/fp8_dynamic", &img, 4 * S * H * D * 2, 4 * S * S * H * D},
      {"vit_layer/bf16", &img, 4 * S * H * D * 2, 4 * S * S * H * D},
  };
  for (const auto& c : cases) {
    const Routine* r = find_routine(c.routine);
    ASSERT_NE(r, nullptr) << c.routine;
    std::unique_ptr<Instance> inst;
    ASSERT_TRUE(r->make(*c.shape, &inst).ok()) << c.routine;
    EXPECT_EQ(inst->min_bytes(), c.bytes) << c.routine;
    EXPECT_EQ(inst->flops(), c.flops) << c.routine;
  }
  // A transposed V holds S rounded up to 32 keys: [H, Dp, S_pad].
  const Shape odd{{{"S", 100}, {"H", H}, {"D", D}, {"NIMG", 3}}};
  for (const char* name : {"vit_quant/dynamic:vt", "vit_attention/fp8:tc"}) {
    std::unique_ptr<Instance> inst;
    ASSERT_TRUE(find_routine(name)->make(odd, &inst).ok()) << name;
    const int64_t fp8 = 2 * 100 * H * Dp + H * Dp * 128;
    EXPECT_EQ(inst->min_bytes(), fp8 + (name[4] == 'q' ? 3 * 100 * H * D * 2 : 100 * H * D * 2))
        << name;
  }
  EXPECT_EQ(find_routine("vit_layer/fp8_static")->unfused, "vit_layer/bf16");
  EXPECT_EQ(find_routine("vit_layer/fp8_static:tc")->unfused, "");
  for (const char* suite : {"issue15", "issue15_tc"}) {
    const Suite* s = find_suite(suite);
    ASSERT_NE(s, nullptr) << suite;
    for (const Case& c : s->cases) EXPECT_NE(find_routine(c.routine), nullptr) << c.routine;
  }
}

TEST(BenchOps, EveryDecodeAndVitSuiteRoutineIsAnOpWithTheSuiteShapeKeys) {
  // A user (and QFUSE_PROFILE_CASES=mla scripts/profile.sh) times one shape of a suite's routine
  // with --op ROUTINE
  // --dim KEY=VALUE: each routine of these suites (but the ceilings) is an op taking the keys its
  // suite cases give, and refuses a quantized --quant with a reason.
  register_all_routines();
  int checked = 0;
  for (const char* name : {"mla_decode", "issue15"}) {
    const Suite* suite = find_suite(name);
    ASSERT_NE(suite, nullptr) << name;
    for (const Case& c : suite->cases) {
      if (c.routine == "read_only" || c.routine.rfind("ceiling", 0) == 0) continue;
      const BenchOp* op = find_bench_op(c.routine);
      ASSERT_NE(op, nullptr) << c.routine << " (suite " << name << ") is not an --op";
      std::string why;
      EXPECT_EQ(op->routine(QuantSpec{}, &why), c.routine) << why;
      for (const auto& [key, value] : c.shape.dims) {
        int64_t v = 0;
        EXPECT_TRUE(op->defaults.get(key, &v).ok()) << c.routine << " has no default for " << key;
      }
      EXPECT_EQ(op->defaults.dims.size(), c.shape.dims.size()) << c.routine;
      QuantSpec fp8;
      fp8.kind = QuantKind::kFp8PerTensor;
      why.clear();
      EXPECT_EQ(op->routine(fp8, &why), "") << c.routine;
      EXPECT_NE(why.find("takes no --quant"), std::string::npos) << why;
      ++checked;
    }
  }
  EXPECT_GT(checked, 20);
}

TEST(WgmmaRate, SuiteRoutinesExistAndShapesAreChecked) {
  // The tensor-pipe rate suite (bench/tensor_rate/): every case names a routine that makes an
  // instance from its shape; WG outside 1..3 and a missing key are refused before any launch.
  register_all_routines();
  const Suite* s = find_suite("wgmma_rate");
  ASSERT_NE(s, nullptr);
  ASSERT_FALSE(s->cases.empty());
  for (const Case& c : s->cases) {
    const Routine* r = find_routine(c.routine);
    ASSERT_NE(r, nullptr) << c.routine;
    std::unique_ptr<Instance> inst;
    EXPECT_TRUE(r->make(c.shape, &inst).ok()) << c.routine << " " << c.shape.to_string();
    EXPECT_EQ(inst->min_bytes(), 0) << c.routine;
  }
  const Routine* r = find_routine("wgmma_rate/e4m3_ss_n16_ch8");
  ASSERT_NE(r, nullptr);
  std::unique_ptr<Instance> inst;
  for (int64_t wg : {0, 4}) {
    const Status st = r->make(Shape{{{"WG", wg}, {"ITERS", 16}}}, &inst);
    EXPECT_FALSE(st.ok()) << "WG " << wg;
    EXPECT_NE(st.message().find("WG"), std::string::npos) << st.message();
  }
  EXPECT_FALSE(r->make(Shape{{{"WG", 1}}}, &inst).ok());  // no ITERS
}

}  // namespace
}  // namespace qfuse::bench
