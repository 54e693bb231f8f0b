// GPU side of the executor: runs the nodes in order with the library's kernels; GEMM nodes go
// through cuBLASLt (executor.h, docs/graph.md).
//
// cuBLASLt is column-major. A row-major out [M, N] = a [M, K] . b [N, K]^T is, read column-major,
// out^T [N, M] = b^T . a, so cuBLASLt's A is the weight b (K x N, ld K, transposed) and its B is
// the activation a (K x M, ld K, not transposed): the "TN" form FP8 GEMMs require on Hopper.
#include <cublasLt.h>

#include <cstdint>

#include "graph/dequant.h"
#include "graph/op_impls.h"
#include "graph/text.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/graph/executor.h"

namespace qfuse::graph {
namespace {

using detail::invalid;
Status lt_status(cublasStatus_t s, const std::string& what) {
  if (s == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  return Status(
      s == CUBLAS_STATUS_NOT_SUPPORTED ? StatusCode::kNotSupported : StatusCode::kCudaError,
      what + ": " + cublasLtGetStatusName(s) + " (" + cublasLtGetStatusString(s) + ")");
}
#define QFUSE_LT(call, what) QFUSE_RETURN_IF_ERROR(lt_status((call), (what)))

cudaDataType_t cuda_type(DType d) {
  switch (d) {
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kE4M3:
      return CUDA_R_8F_E4M3;
    default:
      return CUDA_R_32F;
  }
}

}  // namespace

struct DeviceExecutor::GemmState {
  GemmPath path = GemmPath::kBf16;
  detail::GemmInfo info;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~GemmState() {
    if (desc) cublasLtMatmulDescDestroy(desc);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
  }
};

DeviceExecutor::~DeviceExecutor() {
  gemms_.clear();
  if (lt_handle_ != nullptr) cublasLtDestroy(static_cast<cublasLtHandle_t>(lt_handle_));
}

Status DeviceExecutor::create(const Graph& g, std::unique_ptr<DeviceExecutor>* out,
                              const OpRegistry* registry) {
  std::unique_ptr<DeviceExecutor> ex(new DeviceExecutor());
  ex->registry_ = registry != nullptr ? registry : &default_registry();
  ex->graph_ = g;
  QFUSE_RETURN_IF_ERROR(validate(ex->graph_, ex->registry_));
  QFUSE_RETURN_IF_ERROR(topological_order(ex->graph_, &ex->order_));
  QFUSE_RETURN_IF_ERROR(plan_memory(ex->graph_, &ex->plan_, ex->registry_));
  for (size_t i : ex->order_) {
    const Node& n = ex->graph_.nodes[i];
    const OpDef* def = ex->registry_->find(n.op);
    if (def->cls != OpClass::kGemm && !def->device_run)
      return Status(StatusCode::kNotSupported,
                    "node '" + n.name + "': op '" + n.op + "' has no device implementation");
  }

  for (size_t i : ex->order_) {
    const Node& n = ex->graph_.nodes[i];
    if (ex->registry_->find(n.op)->cls != OpClass::kGemm) continue;
    if (ex->lt_handle_ == nullptr) {
      cublasLtHandle_t h = nullptr;
      QFUSE_LT(cublasLtCreate(&h), "cublasLtCreate");
      ex->lt_handle_ = h;
    }
    auto st = std::make_unique<GemmState>();
    std::map<std::string, const TensorDesc*> in;
    for (const auto& [p, t] : n.inputs) in[p] = ex->graph_.tensor(t);
    QFUSE_RETURN_IF_ERROR(detail::gemm_info(n, in, &st->info));
    const detail::GemmInfo& gi = st->info;
    st->path = detail::gemm_path(gi);
    const bool fp8 = st->path == GemmPath::kFp8PerTensor;
    const cudaDataType_t ab =
        fp8 ? CUDA_R_8F_E4M3
            : (st->path == GemmPath::kDequantBf16 ? CUDA_R_16BF : cuda_type(gi.a_dtype));
    const cudaDataType_t cd = cuda_type(gi.out_dtype);
    const std::string what = "node '" + n.name + "': cuBLASLt";
    QFUSE_LT(cublasLtMatmulDescCreate(&st->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), what);
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    QFUSE_LT(cublasLtMatmulDescSetAttribute(st->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta),
             what);
    QFUSE_LT(cublasLtMatmulDescSetAttribute(st->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb),
             what);
    QFUSE_LT(cublasLtMatrixLayoutCreate(&st->a, ab, gi.K, gi.N, gi.K), what);
    QFUSE_LT(cublasLtMatrixLayoutCreate(&st->b, ab, gi.K, gi.M, gi.K), what);
    QFUSE_LT(cublasLtMatrixLayoutCreate(&st->c, cd, gi.N, gi.M, gi.N), what);
    cublasLtMatmulPreference_t pref = nullptr;
    QFUSE_LT(cublasLtMatmulPreferenceCreate(&pref), what);
    const uint64_t ws = ex->plan_.cublas_bytes;
    cublasStatus_t s = cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    if (s == CUBLAS_STATUS_SUCCESS)
      s = cublasLtMatmulAlgoGetHeuristic(static_cast<cublasLtHandle_t>(ex->lt_handle_), st->desc,
                                         st->a, st->b, st->c, st->c, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    QFUSE_LT(s, what + " heuristic");
    if (found == 0)
      return Status(StatusCode::kNotSupported, what + ": no algorithm for " + to_string(st->path) +
                                                   " with M=" + std::to_string(gi.M) +
                                                   " N=" + std::to_string(gi.N) +
                                                   " K=" + std::to_string(gi.K));
    st->algo = result.algo;
    std::string note = "gemm '" + n.name + "' [" + std::to_string(gi.M) + " x " +
                       std::to_string(gi.N) + " x " + std::to_string(gi.K) +
                       "]: " + to_string(st->path);
    if (st->path == GemmPath::kDequantBf16)
      note += " (a: " + to_string(gi.a_quant) + ", b: " +
              (gi.b_scaling == detail::GemmScaling::kBlock128 ? "128x128 blocks" : "per-tensor") +
              ")";
    ex->notes_.push_back(note);
    ex->gemms_[n.name] = std::move(st);
  }
  *out = std::move(ex);
  return Status::Ok();
}

Status DeviceExecutor::tensor_view(const std::string& name, void* workspace, TensorRef* out) const {
  auto it = plan_.tensors.find(name);
  if (it == plan_.tensors.end())
    return invalid("tensor '" + name + "' is not in the workspace (unknown or a graph input)");
  *out = make_tensor_ref(*graph_.tensor(name), static_cast<char*>(workspace) + it->second.offset);
  return Status::Ok();
}

Status DeviceExecutor::run(const std::map<std::string, const void*>& inputs, void* workspace,
                           size_t workspace_size, cudaStream_t stream) {
  if (workspace_size < plan_.total_bytes)
    return Status::InvalidArgument("workspace_size", ">= " + std::to_string(plan_.total_bytes),
                                   std::to_string(workspace_size));
  if (plan_.total_bytes > 0 && workspace == nullptr)
    return Status::InvalidArgument("workspace", "a device pointer", "null");
  if (reinterpret_cast<uintptr_t>(workspace) % 256 != 0)
    return Status::InvalidArgument("workspace", "256-byte aligned", "a misaligned pointer");
  char* ws = static_cast<char*>(workspace);
  auto view = [&](const std::string& t) -> TensorRef {
    auto in = inputs.find(t);
    if (in != inputs.end())
      return make_tensor_ref(*graph_.tensor(t), const_cast<void*>(in->second));
    return make_tensor_ref(*graph_.tensor(t), ws + plan_.tensors.at(t).offset);
  };
  for (const std::string& in : graph_.inputs) {
    auto it = inputs.find(in);
    if (it == inputs.end() || (it->second == nullptr && graph_.tensor(in)->bytes() > 0))
      return invalid("graph input '" + in + "' has no device pointer");
  }

  for (size_t i : order_) {
    const Node& n = graph_.nodes[i];
    const OpDef* def = registry_->find(n.op);
    DeviceRunArgs a;
    a.node = &n;
    for (const auto& [p, t] : n.inputs) a.in[p] = view(t);
    for (const auto& [p, t] : n.outputs) a.out[p] = view(t);
    Status st;
    if (def->cls != OpClass::kGemm) {
      st = def->device_run(a, stream);
    } else {
      GemmState& g = *gemms_.at(n.name);
      const detail::GemmInfo& gi = g.info;
      const void* A = a.in.at("b").data;  // cuBLASLt's A is the weight (see the file comment)
      const void* B = a.in.at("a").data;
      if (g.path == GemmPath::kFp8PerTensor) {
        const void* sa = a.in.at("b_scale").data;
        const void* sb = a.in.at("a_scale").data;
        st = lt_status(cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                                      &sa, sizeof sa),
                       "A scale");
        if (st.ok())
          st = lt_status(cublasLtMatmulDescSetAttribute(
                             g.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof sb),
                         "B scale");
      } else if (g.path == GemmPath::kDequantBf16) {
        const MemoryPlan::GemmScratch& s = plan_.gemm.at(n.name);
        detail::DequantArgs da;
        da.codes = static_cast<const uint8_t*>(a.in.at("a").data);
        da.rows = gi.M;
        da.cols = gi.K;
        da.out = ws + s.a_offset;
        if (gi.a_scaling == detail::GemmScaling::kPerTensor) {
          da.mode = detail::DequantMode::kPerTensor;
          da.scale = static_cast<const float*>(a.in.at("a_scale").data);
        } else {
          da.mode = detail::DequantMode::kScaleBuffer;
          da.scales = a.in.at("a_scales").data;
          da.spec = gi.a_quant;
        }
        st = detail::dequant_fp8_to_bf16(da, stream);
        detail::DequantArgs db;
        db.codes = static_cast<const uint8_t*>(a.in.at("b").data);
        db.rows = gi.N;
        db.cols = gi.K;
        db.out = ws + s.b_offset;
        if (gi.b_scaling == detail::GemmScaling::kBlock128) {
          db.mode = detail::DequantMode::kBlock128;
          db.scales = a.in.at("b_scale").data;
        } else {
          db.mode = detail::DequantMode::kPerTensor;
          db.scale = static_cast<const float*>(a.in.at("b_scale").data);
        }
        if (st.ok()) st = detail::dequant_fp8_to_bf16(db, stream);
        A = ws + s.b_offset;
        B = ws + s.a_offset;
      }
      if (st.ok() && gi.M > 0 && gi.N > 0) {
        const float alpha = 1.0f, beta = 0.0f;
        void* D = a.out.at("out").data;
        st = lt_status(cublasLtMatmul(static_cast<cublasLtHandle_t>(lt_handle_), g.desc, &alpha, A,
                                      g.a, B, g.b, &beta, D, g.c, D, g.c, &g.algo,
                                      ws + plan_.cublas_offset, plan_.cublas_bytes, stream),
                       "cublasLtMatmul");
      }
    }
    if (!st.ok()) return Status(st.code(), "node '" + n.name + "': " + st.message());
  }
  return Status::Ok();
}

}  // namespace qfuse::graph
