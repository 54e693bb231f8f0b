#include "quant/validate.h"

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>

#include "qfuse/core/checked.h"

#include "qfuse/core/cuda_check.h"
#include "qfuse/core/pointer_checks.h"
#include "qfuse/quant/capabilities.h"
#include "qfuse/quant/quantize.h"

namespace qfuse {
namespace {

thread_local bool t_trusted = false;  // a TrustedDevicePointers lives on this thread

std::string float_text(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));
  return buf;
}

}  // namespace

namespace detail {

std::string dtype_list(std::initializer_list<DType> allowed) {
  std::string s;
  for (DType d : allowed) s += (s.empty() ? "" : "|") + std::string(to_string(d));
  return s;
}

Status check_matrix(const TensorRef& t, const std::string& name,
                    std::initializer_list<DType> allowed, int64_t rows, int64_t cols) {
  bool dtype_ok = false;
  for (DType d : allowed) dtype_ok |= d == t.dtype;
  if (!dtype_ok)
    return Status::InvalidArgument(name + ".dtype", dtype_list(allowed),
                                   std::string(to_string(t.dtype)));
  if (t.rank != 2) return Status::InvalidArgument(name + ".rank", "2", std::to_string(t.rank));
  int64_t numel = 0;
  QFUSE_RETURN_IF_ERROR(check_sizes(name, t.sizes.data(), t.rank, &numel));
  if (rows >= 0 && t.sizes[0] != rows)
    return Status::InvalidArgument(name + ".sizes[0]", std::to_string(rows),
                                   std::to_string(t.sizes[0]));
  if (cols >= 0 && t.sizes[1] != cols)
    return Status::InvalidArgument(name + ".sizes[1]", std::to_string(cols),
                                   std::to_string(t.sizes[1]));
  if (t.sizes[1] > 1 && t.strides[1] != 1)
    return Status::InvalidArgument(name + ".strides[1]", "1 (last dimension contiguous)",
                                   std::to_string(t.strides[1]));
  if (t.sizes[0] > 1 && t.strides[0] < t.sizes[1])
    return Status::InvalidArgument(name + ".strides[0]",
                                   ">= " + std::to_string(t.sizes[1]) + " (row stride >= width)",
                                   std::to_string(t.strides[0]));
  // NOTE: the last element sits at (rows - 1) * stride + cols - 1: that span must stay inside
  // the element limit too, or a kernel's 64-bit row offset wraps.
  int64_t span = 0;
  if (t.sizes[0] > 1 && (!checked_mul(t.sizes[0] - 1, t.strides[0], &span) ||
                         !checked_add(span, t.sizes[1], &span) || span > kMaxElements))
    return Status::InvalidArgument(
        name + ".strides[0]",
        std::string("a row stride that keeps (rows - 1) * stride + cols <= ") + kMaxElementsText,
        std::to_string(t.strides[0]) + " (" + name + " is " + t.shape_string() + ")");
  if (numel > 0) {
    if (t.data == nullptr)
      return Status::InvalidArgument(name + ".data", "a non-null pointer", "null");
    const uintptr_t a = reinterpret_cast<uintptr_t>(t.data);
    if (a % dtype_size(t.dtype) != 0)
      return Status::InvalidArgument(name + ".data",
                                     std::to_string(dtype_size(t.dtype)) + "-byte aligned address",
                                     "address " + std::to_string(a));
  }
  return Status::Ok();
}

Status check_op_supports(std::string_view op, const QuantSpec& spec) {
  const OpCapability* cap = find_op_capability(op);
  if (cap == nullptr) return Status(StatusCode::kInternal, "unregistered op " + std::string(op));
  for (const QuantSpec& s : cap->output_specs)
    if (s == spec) return Status::Ok();
  std::string supported;
  for (const QuantSpec& s : cap->output_specs)
    supported += (supported.empty() ? "" : "|") + to_string(s);
  return Status::InvalidArgument(std::string(op) + ".out.spec", supported, to_string(spec));
}

namespace {

using GetAttributesFn = CUresult (*)(unsigned int, CUpointer_attribute*, void**, CUdeviceptr);

/// cuPointerGetAttributes from the driver the runtime loaded (no link-time dependency on
/// libcuda); nullptr when the driver does not offer it.
GetAttributesFn pointer_attributes_fn() {
  static const GetAttributesFn fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    // NOTE: the runtime records a failure of this lookup as its last error; it runs once per
    // process, and only on the first op call, so a caller's pending error is never cleared here.
    const cudaError_t err = cudaGetDriverEntryPointByVersion("cuPointerGetAttributes", &p, 12000,
                                                             cudaEnableDefault, &q);
    return err == cudaSuccess && q == cudaDriverEntryPointSuccess
               ? reinterpret_cast<GetAttributesFn>(p)
               : nullptr;
  }();
  return fn;
}

}  // namespace

