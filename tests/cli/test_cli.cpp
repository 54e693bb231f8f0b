// `qfuse calibrate` (bench/vit_attention/vit_tools.h): every option error found on the host, before
// the device is touched; without a GPU a clear "no CUDA device" and nothing written; on a GPU a
// tiny calibration whose file reads back (vit::ScaleTable::load) to the scales it reports.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "bench/vit_attention/vit_tools.h"
#include "common/gpu.h"
#include "qfuse/vit_attention/scales.h"

namespace qfuse::bench {
namespace {

namespace fs = std::filesystem;

class Calibrate : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("qfuse_cli_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    opt_.layers = 2;
    opt_.out = (dir_ / "scales.json").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  /// Whether plan_vit_calibrate refuses `opt` (kInvalidArgument) with a message holding
  /// `fragment`.
  static ::testing::AssertionResult refused(const VitCalibrateOptions& opt,
                                            const std::string& fragment) {
    VitCalibratePlan plan;
    const Status st = plan_vit_calibrate(opt, &plan);
    if (st.ok()) return ::testing::AssertionFailure() << "accepted";
    if (st.code() != StatusCode::kInvalidArgument ||
        st.message().find(fragment) == std::string::npos)
      return ::testing::AssertionFailure() << "got " << st.to_string();
    return ::testing::AssertionSuccess();
  }

  fs::path dir_;
  VitCalibrateOptions opt_;
};

#define EXPECT_ERROR(opt, fragment) EXPECT_TRUE(refused((opt), (fragment)))

TEST_F(Calibrate, DefaultsAndLayerNames) {
  VitCalibratePlan plan;
  ASSERT_TRUE(plan_vit_calibrate(opt_, &plan).ok());
  EXPECT_EQ(plan.layers,
            (std::vector<std::string>{"visual.blocks.0.attn", "visual.blocks.1.attn"}));
  EXPECT_EQ(plan.S, 4096);
  EXPECT_EQ(plan.H, 16);
  EXPECT_EQ(plan.D, 72);
  EXPECT_EQ(plan.forwards, 16);
  EXPECT_EQ(plan.margin, 1.5);
  VitCalibrateOptions o = opt_;
  o.layers = -1;
  o.layer_names = "enc.0,enc.1,enc.2";
  o.shape = "1024,8,128";
  ASSERT_TRUE(plan_vit_calibrate(o, &plan).ok());
  EXPECT_EQ(plan.layers, (std::vector<std::string>{"enc.0", "enc.1", "enc.2"}));
  EXPECT_EQ(plan.S, 1024);
  EXPECT_EQ(plan.H, 8);
  EXPECT_EQ(plan.D, 128);
}

TEST_F(Calibrate, MissingOrBadOut) {
  VitCalibrateOptions o = opt_;
  o.out = "";
  EXPECT_ERROR(o, "--out");
  o.out = (dir_ / "no_such_dir" / "s.json").string();
  EXPECT_ERROR(o, "does not exist");
  o.out = dir_.string();
  EXPECT_ERROR(o, "a directory");
}

TEST_F(Calibrate, BadShapes) {
  for (const char* s : {"", "4096", "4096,16", "4096,16,72,1", "4096,16,72x", "4096, 16,72",
                        "-4096,16,72", "0,16,72", "4096,0,72", "+4096,16,72", "a,b,c", ",,"}) {
    VitCalibrateOptions o = opt_;
    o.shape = s;
    EXPECT_ERROR(o, "--shape: expected S,H,D") << "shape '" << s << "'";
  }
  VitCalibrateOptions o = opt_;
  o.shape = "4096,16,70";
  EXPECT_ERROR(o, "64, 72, 80, 96 or 128");
  o.shape = "4096,512,128";
  EXPECT_ERROR(o, "H * D at most 32768");
  o.shape = "4096,9000000000000000000,128";
  EXPECT_ERROR(o, "H * D at most 32768");
  o.shape = "1048576,16,256";
  EXPECT_ERROR(o, "64, 72, 80, 96 or 128");
  o.shape = "1048576,256,128";
  EXPECT_ERROR(o, "S * H * D at most 2^31");
  o.shape = "99999999,16,72";
  EXPECT_ERROR(o, "S (tokens) at most");
  o.shape = "99999999999999999999,16,72";
  EXPECT_ERROR(o, "--shape: expected S,H,D");
}

TEST_F(Calibrate, MarginForwardsAndLayers) {
  VitCalibrateOptions o = opt_;
  for (double m : {0.0, -1.5, double{NAN}, double{INFINITY}}) {
    o.margin = m;
    EXPECT_ERROR(o, "--margin: expected a finite number > 0");
  }
  o = opt_;
  o.forwards = 0;
  EXPECT_ERROR(o, "--forwards");
  o = opt_;
  o.layers = -1;
  EXPECT_ERROR(o, "--layers N");
  o.layers = 0;
  EXPECT_ERROR(o, "--layers: expected 1..4096, got 0");
  o.layers = 5000;
  EXPECT_ERROR(o, "--layers");
  o = opt_;
  o.layer_names = "a,b";
  EXPECT_ERROR(o, "not both");
  o.layers = -1;
  o.layer_names = "a,,b";
  EXPECT_ERROR(o, "empty name at position 2");
  o.layer_names = "a,b,a";
  EXPECT_ERROR(o, "'a' twice");
  o.layer_names = std::string(200, 'x');
  EXPECT_ERROR(o, "--layer-names");
}

TEST_F(Calibrate, WithoutAGpuItSaysSoAndWritesNothing) {
  if (gpu_available()) GTEST_SKIP() << "a CUDA device is present";
  VitCalibratePlan plan;
  ASSERT_TRUE(plan_vit_calibrate(opt_, &plan).ok());
  std::vector<VitCalibrateRow> rows;
  const Status st = run_vit_calibrate(plan, &rows);
  EXPECT_EQ(st.code(), StatusCode::kNotSupported);
  EXPECT_EQ(st.message().rfind("no CUDA device", 0), 0u) << st.message();
  EXPECT_EQ(st.message().find('\n'), std::string::npos);
  EXPECT_FALSE(fs::exists(opt_.out));
}

TEST_F(Calibrate, WritesAFileThatLoadsBack) {
  QFUSE_REQUIRE_GPU();
  VitCalibrateOptions o = opt_;
  o.layers = -1;
  o.layer_names = "enc.0,enc.1,enc.2";
  o.shape = "70,2,72";
  o.forwards = 18;  // wraps the history of 16
  o.margin = 1.25;
  VitCalibratePlan plan;
  ASSERT_TRUE(plan_vit_calibrate(o, &plan).ok());
  std::vector<VitCalibrateRow> rows;
  const Status st = run_vit_calibrate(plan, &rows);
  if (st.code() == StatusCode::kNotSupported) GTEST_SKIP() << st.message();
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(rows.size(), 3u);
  vit::ScaleTable table;
  const Status loaded = vit::ScaleTable::load(o.out, &table);
  ASSERT_TRUE(loaded.ok()) << loaded.to_string();
  EXPECT_EQ(table.layers().size(), 3u);
  for (size_t l = 0; l < rows.size(); ++l) {
    const VitCalibrateRow& r = rows[l];
    EXPECT_EQ(r.forwards, 18u);
    vit::QkvScales s;
    ASSERT_TRUE(table.get(r.layer, &s).ok()) << r.layer;
    const float got[3] = {s.q, s.k, s.v};
    for (int w = 0; w < 3; ++w) {
      EXPECT_EQ(got[w], static_cast<float>(static_cast<double>(r.scale[w]) * 1.25)) << r.layer;
      EXPECT_EQ(r.saved[w], got[w]);
      EXPECT_EQ(r.scale[w], r.amax[w] / 448.0f) << r.layer;  // scale = max(history) / 448
      EXPECT_GT(r.scale[w], 0.0f);
    }
    // Distinct magnitudes per layer (and per tensor): the scales differ.
    EXPECT_NE(r.scale[0], r.scale[1]) << r.layer;
    if (l > 0) {
      EXPECT_GT(r.scale[0], rows[l - 1].scale[0]) << r.layer;
    }
  }
}

}  // namespace
}  // namespace qfuse::bench
