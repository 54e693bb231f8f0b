// What the vit_attention family's tools share (bench/vit_attention/): the image lengths of a
// benchmark batch, the FLOPs of an attention call, and `qfuse calibrate` (issue 15): dynamic
// scaling run over random inputs, written as the static scale file (SPEC §5).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qfuse/core/status.h"

namespace qfuse::bench {

/// The lengths of `n` images packed into S tokens (1 <= n <= S): image i < n - 1 has
/// 1 + (S - n) (i + 1) / (n (n + 1) / 2) tokens (integer division), the last one the rest, so
/// the lengths differ and sum to S; n = 1 is one image of S tokens.
Status vit_image_lengths(int64_t S, int64_t n, std::vector<int32_t>* lens);

/// FLOPs of non-causal attention over packed sequences: 4 sum_i len_i^2 H D (SPEC §8, D the
/// original head size).
int64_t vit_attention_flops(const std::vector<int32_t>& lens, int64_t H, int64_t D);

// ---- qfuse calibrate ------------------------------------------------------------------------

/// `qfuse calibrate`'s options as given (cli/main.cpp), before any check.
struct VitCalibrateOptions {
  int64_t layers = -1;               // --layers N (-1: not given)
  std::string layer_names;           // --layer-names a,b,... ("": not given)
  std::string shape = "4096,16,72";  // --shape S,H,D
  int64_t forwards = 16;             // --forwards K
  double margin = 1.5;               // --margin M
  std::string out;                   // --out PATH
  uint64_t seed = 1;                 // --seed
};

/// A checked calibration.
struct VitCalibratePlan {
  std::vector<std::string> layers;
  int64_t S = 0, H = 0, D = 0;
  int forwards = 0;
  double margin = 0.0;
  std::string out;
  uint64_t seed = 0;
};

inline constexpr int64_t kVitCalibrateMaxLayers = 4096;
inline constexpr int64_t kVitCalibrateMaxForwards = 100000;
inline constexpr int64_t kVitCalibrateMaxTokens = int64_t{1} << 20;

/// The name `--layers N` gives layer i: Qwen3-VL's "visual.blocks.<i>.attn".
std::string vit_calibrate_layer_name(int64_t i);

/// Checks every option on the host, touching no device: one of --layers N (1..4096) and
/// --layer-names (comma-separated, each a valid scale-file layer name, no duplicates); --shape
/// "S,H,D" of decimal integers, S in [1, 2^20], D a supported head size (64, 72, 80, 96, 128),
/// H >= 1 with H * D <= 32768, S * H * D <= 2^31; --forwards in [1, 100000]; --margin finite and >
/// 0; --out given, not a directory, in a directory that exists. Errors name the option.
Status plan_vit_calibrate(const VitCalibrateOptions& opt, VitCalibratePlan* plan);

/// One layer's result.
struct VitCalibrateRow {
  std::string layer;
  float sigma[3] = {};  // the standard deviation of its random Q, K, V (distinct per layer)
  float amax[3] = {};   // the largest amax in its history
  float scale[3] = {};  // the scales of its last forward: max(history) / 448
  float saved[3] = {};  // what the file holds: scale x margin, rounded to float
  uint32_t forwards = 0;
};

/// Ok when this machine can calibrate: a CUDA device with FP8 conversion (compute capability
/// 8.9+) that this build has kernels for; else NotSupported, "no CUDA device: ..." without one.
Status check_vit_calibrate_device();

/// Runs the plan on the current device (check_vit_calibrate_device() first): vit::EncoderAttention
/// with vit_attn_dtype fp8 and no scale file (dynamic scaling), `forwards` forwards of every layer
/// (the layers in turn within a forward, as an encoder runs them) over fresh random bf16 inputs [S,
/// 3, H, D] (one image), then save_dynamic_scales(plan.out). On any error nothing is written.
Status run_vit_calibrate(const VitCalibratePlan& plan, std::vector<VitCalibrateRow>* rows);

}  // namespace qfuse::bench
