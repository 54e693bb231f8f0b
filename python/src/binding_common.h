// Argument translation shared by the two bindings of the Python package: the nanobind module
// (module.cpp, qfuse._qfuse) and the PyTorch op library (torch_ops.cpp, qfuse/_torch_ops.so).
// Each function works on the C++ library's own types and returns a Status; each binding raises it
// as its exception types (so both raise the same messages: python/tests test_torch.CppOps).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "qfuse/core/status.h"
#include "qfuse/core/tensor.h"
#include "qfuse/mla_decode/mla_decode.h"
#include "qfuse/quant/kind.h"
#include "qfuse/vit_attention/vit_attention.h"

namespace qfuse::binding {

/// The format of a uint8 scale buffer for `spec` (nullopt: scales are fp32).
inline std::optional<DType> scale_byte_format(const QuantSpec& spec) {
  if (spec.format == ScaleFormat::kE4M3) return DType::kE4M3;
  if (spec.format == ScaleFormat::kUe8m0Packed) return DType::kUE8M0;
  return std::nullopt;
}

/// A [T, H, D] output with heads contiguous in a row (stride(1) == D, stride(2) == 1) as the
/// [T, H * D] matrix the kernels write; other ranks unchanged (the C++ check names what is wrong).
inline Status flatten_heads(const TensorRef& t, TensorRef* out) {
  *out = t;
  if (t.rank != 3) return Status::Ok();
  if (t.sizes[2] > 1 && t.strides[2] != 1)
    return Status::InvalidArgument("out.strides[2]", "1 (last dimension contiguous)",
                                   std::to_string(t.strides[2]));
  if (t.sizes[1] > 1 && t.strides[1] != t.sizes[2])
    return Status::InvalidArgument("out.strides[1]",
                                   std::to_string(t.sizes[2]) + " (heads contiguous within a row)",
                                   std::to_string(t.strides[1]));
  out->rank = 2;
  out->sizes = {t.sizes[0], t.sizes[1] * t.sizes[2], 0, 0};
  out->strides = {t.strides[0], 1, 0, 0};
  return Status::Ok();
}

/// The MLA decode options of the ops' `split` and `kernel` strings.
inline Status mla_options(std::string_view split, std::string_view kernel, MlaDecodeOptions* opt) {
  if (split == "auto")
    opt->split = MlaSplitMode::kAuto;
  else if (split == "none")
    opt->split = MlaSplitMode::kNone;
  else
    return Status::InvalidArgument("split", "auto|none", std::string(split));
  if (kernel == "auto")
    opt->kernel = MlaKernel::kAuto;
  else if (kernel == "tensor_core")
    opt->kernel = MlaKernel::kTensorCore;
  else if (kernel == "simple")
    opt->kernel = MlaKernel::kSimple;
  else
    return Status::InvalidArgument("kernel", "auto|tensor_core|simple", std::string(kernel));
  return Status::Ok();
}

/// An MlaSchedule as the Python package carries it: a host int64 vector of kMlaScheduleWords words
/// that mla_decode_schedule writes and mla_decode(schedule=...) reads (the schedule's arrays stay
/// in the workspace; the C++ library checks the words against the call). Word 0 is a tag, so a
/// vector never written by mla_decode_schedule is refused rather than compared.
inline constexpr int64_t kMlaScheduleWords = 16;
inline constexpr int64_t kMlaScheduleTag = 0x3164656863736c6d;  // "mlsched1", little-endian

inline void pack_schedule(const MlaSchedule& s, int64_t* w) {
  for (int64_t i = 0; i < kMlaScheduleWords; ++i) w[i] = 0;
  w[0] = kMlaScheduleTag;
  w[1] = static_cast<int64_t>(reinterpret_cast<uintptr_t>(s.ws));
  w[2] = s.device;
  w[3] = s.batch;
  w[4] = s.heads;
  w[5] = s.capacity;
  w[6] = s.s_q;
  w[7] = s.cache_bytes;
  w[8] = s.rows_per_block;
  w[9] = s.parts;
  w[10] = s.overhead;
  w[11] = s.split ? 1 : 0;
  w[12] = s.tensor_core ? 1 : 0;
}

inline Status unpack_schedule(const int64_t* w, MlaSchedule* s) {
  if (w[0] != kMlaScheduleTag)
    return Status::InvalidArgument("schedule", "a vector written by mla_decode_schedule",
                                   "word 0 = " + std::to_string(w[0]));
  for (int i : {2, 6, 7, 8, 9, 10, 11, 12})
    if (w[i] < INT32_MIN || w[i] > INT32_MAX)
      return Status::InvalidArgument("schedule[" + std::to_string(i) + "]",
                                     "a value mla_decode_schedule wrote", std::to_string(w[i]));
  *s = MlaSchedule{};
  s->ws = reinterpret_cast<const void*>(static_cast<uintptr_t>(w[1]));
  s->device = static_cast<int>(w[2]);
  s->batch = w[3];
  s->heads = w[4];
  s->capacity = w[5];
  s->s_q = static_cast<int>(w[6]);
  s->cache_bytes = static_cast<int>(w[7]);
  s->rows_per_block = static_cast<int>(w[8]);
  s->parts = static_cast<int>(w[9]);
  s->overhead = static_cast<int>(w[10]);
  s->split = w[11] != 0;
  s->tensor_core = w[12] != 0;
  return Status::Ok();
}

/// The ViT attention kernel of the ops' `kernel` string.
inline Status vit_kernel(std::string_view k, VitKernel* out) {
  if (k == "auto")
    *out = VitKernel::kAuto;
  else if (k == "tensor_core")
    *out = VitKernel::kTensorCore;
  else if (k == "simple")
    *out = VitKernel::kSimple;
  else
    return Status::InvalidArgument("kernel", "auto|tensor_core|simple", std::string(k));
  return Status::Ok();
}

inline VitVLayout v_layout(bool v_transposed) {
  return v_transposed ? VitVLayout::kTransposed : VitVLayout::kRowMajor;
}

/// cu_seqlens and cu_seqlens_host come together or not at all.
inline Status cu_seqlens_given(bool device, bool host) {
  if (device == host) return Status::Ok();
  return Status::InvalidArgument("cu_seqlens",
                                 "given with cu_seqlens_host (its copy on the host), or neither",
                                 device ? "cu_seqlens alone" : "cu_seqlens_host alone");
}

/// The packed sequences of a ViT attention call from the views of cu_seqlens (device) and its
/// host copy (already checked to be on the host): contiguous int32 vectors of one length >= 2.
inline Status cu_seqlens_args(const TensorRef& d, const TensorRef& h, VitAttentionArgs* a) {
  for (const auto& [t, n] : {std::pair{d, "cu_seqlens"}, std::pair{h, "cu_seqlens_host"}})
    if (t.dtype != DType::kI32 || t.rank != 1 || !t.is_contiguous())
      return Status::InvalidArgument(n, "a contiguous int32 vector", t.describe());
  if (d.sizes[0] != h.sizes[0] || d.sizes[0] < 2)
    return Status::InvalidArgument("cu_seqlens_host.sizes[0]",
                                   std::to_string(d.sizes[0]) + " (as cu_seqlens; at least 2)",
                                   std::to_string(h.sizes[0]));
  a->cu_seqlens = static_cast<const int32_t*>(d.data);
  a->cu_seqlens_host = static_cast<const int32_t*>(h.data);
  a->num_seqs = d.sizes[0] - 1;
  return Status::Ok();
}

/// A workspace argument (`name`): a contiguous uint8 tensor, as its pointer and size in bytes.
inline Status byte_buffer(const TensorRef& t, std::string_view name, void** data, size_t* bytes) {
  if (t.dtype != DType::kU8 || !t.is_contiguous())
    return Status::InvalidArgument(std::string(name), "a contiguous uint8 tensor", t.describe());
  *data = t.data;
  *bytes = static_cast<size_t>(t.numel());
  return Status::Ok();
}

/// The device pointer of a one-element fp32 tensor (a scale a kernel reads); `t` is its view.
inline Status scalar_ptr(const TensorRef& t, std::string_view name, const float** out) {
  if (t.dtype != DType::kF32)
    return Status::InvalidArgument(std::string(name) + ".dtype", "fp32",
                                   std::string(to_string(t.dtype)));
  if (t.numel() != 1)
    return Status::InvalidArgument(
        std::string(name), "a tensor of one fp32 element",
        t.shape_string() + " (" + std::to_string(t.numel()) + " elements)");
  *out = static_cast<const float*>(t.data);
  return Status::Ok();
}

}  // namespace qfuse::binding
