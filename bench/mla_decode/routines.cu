// Benchmark routines of the MLA decode family (SPEC §3, §8; issue 13's bar shapes):
//
//   mla_decode/<cache>[:whole|:simple|:layer]
//                                        one decode step: B requests of S tokens, N heads, SQ query
//                                        tokens each, block size BS, bf16 | fp8 cache; default the
//                                        tensor-core kernel with the device scheduler + combine,
//                                        :whole one block per request (no split), :simple the
//                                        CUDA-core kernel, :layer one layer of a step whose
//                                        schedule is computed once (mla_decode_schedule, outside
//                                        the timing, as FlashMLA's metadata): no scheduler launch
//   mla_decode_mixed/<cache>             the same with lengths spread log-uniformly over [1, S]
//                                        (request b: S^(b / (B - 1)), deterministic)
//   mla_decode_even/<cache>              its perfectly balanced twin: the same total number of
//                                        tokens in B equal requests (same-run reference for the
//                                        scheduler's balance)
//   mla_decode_l2/<cache>                mla_decode/<cache> with every request's pages drawn from
//                                        a pool of kL2PoolTokens tokens' blocks (4.7 / 9.4 MB:
//                                        L2-resident on Hopper): the kernel's own rate with DRAM
//                                        out of the way, the same on an H100 and an H200 where the
//                                        consumer's chain is the bound (bench/NOTES.md M39); its
//                                        GB/s count the bytes the kernel consumes, not DRAM's
//   mla_decode_seq/<cache>               mla_decode/<cache> with each request's pages contiguous
//                                        in the cache, in order (FlashMLA's benchmark's table):
//                                        beside the scattered row, what page scatter costs
//                                        (address translation, DRAM locality; NOTES M43)
//   mla_decode_up/<cache>:<out>          mla_decode/<cache> with W_UV [N, 512, 128] (issue 14): the
//                                        up-projected o [T, N * 128] written by the combine with
//                                        the fused up-projection as <out>: bf16, fp8 (static
//                                        per-tensor), nvfp4 (swizzled), fp8_token (dynamic
//                                        per-token: two launches), or unfused_fp8 / unfused_nvfp4
//                                        (bf16, then the separate quantize op: the unfused path),
//                                        engine_fp8 (the reference engine's path: the plain
//                                        decode's bf16 o_latent, a cuBLASLt batched GEMM per
//                                        head into bf16 o, then quantize)
//   read_only                            the read-only ceiling: a kernel that reads BYTES once
// Shape keys: B, S, N, SQ, BS (read_only: MB). Minimum bytes: the KV rows read once (576 x 2 or
// 576 x 1 bytes a token), q read once, o_latent (bf16) written once. FLOPs (for TFLOPS in
// bench/RESULTS.md): 2 * N * SQ * S * (576 + 512) per request. The block tables are random
// permutations of the physical blocks (scattered pages, as in a serving engine).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "bench/family.h"
#include "bench/routines.h"
#include "graph/cublaslt_heuristic.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/mla_decode/mla_decode.h"
#include "qfuse/quant/quantize.h"

