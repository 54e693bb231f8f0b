// The bandwidth ceilings of a benchmark run (harness.h, "ceilings"): the GPU warm-up, the copy
// ceiling (eager cudaMemcpyAsync and copy kernels) and the read-mostly kernel.
//
// Both kernels move data in warp steps: step s is kU x 512 contiguous bytes, lane l loading the
// 16 bytes at l, l + 32, ... of it (every load instruction of a warp covers 512 contiguous
// bytes), all kU loads issued before the first use. Warps take steps s = warp, warp + warps, ...
// over a grid of (SM count) x (blocks per SM the kernel's occupancy allows), so consecutive warps
// stream consecutive memory. Two more copy forms ask how cudaMemcpyAsync beats these (bench/
// NOTES.md V34): each warp streaming its own contiguous run, and TMA bulk copies through shared
// memory.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "common/sm90.cuh"
#include "qfuse/core/cuda_check.h"

namespace qfuse::bench {
namespace {

constexpr int kThreads = 256;
constexpr int kLanes = 32;
constexpr int kWarpsPerBlock = kThreads / kLanes;
// NOTE: with no minimum, ptxas keeps the kernels near 32 registers by sinking later loads below
// the first uses, so fewer than kU loads are in flight; 4 blocks of 256 (64 registers) keeps all
// kU loads ahead of the first use (checked in the SASS) and still fills half the SM's threads.
constexpr int kMinBlocks = 4;
__host__ __device__ constexpr int64_t kStepVectors(int u) {
  return int64_t{u} * kLanes;
}  // 16-byte vectors a step

template <bool kStreaming>
__device__ __forceinline__ uint4 load16(const uint4* p) {
  if constexpr (kStreaming) {
    return __ldcs(p);  // ld.global.cs: evict-first, the data is not used again
  } else {
    return *p;
  }
}

template <bool kStreaming>
__device__ __forceinline__ void store16(uint4* p, const uint4& v) {
  if constexpr (kStreaming) {
    __stcs(p, v);  // st.global.cs
  } else {
    *p = v;
  }
}

__device__ __forceinline__ uint4 xor16(const uint4& a, const uint4& b) {
  return make_uint4(a.x ^ b.x, a.y ^ b.y, a.z ^ b.z, a.w ^ b.w);
}

/// Step s of a warp's copy: kU x 512 bytes, every load issued before the first store.
template <int kU, bool kStreaming>
__device__ __forceinline__ void copy_step(const uint4* __restrict__ src, uint4* __restrict__ dst,
                                          int64_t s, int lane) {
  const int64_t base = s * kStepVectors(kU) + lane;
  uint4 v[kU];
#pragma unroll
  for (int j = 0; j < kU; ++j) v[j] = load16<kStreaming>(src + base + j * kLanes);
#pragma unroll
  for (int j = 0; j < kU; ++j) store16<kStreaming>(dst + base + j * kLanes, v[j]);
}

/// dst = src over `steps` steps of kU x 512 bytes.
template <int kU, bool kStreaming>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    copy_kernel(const uint4* __restrict__ src, uint4* __restrict__ dst, int64_t steps) {
  const int lane = threadIdx.x % kLanes;
  const int64_t warps = int64_t{gridDim.x} * kWarpsPerBlock;
  for (int64_t s = int64_t{blockIdx.x} * kWarpsPerBlock + threadIdx.x / kLanes; s < steps;
       s += warps)
    copy_step<kU, kStreaming>(src, dst, s, lane);
}

/// copy_kernel's steps, each warp taking one contiguous run of them (warp w: steps
/// [w steps / warps, (w + 1) steps / warps)) instead of striding over the grid: whether DRAM
/// prefers each warp streaming its own region to all warps streaming one window.
template <int kU>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    copy_span_kernel(const uint4* __restrict__ src, uint4* __restrict__ dst, int64_t steps) {
  const int lane = threadIdx.x % kLanes;
  const int64_t warps = int64_t{gridDim.x} * kWarpsPerBlock;
  const int64_t w = int64_t{blockIdx.x} * kWarpsPerBlock + threadIdx.x / kLanes;
  const int64_t end = (w + 1) * steps / warps;
  for (int64_t s = w * steps / warps; s < end; ++s) copy_step<kU, false>(src, dst, s, lane);
}

/// The bulk-copy form: one thread a block moves kBulkChunk-byte chunks (blockIdx.x,
/// + gridDim.x, ...) through a ring of kBulkStages shared-memory buffers with the TMA unit's 1-D
/// bulk copies (cp.async.bulk global -> shared on an mbarrier, shared -> global in bulk groups),
/// no registers in the path: what the copy engine inside the SM reaches.
constexpr int kBulkChunk = 16384, kBulkStages = 12;
constexpr int kBulkSmem = kBulkChunk * kBulkStages;

__global__ void __launch_bounds__(32, 1)
    copy_bulk_kernel(const uint4* __restrict__ src, uint4* __restrict__ dst, int64_t chunks) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) uint8_t ring[];
  __shared__ uint64_t full[kBulkStages];
  if (threadIdx.x != 0) return;
  for (int s = 0; s < kBulkStages; ++s) sm90::mbar_init(full + s, 1);
  sm90::mbar_fence_init();
  const int64_t n = chunks > blockIdx.x ? (chunks - 1 - blockIdx.x) / gridDim.x + 1 : 0;
  const char* in = reinterpret_cast<const char*>(src);
  char* out = reinterpret_cast<char*>(dst);
  const auto at = [&](int64_t i) { return (blockIdx.x + i * gridDim.x) * kBulkChunk; };
  const auto load = [&](int64_t i) {
    uint64_t* bar = full + i % kBulkStages;
    sm90::mbar_arrive_expect_tx(bar, kBulkChunk);
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, "
        "[%3];\n" ::"r"(sm90::smem_addr(ring + (i % kBulkStages) * kBulkChunk)),
        "l"(in + at(i)), "r"(kBulkChunk), "r"(sm90::smem_addr(bar))
        : "memory");
  };
  for (int64_t i = 0; i < n && i < kBulkStages; ++i) load(i);
  for (int64_t i = 0; i < n; ++i) {
    sm90::mbar_wait(full + i % kBulkStages, static_cast<uint32_t>((i / kBulkStages) & 1));
    asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;\n" ::"l"(out + at(i)),
                 "r"(sm90::smem_addr(ring + (i % kBulkStages) * kBulkChunk)), "r"(kBulkChunk)
                 : "memory");
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
    // Chunk i - 1's buffer takes chunk i - 1 + stages once its store has read it.
    if (i >= 1 && i - 1 + kBulkStages < n) {
      asm volatile("cp.async.bulk.wait_group.read 1;\n" ::: "memory");
      load(i - 1 + kBulkStages);
    }
  }
  asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
