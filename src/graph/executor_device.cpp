// GPU side of the executor: runs the nodes in order with the library's kernels; GEMM nodes go
// through cuBLASLt (executor.h, docs/graph.md).
//
// cuBLASLt is column-major. A row-major out [M, N] = a [M, K] . b [N, K]^T is, read column-major,
// out^T [N, M] = b^T . a, so cuBLASLt's A is the weight b (K x N, ld K, transposed) and its B is
// the activation a (K x M, ld K, not transposed): the "TN" form FP8 GEMMs require on Hopper.
// In the block-scaled path (kFp8Block128) the weight therefore takes the BLK128x128 scale mode and
// the activation VEC128 (gemm_block128.h).
#include <cublasLt.h>

#include <cstdint>
#include <string>

#include "graph/cublaslt_heuristic.h"
#include "graph/dequant.h"
#include "graph/gemm_block128.h"
#include "graph/op_impls.h"
#include "graph/text.h"
#include "qfuse/core/arch.h"
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

/// Why this process and device cannot use cuBLASLt's block-scaled FP8 modes ("" when they can).
std::string block128_device_obstacle() {
#if CUBLAS_VERSION < 120900
  return "built against cuBLAS " + std::to_string(CUBLAS_VERSION) +
         " (block-scaled FP8 modes need 12.9)";
#else
  const size_t v = cublasLtGetVersion();
  if (v < 120900)
    return "cuBLASLt " + std::to_string(v) + " loaded (block-scaled FP8 modes need 120900, 12.9)";
  DeviceInfo d;
  const Status st = current_device_info(&d);
  if (!st.ok()) return "no device information: " + st.message();
  if (d.cc_major != 9 || d.cc_minor != 0)
    return "compute capability " + std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor) +
           " (cuBLASLt's VEC128 / BLK128x128 modes are for 9.0)";
  return "";
#endif
}

Status set_scale_pointers(cublasLtMatmulDesc_t desc, const void* sa, const void* sb) {
  QFUSE_LT(
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof sa),
      "A scale");
  QFUSE_LT(
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof sb),
      "B scale");
  return Status::Ok();
}

}  // namespace

struct DeviceExecutor::GemmState {
  GemmPath path = GemmPath::kBf16;
  detail::GemmInfo info;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~GemmState() { release(); }
  void release() {
    if (desc) cublasLtMatmulDescDestroy(desc);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    desc = nullptr;
    a = b = c = nullptr;
  }
  /// Creates the cuBLASLt descriptors of `path` and asks the heuristic for an algorithm
  /// (kNotSupported when it has none).
  Status setup(cublasLtHandle_t handle, const std::string& what);
};

Status DeviceExecutor::GemmState::setup(cublasLtHandle_t handle, const std::string& what) {
  const detail::GemmInfo& gi = info;
  const bool fp8 = path == GemmPath::kFp8PerTensor || path == GemmPath::kFp8Block128;
  const cudaDataType_t ab =
      fp8 ? CUDA_R_8F_E4M3 : (path == GemmPath::kDequantBf16 ? CUDA_R_16BF : cuda_type(gi.a_dtype));
  const cudaDataType_t cd = cuda_type(gi.out_dtype);
  QFUSE_LT(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), what);
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  QFUSE_LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), what);
  QFUSE_LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), what);
  if (path == GemmPath::kFp8Block128) {
#if CUBLAS_VERSION >= 120900
    const int32_t sa = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;  // A: the weight
    const int32_t sb = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;      // B: the activation
    QFUSE_LT(
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &sa, sizeof sa),
        what + " A scale mode");
    QFUSE_LT(
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &sb, sizeof sb),
        what + " B scale mode");
    QFUSE_RETURN_IF_ERROR(set_scale_pointers(desc, detail::heuristic_scale_placeholder(),
                                             detail::heuristic_scale_placeholder()));
#else
    return Status(StatusCode::kNotSupported, what + ": block scale modes need cuBLAS 12.9");