namespace qfuse::bench {
namespace {

__global__ void fill_fp8_kernel(uint8_t* p, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    uint64_t x = (static_cast<uint64_t>(i) + seed) * 0x9E3779B97F4A7C15ull;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    // Codes of magnitude below 2^3 (exponent field <= 9), never NaN.
    const uint8_t code = static_cast<uint8_t>((x & 0x80) | ((x >> 8) % 80));
    p[i] = code;
  }
}

enum class Lens { kEqual, kMixed, kEven };

/// What a step writes: o_latent (bf16), or the up-projected o in `spec` (unfused: bf16, then the
/// quantize op to `spec`; engine: the reference engine's path, o_latent bf16 from the decode, the
/// per-head product as a cuBLASLt batched bf16 GEMM into a bf16 o, then the quantize op).
struct UpOut {
  bool up = false;
  QuantSpec spec;
  bool unfused = false;
  bool engine = false;
};

/// The engine path's o[:, n] = o_latent[:, n] . W_UV[n] for every head n as one cuBLASLt
/// strided-batched GEMM (bf16 in and out, fp32 accumulation). cuBLASLt is column-major: per
/// head, o^T [128, T] = W^T [128, 512] . o_latent^T [512, T], with W [512, 128] row-major read as
/// a column-major [128 x 512] (ld 128), o_latent's head n as a column-major [512 x T] (ld N * 512,
/// batch stride 512) and o's as [128 x T] (ld N * 128, batch stride 128).
class HeadBmm {
 public:
  ~HeadBmm() {
    if (a_) cublasLtMatrixLayoutDestroy(a_);
    if (b_) cublasLtMatrixLayoutDestroy(b_);
    if (c_) cublasLtMatrixLayoutDestroy(c_);
    if (desc_) cublasLtMatmulDescDestroy(desc_);
    if (handle_) cublasLtDestroy(handle_);
  }
  Status init(int64_t T, int64_t N) {
    QFUSE_RETURN_IF_ERROR(lt(cublasLtCreate(&handle_), "cublasLtCreate"));
    QFUSE_RETURN_IF_ERROR(
        lt(cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F), "matmul desc"));
    const int64_t V = kMlaVHeadDim, L = kMlaLatentDim;
    QFUSE_RETURN_IF_ERROR(layout(&a_, V, L, V, L * V, N));
    QFUSE_RETURN_IF_ERROR(layout(&b_, L, T, N * L, L, N));
    QFUSE_RETURN_IF_ERROR(layout(&c_, V, T, N * V, V, N));
    QFUSE_RETURN_IF_ERROR(ws_.allocate(kWorkspace));
    int found = 0;
    QFUSE_RETURN_IF_ERROR(
        lt(graph::detail::first_algo(handle_, desc_, a_, b_, c_, kWorkspace, &algo_, &found),
           "heuristic"));
    if (found == 0) return Status::NotSupported("cuBLASLt has no algorithm for the head GEMM");
    return Status::Ok();
  }
  /// o = o_latent . W_UV per head (device pointers: bf16 W [N, 512, 128], o_latent [T, N, 512],
  /// o [T, N * 128]).
  Status run(const void* w, const void* o_latent, void* o, cudaStream_t stream) const {
    const float alpha = 1.0f, beta = 0.0f;
    return lt(cublasLtMatmul(handle_, desc_, &alpha, w, a_, o_latent, b_, &beta, o, c_, o, c_,
                             &algo_, ws_.get(), kWorkspace, stream),
              "cublasLtMatmul");
  }

 private:
  static constexpr size_t kWorkspace = size_t{32} << 20;
  static Status lt(cublasStatus_t s, const char* what) {
    if (s == CUBLAS_STATUS_SUCCESS) return Status::Ok();
    return Status(StatusCode::kCudaError,
                  std::string("head GEMM: ") + what + ": " + cublasLtGetStatusString(s));
  }
  static Status layout(cublasLtMatrixLayout_t* l, int64_t rows, int64_t cols, int64_t ld,
                       int64_t batch_stride, int64_t batch) {
    QFUSE_RETURN_IF_ERROR(lt(cublasLtMatrixLayoutCreate(l, CUDA_R_16BF, rows, cols, ld), "layout"));
    const int32_t count = static_cast<int32_t>(batch);
    QFUSE_RETURN_IF_ERROR(lt(cublasLtMatrixLayoutSetAttribute(
                                 *l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count),
                             "batch count"));
    return lt(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                               &batch_stride, sizeof batch_stride),
              "batch stride");
  }
  cublasLtHandle_t handle_ = nullptr;
  cublasLtMatmulDesc_t desc_ = nullptr;
  cublasLtMatrixLayout_t a_ = nullptr, b_ = nullptr, c_ = nullptr;
  cublasLtMatmulAlgo_t algo_{};
  DeviceBuffer ws_;
};
/// Where a request's pages lie: a random permutation of the physical blocks, the same order as
/// the requests' tokens, or a random permutation of an L2-resident pool's blocks.
enum class Pages { kScattered, kContiguous, kL2Pool };

