// The ViT attention layer entry (SPEC §5): quantize -> attention -> un-padded output for one
// encoder layer, configured like the reference engine (graph::FusionConfig's vit_* keys).
//
//   vit_attn_dtype bf16   attention over the bf16 views (no quantization)
//   vit_attn_dtype fp8    vit_quantize_qkv into the caller's workspace, then FP8 attention, with
//                         static scales (vit_scale_path: the file is parsed once, at create) or
//                         dynamic scaling (an amax history per layer on the device); with
//                         vit_save_path the scales x vit_margin are written once, atomically, the
//                         first time a layer's history wraps (its 16th forward).
//
// create() checks the config (validate_config), loads the scale file (every layer must be in
// it), and, for fp8, that the device has FP8 tensor cores (compute capability 8.9 or later: a
// capability check, not an architecture name); it allocates the small device state (scales and
// histories). forward() allocates nothing and never synchronises, except for the one save of
// dynamic scales (skipped, with the counter left for save_dynamic_scales(), while the stream is
// being captured into a CUDA graph).
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <string>
#include <vector>

#include "qfuse/core/status.h"
#include "qfuse/graph/config.h"
#include "qfuse/vit_attention/scales.h"
#include "qfuse/vit_attention/vit_attention.h"

namespace qfuse::vit {

/// One layer call: the bf16 Q/K/V views, the packed sequences and the output.
struct LayerIo {
  TensorRef q, k, v;                         // bf16 [S, H, D] | [B, S, H, D] (vit_attention.h)
  const int32_t* cu_seqlens = nullptr;       // device [num_seqs + 1] (null: see VitAttentionArgs)
  const int32_t* cu_seqlens_host = nullptr;  // the same on the host
  int64_t num_seqs = 0;
  QuantOutput out;  // o [S_total, H, D] or [S_total, H * D], any kind
};

/// Bytes of workspace forward() needs for S_total tokens of H heads of size D (0 for bf16).
size_t layer_workspace_bytes(const std::string& attn_dtype, int64_t S_total, int64_t H, int64_t D);

class EncoderAttention {
 public:
  ~EncoderAttention();
  EncoderAttention(const EncoderAttention&) = delete;
  EncoderAttention& operator=(const EncoderAttention&) = delete;

  /// `layers`: the names of the encoder's attention layers, in index order (the keys of scale
  /// files). Errors name the config key, the file, the missing layer or the device.
  static Status create(const graph::FusionConfig& cfg, const std::vector<std::string>& layers,
                       std::unique_ptr<EncoderAttention>* out);

  /// Layer `layer` (an index into the names given to create()).
  Status forward(int layer, const LayerIo& io, void* workspace, size_t workspace_bytes,
                 cudaStream_t stream);

  /// Writes every layer's current dynamic scales x margin to `path` (atomically; synchronises).
  Status save_dynamic_scales(const std::string& path, cudaStream_t stream);
  /// Every layer's dynamic-scaling state (synchronises).
  Status dynamic_state(cudaStream_t stream, std::vector<VitLayerScaleState>* out) const;

  /// The attention kernel of the fp8 path (default kAuto: kTensorCore where it can run the call;
  /// kTensorCore quantizes V transposed).
  void set_kernel(VitKernel k) { kernel_ = k; }
  VitKernel kernel() const { return kernel_; }

  bool fp8() const { return fp8_; }
  bool dynamic() const { return fp8_ && !static_scales_; }
  /// Whether the save path has been written.
  bool saved() const { return saved_; }

 private:
  EncoderAttention() = default;

  graph::FusionConfig cfg_;
  std::vector<std::string> layers_;
  bool fp8_ = false;
  bool static_scales_ = false;
  bool saved_ = false;
  VitKernel kernel_ = VitKernel::kAuto;
  std::vector<uint32_t> host_forwards_;  // eager forwards per layer (the save trigger)
  void* device_ = nullptr;               // static: [L][3] fp32 scales; dynamic: the scale state
  size_t device_bytes_ = 0;
};

}  // namespace qfuse::vit
