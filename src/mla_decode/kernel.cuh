// The tensor-core MLA decode kernel: Kernel<Mainloop (mainloop.cuh), Epilogue (epilogue.cuh),
// Scheduler (schedule.cuh)>, instantiated per (rows per block, cache dtype, epilogue) in
// instantiations/ (one file each).
//
//   grid  (row blocks = heads * s_q / kRows, parts of the split schedule or B requests)
//   block 256 threads: warpgroup 0 = producer (one thread issues TMA), warpgroup 1 = consumer
//         (wgmma, softmax, epilogue; mainloop.cuh for a bf16 cache, mainloop_fp8.cuh for E4M3)
//   q [T, N, 576] bf16, cache bf16 | e4m3 (traits.cuh), output through the epilogue.
#pragma once

#include <cuda_runtime.h>

#include <type_traits>

#include "core/launch.cuh"
#include "mla_decode/launch.h"
#include "mla_decode/mainloop.cuh"
#include "mla_decode/mainloop_fp8.cuh"
#include "mla_decode/mainloop_pair.cuh"
#include "mla_decode/mainloop_wide.cuh"

namespace qfuse::mla {

template <int kRows, CacheKind kCache>
using TcTraitsOf =
    std::conditional_t<kCache == CacheKind::kFp8, TcFp8Traits<kRows>, TcTraits<kRows>>;

/// The kernels' common prologue: the 1024-byte aligned shared-memory plan and its barriers
/// (full: `full_arrivals` a phase, 1 where TMA fills the stage; empty: `consumer_warps`; p_full
/// where the traits have it: a warpgroup's threads), visible to every thread and to TMA before the
/// first use; then the PDL wait (the schedule, the cache and q may come from the previous kernels
/// of the stream).
template <class Tr>
__device__ __forceinline__ TcSmem<Tr> kernel_prologue(uint8_t* smem_raw, int consumer_warps,
                                                      int q_consumer_warps = 4,
                                                      int full_arrivals = 1) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(smem_raw);
  const TcSmem<Tr> sm{smem_raw + ((1024 - (a & 1023)) & 1023)};
  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < Tr::kStages; ++s) {
      mbar_init(sm.full(s), full_arrivals);
      mbar_init(sm.empty(s), consumer_warps);
      if constexpr (Tr::kPFull) {
        mbar_init(sm.p_full(s), 128);
        mbar_init(sm.a_empty(s), 128);
      }
    }
#pragma unroll
    for (int i = 0; i < Tr::kQStages; ++i) {
      mbar_init(sm.q_full(i), 1);
      mbar_init(sm.q_empty(i), q_consumer_warps);
    }
    mbar_fence_init();
  }
  __syncthreads();
  pdl_begin();
  return sm;
}

template <int kRows, CacheKind kCache, EpilogueKind kEpi>
__global__ void __launch_bounds__(256, 1) mla_tc_kernel(const __grid_constant__ TcParams tp) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Tr = TcTraitsOf<kRows, kCache>;
  using Epi = std::conditional_t<kEpi == EpilogueKind::kPartial, PartialEpilogue, OutputEpilogue>;
  extern __shared__ uint8_t smem_raw[];
  // NOTE: kernel_prologue's steps written out: through the helper nvcc reallocated the measured
  // FP8 kernel's registers (85 more uniform moves), so this kernel keeps the form it was measured
  // in (bench/NOTES.md M1-M5).
  const uintptr_t a = reinterpret_cast<uintptr_t>(smem_raw);
  const TcSmem<Tr> sm{smem_raw + ((1024 - (a & 1023)) & 1023)};
  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < Tr::kStages; ++s) {
      mbar_init(sm.full(s), 1);
      mbar_init(sm.empty(s), 4);
    }
#pragma unroll
    for (int i = 0; i < Tr::kQStages; ++i) {
      mbar_init(sm.q_full(i), 1);
      mbar_init(sm.q_empty(i), 4);
    }
    mbar_fence_init();
  }
  __syncthreads();
  // NOTE: the schedule, the cache and q may come from the previous kernels of the stream.
  pdl_begin();
  const int rb = blockIdx.x, part = blockIdx.y;
  if (threadIdx.x < 128) {
    if (threadIdx.x == 0) producer_tma<Tr>(tp, sm, rb, part);
  } else if constexpr (Tr::kFp8) {
    consumer_fp8<Tr, Epi>(tp, sm, rb, part);
  } else {
    consumer<Tr, Epi>(tp, sm, rb, part);
  }