#endif
}

/// Reads `steps` steps of kU x 512 bytes; after step s, writes the 512-byte blocks
/// [w(s), w(s + 1)) of dst, w(s) = floor(s * write_frac / 2^32), so writes are spread evenly
/// over the reads (write_frac = 2^32 * kU / ratio: reads:writes = ratio). What is written is
/// the XOR of the step's loads, so no load is dead; with write_frac = 0 (read-only) the loads
/// feed a running XOR that is stored to `sink` only if all its bits are set (for random data,
/// never: the store is there so that the compiler keeps the loads).
template <int kU, bool kStreaming>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    read_mostly_kernel(const uint4* __restrict__ src, uint4* __restrict__ dst, int64_t steps,
                       uint64_t write_frac, uint4* __restrict__ sink) {
  const int lane = threadIdx.x % kLanes;
  const int64_t warps = int64_t{gridDim.x} * kWarpsPerBlock;
  uint4 acc = make_uint4(0, 0, 0, 0);
  for (int64_t s = int64_t{blockIdx.x} * kWarpsPerBlock + threadIdx.x / kLanes; s < steps;
       s += warps) {
    const int64_t base = s * kStepVectors(kU) + lane;
    uint4 v[kU];
#pragma unroll
    for (int j = 0; j < kU; ++j) v[j] = load16<kStreaming>(src + base + j * kLanes);
    uint4 x = v[0];
#pragma unroll
    for (int j = 1; j < kU; ++j) x = xor16(x, v[j]);
    const uint64_t w0 = (static_cast<uint64_t>(s) * write_frac) >> 32;
    const uint64_t w1 = (static_cast<uint64_t>(s + 1) * write_frac) >> 32;
    for (uint64_t w = w0; w < w1; ++w) store16<kStreaming>(dst + w * kLanes + lane, x);
    acc = xor16(acc, x);
  }
  if ((acc.x & acc.y & acc.z & acc.w) == 0xFFFFFFFFu) sink[threadIdx.x] = acc;
}

