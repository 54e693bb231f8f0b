// What a family's graph ops (src/<family>/graph_ops.cpp) share with the graph layer: checks for
// type inference, the quantized-output ports every quantizing op has, and reading and writing
// host tensors for the host reference path. Messages name the port or attribute; the caller
// prefixes the node.
#pragma once

#include <cuda_runtime_api.h>

#include <map>
#include <string>
#include <vector>

#include "graph/text.h"
#include "qfuse/graph/executor.h"
#include "qfuse/graph/op_registry.h"
#include "qfuse/quant/quantize.h"

namespace qfuse::graph::detail {

extern const std::vector<DType> kFloatDtypes;  // bf16, fp16, fp32

TensorDesc make_desc(DType dtype, std::vector<int64_t> shape, QuantSpec q = QuantSpec::none());

/// Input `port` connected, of a dtype in `dtypes` and rank `rank`.
Status expect_input(const Node& n, const std::map<std::string, const TensorDesc*>& in,
                    const std::string& port, const std::vector<DType>& dtypes, size_t rank,
                    const TensorDesc** out);
/// A plain (unquantized) input: a quantized tensor here would be read as if it were not.
Status expect_plain(const Node& n, const std::string& port, const TensorDesc& d);
/// The dtype attribute `key` (default `fallback`), one of `allowed`.
Status dtype_attr(const Node& n, const std::string& key, DType fallback,
                  const std::vector<DType>& allowed, DType* out);
/// The required "quant" attribute, a spec the capability row of `op_for_caps` lists.
Status require_quant(const Node& n, const std::string& op_for_caps, QuantSpec* spec);
/// The output of an op whose optional "quant" attribute (default none) picks the kind, which the
/// capability row of `op_for_caps` must list, and whose "out_dtype" (default bf16, quant none
/// only) the plain dtype: infer_quantized_output over [rows, cols] with the node's own 'scale' /
/// 'scale_ub' inputs (the attention epilogues and the merge).
Status infer_optional_quant_output(const Node& n,
                                   const std::map<std::string, const TensorDesc*>& in,
                                   const std::string& op_for_caps, int64_t rows, int64_t cols,
                                   std::map<std::string, TensorDesc>* out);
/// The input dtypes the capability row of `op` lists.
std::vector<DType> cap_inputs(const char* op);
/// The integer attribute `key` (default `fallback`); an error naming the key when not an integer.
Status int_attr(const Node& n, const std::string& key, int64_t fallback, int64_t* out);

/// Element i of a host tensor as fp32 (bf16, fp16, fp32, e4m3; NaN for other dtypes).
float host_element(const HostTensor& t, int64_t i);
/// Element 0 of the connected input `port`, or `fallback`.
float host_scalar(const HostRunArgs& a, const char* port, float fallback);
/// Stores v at element i of a host tensor: bf16/fp16 (round to nearest even), fp32, e4m3
/// (saturating encode) or, for other byte types, v as the raw byte.
void host_store(HostTensor* t, int64_t i, float v);
/// Writes fp32 values y [rows, cols] to a node's outputs 'out' (and 'scales') in the form of
/// `spec`, as the device quantizer would (ref::quantize; 'scale'/'scale_ub' inputs read).
Status host_write_quantized(const HostRunArgs& a, const QuantSpec& spec,
                            const std::vector<float>& y, int64_t rows, int64_t cols);
/// The QuantOutput of a node's 'out', 'scales', 'scale' and 'scale_ub' ports and 'quant' attr.
Status device_quant_output(const DeviceRunArgs& a, QuantOutput* q);

}  // namespace qfuse::graph::detail