// NOTE: the driver's cuPointerGetAttributes answers every pointer (unknown ones get default
// values and CUDA_SUCCESS) and does not touch the runtime's last-error state, so the caller's
// pending error stays as it was; one call a pointer, a few hundred nanoseconds. Skipped while a
// TrustedDevicePointers lives on this thread (qfuse/core/pointer_checks.h).
Status check_device_pointers(std::initializer_list<std::pair<const void*, const char*>> ptrs) {
  if (device_pointers_trusted()) return Status::Ok();
  bool any = false;
  for (const auto& kv : ptrs) any |= kv.first != nullptr;
  if (!any) return Status::Ok();
  int dev = -1;
  QFUSE_CUDA_RETURN(cudaGetDevice(&dev));
  const GetAttributesFn get = pointer_attributes_fn();
  if (get == nullptr)
    return Status(StatusCode::kCudaError, "the CUDA driver offers no cuPointerGetAttributes");
  for (const auto& [p, name] : ptrs) {
    if (p == nullptr) continue;
    unsigned int type = 0;
    int ordinal = -1;
    unsigned int managed = 0;
    void* device_ptr = nullptr;
    CUpointer_attribute attrs[] = {
        CU_POINTER_ATTRIBUTE_MEMORY_TYPE, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
        CU_POINTER_ATTRIBUTE_IS_MANAGED, CU_POINTER_ATTRIBUTE_DEVICE_POINTER};
    void* data[] = {&type, &ordinal, &managed, &device_ptr};
    if (get(4, attrs, data, reinterpret_cast<CUdeviceptr>(p)) != CUDA_SUCCESS)
      return Status::InvalidArgument(name, "device memory", "a pointer the driver does not know");
    if (managed) continue;
    if (type == CU_MEMORYTYPE_DEVICE) {
      if (ordinal != dev)
        return Status::InvalidArgument(name, "memory of device " + std::to_string(dev),
                                       "memory of device " + std::to_string(ordinal));
    } else if (type == CU_MEMORYTYPE_HOST) {
      if (device_ptr == nullptr)
        return Status::InvalidArgument(name, "device-accessible memory", "unmapped host memory");
    } else {
      return Status::InvalidArgument(name, "device memory", "host memory");
    }
  }
  return Status::Ok();
}

}  // namespace detail

Status validate_quant_output(const QuantOutput& q, int64_t rows, int64_t cols) {
  QFUSE_RETURN_IF_ERROR(q.spec.validate());
  return detail::check_quant_output(q, rows, cols);
}

Status detail::check_quantize_call(const TensorRef& x, const QuantOutput& q) {
  QFUSE_RETURN_IF_ERROR(check_matrix(x, "x", {DType::kBF16, DType::kF16, DType::kF32}, -1, -1));
  const int64_t T = x.sizes[0], H = x.sizes[1];
  if (H > INT_MAX / 2)
    return Status::InvalidArgument("x.sizes[1]", "<= " + std::to_string(INT_MAX / 2),
                                   std::to_string(H));
  return check_quant_call("quantize", q, T, H, {{x.data, "x.data"}});
}

Status detail::check_quant_call(std::string_view op, const QuantOutput& q, int64_t rows,
                                int64_t cols,
                                std::initializer_list<std::pair<const void*, const char*>> inputs) {
  QFUSE_RETURN_IF_ERROR(check_quant_args(op, q, rows, cols));
  if (rows == 0 || cols == 0) return Status::Ok();
  return check_quant_pointers(q, inputs);
}

Status detail::check_quant_args(std::string_view op, const QuantOutput& q, int64_t rows,
                                int64_t cols) {
  QFUSE_RETURN_IF_ERROR(q.spec.validate());
  QFUSE_RETURN_IF_ERROR(check_op_supports(op, q.spec));
  return check_quant_output(q, rows, cols);
}

Status detail::check_quant_pointers(
    const QuantOutput& q, std::initializer_list<std::pair<const void*, const char*>> inputs) {
  QFUSE_RETURN_IF_ERROR(check_device_pointers(inputs));
  return check_device_pointers({{q.out.data, "out.data"},
                                {q.scales.data, "out.scales.data"},
                                {q.scale, "out.scale"},
                                {q.scale_ub, "out.scale_ub"}});
}