#endif
}

/// The roles of the 384-thread kernels with a TMA producer: warpgroup 0 keeps 56 registers and
/// one thread issues the loads (producer_tma), warpgroups 1 and 2 take 224 each and run
/// consumer(wg) (128 * 56 + 256 * 224 <= 65536).
template <class Tr, class F>
__device__ __forceinline__ void tma_producer_and_consumers(const TcParams& tp, const TcSmem<Tr>& sm,
                                                           int rb, int part, F&& consumer) {
  const int wg = warpgroup_index();
  if (wg == 0) {
    regs_dec<56>();
    if (threadIdx.x == 0) producer_tma<Tr>(tp, sm, rb, part);
  } else {
    regs_inc<224>();
    consumer(wg);
  }
}

/// Raises kKernel's dynamic shared-memory limit to `smem` (once per kernel) and launches it.
template <auto kKernel>
Status launch_tc_kernel(const char* name, int threads, int smem, dim3 grid, cudaStream_t stream,
                        const TcParams& tp) {
  static const cudaError_t attr =
      cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  QFUSE_RETURN_IF_ERROR(cuda_status(attr, "cudaFuncSetAttribute (MLA decode kernel)"));
  return launch_kernel(name, kKernel, grid, dim3(threads), smem, stream, tp);
}

template <int kRows, CacheKind kCache, EpilogueKind kEpi>
Status launch_tc(const TcParams& tp, dim3 grid, cudaStream_t stream) {
  using Tr = TcTraitsOf<kRows, kCache>;
  return launch_tc_kernel<mla_tc_kernel<kRows, kCache, kEpi>>("mla_tc_kernel", Tr::kThreads,
                                                              Tr::kSmemBytes, grid, stream, tp);
}

/// The FP8 cache with two consumer warpgroups taking alternate tiles (consumer_fp8_alt), 16 rows,
/// 384 threads; kQ8: the QK on E4M3 products (bench/NOTES.md M26). NOTE: registers: the producer
/// warpgroup keeps 56, each consumer takes 224: 128 * 56 + 256 * 224 <= 65536.
template <EpilogueKind kEpi, bool kQ8>
__global__ void __launch_bounds__(384, 1)
    mla_tc_fp8alt_kernel(const __grid_constant__ TcParams tp) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Tr = TcFp8AltTraits<16>;
  using Epi = std::conditional_t<kEpi == EpilogueKind::kPartial, PartialEpilogue, OutputEpilogue>;
  extern __shared__ uint8_t smem_raw[];
  const TcSmem<Tr> sm = kernel_prologue<Tr>(smem_raw, 4, 8);
  const int rb = blockIdx.x, part = blockIdx.y;
  tma_producer_and_consumers<Tr>(
      tp, sm, rb, part, [&](int wg) { consumer_fp8_alt<Tr, Epi, kQ8>(tp, sm, rb, part, wg - 1); });
#endif
}

template <EpilogueKind kEpi, bool kQ8>
Status launch_tc_fp8alt(const TcParams& tp, dim3 grid, cudaStream_t stream) {
  using Tr = TcFp8AltTraits<16>;
  return launch_tc_kernel<mla_tc_fp8alt_kernel<kEpi, kQ8>>("mla_tc_fp8alt_kernel", Tr::kThreads,
                                                           Tr::kSmemBytes, grid, stream, tp);
}