/// Tokens of mla_decode_l2's pool of physical blocks (128 blocks of 64).
constexpr int64_t kL2PoolTokens = 8192;

class MlaInstance final : public Instance {
 public:
  MlaInstance(DType cache, MlaSplitMode split, MlaKernel kernel, Lens lens, bool reuse, Pages pages,
              UpOut up, int64_t B, int64_t S, int64_t N, int64_t SQ, int64_t BS)
      : cache_(cache), reuse_(reuse), pages_(pages), up_(up), B_(B), N_(N), SQ_(SQ), BS_(BS) {
    opt_.split = split;
    opt_.kernel = kernel;
    lens_.resize(B);
    for (int64_t b = 0; b < B; ++b) {
      if (lens == Lens::kEqual) {
        lens_[b] = static_cast<int>(S);
      } else {
        const double x = B > 1 ? static_cast<double>(b) / (B - 1) : 1.0;
        lens_[b] = std::max(1, static_cast<int>(std::lround(std::pow(static_cast<double>(S), x))));
      }
    }
    if (lens == Lens::kEven) {
      const int64_t total = std::accumulate(lens_.begin(), lens_.end(), int64_t{0});
      for (auto& l : lens_) l = static_cast<int>((total + B - 1) / B);
    }
    for (int l : lens_) {
      tokens_ += l;
      blocks_ += (l + BS - 1) / BS;
      max_blocks_ = std::max<int64_t>(max_blocks_, (l + BS - 1) / BS);
    }
    physical_ = pages == Pages::kL2Pool ? std::min(blocks_, kL2PoolTokens / BS) : blocks_;
  }

  int64_t min_bytes() const override {
    const int64_t es = cache_ == DType::kE4M3 ? 1 : 2;
    if (up_.up || up_.engine) {
      // KV rows, q, W_UV read once; o [T, N * 128] written once in its kind (the unfused and
      // engine paths' bf16 intermediates are their overhead, not counted).
      int64_t values = 0, scales = 0;
      const int64_t T = B_ * SQ_, C = N_ * kMlaVHeadDim;
      if (up_.spec.kind == QuantKind::kNone) {
        values = T * C * 2;
      } else {
        (void)quant_output_bytes(up_.spec, T, C, &values, &scales);
      }
      return tokens_ * kMlaHeadDim * es + T * N_ * kMlaHeadDim * 2 +
             N_ * kMlaLatentDim * kMlaVHeadDim * 2 + values + scales;
    }
    return tokens_ * kMlaHeadDim * es + B_ * SQ_ * N_ * (kMlaHeadDim + kMlaLatentDim) * 2;
  }
  /// The KV rows and q (the read-mostly ceiling of the row; o_latent is the written rest).
  int64_t read_bytes() const override {
    const int64_t es = cache_ == DType::kE4M3 ? 1 : 2;
    return tokens_ * kMlaHeadDim * es + B_ * SQ_ * N_ * kMlaHeadDim * 2;
  }

