// The row-wise kernels: shared infrastructure for every op whose output rows are computed
// elementwise from its inputs. A Producer computes fp32 chunks of an output row (a cast of an
// input, silu(gate) * up, a merge of attention states, a split-KV combine ...) and a quantizer
// writes them through the row-chunk adapter (qfuse/quant/adapters/row_chunk.cuh). One kernel
// template, any output kind.
//
//   rowwise_kernel   streaming: one warp per task of 32 lanes x 1, 2 or 4 chunks (256-1024
//                    columns) of one row, a grid covering every task; groups of 64/128/16
//                    columns reduce their amax with warp shuffles. Every kind but per-token.
//   per_token_kernel 1-32 warps per row, streaming (a row per block-row, no loop); the row's
//                    amax is a warp (and shared-memory) reduction; the row stays in registers
//                    between the amax and the store (re-read from L2 past 8 chunks per lane).
//
// Producer protocol: `bool vec` (16-byte loads possible), a register type Raw and
//   template <class Ready = NoWait>
//   __device__ void fetch(int64_t row, int col, int nvalid, Raw& raw, Ready ready = {}) const
//   __device__ void convert(const Raw& raw, int64_t row, int col, int nvalid, float (&v)[8]) const
//   template <class Ready = NoWait>
//   __device__ void load(int64_t row, int col, int nvalid, float (&v)[8], Ready ready = {}) const
// filling v with the fp32 values of columns [col, col + 8), zeros past nvalid: fetch issues the
// vector loads of a full chunk, convert uses them (or loads a partial chunk element-wise), so a
// lane's chunks all have their loads in flight before any is waited for; load does both. fetch
// and load call ready() on every path, after their address arithmetic and before their first
// global access: the streaming rowwise_kernel of a producer with kLatePdlWait passes
// pdl_wait() there (with its policy's begin() for load), so that the arithmetic overlaps the
// previous kernel's tail under PDL (bench/NOTES.md 39); other kernels wait at their top. And
//   __device__ void finish(int64_t row, int col, int nvalid) const
// called once the chunk is stored (per-row side outputs such as a merged lse; usually empty);
// kStreamMinBlocks / kStreamMinBlocksGrouped: resident blocks per SM the streaming kernel must
// allow (a register cap), for policies without / with a group reduction; kNvfp4Round: which
// cheaper E2M1 round NVFP4's wide lanes use where it is exact (Nvfp4Core; measured per
// producer, bench/NOTES.md 29-31); kNvfp4LaneChunks / kGroupLaneChunks: chunks per lane beyond
// one wave for NVFP4 / per-group FP8 (1: narrow lanes; 2: 16 consecutive values; 4: two such
// runs 512 columns apart, more loads in flight per lane and the task arithmetic shared).
// Optional: fetch_pair / convert_pair, both chunks of a wide lane at once (has_pair_hooks);
// `bool skip() const`, read once the previous kernel is done: true leaves the whole output as it
// is (the MLA combine where the decode kernel wrote it; has_skip_hook); with kSkipEarly, read
// before that wait (what skip() reads was written before the previous kernel let this one start:
// the combine's flag comes from the scheduler, which the decode kernel waits for before its
// launch_dependents).
// Optional: a side pass (has_side_pass), per-tensor side outputs computed by blocks of their own
// at the start of the grid instead of by the row tasks (the merge's lse [H, T]):
//   __host__ __device__ int64_t side_units() const        units of side work (0: none)
//   __device__ void side_pass(int64_t u, int64_t units) const
// unit u of `units` (one a thread, coalesced across threads; u >= units in the last block's
// tail: nothing stored).
// NOTE: side outputs go in finish() or the side pass, not load(): a store inside load() would keep
// the compiler from hoisting the next tasks' loads above it. The side pass costs the row tasks
// nothing (no registers, no instructions); finish() runs in every task (bench/NOTES.md 45).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "core/fast_div.h"
#include "core/launch.cuh"
#include "qfuse/core/arch.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/quant/adapters/row_chunk.cuh"
#include "qfuse/quant/dispatch.cuh"
#include "qfuse/quant/quantize.h"