/// Counts the 16-byte vectors where a and b differ.
__global__ void count_mismatches_kernel(const uint4* a, const uint4* b, int64_t n,
                                        unsigned long long* mismatches) {
  unsigned long long local = 0;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const uint4 x = a[i], y = b[i];
    local += (x.x != y.x) | (x.y != y.y) | (x.z != y.z) | (x.w != y.w);
  }
  if (local != 0) atomicAdd(mismatches, local);
}

/// Counts the 16-byte vectors of a that are not all zero.
__global__ void count_nonzero_kernel(const uint4* a, int64_t n, unsigned long long* nonzero) {
  unsigned long long local = 0;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const uint4 x = a[i];
    local += (x.x | x.y | x.z | x.w) != 0;
  }
  if (local != 0) atomicAdd(nonzero, local);
}

/// Runs `kernel` (one of the counting kernels above, bound to its arguments by `launch`) and
/// returns its count.
template <class Launch>
Status device_count(cudaStream_t stream, Launch launch, unsigned long long* count) {
  DeviceBuffer d;
  QFUSE_RETURN_IF_ERROR(d.allocate(sizeof(unsigned long long)));
  QFUSE_CUDA_RETURN(cudaMemsetAsync(d.get(), 0, sizeof(unsigned long long), stream));
  launch(d.as<unsigned long long>());
  QFUSE_CHECK_LAUNCH("count kernel");
  QFUSE_CUDA_RETURN(cudaMemcpyAsync(count, d.get(), sizeof *count, cudaMemcpyDeviceToHost, stream));
  QFUSE_CUDA_RETURN(cudaStreamSynchronize(stream));
  return Status::Ok();
}

/// A kernel form: vectors a lane loads per step, and the cache hints.
/// layout: kStride (warps stride over the grid's steps), kSpan (copy_span_kernel: a warp's own
/// contiguous run), kBulk (copy_bulk_kernel: TMA bulk copies; u and streaming unused). The
/// read-mostly kernel has the kStride forms only.
enum class Layout { kStride, kSpan, kBulk };
struct KernelForm {
  int u;
  bool streaming;
  Layout layout = Layout::kStride;
};
constexpr KernelForm kForms[] = {{4, false}, {8, false}, {4, true}, {8, true}};
constexpr KernelForm kCopyForms[] = {{4, false},
                                     {8, false},
                                     {4, true},
                                     {8, true},
                                     {8, false, Layout::kSpan},
                                     {0, false, Layout::kBulk}};

int threads_of(const KernelForm& f) {
  return f.layout == Layout::kBulk ? 32 : kThreads;
}
int smem_of(const KernelForm& f) {
  return f.layout == Layout::kBulk ? kBulkSmem : 0;
}
/// Bytes a step (a warp's kU x 512, or a bulk chunk).
int64_t step_bytes(const KernelForm& f) {
  return f.layout == Layout::kBulk ? kBulkChunk : kStepVectors(f.u) * 16;
}

