// Argument checks shared by every op's dispatch (SPEC §7): each failure names the argument, the
// expected and the actual value. Structural checks need no device; check_device_pointers() asks
// the driver where memory lives.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "qfuse/core/status.h"
#include "qfuse/core/tensor.h"
#include "qfuse/quant/kind.h"
#include "qfuse/quant/quantize.h"

namespace qfuse::detail {

/// "bf16|fp16"
std::string dtype_list(std::initializer_list<DType> allowed);

/// A rank-2 matrix view: dtype in `allowed`, sizes [rows, cols] (pass -1 to accept any), last
/// dimension contiguous, row stride >= cols, data non-null and element-aligned when non-empty.
Status check_matrix(const TensorRef& t, const std::string& name,
                    std::initializer_list<DType> allowed, int64_t rows, int64_t cols);

/// The op's declared capability (capabilities.h) must include `spec`; the error names the
/// supported set.
Status check_op_supports(std::string_view op, const QuantSpec& spec);

/// The one argument check of a quantizing op's output (SPEC §7), shared by every family: `q.spec`
/// is a valid kind (checked once) that `op`'s capability row lists, the output and scale
/// buffers fit [rows, cols], and, when anything will be launched (rows and cols > 0), every
/// pointer of `inputs` and of the output is device memory of the current device.
Status check_quant_call(std::string_view op, const QuantOutput& q, int64_t rows, int64_t cols,
                        std::initializer_list<std::pair<const void*, const char*>> inputs);

/// quantize's input and output, for the quantize family's entry points: `x` a bf16 / fp16 / fp32
/// matrix [T, H] (H <= INT_MAX / 2), then check_quant_call("quantize", q, T, H, {x.data}).
Status check_quantize_call(const TensorRef& x, const QuantOutput& q);

/// check_quant_call() in two parts, for ops that check pointers of their own in between: the
/// structural checks, then (rows and cols > 0) the pointers of `inputs` and of the output.
Status check_quant_args(std::string_view op, const QuantOutput& q, int64_t rows, int64_t cols);
Status check_quant_pointers(const QuantOutput& q,
                            std::initializer_list<std::pair<const void*, const char*>> inputs);

/// validate_quant_output() of a spec already validated.
Status check_quant_output(const QuantOutput& q, int64_t rows, int64_t cols);

/// An attention output given as [T, H, D] (heads contiguous within a row) viewed as the matrix
/// [T, H * D] the quantizer writes; a 2-D view is kept as it is. `shape` names the expected form
/// in errors ("o_latent is [T, N * 512]").
Status flatten_head_output(const QuantOutput& in, const std::string& shape, QuantOutput* out);

/// Every non-null pointer must be device-accessible memory of the current device.
Status check_device_pointers(std::initializer_list<std::pair<const void*, const char*>> ptrs);

}  // namespace qfuse::detail