/// The wide form (mainloop_wide.cuh): 64 query rows per block, 384 threads. NOTE: registers: a
/// bf16 cache's producer warpgroup (one TMA thread) keeps 56 and each consumer takes 224 (two
/// 64 x 256 fp32 accumulators and the 64 x 64 scores): 56 + 2 * 224 = 3 * 168, the block's launch
/// allocation. An FP8 cache's producer warpgroup converts (producer_fp8_wide: a tile in flight in
/// 72 registers) and keeps 104, the QK consumer 216 (ptxas spills a little there), the PV
/// consumer 184: 104 + 216 + 184 = 3 * 168.
#ifndef QFUSE_WIDE_FP8_REGS
#define QFUSE_WIDE_FP8_REGS 104, 216, 184
#endif
constexpr int kFp8Regs[3] = {QFUSE_WIDE_FP8_REGS};
// NOTE: setmaxnreg moves registers within the block's launch allocation (168 a thread at 384
// threads: 3 x 168 per thread of a warpgroup), not the SM's 65536: a larger sum leaves the last
// setmaxnreg.inc waiting forever (the first device run of 104 / 224 / 184 hung).
static_assert(kFp8Regs[0] + kFp8Regs[1] + kFp8Regs[2] <= 3 * 168, "the block's launch registers");

template <CacheKind kCache, EpilogueKind kEpi>
__global__ void __launch_bounds__(384, 1) mla_wide_kernel(const __grid_constant__ TcParams tp) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Tr = std::conditional_t<kCache == CacheKind::kFp8, WideFp8Traits, WideTraits>;
  using Epi = std::conditional_t<kEpi == EpilogueKind::kPartial, PartialEpilogue, OutputEpilogue>;
  extern __shared__ uint8_t smem_raw[];
  if constexpr (Tr::kFp8) {
    const TcSmem<Tr> sm = kernel_prologue<Tr>(smem_raw, 8, 4, 128);
    const int rb = blockIdx.x, part = blockIdx.y;
    const int wg = warpgroup_index();
    if (wg == 0) {
      regs_dec<kFp8Regs[0]>();
      producer_fp8_wide<Tr>(tp, sm, rb, part);
    } else if (wg == 1) {
      regs_inc<kFp8Regs[1]>();
      wide_consumer_qk<Tr, Epi>(tp, sm, rb, part);
    } else {
      regs_inc<kFp8Regs[2]>();
      wide_consumer_pv<Tr, Epi>(tp, sm, rb, part);
    }
  } else {
    const TcSmem<Tr> sm = kernel_prologue<Tr>(smem_raw, 8);
    const int rb = blockIdx.x, part = blockIdx.y;
    tma_producer_and_consumers<Tr>(tp, sm, rb, part, [&](int wg) {
      if (wg == 1)
        wide_consumer_qk<Tr, Epi>(tp, sm, rb, part);
      else
        wide_consumer_pv<Tr, Epi>(tp, sm, rb, part);
    });
  }
#endif
}

template <CacheKind kCache, EpilogueKind kEpi>
Status launch_wide(const TcParams& tp, dim3 grid, cudaStream_t stream) {
  return launch_tc_kernel<mla_wide_kernel<kCache, kEpi>>("mla_wide_kernel", WideTraits::kThreads,
                                                         WideTraits::kSmemBytes, grid, stream, tp);
}

/// The pair form of the wide kernel (mainloop_pair.cuh): 64 query rows per block, a bf16 cache,
/// two warpgroups (256 threads, up to 255 registers each) and no producer warpgroup.
template <EpilogueKind kEpi>
__global__ void __launch_bounds__(256, 1) mla_pair_kernel(const __grid_constant__ TcParams tp) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Epi = std::conditional_t<kEpi == EpilogueKind::kPartial, PartialEpilogue, OutputEpilogue>;
  extern __shared__ uint8_t smem_raw[];
  const uintptr_t a = reinterpret_cast<uintptr_t>(smem_raw);
  const PairSmem sm{smem_raw + ((1024 - (a & 1023)) & 1023)};
  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < 2; ++s)
#pragma unroll
      for (int kb = 0; kb < PairTraits::kBoxes; ++kb) mbar_init(sm.full(s, kb), 1);
    mbar_init(sm.q_full(), 1);
    mbar_fence_init();
  }
  __syncthreads();
  pdl_begin();
  pair_mainloop<Epi>(tp, sm, blockIdx.x, blockIdx.y);
#endif
}

template <EpilogueKind kEpi>
Status launch_pair(const TcParams& tp, dim3 grid, cudaStream_t stream) {
  return launch_tc_kernel<mla_pair_kernel<kEpi>>("mla_pair_kernel", PairTraits::kThreads,
                                                 PairTraits::kSmemBytes, grid, stream, tp);
}

}  // namespace qfuse::mla