template <class Fn>
Status blocks_for(Fn kernel, int sm_count, int* blocks, int threads = kThreads, int smem = 0) {
  if (smem > 48 * 1024)
    QFUSE_CUDA_RETURN(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  int per_sm = 0;
  QFUSE_CUDA_RETURN(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  *blocks = sm_count * std::max(per_sm, 1);
  return Status::Ok();
}

using CopyFn = void (*)(const uint4*, uint4*, int64_t);
using ReadMostlyFn = void (*)(const uint4*, uint4*, int64_t, uint64_t, uint4*);

CopyFn copy_fn(const KernelForm& f) {
  if (f.layout == Layout::kBulk) return copy_bulk_kernel;
  if (f.layout == Layout::kSpan) return f.u == 4 ? copy_span_kernel<4> : copy_span_kernel<8>;
  if (f.u == 4) return f.streaming ? copy_kernel<4, true> : copy_kernel<4, false>;
  return f.streaming ? copy_kernel<8, true> : copy_kernel<8, false>;
}

ReadMostlyFn read_mostly_fn(const KernelForm& f) {
  if (f.u == 4) return f.streaming ? read_mostly_kernel<4, true> : read_mostly_kernel<4, false>;
  return f.streaming ? read_mostly_kernel<8, true> : read_mostly_kernel<8, false>;
}

std::string form_name(const char* what, const KernelForm& f, int blocks, int sm_count) {
  const std::string per_sm =
      std::to_string(blocks / sm_count) + " blocks/SM x " + std::to_string(threads_of(f));
  if (f.layout == Layout::kBulk)
    return std::string(what) + ", TMA bulk copies of " + std::to_string(kBulkChunk / 1024) +
           " KiB through " + std::to_string(kBulkStages) + " shared buffers, " + per_sm;
  return std::string(what) + ", " + std::to_string(f.u) + " x 16 B loads a lane in flight, " +
         (f.streaming ? "streaming (.cs) hints" : "default caching") +
         (f.layout == Layout::kSpan ? ", a contiguous run a warp" : "") + ", " + per_sm;
}

/// The memcpy form: one cudaMemcpyAsync device to device per call.
class MemcpyInstance final : public Instance {
 public:
  explicit MemcpyInstance(int64_t bytes) : bytes_(bytes) {}
  int64_t min_bytes() const override { return 2 * bytes_; }
  int64_t read_bytes() const override { return bytes_; }
  Status setup(int num_sets, cudaStream_t stream) override {
    src_.resize(num_sets);
    dst_.resize(num_sets);
    for (int s = 0; s < num_sets; ++s) {
      QFUSE_RETURN_IF_ERROR(src_[s].allocate(bytes_));
      QFUSE_RETURN_IF_ERROR(dst_[s].allocate(bytes_));
      QFUSE_RETURN_IF_ERROR(fill_random(src_[s].get(), DType::kF32, bytes_ / 4, 1000 + s, stream));
      QFUSE_CUDA_RETURN(cudaMemsetAsync(dst_[s].get(), 0, bytes_, stream));
    }
    return Status::Ok();
  }
  Status launch(int set, cudaStream_t stream) override {
    QFUSE_CUDA_RETURN(cudaMemcpyAsync(dst_[set].get(), src_[set].get(), bytes_,
                                      cudaMemcpyDeviceToDevice, stream));
    return Status::Ok();
  }

 private:
  int64_t bytes_;
  std::vector<DeviceBuffer> src_, dst_;
};

/// A copy kernel form over buffers of `bytes` (a multiple of kU x 512).
class CopyKernelInstance final : public Instance {
 public:
  CopyKernelInstance(int64_t bytes, KernelForm form, int blocks)
      : bytes_(bytes), form_(form), blocks_(blocks) {}
  int64_t min_bytes() const override { return 2 * bytes_; }
  int64_t read_bytes() const override { return bytes_; }
  Status setup(int num_sets, cudaStream_t stream) override {
    if (bytes_ % step_bytes(form_) != 0)
      return Status::InvalidArgument("copy bytes", "a multiple of the kernel's step",
                                     std::to_string(bytes_));
    src_.resize(num_sets);
    dst_.resize(num_sets);
    for (int s = 0; s < num_sets; ++s) {
      QFUSE_RETURN_IF_ERROR(src_[s].allocate(bytes_));
      QFUSE_RETURN_IF_ERROR(dst_[s].allocate(bytes_));
      QFUSE_RETURN_IF_ERROR(fill_random(src_[s].get(), DType::kF32, bytes_ / 4, 2000 + s, stream));
      QFUSE_CUDA_RETURN(cudaMemsetAsync(dst_[s].get(), 0, bytes_, stream));
    }
    return Status::Ok();
  }
  Status launch(int set, cudaStream_t stream) override {
    const int64_t steps = bytes_ / step_bytes(form_);
    copy_fn(form_)<<<blocks_, threads_of(form_), smem_of(form_), stream>>>(
        src_[set].as<uint4>(), dst_[set].as<uint4>(), steps);
    QFUSE_CHECK_LAUNCH("copy_kernel");
    return Status::Ok();
  }
  /// Ok when every set's destination equals its source.
  Status verify(cudaStream_t stream) const {
    for (size_t s = 0; s < src_.size(); ++s) {
      unsigned long long n = 0;
      QFUSE_RETURN_IF_ERROR(device_count(
          stream,
          [&](unsigned long long* count) {
            count_mismatches_kernel<<<1024, 256, 0, stream>>>(
                src_[s].as<uint4>(), dst_[s].as<uint4>(), bytes_ / 16, count);
          },
          &n));
      if (n != 0)
        return Status(StatusCode::kInternal, "copy kernel: " + std::to_string(n) + " of " +
                                                 std::to_string(bytes_ / 16) +
                                                 " 16-byte vectors differ from the source");
    }
    return Status::Ok();
  }

 private:
  int64_t bytes_;
  KernelForm form_;
  int blocks_;
  std::vector<DeviceBuffer> src_, dst_;
};

/// The read-mostly kernel: reads `read_bytes` (a multiple of kU x 512) and writes them over
/// `ratio` (+inf: nothing), in 512-byte blocks.
class ReadMostlyInstance final : public Instance {
 public:
  static constexpr int64_t kGuardBytes = 4096;  // after the written bytes, never written

  ReadMostlyInstance(int64_t read_bytes, double ratio, KernelForm form, int blocks)
      : read_(read_bytes), form_(form), blocks_(blocks) {
    steps_ = read_ / (kStepVectors(form_.u) * 16);
    // NOTE: 2^32 * kU / ratio in 32.32 fixed point; (steps * frac) stays below 2^64 because
    // steps < 2^26 and frac <= kU * 2^32 for ratio >= 1.
    frac_ = std::isinf(ratio)
                ? 0
                : static_cast<uint64_t>(std::llround(std::ldexp(form_.u / ratio, 32)));
    write_blocks_ = static_cast<int64_t>((static_cast<uint64_t>(steps_) * frac_) >> 32);
  }
  int64_t min_bytes() const override { return read_ + written(); }
  int64_t read_bytes() const override { return read_; }
  int64_t written() const { return write_blocks_ * kLanes * 16; }
  Status setup(int num_sets, cudaStream_t stream) override {
    if (read_ % (kStepVectors(form_.u) * 16) != 0 || steps_ >= (int64_t{1} << 26))
      return Status::InvalidArgument("read-mostly bytes", "a multiple of the step, < 2^26 steps",
                                     std::to_string(read_));
    src_.resize(num_sets);
    dst_.resize(num_sets);
    QFUSE_RETURN_IF_ERROR(sink_.allocate(kThreads * sizeof(uint4)));
    for (int s = 0; s < num_sets; ++s) {
      QFUSE_RETURN_IF_ERROR(src_[s].allocate(read_));
      QFUSE_RETURN_IF_ERROR(dst_[s].allocate(written() + kGuardBytes));
      QFUSE_RETURN_IF_ERROR(fill_random(src_[s].get(), DType::kF32, read_ / 4, 3000 + s, stream));
    }
    return Status::Ok();
  }
  /// Ok when one call on set 0 writes every 16 bytes of [0, written()) and nothing of the guard
  /// bytes after it (the data written is the XOR of random loads: all-zero with probability
  /// 2^-128 per vector).
  Status verify(cudaStream_t stream) {
    const DeviceBuffer& dst = dst_.at(0);
    QFUSE_CUDA_RETURN(cudaMemsetAsync(dst.get(), 0, dst.bytes(), stream));
    QFUSE_RETURN_IF_ERROR(launch(0, stream));
    unsigned long long in = 0, guard = 0;
    const int64_t n = written() / 16;
    QFUSE_RETURN_IF_ERROR(device_count(
        stream,
        [&](unsigned long long* count) {
          count_nonzero_kernel<<<1024, 256, 0, stream>>>(dst.as<uint4>(), n, count);
        },
        &in));
    QFUSE_RETURN_IF_ERROR(device_count(
        stream,
        [&](unsigned long long* count) {
          count_nonzero_kernel<<<1, 256, 0, stream>>>(dst.as<uint4>() + n, kGuardBytes / 16, count);
        },
        &guard));
    if (in != static_cast<unsigned long long>(n) || guard != 0)
      return Status(StatusCode::kInternal, "read-mostly kernel: wrote " + std::to_string(in) +
                                               " of its " + std::to_string(n) +
                                               " 16-byte vectors and " + std::to_string(guard) +
                                               " past them");
    return Status::Ok();
  }
  Status launch(int set, cudaStream_t stream) override {
    read_mostly_fn(form_)<<<blocks_, kThreads, 0, stream>>>(
        src_[set].as<uint4>(), dst_[set].as<uint4>(), steps_, frac_, sink_.as<uint4>());
    QFUSE_CHECK_LAUNCH("read_mostly_kernel");
    return Status::Ok();
  }

 private:
  int64_t read_;
  KernelForm form_;
  int blocks_;
  int64_t steps_ = 0;
  uint64_t frac_ = 0;
  int64_t write_blocks_ = 0;
  std::vector<DeviceBuffer> src_, dst_;
  DeviceBuffer sink_;
};

const CeilingForm& fastest(const std::vector<CeilingForm>& forms) {
  return *std::max_element(forms.begin(), forms.end(), [](const auto& a, const auto& b) {
    return a.timing.gbps() < b.timing.gbps();
  });
}

}  // namespace

Status warm_up_gpu(double seconds, cudaStream_t stream) {
  if (seconds <= 0.0) return Status::Ok();
  DeviceInfo dev;
  QFUSE_RETURN_IF_ERROR(current_device_info(&dev));
  const KernelForm form{8, false};
  int blocks = 0;
  QFUSE_RETURN_IF_ERROR(blocks_for(copy_fn(form), dev.sm_count, &blocks));
  CopyKernelInstance copy(kCeilingCopyBytes, form, blocks);
  QFUSE_RETURN_IF_ERROR(copy.setup(1, stream));
  QFUSE_CUDA_RETURN(cudaDeviceSynchronize());
  const auto start = std::chrono::steady_clock::now();
  // NOTE: batches of 8 launches (~1 ms at 4 TB/s), so the wall clock is checked often enough
  // without the GPU idling between checks for long.
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() <
         seconds) {
    for (int i = 0; i < 8; ++i) QFUSE_RETURN_IF_ERROR(copy.launch(0, stream));
    QFUSE_CUDA_RETURN(cudaStreamSynchronize(stream));
  }
  return Status::Ok();
}

