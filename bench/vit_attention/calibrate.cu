// `qfuse calibrate` (vit_tools.h): the option checks (host only) and the run of dynamic scaling
// over random inputs that writes the static scale file.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "bench/harness.h"
#include "bench/vit_attention/vit_tools.h"
#include "qfuse/core/arch.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/core/quote.h"
#include "qfuse/vit_attention/layer.h"
#include "qfuse/vit_attention/scales.h"
#include "qfuse/vit_attention/vit_attention.h"

namespace qfuse::bench {
namespace {

/// A decimal integer and nothing else.
bool parse_int(std::string_view s, int64_t* v) {
  if (s.empty()) return false;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), *v);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    const size_t at = s.find(sep, start);
    parts.push_back(
        s.substr(start, at == std::string_view::npos ? std::string_view::npos : at - start));
    if (at == std::string_view::npos) return parts;
    start = at + 1;
  }
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

Status option_error(const std::string& option, const std::string& expected,
                    const std::string& got) {
  return Status(StatusCode::kInvalidArgument, option + ": expected " + expected + ", got " + got);
}

Status plan_layers(const VitCalibrateOptions& opt, std::vector<std::string>* layers) {
  const bool by_count = opt.layers != -1, by_name = !opt.layer_names.empty();
  if (by_count == by_name)
    return Status(StatusCode::kInvalidArgument,
                  by_count ? "--layers and --layer-names: give one of them, not both"
                           : "give the encoder's attention layers: --layers N (named "
                             "visual.blocks.<i>.attn) or --layer-names a,b,...");
  layers->clear();
  if (by_count) {
    if (opt.layers < 1 || opt.layers > kVitCalibrateMaxLayers)
      return option_error("--layers", "1.." + std::to_string(kVitCalibrateMaxLayers),
                          std::to_string(opt.layers));
    for (int64_t i = 0; i < opt.layers; ++i) layers->push_back(vit_calibrate_layer_name(i));
    return Status::Ok();
  }
  const std::vector<std::string_view> names = split(opt.layer_names, ',');
  if (static_cast<int64_t>(names.size()) > kVitCalibrateMaxLayers)
    return option_error("--layer-names",
                        "at most " + std::to_string(kVitCalibrateMaxLayers) + " names",
                        std::to_string(names.size()));
  std::set<std::string_view> seen;
  vit::ScaleTable scratch;  // the scale file's rules for a layer name
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i].empty())
      return option_error("--layer-names", "comma-separated non-empty names",
                          "an empty name at position " + std::to_string(i + 1) + " in " +
                              quote_text(opt.layer_names, 200));
    const Status valid = scratch.set(std::string(names[i]), vit::QkvScales{});
    if (!valid.ok())
      return Status(StatusCode::kInvalidArgument, "--layer-names: " + valid.message());
    if (!seen.insert(names[i]).second)
      return option_error("--layer-names", "distinct names", quote_text(names[i]) + " twice");
    layers->emplace_back(names[i]);
  }
  return Status::Ok();
}

Status plan_shape(const std::string& text, VitCalibratePlan* p) {
  const std::vector<std::string_view> parts = split(text, ',');
  int64_t v[3] = {0, 0, 0};
  bool ok = parts.size() == 3;
  for (size_t i = 0; ok && i < 3; ++i) ok = parse_int(parts[i], &v[i]) && v[i] >= 1;
  if (!ok)
    return option_error("--shape", "S,H,D: three positive integers (e.g. 4096,16,72)",
                        quote_text(text));
  p->S = v[0], p->H = v[1], p->D = v[2];
  if (p->S > kVitCalibrateMaxTokens)
    return option_error("--shape", "S (tokens) at most " + std::to_string(kVitCalibrateMaxTokens),
                        std::to_string(p->S));
  if (p->D != 64 && p->D != 72 && p->D != 80 && p->D != 96 && p->D != 128)
    return option_error("--shape", "D (head size) 64, 72, 80, 96 or 128", std::to_string(p->D));
  if (p->H > 32768 / p->D)
    return option_error("--shape", "H * D at most 32768",
                        std::to_string(p->H) + " * " + std::to_string(p->D));
  if (p->S * p->H * p->D > (int64_t{1} << 31))
    return option_error(
        "--shape", "S * H * D at most 2^31 (Q/K/V of 12 GiB)",
        std::to_string(p->S) + " * " + std::to_string(p->H) + " * " + std::to_string(p->D));
  return Status::Ok();
}