  Status setup(int num_sets, cudaStream_t stream) override {
    sets_.clear();
    sets_.resize(num_sets);
    if (cache_ == DType::kE4M3) QFUSE_RETURN_IF_ERROR(device_scalar(0.05f, &k_scale_));
    const int64_t T = B_ * SQ_;
    const int64_t es = cache_ == DType::kE4M3 ? 1 : 2;
    size_t ws_bytes = 0;
    QFUSE_RETURN_IF_ERROR(mla_decode_workspace_size(B_, static_cast<int>(SQ_), static_cast<int>(N_),
                                                    opt_, &ws_bytes));
    std::mt19937_64 rng(7);
    for (int s = 0; s < num_sets; ++s) {
      Set& set = sets_[s];
      const int64_t cache_elems = physical_ * BS_ * kMlaHeadDim;
      QFUSE_RETURN_IF_ERROR(set.cache.allocate(cache_elems * es));
      if (cache_ == DType::kE4M3) {
        fill_fp8_kernel<<<4096, 256, 0, stream>>>(set.cache.as<uint8_t>(), cache_elems, 11 + s);
        QFUSE_CUDA_RETURN(cudaGetLastError());
      } else {
        QFUSE_RETURN_IF_ERROR(
            fill_random(set.cache.get(), DType::kBF16, cache_elems, 11 + s, stream));
      }
      QFUSE_RETURN_IF_ERROR(set.q.allocate(T * N_ * kMlaHeadDim * 2));
      QFUSE_RETURN_IF_ERROR(
          fill_random(set.q.get(), DType::kBF16, T * N_ * kMlaHeadDim, 5 + s, stream));
      QFUSE_RETURN_IF_ERROR(set.out.allocate(T * N_ * kMlaLatentDim * 2));
      QFUSE_RETURN_IF_ERROR(set.ws.allocate(ws_bytes));
      // A random permutation of the physical blocks over the requests (a pool: repeated), or
      // the blocks in order.
      std::vector<int32_t> ids(physical_);
      std::iota(ids.begin(), ids.end(), 0);
      if (pages_ != Pages::kContiguous) std::shuffle(ids.begin(), ids.end(), rng);
      std::vector<int32_t> table(B_ * max_blocks_, 0);
      int64_t next = 0;
      for (int64_t b = 0; b < B_; ++b)
        for (int64_t k = 0; k < (lens_[b] + BS_ - 1) / BS_; ++k)
          table[b * max_blocks_ + k] = ids[next++ % physical_];
      QFUSE_RETURN_IF_ERROR(set.table.allocate(table.size() * 4));
      QFUSE_CUDA_RETURN(
          cudaMemcpy(set.table.get(), table.data(), table.size() * 4, cudaMemcpyHostToDevice));
      QFUSE_RETURN_IF_ERROR(set.lens.allocate(B_ * 4));
      QFUSE_CUDA_RETURN(cudaMemcpy(set.lens.get(), lens_.data(), B_ * 4, cudaMemcpyHostToDevice));
      MlaDecodeArgs& a = set.args;
      a.q = TensorRef::contiguous(set.q.get(), DType::kBF16, {T, N_, kMlaHeadDim});
      a.cache = TensorRef::contiguous(set.cache.get(), cache_, {physical_, BS_, kMlaHeadDim});
      a.k_scale = cache_ == DType::kE4M3 ? k_scale_.as<float>() : nullptr;
      a.block_table = TensorRef::contiguous(set.table.get(), DType::kI32, {B_, max_blocks_});
      a.seq_lens = TensorRef::contiguous(set.lens.get(), DType::kI32, {B_});
      a.s_q = static_cast<int>(SQ_);
      a.softmax_scale = 1.0f / std::sqrt(192.0f);
      a.out.out = TensorRef::contiguous(set.out.get(), DType::kBF16, {T, N_, kMlaLatentDim});
      if (up_.engine) {
        // The decode writes o_latent [T, N, 512] bf16 (a.out as set above); the head GEMM
        // writes o bf16, the quantize op reads it.
        const int64_t wn = N_ * kMlaLatentDim * kMlaVHeadDim, C = N_ * kMlaVHeadDim;
        QFUSE_RETURN_IF_ERROR(set.w.allocate(wn * 2));
        QFUSE_RETURN_IF_ERROR(fill_random(set.w.get(), DType::kBF16, wn, 31 + s, stream));
        QFUSE_RETURN_IF_ERROR(set.o16.allocate(T * C * 2));
        set.x = TensorRef::contiguous(set.o16.get(), DType::kBF16, {T, C});
        if (given_.get() == nullptr)
          QFUSE_RETURN_IF_ERROR(device_scalar(bench_given_scale(up_.spec), &given_));
        QFUSE_RETURN_IF_ERROR(make_quant_buffers(up_.spec, T, C, given_.as<float>(), &set.quant));
        if (s == 0) QFUSE_RETURN_IF_ERROR(bmm_.init(T, N_));
      } else if (up_.up) {
        const int64_t wn = N_ * kMlaLatentDim * kMlaVHeadDim;
        QFUSE_RETURN_IF_ERROR(set.w.allocate(wn * 2));
        // NOTE: fill_random's bf16 values are O(1); W_UV's scale only moves the output's.
        QFUSE_RETURN_IF_ERROR(fill_random(set.w.get(), DType::kBF16, wn, 31 + s, stream));
        a.w_uv =
            TensorRef::contiguous(set.w.get(), DType::kBF16, {N_, kMlaLatentDim, kMlaVHeadDim});
        const int64_t C = N_ * kMlaVHeadDim;
        a.out.out = TensorRef::contiguous(set.out.get(), DType::kBF16, {T, C});
        if (up_.spec.kind != QuantKind::kNone) {
          if (given_.get() == nullptr)
            QFUSE_RETURN_IF_ERROR(device_scalar(bench_given_scale(up_.spec), &given_));
          QFUSE_RETURN_IF_ERROR(make_quant_buffers(up_.spec, T, C, given_.as<float>(), &set.quant));
          if (up_.unfused) {
            set.x = a.out.out;
          } else {
            a.out = set.quant.q;
          }
        }
      }
      set.mws = MlaWorkspace{set.ws.get(), ws_bytes};
      if (reuse_) QFUSE_RETURN_IF_ERROR(mla_decode_schedule(a, set.mws, opt_, &set.sched, stream));
    }
    QFUSE_CUDA_RETURN(cudaStreamSynchronize(stream));
    return Status::Ok();
  }

