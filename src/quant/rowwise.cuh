// The row-wise kernels every elementwise qfuse op runs on: a Producer computes fp32 fragments of
// an output row (a cast of an input, silu(gate) * up, later a merge of attention states), and a
// quantizer policy (qfuse/quant/policies.cuh) writes them. One kernel template, any output kind.
//
//   rowwise_kernel   one warp per task of 32 lanes x 1, 2 or 4 chunks (256-1024 columns) of
//                    one row; groups of 64/128/16 columns reduce their amax with warp shuffles.
//                    Used for every kind but per-token.
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
// warp's tasks all have their loads in flight before any is waited for; load does both. fetch
// and load call ready() on every path, after their address arithmetic and before their first
// global access: the streaming rowwise_kernel of a producer with kLatePdlWait passes
// pdl_wait() there (with its policy's begin() for load), so that the arithmetic overlaps the
// previous kernel's tail under PDL (bench/NOTES.md 39); other kernels wait at their top. And
//   __device__ void finish(int64_t row, int col, int nvalid) const
// called once the chunk is stored (per-row side outputs such as a merged lse; usually empty);
// kStreamMinBlocks / kStreamMinBlocksGrouped: resident blocks per SM the streaming kernel must
// allow (a register cap), for policies without / with a group reduction; kNvfp4Round: which
// cheaper E2M1 round NVFP4's wide lanes use where it is exact (Nvfp4::encode; measured per
// producer, bench/NOTES.md 29-31); kNvfp4LaneChunks / kGroupLaneChunks: chunks per lane beyond
// one wave for NVFP4 / per-group FP8 (1: narrow lanes; 2: 16 consecutive values; 4: two such
// runs 512 columns apart, more loads in flight per lane and the task arithmetic shared).
// Optional: fetch_pair / convert_pair, both chunks of a wide lane at once (has_pair_hooks).
// NOTE: side outputs go in finish(), not load(): a store inside load() would keep the compiler
// from hoisting the next tasks' loads above it.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "core/fast_div.h"
#include "core/launch.cuh"
#include "qfuse/core/arch.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/quant/policies.cuh"
#include "qfuse/quant/quantize.h"
#include "quant/cp_async.cuh"