#endif
  }
  QFUSE_LT(cublasLtMatrixLayoutCreate(&a, ab, gi.K, gi.N, gi.K), what);
  QFUSE_LT(cublasLtMatrixLayoutCreate(&b, ab, gi.K, gi.M, gi.K), what);
  QFUSE_LT(cublasLtMatrixLayoutCreate(&c, cd, gi.N, gi.M, gi.N), what);
  int found = 0;
  QFUSE_LT(detail::first_algo(handle, desc, a, b, c, detail::kCublasWorkspaceBytes, &algo, &found),
           what + " heuristic");
  if (found == 0)
    return Status(StatusCode::kNotSupported, what + ": no algorithm for " + to_string(path) +
                                                 " with M=" + std::to_string(gi.M) +
                                                 " N=" + std::to_string(gi.N) +
                                                 " K=" + std::to_string(gi.K));
  return Status::Ok();
}

DeviceExecutor::~DeviceExecutor() {
  gemms_.clear();
  if (lt_handle_ != nullptr) cublasLtDestroy(static_cast<cublasLtHandle_t>(lt_handle_));
}

Status DeviceExecutor::create(const Graph& g, std::unique_ptr<DeviceExecutor>* out,
                              const OpRegistry* registry, const ExecutorOptions& options) {
  std::unique_ptr<DeviceExecutor> ex(new DeviceExecutor());
  ex->registry_ = registry != nullptr ? registry : &default_registry();
  ex->graph_ = g;
  QFUSE_RETURN_IF_ERROR(validate(ex->graph_, ex->registry_));
  QFUSE_RETURN_IF_ERROR(topological_order(ex->graph_, &ex->order_));
  for (size_t i : ex->order_) {
    const Node& n = ex->graph_.nodes[i];
    const OpDef* def = ex->registry_->find(n.op);
    if (def->cls != OpClass::kGemm && !def->device_run)
      return Status(StatusCode::kNotSupported,
                    "node '" + n.name + "': op '" + n.op + "' has no device implementation");
  }

  std::string device_obstacle;  // of the block-scaled path, asked once
  bool device_checked = false;
  for (size_t i : ex->order_) {
    const Node& n = ex->graph_.nodes[i];
    if (ex->registry_->find(n.op)->cls != OpClass::kGemm) continue;
    if (ex->lt_handle_ == nullptr) {
      cublasLtHandle_t h = nullptr;
      QFUSE_LT(cublasLtCreate(&h), "cublasLtCreate");
      ex->lt_handle_ = h;
    }
    const auto handle = static_cast<cublasLtHandle_t>(ex->lt_handle_);
    auto st = std::make_unique<GemmState>();
    std::map<std::string, const TensorDesc*> in;
    for (const auto& [p, t] : n.inputs) in[p] = ex->graph_.tensor(t);
    QFUSE_RETURN_IF_ERROR(detail::gemm_info(n, in, &st->info));
    const detail::GemmInfo& gi = st->info;
    std::string why;  // why not kFp8Block128, for a kDequantBf16 node
    st->path = detail::gemm_path(gi, options, &why);
    if (st->path == GemmPath::kFp8Block128 && !device_checked) {
      device_obstacle = block128_device_obstacle();
      device_checked = true;
    }
    if (st->path == GemmPath::kFp8Block128 && !device_obstacle.empty()) {
      st->path = GemmPath::kDequantBf16;
      why = device_obstacle;
    }
    const std::string what = "node '" + n.name + "': cuBLASLt";
    Status setup = st->setup(handle, what);
    if (!setup.ok() && st->path == GemmPath::kFp8Block128) {
      // NOTE: the heuristic is the last word on what cuBLASLt runs; without an algorithm (or
      // with a scale mode this library version rejects) the node dequantizes, as it did before.
      why = setup.message();
      st->release();
      st->path = GemmPath::kDequantBf16;
      setup = st->setup(handle, what);
    }
    if (!setup.ok() && st->path == GemmPath::kDequantBf16 && gi.out_dtype == DType::kF16)
      return Status(StatusCode::kNotSupported,
                    what +
                        ": an fp16 output needs cuBLASLt's native block scaling (not usable "
                        "here: " +
                        why +
                        "); the dequantizing fallback multiplies bf16 "
                        "operands, which cuBLASLt writes as bf16 or fp32 only");
    QFUSE_RETURN_IF_ERROR(setup);
    std::string note = "gemm '" + n.name + "' [" + std::to_string(gi.M) + " x " +
                       std::to_string(gi.N) + " x " + std::to_string(gi.K) +
                       "]: " + to_string(st->path);
    if (st->path == GemmPath::kFp8Block128) {
      const bool in_place =
          detail::blk128_scales_in_place(ceil_div(gi.N, 128), ceil_div(gi.K, 128));
      note += " (a: " + to_string(gi.a_quant) + " as VEC128, b: 128x128 blocks as BLK128x128, " +
              (in_place ? "read in place)" : "repacked into cuBLASLt's order on every run)");
    } else if (st->path == GemmPath::kDequantBf16) {
      note += " (a: " + to_string(gi.a_quant) + ", b: " +
              (gi.b_scaling == detail::GemmScaling::kBlock128 ? "128x128 blocks" : "per-tensor") +
              "; not cuBLASLt block scaling: " + why + ")";
    }
    ex->notes_.push_back(note);
    ex->gemms_[n.name] = std::move(st);
  }
  QFUSE_RETURN_IF_ERROR(detail::plan_memory_with(
      ex->graph_, *ex->registry_,
      [&](const Node& n, const detail::GemmInfo&) { return ex->gemms_.at(n.name)->path; },
      &ex->plan_));
  *out = std::move(ex);
  return Status::Ok();
}