namespace qfuse::quant {

constexpr int kRowwiseThreads = 256;

/// Whether a producer has fetch_pair / convert_pair: the fetch and convert of a wide lane's two
/// consecutive chunks at once (optional; the merge shares its per-head work between them).
template <class P, class = void>
struct has_pair_hooks : std::false_type {};
template <class P>
struct has_pair_hooks<P, std::void_t<decltype(std::declval<const P&>().fetch_pair(
                                         int64_t{}, 0, 0, 0, std::declval<typename P::Raw&>(),
                                         std::declval<typename P::Raw&>(), NoWait{})),
                                     decltype(&P::convert_pair)>> : std::true_type {};

/// Whether a producer has skip(): the kernel returns at once (after the PDL wait) where it says so.
template <class P, class = void>
struct has_skip_hook : std::false_type {};
template <class P>
struct has_skip_hook<P, std::void_t<decltype(std::declval<const P&>().skip())>> : std::true_type {};

/// Whether a producer's skip() is read before the PDL wait (P::kSkipEarly).
template <class P>
constexpr bool skip_early() {
  if constexpr (has_skip_hook<P>::value) {
    return P::kSkipEarly;
  } else {
    return false;
  }
}

/// How a grid that skips before its PDL wait exits: block 0 still waits for the previous kernel,
/// so that this grid does not complete before it (the next kernel's wait covers this grid only;
/// it must also cover the one before, whose data it may overwrite); the other blocks leave at
/// once.
__device__ __forceinline__ void skip_exit() {
  if (blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0) pdl_wait();
}

/// Whether a producer has a side pass (side_units / side_pass): blocks of their own compute a
/// per-tensor side output.
template <class P, class = void>
struct has_side_pass : std::false_type {};
template <class P>
struct has_side_pass<
    P, std::void_t<decltype(std::declval<const P&>().side_units()),
                   decltype(std::declval<const P&>().side_pass(int64_t{}, int64_t{}))>>
    : std::true_type {};

/// Blocks of kThreads the side pass of `prod` takes (0 without one); host and device.
template <int kThreads, class Producer>
__host__ __device__ __forceinline__ uint32_t side_blocks(const Producer& prod) {
  if constexpr (has_side_pass<Producer>::value) {
    return static_cast<uint32_t>((prod.side_units() + kThreads - 1) / kThreads);
  } else {
    return 0;
  }
}

/// The side pass at the start of the grid: true in a side block (which has done its share, after
/// `wait`). The other blocks' index is blockIdx.x - side_blocks (0 without a side pass: those
/// producers' kernels compile as before it existed).
template <int kThreads, class Producer, class Wait>
__device__ __forceinline__ bool run_side_pass(const Producer& prod, Wait wait) {
  if constexpr (has_side_pass<Producer>::value) {
    if (blockIdx.x < side_blocks<kThreads>(prod)) {
      wait();
      prod.side_pass(static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x, prod.side_units());
      return true;
    }
  }
  return false;
}

/// Resident blocks per SM the streaming kernel must allow (its register cap): the producer's
/// choice, with or without a group reduction; wide lanes (16 or 2 x 16 values per lane) get at
/// least 64 registers (at 32, nvcc spilled; bench/NOTES.md 27).
template <class Producer, class Policy, int kLaneChunks>
constexpr int stream_min_blocks() {
  if (kLaneChunks > 1)
    return Producer::kStreamMinBlocksGrouped < 4 ? Producer::kStreamMinBlocksGrouped : 4;
  return Policy::kLanesPerGroup > 1 ? Producer::kStreamMinBlocksGrouped
                                    : Producer::kStreamMinBlocks;
}

/// Tasks are numbered row-major: task = row * tasks_per_row + segment, a segment being 32 x
/// kLaneChunks chunks of one row. `per_warp` is 1 (see the NOTE in the narrow branch). The grid
/// has a warp per task (no loop in practice: the block
/// scheduler keeps every SM full), then `gridDim.x - task_blocks` blocks that zero the scale
/// buffer's padding.
/// NOTE: 32-bit task arithmetic (the launcher checks ntasks < 2^30); addresses are 64-bit.
template <class Producer, class Policy, int kLaneChunks = 1>
__global__ void __launch_bounds__(kRowwiseThreads,
                                  stream_min_blocks<Producer, Policy, kLaneChunks>())
    rowwise_kernel(const Producer prod, const typename Policy::Params params, int64_t rows,
                   int cols, FastDiv tasks_per_row, uint32_t ntasks, uint32_t per_warp,
                   uint32_t task_blocks) {
  // NOTE: with Producer::kLatePdlWait the kernel waits for the previous kernel late: the
  // producer calls pdl_wait() after its address arithmetic (the `ready` of fetch / load), and the
  // kernel again once the fetches are issued, before anything else touches global memory. Under
  // PDL the task and address arithmetic then overlaps the previous kernel's tail: a gain for the
  // merge's small batches, a loss for quantize and silu (bench/NOTES.md 39).
  constexpr bool kLateWait = Producer::kLatePdlWait;
  if constexpr (skip_early<Producer>()) {
    if (prod.skip()) return skip_exit();  // (uniform over the grid)
  }
  if constexpr (kLateWait)
    pdl_launch_dependents();
  else
    pdl_begin();
  if constexpr (has_skip_hook<Producer>::value && !skip_early<Producer>()) {
    static_assert(!kLateWait, "skip() reads what the previous kernel wrote");
    if (prod.skip()) return;
  }
  // The side pass's blocks first (has_side_pass); `block` counts the others. NOTE: under `if
  // constexpr`, so that other producers' kernels compile exactly as before (an always-false
  // branch there changed nvcc's code for the per-token silu kernel: 5 spill stores).
  uint32_t block = blockIdx.x, grid = gridDim.x;
  if constexpr (has_side_pass<Producer>::value) {
    if (run_side_pass<kRowwiseThreads>(prod, [] {
          if constexpr (kLateWait) pdl_wait();
        }))
      return;
    block -= side_blocks<kRowwiseThreads>(prod);
    grid -= side_blocks<kRowwiseThreads>(prod);
  }
  Policy pol(params);
  if constexpr (!kLateWait) pol.begin();
  // NOTE: blocks of their own for the scale buffer's padding past the `task_blocks` that cover
  // the tasks: done by the task blocks, before or after their task, the padding of NVFP4 at small
  // T (most of the scale buffer's rows) delayed every task (bench/NOTES.md 28).
  if (block >= task_blocks) {
    if constexpr (kLateWait) pdl_wait();
    pol.zero_padding((block - task_blocks) * blockDim.x + threadIdx.x,
                     (grid - task_blocks) * blockDim.x);
    return;
  }
  const int64_t tid = static_cast<int64_t>(block) * blockDim.x + threadIdx.x;
  const int64_t nthreads = static_cast<int64_t>(grid) * blockDim.x;
  // What fetch calls before its loads; load also issues the policy's per-tensor loads right
  // behind the wait. (Nothing when the kernel waited at its top.)
  const auto wait = [] {
    if constexpr (kLateWait) pdl_wait();
  };
  const auto wait_begin = [&pol] {
    if constexpr (kLateWait) {
      pdl_wait();
      pol.begin();
    }
  };

  const int lane = threadIdx.x & 31;
  const uint32_t warp = static_cast<uint32_t>(tid >> 5);
  const uint32_t nwarps = static_cast<uint32_t>(nthreads >> 5);

  // NOTE: wide lanes (kLaneChunks 2 or 4, kinds with apply2: NVFP4, per-group FP8): a lane owns
  // two consecutive chunks, for NVFP4 a whole 16-value block (its scale is one lane's work, no
  // shuffle), for a group of 64/128 fewer shuffles and scales per value; the per-task arithmetic
  // (row split, addresses) serves 16 values. With 4, two such runs 512 columns apart (a task is
  // 1024 columns), all loads issued first.
  if constexpr (kLaneChunks >= 2) {
    constexpr int kSub = kLaneChunks / 2;  // 16-value runs per lane, 512 columns apart
    for (uint32_t task = warp; task < ntasks; task += nwarps) {
      const uint32_t row = tasks_per_row.div(task);
      const uint32_t seg = task - row * tasks_per_row.d;
      typename Producer::Raw raw[kSub][2];
      int col[kSub], nv0[kSub], nv1[kSub];
      // Every chunk's loads issue before any is converted (see load_chunk2).
#pragma unroll
      for (int b = 0; b < kSub; ++b) {
        col[b] = static_cast<int>((seg * kSub + b) * 32 + lane) * 2 * kChunk;
        nv0[b] = chunk_valid(cols, col[b]);
        nv1[b] = chunk_valid(cols, col[b] + kChunk);
        if constexpr (has_pair_hooks<Producer>::value) {
          prod.fetch_pair(row, col[b], nv0[b], nv1[b], raw[b][0], raw[b][1], wait);
        } else {
          if (nv0[b] > 0) prod.fetch(row, col[b], nv0[b], raw[b][0], wait);
          if (nv1[b] > 0) prod.fetch(row, col[b] + kChunk, nv1[b], raw[b][1], wait);
        }
      }
      // A lane past the row fetched nothing and waits here; then the policy's scalar loads.
      if constexpr (kLateWait) {
        if (!has_pair_hooks<Producer>::value && nv0[0] <= 0) pdl_wait();
        pol.begin();
      }
#pragma unroll
      for (int b = 0; b < kSub; ++b) {
        float v0[kChunk], v1[kChunk];
#pragma unroll
        for (int i = 0; i < kChunk; ++i) v0[i] = v1[i] = 0.0f;
        if constexpr (has_pair_hooks<Producer>::value) {
          prod.convert_pair(raw[b][0], raw[b][1], row, col[b], nv0[b], nv1[b], v0, v1);
        } else {
          if (nv0[b] > 0) prod.convert(raw[b][0], row, col[b], nv0[b], v0);
          if (nv1[b] > 0) prod.convert(raw[b][1], row, col[b] + kChunk, nv1[b], v1);
        }
        pol.apply2(row, col[b], nv0[b], nv1[b], v0, v1);
        prod.finish(row, col[b], nv0[b]);
        prod.finish(row, col[b] + kChunk, nv1[b]);
      }
    }
  } else {
    // NOTE: kept in the form of the multi-task loop it came from (groups of `per_warp` = 1 tasks,
    // per-task arrays and guards): the plainer `for (task = warp; ...)` compiled to a different
    // prologue and measured 1.3-1.8 % slower for small batches (bench/NOTES.md 42).
    constexpr int kUnroll = 1;
    for (uint32_t base = warp * per_warp; base < ntasks; base += nwarps * per_warp) {
      float v[kUnroll][kChunk];
      uint32_t row[kUnroll];
      int col[kUnroll], nvalid[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const uint32_t task = base + u;
        row[u] = tasks_per_row.div(task);
        const uint32_t seg = task - row[u] * tasks_per_row.d;
        col[u] = static_cast<int>(seg * 32 + lane) * kChunk;
        nvalid[u] = (u < per_warp && task < ntasks) ? chunk_valid(cols, col[u]) : 0;
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (u < per_warp && base + u < ntasks) {  // warp-uniform
          if (nvalid[u] > 0) {
            // NOTE: load() converts as the data arrives, with fewer live registers than fetch
            // and convert (bench/NOTES.md 11).
            prod.load(row[u], col[u], nvalid[u], v[u], wait_begin);
          } else {
            wait_begin();  // a lane past the row
#pragma unroll
            for (int i = 0; i < kChunk; ++i) v[u][i] = 0.0f;
          }
          pol.apply(row[u], col[u], nvalid[u], v[u]);
          prod.finish(row[u], col[u], nvalid[u]);
        }
      }
    }
  }
}

constexpr int kPerTokenThreads = 256;

/// What a lane of the per-token kernel keeps of its row between the amax and the store: its kC
/// chunks raw, as loaded, when that is smaller than their fp32 values (bf16/fp16 input: 16 bytes a
/// chunk), else fp32 (converted once: silu and the merge are not cheap to redo).
template <class Producer>
constexpr bool per_token_keeps_raw() {
  return sizeof(typename Producer::Raw) < sizeof(float) * kChunk;
}
/// The largest kC the per-token kernel is built with (its instantiation re-reads columns past
/// kC * row_threads chunks): 8, or 1 for producers whose raw chunk is larger than 32 bytes (the
/// merge: its kept fp32 chunks spilled at kC >= 2).
template <class Producer>
constexpr int per_token_chunk_cap() {
  return sizeof(typename Producer::Raw) <= 32 ? 8 : 1;
}
/// Resident blocks per SM the per-token kernel must allow (its register cap): the kept chunks plus
/// one chunk being converted and ~40 registers of addresses, amax and loop state (the uncapped
/// counts nvcc chose, rounded up).
template <class Producer, int kC, int kThreads>
constexpr int per_token_min_blocks() {
  constexpr int raw = static_cast<int>(sizeof(typename Producer::Raw) / 4);
  constexpr int kept = kC * (per_token_keeps_raw<Producer>() ? raw : kChunk);
  constexpr int regs = (kept + raw + 40 + 7) / 8 * 8;
  constexpr int blocks = 65536 / (kThreads * regs);
  return blocks < 1 ? 1 : (blocks > 8 ? 8 : blocks);
}

/// Per-token FP8 (the row-scope adapter of Fp8PerTokenCore), streaming: `warps_per_row` (1 to 32, a
/// power of two) warps own one row, so a block of kThreads / 32 warps holds kThreads / 32 /
/// warps_per_row rows; a lane keeps kC chunks of its row (chunks rtid + i * row_threads), all of
/// their loads issued before the first is used. The row's NaN-propagating amax is a warp reduction
/// plus, across the row's warps, a shared-memory one; chunks past kC * row_threads are read again
/// from L2 for the store (only the producer's largest kC). One row per block-row, no loop: the
/// block scheduler keeps every SM full (like the streaming rowwise_kernel). Core: the
/// Fp8PerTokenCore of either rule.
template <class Producer, class Core, int kC, int kThreads>
__global__ void __launch_bounds__(kThreads, per_token_min_blocks<Producer, kC, kThreads>())
    per_token_kernel(const Producer prod, const typename Core::Params params, int64_t rows,
                     int cols, int warps_per_row) {
  static_assert(Core::kKind == QuantKind::kFp8PerToken);
  if constexpr (skip_early<Producer>()) {
    if (prod.skip()) return skip_exit();  // (uniform over the grid)
  }
  pdl_begin();
  if constexpr (has_skip_hook<Producer>::value && !skip_early<Producer>()) {
    if (prod.skip()) return;  // (uniform over the grid)
  }
  if constexpr (has_side_pass<Producer>::value) {
    if (run_side_pass<kThreads>(prod, [] {})) return;
  }
  __shared__ float partial[kThreads / 32];
  constexpr bool kRaw = per_token_keeps_raw<Producer>();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int rows_per_block = (kThreads / 32) / warps_per_row;
  const int group = warp / warps_per_row;               // which row of the block
  const int rtid = (warp % warps_per_row) * 32 + lane;  // thread index within the row
  const int row_threads = warps_per_row * 32;
  const int chunks = (cols + kChunk - 1) / kChunk;
  int64_t row = static_cast<int64_t>(blockIdx.x) * rows_per_block + group;
  if constexpr (has_side_pass<Producer>::value)
    row -= static_cast<int64_t>(side_blocks<kThreads>(prod)) * rows_per_block;
  const bool active = row < rows;
  typename Producer::Raw raw[kC];
  float v[kRaw ? 1 : kC][kChunk];
  int nvalid[kC];
#pragma unroll
  for (int i = 0; i < kC; ++i) {
    const int c = rtid + i * row_threads;
    nvalid[i] = active ? chunk_valid(cols, c * kChunk) : 0;
    if (nvalid[i] > 0) prod.fetch(row, c * kChunk, nvalid[i], raw[i]);
  }
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < kC; ++i) {
    if (nvalid[i] > 0) {
      float w[kChunk];
      prod.convert(raw[i], row, (rtid + i * row_threads) * kChunk, nvalid[i], w);
      amax = rules::nan_max(amax, chunk_amax(w));
      if constexpr (!kRaw) {
#pragma unroll
        for (int j = 0; j < kChunk; ++j) v[i][j] = w[j];
      }
    }
  }
  if constexpr (kC == per_token_chunk_cap<Producer>()) {  // longer rows re-read the rest
    for (int c = rtid + kC * row_threads; active && c < chunks; c += row_threads) {
      float w[kChunk];
      prod.load(row, c * kChunk, chunk_valid(cols, c * kChunk), w);
      amax = rules::nan_max(amax, chunk_amax(w));
    }
  }
  amax = group_amax<32>(amax);
  if (warps_per_row > 1) {  // block-uniform
    if (lane == 0) partial[warp] = amax;
    __syncthreads();
    amax = group_amax<32>(lane < warps_per_row ? partial[group * warps_per_row + lane] : 0.0f);
  }
  if (!active) return;
  const Core q(params);
  const typename Core::Scale s = q.scale_of(amax);
  if (rtid == 0) q.write_scale(q.scale_offset(row, 0), s);
#pragma unroll
  for (int i = 0; i < kC; ++i) {
    if (nvalid[i] > 0) {
      const int col = (rtid + i * row_threads) * kChunk;
      if constexpr (kRaw) {
        float w[kChunk];
        prod.convert(raw[i], row, col, nvalid[i], w);
        q.store(row, col, nvalid[i], w, s);
      } else {
        q.store(row, col, nvalid[i], v[i], s);
      }
      prod.finish(row, col, nvalid[i]);
    }
  }
  if constexpr (kC == per_token_chunk_cap<Producer>()) {
    for (int c = rtid + kC * row_threads; c < chunks; c += row_threads) {
      float w[kChunk];
      const int nv = chunk_valid(cols, c * kChunk);
      prod.load(row, c * kChunk, nv, w);
      q.store(row, c * kChunk, nv, w, s);
      prod.finish(row, c * kChunk, nv);
    }
  }
}