  Status launch(int set, cudaStream_t stream) override {
    MlaDecodeOptions opt = opt_;
    if (reuse_) opt.schedule = &sets_[set].sched;
    const Set& st = sets_[set];
    QFUSE_RETURN_IF_ERROR(mla_decode(st.args, st.mws, opt, stream));
    if (up_.engine) QFUSE_RETURN_IF_ERROR(bmm_.run(st.w.get(), st.out.get(), st.o16.get(), stream));
    if (up_.unfused || up_.engine) return quantize(st.x, st.quant.q, stream);
    return Status::Ok();
  }

 private:
  struct Set {
    DeviceBuffer cache, q, out, ws, table, lens, w;
    DeviceBuffer o16;    // engine: the head GEMM's bf16 o
    QuantBuffers quant;  // the up-projection's quantized output
    TensorRef x;         // unfused / engine: the bf16 o the quantize op reads
    MlaDecodeArgs args;
    MlaWorkspace mws;
    MlaSchedule sched;  // reuse_: computed once in setup
  };
  DType cache_;
  bool reuse_;
  Pages pages_;
  UpOut up_;
  DeviceBuffer given_;  // the up-projection's per-tensor / NVFP4 global scale
  HeadBmm bmm_;         // engine: the per-head GEMM
  MlaDecodeOptions opt_;
  int64_t B_, N_, SQ_, BS_;
  std::vector<int> lens_;
  int64_t tokens_ = 0, blocks_ = 0, max_blocks_ = 0;
  int64_t physical_ = 0;  // blocks allocated: blocks_, or the L2 pool's
  DeviceBuffer k_scale_;
  std::vector<Set> sets_;
};

__global__ void read_only_kernel(const uint4* __restrict__ p, int64_t n, uint32_t* sink) {
  uint32_t acc = 0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const uint4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) sink[0] = acc;  // keeps the loads
}