Status detail::check_quant_output(const QuantOutput& q, int64_t rows, int64_t cols) {
  using detail::check_matrix;
  const int64_t values[2] = {rows, cols};
  if (const SizeProblem p = check_sizes(values, 2); !p.ok())
    return Status::InvalidArgument(
        p.dim == 0 ? "out.rows" : "out.cols", p.reason,
        std::to_string(values[p.dim]) + " ([rows, cols] = " + sizes_text(values, 2) + ")");
  const std::string kind = to_string(q.spec);
  switch (q.spec.kind) {
    case QuantKind::kNone:
      QFUSE_RETURN_IF_ERROR(
          check_matrix(q.out, "out", {DType::kBF16, DType::kF16, DType::kF32}, rows, cols));
      break;
    case QuantKind::kNvfp4:
      if (cols % 16 != 0)
        return Status::InvalidArgument("out.cols", "a multiple of 16 for " + kind,
                                       std::to_string(cols));
      QFUSE_RETURN_IF_ERROR(check_matrix(q.out, "out", {DType::kE2M1x2}, rows, cols / 2));
      break;
    default:
      QFUSE_RETURN_IF_ERROR(check_matrix(q.out, "out", {DType::kE4M3}, rows, cols));
      break;
  }
  if (q.spec.reads_scale() && q.scale == nullptr)
    return Status::InvalidArgument("out.scale", "a device fp32 scale for " + kind, "null");
  if (!q.spec.reads_scale() && q.scale != nullptr)
    return Status::InvalidArgument("out.scale", "null (" + kind + " reads no given scale)",
                                   "a pointer");
  if (q.scale != nullptr && reinterpret_cast<uintptr_t>(q.scale) % 4 != 0)
    return Status::InvalidArgument("out.scale", "4-byte aligned address", "misaligned");
  if (!q.spec.accepts_scale_ub() && q.scale_ub != nullptr)
    return Status::InvalidArgument("out.scale_ub", "null (" + kind + " has no dynamic scale)",
                                   "a pointer");
  if (q.scale_ub != nullptr && reinterpret_cast<uintptr_t>(q.scale_ub) % 4 != 0)
    return Status::InvalidArgument("out.scale_ub", "4-byte aligned address", "misaligned");
  if (q.eps != 0.0f) {
    if (q.spec.kind != QuantKind::kFp8PerGroup || q.spec.rule != QuantRule::kEngine)
      return Status::InvalidArgument(
          "out.eps", "0 (" + kind + " has no amax floor: only per-group FP8 with the engine rule)",
          float_text(q.eps));
    if (!(q.eps > 0.0f) || !std::isfinite(q.eps))
      return Status::InvalidArgument("out.eps", "a finite value >= 0", float_text(q.eps));
    // NOTE: the engine's per-group op with an amax floor has no scale bound, and without the
    // scale floor a bound <= 0 would make the scale 0.
    if (q.scale_ub != nullptr)
      return Status::InvalidArgument(
          "out.scale_ub", "null with eps > 0 (no scale bound with an amax floor)", "a pointer");
  }

  ScaleShape shape;
  QFUSE_RETURN_IF_ERROR(detail::scale_shape_valid(q.spec, rows, cols, &shape));
  if (shape.rank == 0) {
    if (!q.scales.empty_ref())
      return Status::InvalidArgument("out.scales", "no scale buffer for " + kind,
                                     q.scales.describe());
    return Status::Ok();
  }
  std::string want = "[";
  for (int i = 0; i < shape.rank; ++i) want += (i ? ", " : "") + std::to_string(shape.sizes[i]);
  want += "] " + std::string(to_string(shape.dtype)) + " contiguous";
  bool same =
      q.scales.rank == shape.rank && q.scales.dtype == shape.dtype && q.scales.is_contiguous();
  for (int i = 0; same && i < shape.rank; ++i) same = q.scales.sizes[i] == shape.sizes[i];
  if (!same)
    return Status::InvalidArgument("out.scales", want + " for " + kind, q.scales.describe());
  if (q.scales.numel() > 0) {  // sizes equal scale_shape's, which it bounds
    if (q.scales.data == nullptr)
      return Status::InvalidArgument("out.scales.data", "a non-null pointer", "null");
    if (reinterpret_cast<uintptr_t>(q.scales.data) % dtype_size(shape.dtype) != 0)
      return Status::InvalidArgument(
          "out.scales.data", std::to_string(dtype_size(shape.dtype)) + "-byte aligned address",
          "misaligned");
  }
  return Status::Ok();
}

Status detail::flatten_head_output(const QuantOutput& in, const std::string& shape,
                                   QuantOutput* out) {
  *out = in;
  const TensorRef& o = in.out;
  if (o.rank != 3) return Status::Ok();
  if (o.sizes[2] > 1 && o.strides[2] != 1)
    return Status::InvalidArgument("out.out.strides[2]", "1 (last dimension contiguous)",
                                   std::to_string(o.strides[2]));
  if (o.sizes[1] > 1 && o.strides[1] != o.sizes[2])
    return Status::InvalidArgument(
        "out.out.strides[1]", std::to_string(o.sizes[2]) + " (heads contiguous: " + shape + ")",
        std::to_string(o.strides[1]));
  out->out = TensorRef::strided(o.data, o.dtype, {o.sizes[0], o.sizes[1] * o.sizes[2]},
                                {o.sizes[0] > 1 ? o.strides[0] : o.sizes[1] * o.sizes[2], 1});
  return Status::Ok();
}

TrustedDevicePointers::TrustedDevicePointers() : previous_(t_trusted) {
  t_trusted = true;
}
TrustedDevicePointers::~TrustedDevicePointers() {
  t_trusted = previous_;
}
bool device_pointers_trusted() {
  return t_trusted;
}

}  // namespace qfuse