namespace qfuse::quant {

constexpr int kRowwiseThreads = 256;
constexpr int kRowwiseUnroll = 4;  // tasks a warp keeps in flight in a persistent grid

/// Whether a producer has fetch_pair / convert_pair: the fetch and convert of a wide lane's two
/// consecutive chunks at once (optional; the merge shares its per-head work between them).
template <class P, class = void>
struct has_pair_hooks : std::false_type {};
template <class P>
struct has_pair_hooks<P, std::void_t<decltype(std::declval<const P&>().fetch_pair(
                                         int64_t{}, 0, 0, 0, std::declval<typename P::Raw&>(),
                                         std::declval<typename P::Raw&>(), NoWait{})),
                                     decltype(&P::convert_pair)>> : std::true_type {};

/// Resident blocks per SM the streaming kernel must allow (its register cap): the producer's
/// choice, with or without a group reduction; wide lanes (16 or 2 x 16 values per lane) get at
/// least 64 registers (at 32, nvcc spilled 40-120 bytes per thread).
template <class Producer, class Policy, int kUnroll, int kLaneChunks>
constexpr int stream_min_blocks() {
  if (kUnroll > 1) return 1;
  if (kLaneChunks > 1)
    return Producer::kStreamMinBlocksGrouped < 4 ? Producer::kStreamMinBlocksGrouped : 4;
  return Policy::kLanesPerGroup > 1 ? Producer::kStreamMinBlocksGrouped
                                    : Producer::kStreamMinBlocks;
}

/// Tasks are numbered row-major: task = row * tasks_per_row + segment, a segment being 32 chunks
/// (256 columns) of one row. Warp w handles the groups of `per_warp` (<= kUnroll) consecutive
/// tasks that start at (w + k * nwarps) * per_warp. kUnroll = 1 is the streaming form: a grid of
/// one task per warp (no loop), few registers, the block scheduler keeping every SM full.
/// NOTE: 32-bit task arithmetic (the launcher checks ntasks < 2^30); addresses are 64-bit.
template <class Producer, class Policy, int kUnroll, int kLaneChunks = 1>
__global__ void __launch_bounds__(kRowwiseThreads,
                                  stream_min_blocks<Producer, Policy, kUnroll, kLaneChunks>())
    rowwise_kernel(const Producer prod, const typename Policy::Params params, int64_t rows,
                   int cols, FastDiv tasks_per_row, uint32_t ntasks, uint32_t per_warp,
                   uint32_t task_blocks) {
  // NOTE: with Producer::kLatePdlWait the streaming form (kUnroll 1) waits for the previous
  // kernel late: the producer calls pdl_wait() after its address arithmetic (the `ready` of
  // fetch / load), and the kernel again once the fetches are issued, before anything else
  // touches global memory. Under PDL the task and address arithmetic (~100 instructions a warp
  // for the merge) then overlaps the previous kernel's tail: 2-way merge T=1 / 64 / 256
  // 1.75 / 2.21 / 2.97 -> 1.30 / 1.95 / 2.51 us. For quantize and silu (a few instructions of
  // address arithmetic) it measured slower at large sizes and at T=16 H=14336 (NOTES 39).
  constexpr bool kLateWait = kUnroll == 1 && Producer::kLatePdlWait;
  if constexpr (kLateWait)
    pdl_launch_dependents();
  else
    pdl_begin();
  Policy pol(params);
  if constexpr (!kLateWait) pol.begin();
  // NOTE: the streaming grid has blocks of its own for the scale buffer's padding past the
  // `task_blocks` that cover the tasks: done by the task blocks, before or after their task, the
  // padding of NVFP4 at T = 16 (112 padding rows of 16 real ones) delayed every task.
  if constexpr (kUnroll == 1) {
    if (blockIdx.x >= task_blocks) {
      if constexpr (kLateWait) pdl_wait();
      pol.zero_padding((blockIdx.x - task_blocks) * blockDim.x + threadIdx.x,
                       (gridDim.x - task_blocks) * blockDim.x);
      return;
    }
  }
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nthreads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  if constexpr (kUnroll > 1) pol.zero_padding(tid, nthreads);  // persistent grid: every thread
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

  // NOTE: wide lanes (kLaneChunks 2 or 4, policies with apply2: NVFP4, per-group FP8): a lane
  // owns two consecutive chunks, for NVFP4 a whole 16-value block (its scale is one lane's work,
  // no shuffle), for a group of 64/128 an eighth/quarter fewer shuffles and scales per value; the
  // per-task arithmetic (row split, addresses) serves 16 values. With 4, two such runs 512
  // columns apart (a task is 1024 columns), all loads issued first.
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
        pol.template apply2<Producer::kNvfp4Round>(row, col[b], nv0[b], nv1[b], v0, v1);
        prod.finish(row, col[b], nv0[b]);
        prod.finish(row, col[b] + kChunk, nv1[b]);
      }
    }
  } else {
    // NOTE: a warp's kUnroll tasks are consecutive (mostly one row: 1-2 KB contiguous
    // per input stream), which keeps DRAM accesses in long runs.
    for (uint32_t base = warp * per_warp; base < ntasks; base += nwarps * per_warp) {
      float v[kUnroll][kChunk];
      typename Producer::Raw raw[kUnroll];
      uint32_t row[kUnroll];
      int col[kUnroll], nvalid[kUnroll];
      // NOTE: every load of the group is issued before the first store, so a warp keeps
      // kUnroll x 16 (or 32) bytes per lane in flight.
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const uint32_t task = base + u;
        row[u] = tasks_per_row.div(task);
        const uint32_t seg = task - row[u] * tasks_per_row.d;
        col[u] = static_cast<int>(seg * 32 + lane) * kChunk;
        nvalid[u] = (u < per_warp && task < ntasks) ? chunk_valid(cols, col[u]) : 0;
        if constexpr (kUnroll > 1) {
          if (nvalid[u] > 0) prod.fetch(row[u], col[u], nvalid[u], raw[u]);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (u < per_warp && base + u < ntasks) {  // warp-uniform
          if (nvalid[u] > 0) {
            // NOTE: one task: load() converts as the data arrives, with fewer live registers
            // (measured: silu_mul_quant fp8_group128 98-102 % of copy bandwidth vs 93-96 % with
            // fetch/convert, 32 vs 40 registers).
            if constexpr (kUnroll == 1)
              prod.load(row[u], col[u], nvalid[u], v[u], wait_begin);
            else
              prod.convert(raw[u], row[u], col[u], nvalid[u], v[u]);
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

#ifndef QFUSE_ASYNC_STAGES
#define QFUSE_ASYNC_STAGES 4
#endif
constexpr int kAsyncStages = QFUSE_ASYNC_STAGES;  // tasks per thread in flight (cp.async)

/// The bandwidth path of rowwise_kernel for large problems with 16-byte aligned rows: each thread
/// copies its 16-byte pieces of the next kAsyncStages - 1 tasks into its own shared-memory slots
/// with cp.async while it computes the current one, so loads stay in flight all the time without
/// holding registers (Producer::issue / Producer::compute, Producer::kStageBytes per task).
/// NOTE: slots are private to a thread (it reads back only what it copied), so no barrier is
/// needed; warp w handles tasks w, w + nwarps, ... (consecutive warps: consecutive segments).
template <class Producer, class Policy>
__global__ void __launch_bounds__(kRowwiseThreads)
    rowwise_async_kernel(const Producer prod, const typename Policy::Params params, int64_t rows,
                         int cols, FastDiv tasks_per_row, uint32_t ntasks) {
  pdl_begin();
  extern __shared__ uint4 stage_mem[];
  constexpr int kSlot = Producer::kStageBytes;
  constexpr int kStageStride = kRowwiseThreads * kSlot;
  Policy pol(params);
  pol.begin();
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nthreads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  pol.zero_padding(tid, nthreads);

  uint8_t* slots = reinterpret_cast<uint8_t*>(stage_mem) + threadIdx.x * kSlot;
  const int lane = threadIdx.x & 31;
  const uint32_t warp = static_cast<uint32_t>(tid >> 5);
  const uint32_t nwarps = static_cast<uint32_t>(nthreads >> 5);
  auto locate = [&](uint32_t task, uint32_t& row, int& col, int& nvalid) {
    row = tasks_per_row.div(task);
    const uint32_t seg = task - row * tasks_per_row.d;
    col = static_cast<int>(seg * 32 + lane) * kChunk;
    nvalid = task < ntasks ? chunk_valid(cols, col) : 0;
  };
  auto issue = [&](uint32_t k) {
    const uint32_t task = warp + k * nwarps;
    if (task < ntasks) {
      uint32_t row;
      int col, nvalid;
      locate(task, row, col, nvalid);
      prod.issue(row, nvalid > 0 ? col : 0, nvalid, slots + (k % kAsyncStages) * kStageStride);
    }
    cp_async_commit();  // empty groups keep the wait count uniform
  };
#pragma unroll
  for (int s = 0; s < kAsyncStages - 1; ++s) issue(s);
  for (uint32_t k = 0; warp + k * nwarps < ntasks; ++k) {  // warp-uniform
    issue(k + kAsyncStages - 1);
    cp_async_wait<kAsyncStages - 1>();
    uint32_t row;
    int col, nvalid;
    locate(warp + k * nwarps, row, col, nvalid);
    float v[kChunk];
    prod.compute(slots + (k % kAsyncStages) * kStageStride, v);
    pol.apply(row, col, nvalid, v);
    prod.finish(row, col, nvalid);
  }
  cp_async_wait<0>();
}

// NOTE: 2 stages (one task in flight while the warp computes the other) measured best on H100:
// silu_mul_quant fp8_group128 T=4096 H=7168 at 89 % of copy bandwidth vs 85 % with 4 stages;
// the smaller shared-memory footprint keeps more warps resident, and the kernel is bound by
// issue as much as by memory. -DQFUSE_BULK_STAGES=N to experiment.
#ifndef QFUSE_BULK_STAGES
#define QFUSE_BULK_STAGES 2
#endif
constexpr int kBulkStages = QFUSE_BULK_STAGES;  // tasks per warp in flight (bulk-copy pipeline)

/// The bandwidth path for producers that read whole 512-byte row segments per input stream
/// (Producer::kBulkBytes per task): lane 0 of each warp copies the segments of the warp's next
/// kBulkStages - 1 tasks into the warp's shared-memory stages with the copy engine
/// (cp.async.bulk, completing on one mbarrier per stage) while the warp computes the current
/// task from shared memory. Needs 16-byte aligned rows and cols % 8 == 0 (checked by the
/// launcher). Warp w handles tasks w, w + nwarps, ...
template <class Producer, class Policy>
__global__ void __launch_bounds__(kRowwiseThreads)
    rowwise_bulk_kernel(const Producer prod, const typename Policy::Params params, int64_t rows,
                        int cols, FastDiv tasks_per_row, uint32_t ntasks) {
  pdl_begin();
  extern __shared__ __align__(128) uint8_t bulk_mem[];
  __shared__ uint64_t bars[kRowwiseThreads / 32][kBulkStages];
  constexpr int kBytes = Producer::kBulkBytes;
  Policy pol(params);
  pol.begin();
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nthreads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  pol.zero_padding(tid, nthreads);

  const int lane = threadIdx.x & 31;
  const int wib = threadIdx.x >> 5;
  uint8_t* wbuf = bulk_mem + wib * kBulkStages * kBytes;
  uint64_t* wbar = bars[wib];
  if (lane == 0) {
#pragma unroll
    for (int s = 0; s < kBulkStages; ++s) mbar_init(&wbar[s], 1);
    mbar_fence_init();
  }
  __syncwarp();
  const uint32_t warp = static_cast<uint32_t>(tid >> 5);
  const uint32_t nwarps = static_cast<uint32_t>(nthreads >> 5);
  auto issue = [&](uint32_t k) {
    const uint32_t task = warp + k * nwarps;
    if (lane == 0 && task < ntasks) {
      const uint32_t row = tasks_per_row.div(task);
      const int col0 = static_cast<int>(task - row * tasks_per_row.d) * 32 * kChunk;
      const int ncols = min(32 * kChunk, cols - col0);
      fence_proxy_async_shared();
      prod.bulk_issue(row, col0, ncols, wbuf + (k % kBulkStages) * kBytes, &wbar[k % kBulkStages]);
    }
  };
#pragma unroll
  for (int s = 0; s < kBulkStages - 1; ++s) issue(s);
  for (uint32_t k = 0; warp + k * nwarps < ntasks; ++k) {  // warp-uniform
    issue(k + kBulkStages - 1);
    mbar_wait(&wbar[k % kBulkStages], (k / kBulkStages) & 1);
    const uint32_t task = warp + k * nwarps;
    const uint32_t row = tasks_per_row.div(task);
    const int col = (static_cast<int>(task - row * tasks_per_row.d) * 32 + lane) * kChunk;
    const int nvalid = chunk_valid(cols, col);
    float v[kChunk];
    prod.bulk_compute(wbuf + (k % kBulkStages) * kBytes, lane, nvalid, v);
    pol.apply(row, col, nvalid, v);
    prod.finish(row, col, nvalid);
    __syncwarp();  // every lane is done with this stage before lane 0 refills it
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

/// Per-token FP8, streaming: `warps_per_row` (1 to 32, a power of two) warps own one row, so a
/// block of kThreads / 32 warps holds kThreads / 32 / warps_per_row rows; a lane keeps kC chunks of
/// its row (chunks rtid + i * row_threads), all of their loads issued before the first is used.
/// The row's NaN-propagating amax is a warp reduction plus, across the row's warps, a
/// shared-memory one; chunks past kC * row_threads are read again from L2 for the store (only the
/// producer's largest kC). One row per block-row, no loop: the block scheduler keeps every SM full
/// (like the streaming rowwise_kernel).
template <class Producer, int kC, int kThreads>
__global__ void __launch_bounds__(kThreads, per_token_min_blocks<Producer, kC, kThreads>())
    per_token_kernel(const Producer prod, const Fp8PerToken::Params p, int64_t rows, int cols,
                     int warps_per_row) {
  pdl_begin();
  __shared__ float partial[kThreads / 32];
  constexpr bool kRaw = per_token_keeps_raw<Producer>();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int rows_per_block = (kThreads / 32) / warps_per_row;
  const int group = warp / warps_per_row;               // which row of the block
  const int rtid = (warp % warps_per_row) * 32 + lane;  // thread index within the row
  const int row_threads = warps_per_row * 32;
  const int chunks = (cols + kChunk - 1) / kChunk;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * rows_per_block + group;
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
  const float ub = p.scale_ub ? *p.scale_ub : INFINITY;
  const float s = rules::fp8_dynamic_scale(amax, ub, false);
  const float inv = rules::fp8_inv_scale(s);
  if (rtid == 0) p.scales[row] = s;
  uint8_t* out = p.out + row * p.ld;
#pragma unroll
  for (int i = 0; i < kC; ++i) {
    if (nvalid[i] > 0) {
      const int col = (rtid + i * row_threads) * kChunk;
      if constexpr (kRaw) {
        float w[kChunk];
        prod.convert(raw[i], row, col, nvalid[i], w);
        store_fp8_chunk(out + col, p.vec, nvalid[i], w, inv);
      } else {
        store_fp8_chunk(out + col, p.vec, nvalid[i], v[i], inv);
      }
      prod.finish(row, col, nvalid[i]);
    }
  }
  if constexpr (kC == per_token_chunk_cap<Producer>()) {
    for (int c = rtid + kC * row_threads; c < chunks; c += row_threads) {
      float w[kChunk];
      const int nv = chunk_valid(cols, c * kChunk);
      prod.load(row, c * kChunk, nv, w);
      store_fp8_chunk(out + c * kChunk, p.vec, nv, w, inv);
      prod.finish(row, c * kChunk, nv);
    }
  }
}

/// True when p and a row stride of `ld` elements of `elem` bytes allow `align`-byte accesses.
inline bool aligned_rows(const void* p, int64_t ld, int64_t elem, int64_t align) {
  return reinterpret_cast<uintptr_t>(p) % align == 0 && (ld * elem) % align == 0;
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

/// The persistent pipelines for large problems: a grid of at most the resident blocks, each warp
/// keeping several tasks in flight (bulk copy, cp.async or kRowwiseUnroll register tasks).
template <class Producer, class Policy>
Status launch_rowwise_persistent(const Producer& prod, const typename Policy::Params& params,
                                 int64_t rows, int64_t cols, int64_t padding_units,
                                 int64_t tasks_per_row, int64_t tasks, const DeviceInfo& dev,
                                 cudaStream_t stream) {
  const int64_t warps_per_block = kRowwiseThreads / 32;
  const uint32_t per_warp = kRowwiseUnroll;
  // NOTE: `if constexpr`: producers without a pipeline need not declare its hooks.
  if constexpr (Producer::kBulk) {
    if (prod.vec && cols % kChunk == 0) {
      const auto bulk_kernel = rowwise_bulk_kernel<Producer, Policy>;
      const int smem = (kRowwiseThreads / 32) * kBulkStages * Producer::kBulkBytes;
      static int bulk_per_sm = 0;
      int64_t bulk_resident = 0;
      QFUSE_RETURN_IF_ERROR(resident_blocks(bulk_kernel, smem, dev, &bulk_per_sm, &bulk_resident));
      const int64_t blocks =
          std::min((tasks + warps_per_block - 1) / warps_per_block, bulk_resident);
      return launch_kernel(
          "rowwise_bulk_kernel", bulk_kernel, dim3(static_cast<unsigned>(blocks)),
          dim3(kRowwiseThreads), smem, stream, prod, params, rows, static_cast<int>(cols),
          FastDiv::make(static_cast<uint32_t>(tasks_per_row)), static_cast<uint32_t>(tasks));
    }
  }
  if constexpr (Producer::kAsync) {
    if (prod.vec) {
      const auto async_kernel = rowwise_async_kernel<Producer, Policy>;
      const int smem = kAsyncStages * kRowwiseThreads * Producer::kStageBytes;
      static int async_per_sm = 0;
      int64_t async_resident = 0;
      QFUSE_RETURN_IF_ERROR(
          resident_blocks(async_kernel, smem, dev, &async_per_sm, &async_resident));
      const int64_t blocks =
          std::min((tasks + warps_per_block - 1) / warps_per_block, async_resident);
      return launch_kernel(
          "rowwise_async_kernel", async_kernel, dim3(static_cast<unsigned>(blocks)),
          dim3(kRowwiseThreads), smem, stream, prod, params, rows, static_cast<int>(cols),
          FastDiv::make(static_cast<uint32_t>(tasks_per_row)), static_cast<uint32_t>(tasks));
    }
  }
  const auto kernel = rowwise_kernel<Producer, Policy, kRowwiseUnroll>;
  static int per_sm = 0;
  int64_t resident = 0;
  QFUSE_RETURN_IF_ERROR(resident_blocks(kernel, 0, dev, &per_sm, &resident));
  const int64_t groups = (tasks + per_warp - 1) / per_warp;
  int64_t blocks = std::min((groups + warps_per_block - 1) / warps_per_block, resident);
  if (padding_units > 0) blocks = std::max<int64_t>(blocks, resident / 4);
  blocks = std::max<int64_t>(blocks, 1);
  return launch_kernel("rowwise_kernel", kernel, dim3(static_cast<unsigned>(blocks)),
                       dim3(kRowwiseThreads), 0, stream, prod, params, rows, static_cast<int>(cols),
                       FastDiv::make(static_cast<uint32_t>(tasks_per_row)),
                       static_cast<uint32_t>(tasks), per_warp, static_cast<uint32_t>(blocks));
}

/// The streaming form: a grid of one task (32 lanes x kLaneChunks chunks of a row) per warp,
/// then blocks for the scale buffer's padding.
template <class Producer, class Policy, int kLaneChunks>
Status launch_rowwise_stream(const Producer& prod, const typename Policy::Params& params,
                             int64_t rows, int64_t cols, int64_t padding_units,
                             const DeviceInfo& dev, cudaStream_t stream) {
  const auto kernel = rowwise_kernel<Producer, Policy, 1, kLaneChunks>;
  static int per_sm = 0;
  int64_t resident = 0;
  QFUSE_RETURN_IF_ERROR(resident_blocks(kernel, 0, dev, &per_sm, &resident));
  const int64_t chunks = (cols + kChunk - 1) / kChunk;
  const int64_t tasks_per_row = (chunks + 32 * kLaneChunks - 1) / (32 * kLaneChunks);
  const int64_t tasks = rows * tasks_per_row;
  const int64_t warps_per_block = kRowwiseThreads / 32;
  const int64_t task_blocks = std::max<int64_t>((tasks + warps_per_block - 1) / warps_per_block, 1);
  // Padding blocks: one store per thread, at most a quarter of the resident blocks.
  const int64_t pad_blocks =
      padding_units > 0
          ? std::clamp<int64_t>((padding_units + kRowwiseThreads - 1) / kRowwiseThreads, 1,
                                std::max<int64_t>(resident / 4, 1))
          : 0;
  return launch_kernel(
      "rowwise_kernel", kernel, dim3(static_cast<unsigned>(task_blocks + pad_blocks)),
      dim3(kRowwiseThreads), 0, stream, prod, params, rows, static_cast<int>(cols),
      FastDiv::make(static_cast<uint32_t>(tasks_per_row)), static_cast<uint32_t>(tasks),
      uint32_t{1}, static_cast<uint32_t>(task_blocks));
}

/// The most chunks a lane of per_token_kernel keeps before a row takes more warps (large
/// batches). Same-run A/B on H100 (NOTES 31): 4 best at H=2048 (95.6 % against 93.0 for 8, 89.6
/// for 2), all equal at H=7168.
constexpr int kPerTokenMaxChunks = 4;

/// per_token_kernel with the fewest warps per row whose lanes keep at most kPerTokenMaxChunks
/// chunks (and at most the producer's cap) in blocks of kPerTokenThreads, kC the power of two
/// covering a lane's share. Small batches (fewer blocks than SMs) spread a row over up to 32 warps
/// (blocks of 1024; not the merge) with one chunk per lane, two past 1024 chunks: measured at T=16
/// (NOTES 31), the latency of a row is the number of chunks a lane works through.
template <class Producer>
Status launch_per_token(const Producer& prod, const Fp8PerToken::Params& pp, int64_t rows,
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
  const int64_t per_lane = (chunks + 32 * warps_per_row - 1) / (32 * warps_per_row);
  const int64_t rows_per_block = (threads / 32) / warps_per_row;
  const int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
  if (blocks > INT32_MAX)
    return Status::InvalidArgument("rows", "<= " + std::to_string(INT32_MAX * rows_per_block),
                                   std::to_string(rows));
  const auto go = [&](auto kernel) {
    return launch_kernel("per_token_kernel", kernel, dim3(static_cast<unsigned>(blocks)),
                         dim3(static_cast<unsigned>(threads)), 0, stream, prod, pp, rows,
                         static_cast<int>(cols), warps_per_row);
  };
  if constexpr (kCap == 8) {
    if (threads == 1024) {
      if (per_lane <= 1) return go(per_token_kernel<Producer, 1, 1024>);
      return go(per_token_kernel<Producer, 2, 1024>);
    }
    if (per_lane <= 1) return go(per_token_kernel<Producer, 1, kPerTokenThreads>);
    if (per_lane <= 2) return go(per_token_kernel<Producer, 2, kPerTokenThreads>);
    if (per_lane <= 4) return go(per_token_kernel<Producer, 4, kPerTokenThreads>);
    return go(per_token_kernel<Producer, 8, kPerTokenThreads>);
  } else {
    static_assert(kCap == 1);
    return go(per_token_kernel<Producer, 1, kPerTokenThreads>);
  }
}

/// QFUSE_ROWWISE=stream|persistent: the kernel form for large problems of producers that have
/// copy pipelines (an experiment switch for same-run comparisons; read once per process).
/// Unset: the per-policy default (Policy::kStream).
inline const char* rowwise_form_forced() {
  static const char* forced = [] {
    const char* e = std::getenv("QFUSE_ROWWISE");
    return e != nullptr && e[0] != 0 ? e : static_cast<const char*>(nullptr);
  }();
  return forced;
}

template <class Producer, class Policy>
Status launch_rowwise_policy(const Producer& prod, const typename Policy::Params& params,
                             int64_t rows, int64_t cols, int64_t padding_units,
                             cudaStream_t stream) {
  DeviceInfo dev;
  QFUSE_RETURN_IF_ERROR(current_device_info(&dev));
  const int64_t chunks = (cols + kChunk - 1) / kChunk;
  const int64_t tasks_per_row = (chunks + 31) / 32;
  const int64_t tasks = rows * tasks_per_row;
  if (tasks >= (int64_t{1} << 30))
    return Status::NotSupported("rows x ceil(cols / 256) = " + std::to_string(tasks) +
                                " tasks exceeds 2^30");
  const int64_t warps_per_block = kRowwiseThreads / 32;
  const int64_t task_blocks = (tasks + warps_per_block - 1) / warps_per_block;
  const auto stream_kernel = rowwise_kernel<Producer, Policy, 1>;
  static int stream_per_sm = 0;
  int64_t stream_resident = 0;
  QFUSE_RETURN_IF_ERROR(resident_blocks(stream_kernel, 0, dev, &stream_per_sm, &stream_resident));
  const char* forced = rowwise_form_forced();
  const bool small = task_blocks <= stream_resident;
  const std::string form = small || Producer::kStream
                               ? "stream"
                               : (forced ? forced : (Policy::kStream ? "stream" : "persistent"));
  // NOTE: one task per warp, one grid covering every task, few registers, the block scheduler
  // keeping every SM full: the form of every policy (all declare kStream). Measured on H100
  // (bench/NOTES.md): 96-103 % of copy bandwidth for quantize fp8_per_tensor, silu_mul_quant
  // fp8_group128 and merge_states fp8_per_tensor, against 88-94 % for the persistent pipelines
  // and 88-92 % for a persistent register kernel prefetching its next task. NVFP4 and per-group
  // FP8 beyond one wave of the narrow grid take wide lanes where the producer measured them
  // faster (Policy::kChunksPerLane, kNvfp4LaneChunks / kGroupLaneChunks, NOTES 27, 32); one wave
  // or less keeps 8 values per lane (twice the warps: T=16 measured 1.6-2.5 us narrow against
  // 2.0-2.7 us wide).
  // The persistent pipelines stay reachable with QFUSE_ROWWISE=persistent for comparisons.
  if (form == "stream") {
    if constexpr (Policy::kChunksPerLane == 2) {
      if (!small) {
        constexpr int kLane =
            std::is_same_v<Policy, Nvfp4> ? Producer::kNvfp4LaneChunks : Producer::kGroupLaneChunks;
        static_assert(kLane == 1 || kLane == 2 || kLane == 4);
        if constexpr (kLane > 1)
          return launch_rowwise_stream<Producer, Policy, kLane>(prod, params, rows, cols,
                                                                padding_units, dev, stream);
      }
    }
    return launch_rowwise_stream<Producer, Policy, 1>(prod, params, rows, cols, padding_units, dev,
                                                      stream);
  }
  if constexpr (Producer::kStream) {
    return Status(StatusCode::kInternal, "unreachable");
  } else {
    return launch_rowwise_persistent<Producer, Policy>(prod, params, rows, cols, padding_units,
                                                       tasks_per_row, tasks, dev, stream);
  }
}

template <class T>
T* typed(const TensorRef& t) {
  return static_cast<T*>(t.data);
}

/// Launches the row-wise kernel of `prod` with the policy `q.spec` selects. `q` must have been
/// validated for [rows, cols] (validate_quant_output) and rows > 0.
template <class Producer>
Status launch_rowwise(const Producer& prod, const QuantOutput& q, int64_t rows, int64_t cols,
                      cudaStream_t stream) {
  const QuantSpec& spec = q.spec;
  const int64_t ld = q.out.strides[0];
  ScaleShape shape;
  QFUSE_RETURN_IF_ERROR(scale_shape(spec, rows, cols, &shape));
  const ScaleAddr sa = ScaleAddr::make(spec, shape, rows);
  const int64_t padded = sa.padding_units();
  switch (spec.kind) {
    case QuantKind::kNone:
      switch (q.out.dtype) {
        case DType::kBF16: {
          using P = PlainOut<__nv_bfloat16>;
          const P::Params pp{typed<__nv_bfloat16>(q.out), ld, aligned_rows(q.out.data, ld, 2, 16)};
          return launch_rowwise_policy<Producer, P>(prod, pp, rows, cols, 0, stream);
        }
        case DType::kF16: {
          using P = PlainOut<__half>;
          const P::Params pp{typed<__half>(q.out), ld, aligned_rows(q.out.data, ld, 2, 16)};
          return launch_rowwise_policy<Producer, P>(prod, pp, rows, cols, 0, stream);
        }
        case DType::kF32: {
          using P = PlainOut<float>;
          const P::Params pp{typed<float>(q.out), ld, aligned_rows(q.out.data, ld, 4, 16)};
          return launch_rowwise_policy<Producer, P>(prod, pp, rows, cols, 0, stream);
        }
        default:
          return Status::InvalidArgument("out.dtype", "bf16|fp16|fp32",
                                         std::string(to_string(q.out.dtype)));
      }
    case QuantKind::kFp8PerTensor: {
      const Fp8PerTensor::Params pp{typed<uint8_t>(q.out), ld, q.scale,
                                    aligned_rows(q.out.data, ld, 1, 8)};
      return launch_rowwise_policy<Producer, Fp8PerTensor>(prod, pp, rows, cols, 0, stream);
    }
    case QuantKind::kFp8PerToken: {
      const Fp8PerToken::Params pp{typed<uint8_t>(q.out), ld, typed<float>(q.scales), q.scale_ub,
                                   aligned_rows(q.out.data, ld, 1, 8)};
      const int64_t chunks = (cols + kChunk - 1) / kChunk;
      return launch_per_token(prod, pp, rows, cols, chunks, stream);
    }
    case QuantKind::kFp8PerGroup: {
      const bool packed = spec.format == ScaleFormat::kUe8m0Packed;
      const bool pow2 = spec.format != ScaleFormat::kF32;
      const bool vec = aligned_rows(q.out.data, ld, 1, 8);
      if (spec.group_size == 64) {
        using P = Fp8PerGroup<64>;
        const P::Params pp{
            typed<uint8_t>(q.out), ld, q.scales.data, sa, q.scale_ub, pow2, packed, vec};
        return launch_rowwise_policy<Producer, P>(prod, pp, rows, cols, padded, stream);
      }
      using P = Fp8PerGroup<128>;
      const P::Params pp{
          typed<uint8_t>(q.out), ld, q.scales.data, sa, q.scale_ub, pow2, packed, vec};
      return launch_rowwise_policy<Producer, P>(prod, pp, rows, cols, padded, stream);
    }
    case QuantKind::kNvfp4: {
      const Nvfp4::Params pp{typed<uint8_t>(q.out),
                             ld,
                             typed<uint8_t>(q.scales),
                             sa,
                             q.scale,
                             aligned_rows(q.out.data, ld, 1, 4),
                             aligned_rows(q.out.data, ld, 1, 8)};
      return launch_rowwise_policy<Producer, Nvfp4>(prod, pp, rows, cols, padded, stream);
    }
  }
  return Status::NotSupported("quantization kind " + to_string(spec));
}

}  // namespace qfuse::quant