class ReadOnlyInstance final : public Instance {
 public:
  explicit ReadOnlyInstance(int64_t mb) : bytes_(mb << 20) {}
  int64_t min_bytes() const override { return bytes_; }
  int64_t read_bytes() const override { return bytes_; }
  Status setup(int, cudaStream_t stream) override {
    QFUSE_RETURN_IF_ERROR(buf_.allocate(bytes_));
    QFUSE_RETURN_IF_ERROR(fill_random(buf_.get(), DType::kF32, bytes_ / 4, 3, stream));
    QFUSE_RETURN_IF_ERROR(sink_.allocate(4));
    int dev = 0, sms = 0;
    QFUSE_CUDA_RETURN(cudaGetDevice(&dev));
    QFUSE_CUDA_RETURN(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    blocks_ = sms * 8;
    return Status::Ok();
  }
  Status launch(int, cudaStream_t stream) override {
    read_only_kernel<<<blocks_, 256, 0, stream>>>(buf_.as<uint4>(), bytes_ / 16,
                                                  sink_.as<uint32_t>());
    return cuda_status(cudaGetLastError(), "read_only_kernel");
  }

 private:
  int64_t bytes_;
  int blocks_ = 0;
  DeviceBuffer buf_, sink_;
};

Status get_shape(const Shape& s, int64_t* B, int64_t* S, int64_t* N, int64_t* SQ, int64_t* BS) {
  QFUSE_RETURN_IF_ERROR(s.get("B", B));
  QFUSE_RETURN_IF_ERROR(s.get("S", S));
  QFUSE_RETURN_IF_ERROR(s.get("N", N));
  QFUSE_RETURN_IF_ERROR(s.get("SQ", SQ));
  return s.get("BS", BS);
}

Routine make_routine(const std::string& name, DType cache, MlaSplitMode split, MlaKernel kernel,
                     Lens lens, const std::string& what, bool reuse = false,
                     Pages pages = Pages::kScattered, UpOut up = {}) {
  Routine r;
  r.name = name;
  r.description = what;
  r.make = [=](const Shape& s, std::unique_ptr<Instance>* out) {
    int64_t B, S, N, SQ, BS;
    QFUSE_RETURN_IF_ERROR(get_shape(s, &B, &S, &N, &SQ, &BS));
    *out = std::make_unique<MlaInstance>(cache, split, kernel, lens, reuse, pages, up, B, S, N, SQ,
                                         BS);
    return Status::Ok();
  };
  return r;
}

Shape shape(int64_t B, int64_t S, int64_t N, int64_t SQ, int64_t BS = 64) {
  return Shape{{{"B", B}, {"S", S}, {"N", N}, {"SQ", SQ}, {"BS", BS}}};
}

}  // namespace

