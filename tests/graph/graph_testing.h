// Shared by the graph tests: small graphs built as JSON, a test-only attention op with a
// quantized epilogue, and host-side dequantization of quantized tensors.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/graph_tools.h"
#include "common/gpu.h"
#include "qfuse/graph/executor.h"
#include "qfuse/graph/graph.h"
#include "qfuse/graph/graph_json.h"
#include "qfuse/graph/op_registry.h"

namespace qfuse::graph::test {

using json = nlohmann::ordered_json;

/// Parses `j`; the test fails (and an empty graph is returned) on an error.
Graph parse_or_fail(const json& j, const OpRegistry* registry = nullptr);
/// The error message of parsing `j` ("" when it parses).
std::string parse_error(const json& j, const OpRegistry* registry = nullptr);

/// x [T, 2H] bf16 -> silu_and_mul -> h -> quantize(spec) -> q (+ s); a given scale input 'sc'
/// where the kind reads one.
json act_quant_graph(const std::string& spec, int64_t T = 8, int64_t H = 256);
/// A small MLP: gemm -> silu_and_mul -> quantize(spec) -> gemm (FP8 block-scaled weight).
json mlp_graph(const std::string& spec = "fp8_group128:row:f32");
/// One gemm node reading graph inputs only: a [M, K] e4m3 written as `spec` (scales 'a_s', or
/// 'a_sc' for per-tensor), w [N, K] e4m3 with `b_scaling` (block128: 'w_s' [ceil(N/128),
/// ceil(K/128)]; per_tensor: 'w_s' [1]) -> y [M, N] of `out_dtype`.
json gemm_graph(const std::string& spec, int64_t M, int64_t N, int64_t K,
                const std::string& b_scaling = "block128", const std::string& out_dtype = "bf16");
/// o [N, T, NH, D] fp32 -> merge_states -> quantize(spec) -> q (+ s).
json merge_quant_graph(const std::string& spec, int64_t N = 3, int64_t T = 8, int64_t NH = 2,
                       int64_t D = 64);
/// q, k, v -> test_attention -> quantize(spec) -> q (+ s).
json attention_quant_graph(const std::string& spec);
/// `layers` MLA decode layers over one paged cache (16 heads, B 2 requests of s_q 2, blocks of
/// 16; `cache` bf16 or e4m3 with k_scale): layer l reads q<l> (and w<l>, W_UV, where `up`) and
/// writes o<l> -> quantize(spec) -> y<l> (+ s<l>; given scale sc<l>).
json mla_quant_graph(const std::string& spec, int layers, const std::string& cache = "bf16",
                     bool up = true);

/// The built-in ops plus "test_attention" (FusionFamily::kAttention; its quantized epilogue
/// writes fp8_per_tensor and fp8_group128:row:f32 only; host path: fp64 softmax attention).
const OpRegistry& test_registry();
/// The quant specs test_attention's epilogue writes.
std::vector<QuantSpec> test_attention_specs();
/// The fp32 scalar tensor `name` of `t` (1 when absent: a kind that reads no given scale).
float scalar_of(const HostTensors& t, const char* name);
/// Every quantization spec but `none` (a cast, not a quantization).
std::vector<QuantSpec> quantized_specs();

/// Dequantized values of a quantized tensor written with `spec`: values tensor, its scale buffer
/// (nullptr for per-tensor) and the given scale (per-tensor / NVFP4 global).
/// `factor` (optional) receives each value's dequantization factor (the FP8 scale, or
/// float(sf) / global scale for NVFP4).
std::vector<double> dequantize(const HostTensor& values, const HostTensor* scales,
                               const QuantSpec& spec, float given_scale,
                               std::vector<double>* factor = nullptr);

/// Checks dequantized values d (factors f) against exact values y (SPEC §0.4): each within one
/// step of the format at |y / f| (saturated values at the format's maximum), plus `rel` * |y|
/// for an unfused path that rounds y to bf16 first. Returns the number of failures and fills
/// `report` with the first few.
int64_t check_within_one_step(const QuantSpec& spec, const std::vector<double>& d,
                              const std::vector<double>& f, const std::vector<double>& y,
                              double rel, std::string* report);

/// Path of a file in the source tree (examples/graphs/...).
std::string source_path(const std::string& rel);

/// A graph's inputs and workspace on the device (workspace poisoned), and an executor for it.
struct DeviceRun {
  std::unique_ptr<DeviceExecutor> ex;
  std::map<std::string, qfuse::test::DeviceBuffer> inputs;
  qfuse::test::DeviceBuffer ws;
  std::map<std::string, const void*> ptrs;

  Status init(const Graph& g, const HostTensors& host, const ExecutorOptions& options = {});
  Status run(cudaStream_t s = nullptr) { return ex->run(ptrs, ws.get(), ws.bytes(), s); }
  /// A tensor of the workspace (an intermediate or output), copied to the host.
  HostTensor download(const std::string& name);
};

}  // namespace qfuse::graph::test