const CeilingForm& CopyCeiling::best() const {
  if (kernels.empty()) return memcpy;
  const CeilingForm& k = fastest(kernels);
  return k.timing.gbps() > memcpy.timing.gbps() ? k : memcpy;
}

const CeilingForm& ReadMostlyCeiling::best() const {
  return fastest(forms);
}

Status measure_copy_ceiling(const TimingOptions& opt, cudaStream_t stream, CopyCeiling* out) {
  DeviceInfo dev;
  QFUSE_RETURN_IF_ERROR(current_device_info(&dev));
  CopyCeiling c;
  {
    MemcpyInstance memcpy(kCeilingCopyBytes);
    c.memcpy.form = "cudaMemcpyAsync device to device, eager";
    QFUSE_RETURN_IF_ERROR(measure_eager(memcpy, opt, stream, &c.memcpy.timing));
  }
  for (const KernelForm& f : kCopyForms) {
    int blocks = 0;
    QFUSE_RETURN_IF_ERROR(blocks_for(copy_fn(f), dev.sm_count, &blocks, threads_of(f), smem_of(f)));
    CopyKernelInstance kernel(kCeilingCopyBytes, f, blocks);
    CeilingForm form{form_name("copy kernel", f, blocks, dev.sm_count), {}};
    QFUSE_RETURN_IF_ERROR(measure(kernel, opt, stream, &form.timing));
    QFUSE_RETURN_IF_ERROR(kernel.verify(stream));
    c.kernels.push_back(std::move(form));
  }
  *out = std::move(c);
  return Status::Ok();
}