void add_routines(ToolRegistrar& r) {
  // Each routine is also an --op (one shape: qfuse bench --op mla_decode/fp8 --dim S=16384 ...;
  // QFUSE_PROFILE_CASES=mla scripts/profile.sh), the defaults the memory-bound bar shape.
  const auto add = [&r](Routine routine) {
    r.add_bench_op(routine_op(routine.name, routine.description, shape(128, 4096, 16, 1),
                              "it writes bf16 o_latent"));
    r.add_routine(std::move(routine));
  };
  for (DType c : {DType::kBF16, DType::kE4M3}) {
    const std::string cn = c == DType::kBF16 ? "bf16" : "fp8";
    const std::string cd = c == DType::kBF16 ? "bf16 cache" : "fp8 cache (k_scale)";
    add(make_routine("mla_decode/" + cn, c, MlaSplitMode::kAuto, MlaKernel::kAuto, Lens::kEqual,
                     "MLA decode, " + cd + ", split-KV + combine"));
    add(make_routine("mla_decode/" + cn + ":whole", c, MlaSplitMode::kNone, MlaKernel::kAuto,
                     Lens::kEqual, "MLA decode, " + cd + ", one block per request"));
    add(make_routine("mla_decode/" + cn + ":simple", c, MlaSplitMode::kAuto, MlaKernel::kSimple,
                     Lens::kEqual, "MLA decode, " + cd + ", CUDA-core kernel"));
    add(make_routine("mla_decode/" + cn + ":layer", c, MlaSplitMode::kAuto, MlaKernel::kAuto,
                     Lens::kEqual,
                     "MLA decode, " + cd + ", one layer of a step: the schedule computed once",
                     /*reuse=*/true));
    add(make_routine("mla_decode_mixed/" + cn, c, MlaSplitMode::kAuto, MlaKernel::kAuto,
                     Lens::kMixed, "MLA decode, " + cd + ", lengths log-spread over [1, S]"));
    add(make_routine("mla_decode_even/" + cn, c, MlaSplitMode::kAuto, MlaKernel::kAuto, Lens::kEven,
                     "MLA decode, " + cd + ", the mixed batch's tokens in equal requests"));
    add(make_routine("mla_decode_l2/" + cn, c, MlaSplitMode::kAuto, MlaKernel::kAuto, Lens::kEqual,
                     "MLA decode, " + cd + ", pages from an L2-resident pool (the kernel's rate)",
                     /*reuse=*/false, Pages::kL2Pool));
    add(make_routine("mla_decode_seq/" + cn, c, MlaSplitMode::kAuto, MlaKernel::kAuto, Lens::kEqual,
                     "MLA decode, " + cd + ", each request's pages contiguous and in order",
                     /*reuse=*/false, Pages::kContiguous));
  }
  for (DType c : {DType::kBF16, DType::kE4M3}) {
    const std::string cn = c == DType::kBF16 ? "bf16" : "fp8";
    const struct {
      const char* name;
      UpOut out;
      const char* what;
    } outs[] = {
        {"bf16", {true, QuantSpec::none()}, "bf16"},
        {"fp8", {true, QuantSpec::fp8_per_tensor()}, "FP8 per-tensor, fused"},
        {"nvfp4", {true, QuantSpec::nvfp4()}, "NVFP4 (swizzled), fused"},
        {"fp8_token", {true, QuantSpec::fp8_per_token()}, "FP8 per-token, fused (two launches)"},
        {"unfused_fp8", {true, QuantSpec::fp8_per_tensor(), true}, "bf16 then quantize to FP8"},
        {"unfused_nvfp4", {true, QuantSpec::nvfp4(), true}, "bf16 then quantize to NVFP4"},
        {"engine_fp8",
         {false, QuantSpec::fp8_per_tensor(), false, true},
         "the reference engine's path: bf16 o_latent, a cuBLASLt batched GEMM, quantize to FP8"},
    };
    for (const auto& o : outs)
      add(make_routine("mla_decode_up/" + cn + ":" + o.name, c, MlaSplitMode::kAuto,
                       MlaKernel::kAuto, Lens::kEqual,
                       "MLA decode + up-projection, " + cn + " cache, o [T, N * 128] " + o.what,
                       /*reuse=*/false, Pages::kScattered, o.out));
  }
  Routine ro;
  ro.name = "read_only";
  ro.description = "read-only ceiling: one pass over MB MiB";
  ro.make = [](const Shape& s, std::unique_ptr<Instance>* out) {
    int64_t mb;
    QFUSE_RETURN_IF_ERROR(s.get("MB", &mb));
    *out = std::make_unique<ReadOnlyInstance>(mb);
    return Status::Ok();
  };
  r.add_routine(ro);

  Suite s{"mla_decode", "", {}};
  s.cases.push_back({"ceiling", "read_only", Shape{{{"MB", 1024}}}});
  for (const char* c : {"bf16", "fp8"}) {
    const std::string cn = c;
    for (int64_t S : {4096, 16384}) {
      s.cases.push_back({"memory-bound N16 SQ1 B128", "mla_decode/" + cn, shape(128, S, 16, 1)});
      s.cases.push_back(
          {"memory-bound N16 SQ1 B128", "mla_decode/" + cn + ":whole", shape(128, S, 16, 1)});
      s.cases.push_back(
          {"memory-bound N16 SQ1 B128", "mla_decode/" + cn + ":layer", shape(128, S, 16, 1)});
    }
    // NOTE: the :layer row right after the split row of its shape: placed after the 16k row it
    // measured 4-5 % above the split row, and 4 % below it alone (bench/NOTES.md M28).
    for (int64_t S : {4096, 16384}) {
      s.cases.push_back({"compute-bound N128 SQ2 B64", "mla_decode/" + cn, shape(64, S, 128, 2)});
      if (S == 4096)
        s.cases.push_back(
            {"compute-bound N128 SQ2 B64", "mla_decode/" + cn + ":layer", shape(64, S, 128, 2)});
    }
    s.cases.push_back({"mixed 1..32k vs even", "mla_decode_mixed/" + cn, shape(128, 32768, 16, 1)});
    s.cases.push_back({"mixed 1..32k vs even", "mla_decode_even/" + cn, shape(128, 32768, 16, 1)});
    s.cases.push_back({"mixed 1..32k vs even", "mla_decode_mixed/" + cn, shape(64, 32768, 128, 2)});
    s.cases.push_back({"mixed 1..32k vs even", "mla_decode_even/" + cn, shape(64, 32768, 128, 2)});
  }
  r.add_suite_cases("mla_decode",
                    "issue 13's bars: MLA decode memory-bound (N 16, s_q 1, B 128) and "
                    "compute-bound (N 128, s_q 2, B 64) at 4k / 16k tokens, bf16 and fp8 caches, a "
                    "mixed batch vs its even twin",
                    std::move(s.cases));
}

