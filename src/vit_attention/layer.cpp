// The ViT attention layer entry (qfuse/vit_attention/layer.h).
#include "qfuse/vit_attention/layer.h"

#include <cmath>
#include <string>

#include "qfuse/core/arch.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/core/quote.h"
#include "vit_attention/launch.h"

namespace qfuse::vit {
namespace {

std::string str(int64_t v) {
  return std::to_string(v);
}

/// The workspace split into three 256-byte aligned e4m3 [S_total, H, Dp] tensors.
size_t fp8_tensor_bytes(int64_t S_total, int64_t H, int64_t D) {
  // NOTE: sized for a transposed V too (S_total rounded up to 32).
  const int64_t n = vit_vt_keys(S_total) * H * vit_padded_head_dim(D);
  return static_cast<size_t>((n + 255) / 256 * 256);
}

/// S_total, H, D of a bf16 [S, H, D] | [B, S, H, D] view (0s for other ranks: the attention's
/// own check then names the problem).
void geometry(const TensorRef& q, int64_t* S_total, int64_t* H, int64_t* D) {
  *S_total = *H = *D = 0;
  if (q.rank == 3) *S_total = q.sizes[0], *H = q.sizes[1], *D = q.sizes[2];
  if (q.rank == 4) *S_total = q.sizes[0] * q.sizes[1], *H = q.sizes[2], *D = q.sizes[3];
}

}  // namespace

size_t layer_workspace_bytes(const std::string& attn_dtype, int64_t S_total, int64_t H, int64_t D) {
  if (attn_dtype != "fp8" || S_total <= 0 || H <= 0 || D <= 0) return 0;
  // The FP8 Q, K, V^T, then the attention's stream-K scratch.
  return 3 * fp8_tensor_bytes(S_total, H, D) +
         vit_attention_workspace_bytes(S_total, H, static_cast<int>(D));
}

EncoderAttention::~EncoderAttention() {
  if (device_ != nullptr) cudaFree(device_);
}

Status EncoderAttention::create(const graph::FusionConfig& cfg,
                                const std::vector<std::string>& layers,
                                std::unique_ptr<EncoderAttention>* out) {
  if (out == nullptr) return Status::InvalidArgument("out", "a pointer to fill", "null");
  QFUSE_RETURN_IF_ERROR(graph::validate_config(cfg));
  if (layers.empty()) return Status::InvalidArgument("layers", "at least one layer name", "none");
  std::unique_ptr<EncoderAttention> e(new EncoderAttention());
  e->cfg_ = cfg;
  e->layers_ = layers;
  e->fp8_ = cfg.vit_attn_dtype == "fp8";
  e->host_forwards_.assign(layers.size(), 0);
  if (!e->fp8_) {
    *out = std::move(e);
    return Status::Ok();
  }
  std::vector<float> scales;
  if (!cfg.vit_scale_path.empty()) {
    ScaleTable table;
    QFUSE_RETURN_IF_ERROR(ScaleTable::load(cfg.vit_scale_path, &table));
    for (const std::string& name : layers) {
      QkvScales s;
      QFUSE_RETURN_IF_ERROR(table.get(name, &s));
      scales.insert(scales.end(), {s.q, s.k, s.v});
    }
    e->static_scales_ = true;
  }
  DeviceInfo info;
  QFUSE_RETURN_IF_ERROR(current_device_info(&info));
  if (!info.has_fp8_convert)
    return Status::NotSupported("vit_attn_dtype fp8: device " + str(info.device) + " (" +
                                info.name + ", compute capability " + str(info.cc_major) + "." +
                                str(info.cc_minor) +
                                ") has no FP8 tensor cores (8.9 or later); use bf16");
  if (e->static_scales_) {
    e->device_bytes_ = scales.size() * sizeof(float);
    QFUSE_CUDA_RETURN(cudaMalloc(&e->device_, e->device_bytes_));
    QFUSE_CUDA_RETURN(
        cudaMemcpy(e->device_, scales.data(), e->device_bytes_, cudaMemcpyHostToDevice));
  } else {
    e->device_bytes_ = vit_scale_state_bytes(static_cast<int>(layers.size()));
    QFUSE_CUDA_RETURN(cudaMalloc(&e->device_, e->device_bytes_));
    QFUSE_CUDA_RETURN(cudaMemset(e->device_, 0, e->device_bytes_));
  }
  *out = std::move(e);
  return Status::Ok();
}

Status EncoderAttention::forward(int layer, const LayerIo& io, void* workspace,
                                 size_t workspace_bytes, cudaStream_t stream) {
  if (layer < 0 || layer >= static_cast<int>(layers_.size()))
    return Status::InvalidArgument("layer", "in [0, " + str(int64_t(layers_.size())) + ")",
                                   str(layer));
  int64_t S_total, H, D;
  geometry(io.q, &S_total, &H, &D);
  VitAttentionArgs a;
  a.head_dim = static_cast<int>(D);
  a.cu_seqlens = io.cu_seqlens;
  a.cu_seqlens_host = io.cu_seqlens_host;
  a.num_seqs = io.num_seqs;
  a.softmax_scale = D > 0 ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(D))) : 0.0f;
  a.out = io.out;
  if (!fp8_) {
    a.q = io.q, a.k = io.k, a.v = io.v;
    return vit_attention(a, stream);
  }
  const size_t need = layer_workspace_bytes("fp8", S_total, H, D);
  if (workspace_bytes < need)
    return Status::InvalidArgument("workspace_bytes", ">= " + str(int64_t(need)),
                                   str(int64_t(workspace_bytes)));
  if (need > 0 && workspace == nullptr)
    return Status::InvalidArgument("workspace", "device memory", "null");
  const int64_t Dp = vit_padded_head_dim(D);
  const size_t part = fp8_tensor_bytes(S_total, H, D);
  a.workspace_bytes = need - 3 * part;
  a.workspace = a.workspace_bytes > 0 ? static_cast<char*>(workspace) + 3 * part : nullptr;
  TensorRef fp8[3];
  for (int i = 0; i < 3; ++i)
    fp8[i] = TensorRef::contiguous(static_cast<char*>(workspace) + i * part, DType::kE4M3,
                                   {S_total, H, Dp});
  const TensorRef v_transposed = TensorRef::contiguous(static_cast<char*>(workspace) + 2 * part,
                                                       DType::kE4M3, {H, Dp, vit_vt_keys(S_total)});
  // kAuto: the tensor cores (V quantized transposed) wherever they can run this call.
  VitKernel kernel = kernel_;
  if (kernel == VitKernel::kAuto) {
    VitAttentionArgs t = a;
    t.q = fp8[0], t.k = fp8[1], t.v = v_transposed;
    t.v_layout = VitVLayout::kTransposed;
    t.q_scale = t.k_scale = t.v_scale = static_cast<const float*>(device_);
    kernel = vit_attention_can_implement(t, VitAttentionOptions{VitKernel::kTensorCore}).ok()
                 ? VitKernel::kTensorCore
                 : VitKernel::kSimple;
  }
  const bool vt = kernel == VitKernel::kTensorCore;
  if (vt) fp8[2] = v_transposed;
  VitQkvQuantArgs qa;
  qa.q = io.q, qa.k = io.k, qa.v = io.v;
  qa.q_out = fp8[0], qa.k_out = fp8[1], qa.v_out = fp8[2];
  qa.v_layout = vt ? VitVLayout::kTransposed : VitVLayout::kRowMajor;
  const float* scales;
  VitScaleState st{device_, device_bytes_, static_cast<int>(layers_.size())};
  if (static_scales_) {
    scales = static_cast<const float*>(device_) + 3 * layer;
    qa.q_scale = scales, qa.k_scale = scales + 1, qa.v_scale = scales + 2;
  } else {
    scales = vit_dynamic_scales(st, layer);
  }
  a.q = fp8[0], a.k = fp8[1], a.v = fp8[2];
  a.v_layout = qa.v_layout;
  const VitAttentionOptions opt{kernel};
  a.q_scale = scales, a.k_scale = scales + 1, a.v_scale = scales + 2;
  // Everything the attention checks, before the quantization writes anything.
  QFUSE_RETURN_IF_ERROR(vit_attention_can_implement(a, opt));
  // The stream-K tickets zeroed by the quantizer: no memset before it or between it and the
  // attention kernel, so the layer is two kernels with programmatic dependent launch between
  // them and before them (bench/NOTES.md V32).
  ZeroWords zero;
  if (vt && a.workspace != nullptr && tc_streamk_on()) {
    zero.words = static_cast<uint32_t*>(a.workspace);
    zero.count = static_cast<int>(vit_attention_ticket_bytes() / 4);
    a.workspace_zeroed = true;
  }
  // Static scales on the tensor cores: where the setting asks and the call takes it, the
  // attention kernel quantizes Q itself from the bf16 input (the quantizer then writes K and V).
  FusedQCall fq;
  const bool fused_q = static_scales_ && vt && fused_q_on() && fused_q_prepare(a, io.q, &fq).ok();
  QFUSE_RETURN_IF_ERROR(static_scales_ ? quantize_static(qa, fused_q, zero, stream)
                                       : quantize_dynamic(qa, st, layer, zero, stream));
  QFUSE_RETURN_IF_ERROR(fused_q ? fused_q_launch(a, fq, stream) : vit_attention(a, opt, stream));
  if (!dynamic() || cfg_.vit_save_path.empty() || saved_ || S_total == 0) return Status::Ok();
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  QFUSE_CUDA_RETURN(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return Status::Ok();
  if (++host_forwards_[layer] < kVitHistory) return Status::Ok();
  QFUSE_RETURN_IF_ERROR(save_dynamic_scales(cfg_.vit_save_path, stream));
  saved_ = true;
  return Status::Ok();
}

Status EncoderAttention::dynamic_state(cudaStream_t stream,
                                       std::vector<VitLayerScaleState>* out) const {
  if (!dynamic())
    return Status::InvalidArgument("vit_attn_dtype / vit_scale_path",
                                   "fp8 with dynamic scaling (no scale file)",
                                   fp8_ ? "static scales" : "bf16");
  return vit_scale_state_read({device_, device_bytes_, static_cast<int>(layers_.size())}, stream,
                              out);
}

Status EncoderAttention::save_dynamic_scales(const std::string& path, cudaStream_t stream) {
  std::vector<VitLayerScaleState> st;
  QFUSE_RETURN_IF_ERROR(dynamic_state(stream, &st));
  ScaleTable table;
  for (size_t l = 0; l < layers_.size(); ++l) {
    if (st[l].forwards == 0) continue;  // a layer never run has no scales to save
    QFUSE_RETURN_IF_ERROR(
        table.set(layers_[l], QkvScales{st[l].scales[0], st[l].scales[1], st[l].scales[2]}));
  }
  return save_scales_atomic(path, table, cfg_.vit_margin);
}

}  // namespace qfuse::vit
