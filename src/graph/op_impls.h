// The gemm op of the graph layer: its operand types, host reference and cuBLASLt paths.
#pragma once

#include <cuda_runtime_api.h>

#include <functional>
#include <string>

#include "qfuse/graph/executor.h"
#include "qfuse/graph/op_registry.h"
#include "qfuse/quant/quantize.h"

namespace qfuse::graph::detail {

Status host_gemm(const HostRunArgs& a);

/// How a gemm node's operands are scaled (from the types of what it reads).
enum class GemmScaling { kNone, kPerTensor, kPerToken, kPerGroup, kBlock128 };
struct GemmInfo {
  int64_t M = 0, N = 0, K = 0;
  DType a_dtype = DType::kBF16, b_dtype = DType::kBF16, out_dtype = DType::kBF16;
  QuantSpec a_quant;
  GemmScaling a_scaling = GemmScaling::kNone, b_scaling = GemmScaling::kNone;
};
/// Reads a (validated) gemm node's operand types.
Status gemm_info(const Node& node, const std::map<std::string, const TensorDesc*>& in,
                 GemmInfo* info);

}  // namespace qfuse::graph::detail

namespace qfuse::graph::detail {
/// cuBLASLt workspace shared by the GEMM nodes of a plan.
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;
/// Why a gemm cannot take GemmPath::kFp8Block128, judged from its operand types and shapes alone
/// ("" when it can; cuBLASLt's version, the device and its heuristic are the executor's checks).
std::string fp8_block128_obstacle(const GemmInfo& g);
/// The GEMM path for a node's operand types (executor.h). `why` (optional) receives, for
/// kDequantBf16, why the node does not take kFp8Block128.
GemmPath gemm_path(const GemmInfo& g, const ExecutorOptions& options = {},
                   std::string* why = nullptr);
/// plan_memory (executor.h) with each gemm node's path given by `path_of`.
Status plan_memory_with(const Graph& g, const OpRegistry& registry,
                        const std::function<GemmPath(const Node&, const GemmInfo&)>& path_of,
                        MemoryPlan* plan);
}  // namespace qfuse::graph::detail