void add_mla_decode_demo(ToolRegistrar& r);  // demo.cpp

namespace {
void add_up_suite(ToolRegistrar& r) {
  Suite s{"mla_up", "", {}};
  for (const char* c : {"fp8", "bf16"})
    for (const auto& [what, sh] :
         {std::pair<const char*, Shape>{"memory-bound N16 SQ1 B128", shape(128, 4096, 16, 1)},
          {"memory-bound N16 SQ1 B128", shape(128, 16384, 16, 1)},
          {"compute-bound N128 SQ2 B64", shape(64, 4096, 128, 2)},
          {"compute-bound N128 SQ2 B64", shape(64, 16384, 128, 2)}})
      for (const char* o :
           {"bf16", "fp8", "nvfp4", "unfused_fp8", "unfused_nvfp4", "engine_fp8", "fp8_token"})
        s.cases.push_back({what, std::string("mla_decode_up/") + c + ":" + o, sh});
  r.add_suite_cases("mla_up",
                    "issue 14's bars: the decode step with the fused up-projection writing bf16, "
                    "FP8 per-tensor, NVFP4 and FP8 per-token against bf16 then the quantize op, at "
                    "issue 13's memory-bound and compute-bound shapes",
                    std::move(s.cases));
}

void add_chain_suite(ToolRegistrar& r) {
  Suite s{"mla_chain", "", {}};
  for (const char* c : {"fp8", "bf16"})
    for (int64_t S : {4096, 16384}) {
      const std::string cn = c;
      s.cases.push_back({"L2-resident N16 SQ1 B128", "mla_decode_l2/" + cn, shape(128, S, 16, 1)});
      s.cases.push_back({"from DRAM N16 SQ1 B128", "mla_decode/" + cn, shape(128, S, 16, 1)});
      s.cases.push_back({"from DRAM, pages in order, N16 SQ1 B128", "mla_decode_seq/" + cn,
                         shape(128, S, 16, 1)});
    }
  s.cases.push_back({"L2-resident N16 SQ1 B128", "mla_decode_l2/fp8", shape(128, 32768, 16, 1)});
  r.add_suite_cases("mla_chain",
                    "MLA decode's own rate: the memory-bound bar shapes with pages from an "
                    "L2-resident pool beside the same shapes from DRAM (bench/NOTES.md M39)",
                    std::move(s.cases));
}
}  // namespace

}  // namespace qfuse::bench

QFUSE_REGISTER_TOOL_FAMILY(mla_decode) {
  qfuse::bench::add_routines(r);
  qfuse::bench::add_chain_suite(r);
  qfuse::bench::add_up_suite(r);
  qfuse::bench::add_mla_decode_demo(r);
}