Status plan_out(const std::string& out) {
  namespace fs = std::filesystem;
  if (out.empty()) return option_error("--out", "the path of the scale file to write", "nothing");
  std::error_code ec;
  if (fs::is_directory(out, ec))
    return option_error("--out", "a file path", quote_text(out, 200) + ", a directory");
  fs::path dir = fs::path(out).parent_path();
  if (dir.empty()) dir = ".";
  if (!fs::is_directory(dir, ec))
    return option_error(
        "--out", "a path in an existing directory",
        quote_text(out, 200) + " (directory " + quote_text(dir.string(), 200) + " does not exist)");
  return Status::Ok();
}

__device__ inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// QKV [S, 3, H, D] bf16: element i of part (i / HD) % 3 is sigma[part] x a roughly normal value
/// (four uniforms summed, unit variance; 1 % of them x 2.5), deterministic in (seed, i).
__global__ void fill_qkv_kernel(__nv_bfloat16* p, int64_t n, int64_t hd, uint64_t seed, float sq,
                                float sk, float sv) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const uint64_t h = mix64(mix64(seed) ^ static_cast<uint64_t>(i));
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; ++k)
      s += static_cast<float>((h >> (16 * k)) & 0xffffu) / 32768.0f - 1.0f;
    float v = s * 0.8660254f;
    if ((mix64(h) & 0xffffu) < 655u) v *= 2.5f;
    const int64_t part = (i / hd) % 3;
    p[i] = __float2bfloat16(v * (part == 0 ? sq : part == 1 ? sk : sv));
  }
}

struct StreamGuard {
  cudaStream_t stream = nullptr;
  ~StreamGuard() {
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};

/// Layer l's input magnitudes: q, k, v of 0.5 (1 + l / 4) x {1, 1.25, 0.75}.
void layer_sigma(size_t l, float sigma[3]) {
  const float base = 0.5f * (1.0f + 0.25f * static_cast<float>(l));
  sigma[0] = base, sigma[1] = 1.25f * base, sigma[2] = 0.75f * base;
}

}  // namespace

std::string vit_calibrate_layer_name(int64_t i) {
  return "visual.blocks." + std::to_string(i) + ".attn";
}

Status plan_vit_calibrate(const VitCalibrateOptions& opt, VitCalibratePlan* plan) {
  VitCalibratePlan p;
  QFUSE_RETURN_IF_ERROR(plan_layers(opt, &p.layers));
  QFUSE_RETURN_IF_ERROR(plan_shape(opt.shape, &p));
  if (opt.forwards < 1 || opt.forwards > kVitCalibrateMaxForwards)
    return option_error("--forwards", "1.." + std::to_string(kVitCalibrateMaxForwards),
                        std::to_string(opt.forwards));
  if (!std::isfinite(opt.margin) || opt.margin <= 0.0)
    return option_error("--margin", "a finite number > 0", number(opt.margin));
  QFUSE_RETURN_IF_ERROR(plan_out(opt.out));
  p.forwards = static_cast<int>(opt.forwards);
  p.margin = opt.margin;
  p.out = opt.out;
  p.seed = opt.seed;
  *plan = std::move(p);
  return Status::Ok();
}

