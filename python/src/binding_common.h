// Argument translation shared by the two bindings of the Python package: the nanobind module
// (module.cpp, qfuse._qfuse) and the PyTorch op library (torch_ops.cpp, qfuse/_torch_ops.so).
// Each function works on the C++ library's own types and returns a Status; each binding raises it
// as its exception types (so both raise the same messages: python/tests test_torch.CppOps).
#pragma once

#include <optional>
#include <string>
#include <string_view>

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

/// The device pointer of a one-element fp32 tensor (a scale a kernel reads); `t` is its view.
inline Status scalar_ptr(const TensorRef& t, const std::string& name, const float** out) {
  if (t.dtype != DType::kF32)
    return Status::InvalidArgument(name + ".dtype", "fp32", std::string(to_string(t.dtype)));
  if (t.numel() != 1)
    return Status::InvalidArgument(
        name, "a tensor of one fp32 element",
        t.shape_string() + " (" + std::to_string(t.numel()) + " elements)");
  *out = static_cast<const float*>(t.data);
  return Status::Ok();
}

}  // namespace qfuse::binding