/// Resident blocks per SM of `kernel` with `smem` bytes of dynamic shared memory (raising the
/// kernel's dynamic shared-memory limit to `smem` first).
template <class Kernel>
Status blocks_per_sm(Kernel kernel, int threads, int smem, int* out) {
  // NOTE: opt in whenever dynamic shared memory is used: the 48 KB default limit counts the
  // kernel's static shared memory (mbarriers, the NVFP4 table) too.
  if (smem > 0)
    QFUSE_CUDA_RETURN(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  QFUSE_CUDA_RETURN(cudaOccupancyMaxActiveBlocksPerMultiprocessor(out, kernel, threads, smem));
  return Status::Ok();
}

/// Resident blocks of `kernel` on the device (kRowwiseThreads threads, `smem` bytes of dynamic
/// shared memory). `per_sm` caches the per-SM count: a function-local static of the caller, one
/// per kernel instantiation (qfuse assumes one GPU model per process).
template <class Kernel>
Status resident_blocks(Kernel kernel, int smem, const DeviceInfo& dev, int* per_sm, int64_t* out) {
  if (*per_sm == 0) QFUSE_RETURN_IF_ERROR(blocks_per_sm(kernel, kRowwiseThreads, smem, per_sm));
  *out = static_cast<int64_t>(std::max(*per_sm, 1)) * dev.sm_count;
  return Status::Ok();
}

/// The streaming form: a grid of one task (32 lanes x kLaneChunks chunks of a row) per warp,
/// then blocks for the scale buffer's padding.
template <class Producer, class Policy, int kLaneChunks>
Status launch_rowwise_stream(const Producer& prod, const typename Policy::Params& params,
                             int64_t rows, int64_t cols, int64_t padding_units,
                             const DeviceInfo& dev, cudaStream_t stream) {
  const auto kernel = rowwise_kernel<Producer, Policy, kLaneChunks>;
  static int per_sm = 0;
  int64_t resident = 0;
  QFUSE_RETURN_IF_ERROR(resident_blocks(kernel, 0, dev, &per_sm, &resident));
  const int64_t chunks = (cols + kChunk - 1) / kChunk;
  const int64_t tasks_per_row = (chunks + 32 * kLaneChunks - 1) / (32 * kLaneChunks);
  const int64_t tasks = rows * tasks_per_row;
  // NOTE: a grid far smaller than the SM count (small batches) runs in smaller blocks, spread
  // over more SMs: at T 16 H 2048 16 blocks of 8 warps put two warps on each scheduler of 16 SMs
  // while the others idled, and a long chain per lane (the engine rule) shared their issue slots
  // (bench/NOTES.md 47). The kernel indexes by blockDim; a side pass sizes its blocks by
  // kRowwiseThreads, so its producers keep them.
  int64_t threads = kRowwiseThreads;
  if constexpr (!has_side_pass<Producer>::value) {
    while (threads > 64 && (tasks + threads / 32 - 1) / (threads / 32) * 2 <= dev.sm_count)
      threads /= 2;
  }
  const int64_t warps_per_block = threads / 32;
  const int64_t task_blocks = std::max<int64_t>((tasks + warps_per_block - 1) / warps_per_block, 1);
  // Padding blocks: one store per thread, at most a quarter of the resident blocks.
  const int64_t pad_blocks = padding_units > 0
                                 ? std::clamp<int64_t>((padding_units + threads - 1) / threads, 1,
                                                       std::max<int64_t>(resident / 4, 1))
                                 : 0;
  const int64_t blocks = side_blocks<kRowwiseThreads>(prod) + task_blocks + pad_blocks;
  if (blocks > INT32_MAX)
    return Status::NotSupported(std::to_string(blocks) + " blocks exceed the grid's 2^31 - 1");
  return launch_kernel("rowwise_kernel", kernel, dim3(static_cast<unsigned>(blocks)),
                       dim3(static_cast<unsigned>(threads)), 0, stream, prod, params, rows,
                       static_cast<int>(cols), FastDiv::make(static_cast<uint32_t>(tasks_per_row)),
                       static_cast<uint32_t>(tasks), uint32_t{1},
                       static_cast<uint32_t>(task_blocks));
}

/// The most chunks a lane of per_token_kernel keeps before a row takes more warps (large
/// batches): 4 measured best at H=2048, all equal at H=7168 (bench/NOTES.md 31, 41e).
constexpr int kPerTokenMaxChunks = 4;

/// per_token_kernel with the fewest warps per row whose lanes keep at most kPerTokenMaxChunks
/// chunks (and at most the producer's cap) in blocks of kPerTokenThreads, kC the power of two
/// covering a lane's share. Small batches (fewer blocks than SMs) spread a row over up to 32 warps
/// (blocks of 1024; not the merge) with one chunk per lane, two past 1024 chunks: measured at T=16
/// (NOTES 31), the latency of a row is the number of chunks a lane works through.
/// The engine rule (drop-in ops only) takes one form: the producer's largest kC in blocks of
/// kPerTokenThreads (1-8 warps a row, re-reading the tail of longer rows); not tuned.
template <class Producer, class Core>
Status launch_per_token(const Producer& prod, const typename Core::Params& pp, int64_t rows,
                        int64_t cols, int64_t chunks, cudaStream_t stream) {
  constexpr int kCap = per_token_chunk_cap<Producer>();
  DeviceInfo dev;
  QFUSE_RETURN_IF_ERROR(current_device_info(&dev));
  const auto warps_for = [&](int64_t max_chunks, int max_warps) {
    int w = 1;
    while (w < max_warps && chunks > max_chunks * 32 * w) w *= 2;
    return w;
  };
  int warps_per_row = warps_for(std::min(kPerTokenMaxChunks, kCap), 8);
  int threads = kPerTokenThreads;
  const int64_t wide_blocks = (rows + 8 / warps_per_row - 1) / (8 / warps_per_row);
  // NOTE: not for the merge (kCap 1): at 64 registers its kept chunk spilled.
  if (kCap == 8 && wide_blocks < dev.sm_count && chunks <= 2 * 1024) {
    warps_per_row = warps_for(1, 32);
    threads = warps_per_row > 8 ? 1024 : kPerTokenThreads;
  }
  constexpr bool kEngine = Core::kRule == QuantRule::kEngine;
  if constexpr (kEngine) {
    warps_per_row = warps_for(kCap, 8);
    threads = kPerTokenThreads;
  }
  const int64_t per_lane = (chunks + 32 * warps_per_row - 1) / (32 * warps_per_row);
  const int64_t rows_per_block = (threads / 32) / warps_per_row;
  const int64_t blocks =
      (rows + rows_per_block - 1) / rows_per_block +
      (threads == 1024 ? side_blocks<1024>(prod) : side_blocks<kPerTokenThreads>(prod));
  if (blocks > INT32_MAX)
    return Status::InvalidArgument("rows", "<= " + std::to_string(INT32_MAX * rows_per_block),
                                   std::to_string(rows));
  const auto go = [&](auto kernel) {
    return launch_kernel("per_token_kernel", kernel, dim3(static_cast<unsigned>(blocks)),
                         dim3(static_cast<unsigned>(threads)), 0, stream, prod, pp, rows,
                         static_cast<int>(cols), warps_per_row);
  };
  if constexpr (kEngine) {
    (void)per_lane;
    return go(per_token_kernel<Producer, Core, kCap, kPerTokenThreads>);
  } else if constexpr (kCap == 8) {
    if (threads == 1024) {
      if (per_lane <= 1) return go(per_token_kernel<Producer, Core, 1, 1024>);
      return go(per_token_kernel<Producer, Core, 2, 1024>);
    }
    if (per_lane <= 1) return go(per_token_kernel<Producer, Core, 1, kPerTokenThreads>);
    if (per_lane <= 2) return go(per_token_kernel<Producer, Core, 2, kPerTokenThreads>);
    if (per_lane <= 4) return go(per_token_kernel<Producer, Core, 4, kPerTokenThreads>);
    return go(per_token_kernel<Producer, Core, 8, kPerTokenThreads>);
  } else {
    static_assert(kCap == 1);
    return go(per_token_kernel<Producer, Core, 1, kPerTokenThreads>);
  }
}

template <class Producer, class Policy>
Status launch_rowwise_policy(const Producer& prod, const typename Policy::Params& params,
                             int64_t rows, int64_t cols, int64_t padding_units,
                             cudaStream_t stream) {
  DeviceInfo dev;
  QFUSE_RETURN_IF_ERROR(current_device_info(&dev));
  const int64_t chunks = (cols + kChunk - 1) / kChunk;
  const int64_t tasks = rows * ((chunks + 31) / 32);
  if (tasks >= (int64_t{1} << 30))
    return Status::NotSupported("rows x ceil(cols / 256) = " + std::to_string(tasks) +
                                " tasks exceeds 2^30");
  // NOTE: NVFP4 and per-group FP8 beyond one wave of the narrow grid take wide lanes where the
  // producer measured them faster (kNvfp4LaneChunks / kGroupLaneChunks, bench/NOTES.md 27, 32);
  // one wave or less keeps 8 values per lane (twice the warps: lower latency, NOTES 33). The
  // engine rule (drop-in ops only) keeps 8 values per lane always: one kernel a kind, not tuned.
  if constexpr (Policy::kChunksPerLane == 2 && Policy::Core::kRule == QuantRule::kNative) {
    constexpr int kLane = Policy::Core::kKind == QuantKind::kNvfp4 ? Producer::kNvfp4LaneChunks
                                                                   : Producer::kGroupLaneChunks;
    static_assert(kLane == 1 || kLane == 2 || kLane == 4);
    if constexpr (kLane > 1) {
      const auto narrow = rowwise_kernel<Producer, Policy, 1>;
      static int narrow_per_sm = 0;
      int64_t narrow_resident = 0;
      QFUSE_RETURN_IF_ERROR(resident_blocks(narrow, 0, dev, &narrow_per_sm, &narrow_resident));
      const int64_t warps_per_block = kRowwiseThreads / 32;
      if ((tasks + warps_per_block - 1) / warps_per_block > narrow_resident)
        return launch_rowwise_stream<Producer, Policy, kLane>(prod, params, rows, cols,
                                                              padding_units, dev, stream);
    }
  }
  return launch_rowwise_stream<Producer, Policy, 1>(prod, params, rows, cols, padding_units, dev,
                                                    stream);
}

/// Launches the row-wise kernel of `prod` with the quantizer `q.spec` selects (visit_quantizer:
/// kKinds are the kinds this producer is used for). `q` must have been validated for [rows,
/// cols] (validate_quant_output) and rows > 0.
template <unsigned kKinds = kAllKinds, class Producer>
Status launch_rowwise(const Producer& prod, const QuantOutput& q, int64_t rows, int64_t cols,
                      cudaStream_t stream) {
  return visit_quantizer<kKinds, Producer::kNvfp4Round>(
      q, rows, cols, [&](auto tag, const auto& params, int64_t padding_units) {
        using Core = typename decltype(tag)::type;
        if constexpr (Core::kScope == ScaleScope::kRow) {
          return launch_per_token<Producer, Core>(prod, params, rows, cols,
                                                  (cols + kChunk - 1) / kChunk, stream);
        } else {
          return launch_rowwise_policy<Producer, RowChunk<Core>>(prod, params, rows, cols,
                                                                 padding_units, stream);
        }
      });
}

}  // namespace qfuse::quant