namespace {
/// The tensor whose storage `name` is (following in-place aliases).
const std::string& storage_of(const MemoryPlan& p, const std::string& name) {
  const std::string* t = &name;
  for (auto a = p.aliases.find(*t); a != p.aliases.end(); a = p.aliases.find(*t)) t = &a->second;
  return *t;
}
}  // namespace

Status DeviceExecutor::tensor_view(const std::string& name, void* workspace, TensorRef* out) const {
  auto it = plan_.tensors.find(storage_of(plan_, name));
  if (it == plan_.tensors.end())
    return invalid("tensor '" + name + "' is not in the workspace (unknown, a graph input, or " +
                   "written in place over one)");
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
    const std::string& at = storage_of(plan_, t);  // an in-place output: its input's storage
    auto in = inputs.find(at);
    if (in != inputs.end())
      return make_tensor_ref(*graph_.tensor(t), const_cast<void*>(in->second));
    return make_tensor_ref(*graph_.tensor(t), ws + plan_.tensors.at(at).offset);
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
      auto sc = plan_.scratch.find(n.name);
      if (sc != plan_.scratch.end()) {
        a.scratch = ws + sc->second.offset;
        a.scratch_bytes = sc->second.bytes;
      }
      st = def->device_run(a, stream);
    } else {
      GemmState& g = *gemms_.at(n.name);
      const detail::GemmInfo& gi = g.info;
      const void* A = a.in.at("b").data;  // cuBLASLt's A is the weight (see the file comment)
      const void* B = a.in.at("a").data;
      if (g.path == GemmPath::kFp8PerTensor) {
        st = set_scale_pointers(g.desc, a.in.at("b_scale").data, a.in.at("a_scale").data);
      } else if (g.path == GemmPath::kFp8Block128) {
        const MemoryPlan::GemmScratch& s = plan_.gemm.at(n.name);
        const void* sa = a.in.at("b_scale").data;  // cuBLASLt's A: the weight, BLK128x128
        const void* sb = a.in.at("a_scales").data;
        const bool repack = s.b_scale_bytes > 0;
        // NOTE: cuBLASLt reads the scale tensors with 16-byte loads (documented alignment).
        if (reinterpret_cast<uintptr_t>(sb) % 16 != 0)
          st = Status::InvalidArgument("a_scales", "16-byte aligned", "a misaligned pointer");
        else if (!repack && reinterpret_cast<uintptr_t>(sa) % 16 != 0)
          st = Status::InvalidArgument("b_scale", "16-byte aligned", "a misaligned pointer");
        if (st.ok() && repack) {
          float* packed = reinterpret_cast<float*>(ws + s.b_scale_offset);
          st = detail::repack_blk128_scales(static_cast<const float*>(sa), packed,
                                            ceil_div(gi.N, 128), ceil_div(gi.K, 128), stream);
          sa = packed;
        }
        if (st.ok()) st = set_scale_pointers(g.desc, sa, sb);
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
