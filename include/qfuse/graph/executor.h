// Running a graph: on the host (the fp64/fp32 reference path) or on the GPU with the real kernels
// and cuBLASLt GEMMs (docs/graph.md, "Executor").
//
// GPU memory is the caller's: workspace_bytes() says how much one run needs, the caller allocates
// it once, and run() enqueues every node on a stream with no allocation and no synchronisation,
// so a run can be captured in a CUDA graph. Every tensor that is not a graph input (intermediates
// and outputs) lives in the workspace at an offset fixed by the plan; tensor_view() gives it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qfuse/core/status.h"
#include "qfuse/core/tensor.h"
#include "qfuse/graph/graph.h"
#include "qfuse/graph/op_registry.h"

namespace qfuse::graph {

using HostTensors = std::map<std::string, HostTensor>;

// ---- host path
// -----------------------------------------------------------------------------------

/// What a graph may cost on the host reference path. The defaults keep a run to seconds and a
/// few GiB; a graph past them is an error that names the dims to make smaller (the file's
/// "host_dims", or `qfuse fuse --dim NAME=SIZE`), not minutes of fp64 loops.
struct HostBudget {
  /// Bytes of every tensor of the graph plus the fp64 working copies the host ops make (8 bytes
  /// per element each node reads or writes).
  int64_t max_bytes = int64_t{1} << 30;
  /// Multiply-adds of all GEMM nodes together (fp64 loops: about a second per 2^30).
  int64_t max_macs = int64_t{1} << 32;
};
/// Checks a (valid) graph against `budget`.
Status check_host_budget(const Graph& g, const HostBudget& budget = {},
                         const OpRegistry* registry = nullptr);

/// Runs every node on the host. `tensors` holds the graph inputs; on return it holds every tensor
/// of the graph. For small shapes (GEMMs are fp64 loops): a graph past `budget` is an error.
Status run_host(const Graph& g, HostTensors* tensors, const OpRegistry* registry = nullptr,
                const HostBudget& budget = {});

// ---- GPU path
// ------------------------------------------------------------------------------------

/// How the executor runs a GEMM node (chosen when the executor is created; see docs/graph.md).
enum class GemmPath {
  kBf16,          // bf16/fp16 operands: cuBLASLt, fp32 accumulation
  kFp8PerTensor,  // FP8 operands with per-tensor scales: cuBLASLt FP8 (A/B scale pointers)
  kFp8Block128,   // FP8 a with 1x128-group scales, FP8 b with 128x128-block scales: cuBLASLt FP8
                  // with its VEC128 / BLK128x128 scale modes (Hopper, cuBLAS >= 12.9)
  kDequantBf16,   // other FP8 scalings: dequantize to bf16 (qfuse kernel), then cuBLASLt bf16
};
const char* to_string(GemmPath p);

/// Choices of the GPU executor.
struct ExecutorOptions {
  /// GEMMs with 1x128-group FP8 activations and 128x128-block FP8 weights use cuBLASLt's native
  /// block scaling (GemmPath::kFp8Block128) where it applies; false: they dequantize to bf16
  /// (GemmPath::kDequantBf16), as every FP8 scaling but per-tensor did before (tests compare the
  /// two).
  bool native_block_scaled_fp8 = true;
};

/// Where each tensor of a graph lives in the workspace.
struct MemoryPlan {
  struct Slice {
    size_t offset = 0, bytes = 0;
  };
  std::map<std::string, Slice> tensors;  // every tensor that is not a graph input
  struct GemmScratch {
    size_t a_offset = 0, a_bytes = 0;  // bf16 copy of an FP8 operand a (dequantizing path)
    size_t b_offset = 0, b_bytes = 0;  // bf16 copy of an FP8 operand b
    size_t b_scale_offset = 0, b_scale_bytes = 0;  // b's block scales in cuBLASLt's order
  };
  std::map<std::string, GemmScratch> gemm;  // by node name
  std::map<std::string, Slice> scratch;     // qfuse ops' scratch (OpDef::scratch_bytes), by node
  /// Outputs written in place (OpDef::in_place): tensor -> the input tensor whose storage it is
  /// (a graph input, or a tensor of `tensors`, or another alias). They have no slice.
  std::map<std::string, std::string> aliases;
  size_t cublas_offset = 0, cublas_bytes = 0;
  size_t total_bytes = 0;
};

/// The plan for the GEMM paths the operand types allow (no device needed). The executor plans
/// for the paths it settles on, which differ where cuBLASLt (its version, the device, its
/// heuristic) refuses the native block-scaled path: DeviceExecutor::workspace_bytes() is the one
/// to allocate.
Status plan_memory(const Graph& g, MemoryPlan* plan, const OpRegistry* registry = nullptr,
                   const ExecutorOptions& options = {});
/// Bytes of workspace one run of `g` needs, as plan_memory plans it.
Status workspace_bytes(const Graph& g, size_t* bytes, const OpRegistry* registry = nullptr,
                       const ExecutorOptions& options = {});

class DeviceExecutor {
 public:
  ~DeviceExecutor();
  DeviceExecutor(const DeviceExecutor&) = delete;
  DeviceExecutor& operator=(const DeviceExecutor&) = delete;

  /// Validates `g`, creates a cuBLASLt handle, picks a path and an algorithm for every GEMM node
  /// (falling back to kDequantBf16 where the native block-scaled path does not apply; notes()
  /// says why) and plans memory. Needs a device; allocates no device memory. The graph is copied.
  static Status create(const Graph& g, std::unique_ptr<DeviceExecutor>* out,
                       const OpRegistry* registry = nullptr, const ExecutorOptions& options = {});

  size_t workspace_bytes() const { return plan_.total_bytes; }
  const MemoryPlan& plan() const { return plan_; }
  const Graph& graph() const { return graph_; }
  /// One line per GEMM node: its path and why (for kDequantBf16: why not kFp8Block128).
  const std::vector<std::string>& notes() const { return notes_; }

  /// A contiguous view of tensor `name` (not a graph input) inside `workspace`.
  Status tensor_view(const std::string& name, void* workspace, TensorRef* out) const;

  /// Enqueues the graph on `stream`. `inputs` maps every graph input to device memory holding it
  /// (contiguous, 256-byte aligned); `workspace` holds workspace_bytes() bytes, 256-byte aligned.
  /// No allocation, no synchronisation: capturable in a CUDA graph.
  Status run(const std::map<std::string, const void*>& inputs, void* workspace,
             size_t workspace_size, cudaStream_t stream);

 private:
  DeviceExecutor() = default;
  struct GemmState;
  Graph graph_;
  const OpRegistry* registry_ = nullptr;
  std::vector<size_t> order_;
  MemoryPlan plan_;
  void* lt_handle_ = nullptr;  // cublasLtHandle_t
  std::map<std::string, std::unique_ptr<GemmState>> gemms_;
  std::vector<std::string> notes_;
};

/// A contiguous row-major TensorRef of `desc` at `data`.
TensorRef make_tensor_ref(const TensorDesc& desc, void* data);

}  // namespace qfuse::graph