Status check_vit_calibrate_device() {
  if (!gpu_available())
    return Status::NotSupported(
        "no CUDA device: calibration runs dynamic scaling (the FP8 quantizer and attention) on "
        "an NVIDIA GPU with FP8 support (compute capability 8.9 or later); nothing was written");
  QFUSE_RETURN_IF_ERROR(check_kernel_image());
  DeviceInfo info;
  QFUSE_RETURN_IF_ERROR(current_device_info(&info));
  if (!info.has_fp8_convert)
    return Status::NotSupported("device " + std::to_string(info.device) + " (" + info.name +
                                ", compute capability " + std::to_string(info.cc_major) + "." +
                                std::to_string(info.cc_minor) +
                                ") has no FP8 support (8.9 or later); nothing was written");
  return Status::Ok();
}

Status run_vit_calibrate(const VitCalibratePlan& p, std::vector<VitCalibrateRow>* rows) {
  QFUSE_RETURN_IF_ERROR(check_vit_calibrate_device());
  graph::FusionConfig cfg;
  cfg.vit_attn_dtype = "fp8";
  cfg.vit_margin = p.margin;
  std::unique_ptr<vit::EncoderAttention> enc;
  QFUSE_RETURN_IF_ERROR(vit::EncoderAttention::create(cfg, p.layers, &enc));
  StreamGuard sg;
  QFUSE_CUDA_RETURN(cudaStreamCreateWithFlags(&sg.stream, cudaStreamNonBlocking));
  const int64_t S = p.S, H = p.H, D = p.D, n = S * 3 * H * D;
  DeviceBuffer qkv, out, ws;
  QFUSE_RETURN_IF_ERROR(qkv.allocate(static_cast<size_t>(n * 2)));
  QFUSE_RETURN_IF_ERROR(out.allocate(static_cast<size_t>(S * H * D * 2)));
  const size_t ws_bytes = vit::layer_workspace_bytes("fp8", S, H, D);
  QFUSE_RETURN_IF_ERROR(ws.allocate(ws_bytes));
  vit::LayerIo io;
  for (int w = 0; w < 3; ++w) {
    TensorRef& t = w == 0 ? io.q : w == 1 ? io.k : io.v;
    t = TensorRef::strided(qkv.as<uint16_t>() + w * H * D, DType::kBF16, {S, H, D},
                           {3 * H * D, D, 1});
  }
  io.out.out = TensorRef::contiguous(out.get(), DType::kBF16, {S, H, D});
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 8192));
  for (int f = 0; f < p.forwards; ++f) {
    for (size_t l = 0; l < p.layers.size(); ++l) {
      float sigma[3];
      layer_sigma(l, sigma);
      const uint64_t seed = p.seed * 0x100000001B3ull + static_cast<uint64_t>(f) * 65537u + l;
      fill_qkv_kernel<<<blocks, 256, 0, sg.stream>>>(static_cast<__nv_bfloat16*>(qkv.get()), n,
                                                     H * D, seed, sigma[0], sigma[1], sigma[2]);
      QFUSE_CHECK_LAUNCH("fill_qkv_kernel");
      QFUSE_RETURN_IF_ERROR(enc->forward(static_cast<int>(l), io, ws.get(), ws_bytes, sg.stream));
    }
  }
  QFUSE_CUDA_RETURN(cudaStreamSynchronize(sg.stream));
  QFUSE_RETURN_IF_ERROR(enc->save_dynamic_scales(p.out, sg.stream));
  std::vector<VitLayerScaleState> st;
  QFUSE_RETURN_IF_ERROR(enc->dynamic_state(sg.stream, &st));
  rows->clear();
  for (size_t l = 0; l < p.layers.size(); ++l) {
    VitCalibrateRow r;
    r.layer = p.layers[l];
    layer_sigma(l, r.sigma);
    for (int w = 0; w < 3; ++w) {
      r.amax[w] = *std::max_element(st[l].history[w].begin(), st[l].history[w].end());
      r.scale[w] = st[l].scales[w];
      r.saved[w] = static_cast<float>(static_cast<double>(st[l].scales[w]) * p.margin);
    }
    r.forwards = st[l].forwards;
    rows->push_back(std::move(r));
  }
  return Status::Ok();
}

}  // namespace qfuse::bench