double ceiling_ratio(int64_t read_bytes, int64_t write_bytes) {
  if (read_bytes < 0 || write_bytes < 0) return 0.0;
  if (write_bytes == 0) return std::numeric_limits<double>::infinity();
  const double r = static_cast<double>(read_bytes) / static_cast<double>(write_bytes);
  if (r < 1.0) return 0.0;
  if (r < 8.0) return std::max(1.0, std::round(r * 4.0) / 4.0);
  if (r < 64.0) return std::round(r);
  return std::numeric_limits<double>::infinity();
}

std::string ratio_label(double ratio) {
  if (ratio <= 0.0) return "";
  if (std::isinf(ratio)) return "read-only";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g:1", ratio);
  return buf;
}

Status measure_read_mostly_ceiling(double ratio, const TimingOptions& opt, cudaStream_t stream,
                                   ReadMostlyCeiling* out) {
  if (!(ratio >= 1.0))
    return Status::InvalidArgument("read-mostly ratio", ">= 1 or +inf", std::to_string(ratio));
  DeviceInfo dev;
  QFUSE_RETURN_IF_ERROR(current_device_info(&dev));
  ReadMostlyCeiling c;
  c.ratio = ratio;
  for (const KernelForm& f : kForms) {
    int blocks = 0;
    QFUSE_RETURN_IF_ERROR(blocks_for(read_mostly_fn(f), dev.sm_count, &blocks));
    ReadMostlyInstance kernel(kCeilingReadBytes, ratio, f, blocks);
    CeilingForm form{form_name("read-mostly kernel", f, blocks, dev.sm_count), {}};
    QFUSE_RETURN_IF_ERROR(measure(kernel, opt, stream, &form.timing));
    QFUSE_RETURN_IF_ERROR(kernel.verify(stream));
    c.measured_ratio = kernel.written() > 0 ? static_cast<double>(kernel.read_bytes()) /
                                                  static_cast<double>(kernel.written())
                                            : std::numeric_limits<double>::infinity();
    c.forms.push_back(std::move(form));
  }
  *out = std::move(c);
  return Status::Ok();
}

}  // namespace qfuse::bench
