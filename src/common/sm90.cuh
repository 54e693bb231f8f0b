// Hopper (sm_90a) primitives shared by the tensor-core kernels of every family, as inline PTX:
// TMA tensor loads completing on mbarriers, mbarrier arrive / wait, named barriers, proxy fences,
// wgmma fences / commit / wait, 128-byte-swizzle matrix descriptors, setmaxnreg, ex2.
// The wgmma instructions themselves are CuTe's GMMA atoms (common/gmma.cuh), chosen per shape by
// the families: src/mla_decode/sm90.cuh (bf16, fp16), src/vit_attention/wgmma_{fp8,bf16}.cuh.
//
// Shared-memory operand layouts (PTX ISA, "matrix descriptor", 128-byte swizzle): every operand
// tile is made of 1024-byte atoms of 8 rows x 128 bytes; within an atom the 16-byte chunk c of row
// r sits at chunk c ^ r (the pattern TMA's SWIZZLE_128B writes). K-major operands (the reduction
// dimension contiguous): 128 bytes of K per row (64 bf16 or 128 e4m3), the next 8 rows 1024 bytes
// on (SBO), a k step (16 bf16 or 32 e4m3) 32 bytes on. MN-major operands (bf16 only): 64 values
// of M/N per row, consecutive K indices in consecutive rows, 8-row groups 1024 bytes apart (SBO),
// the next 64 of M/N at LBO.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <cstdint>

namespace qfuse::sm90 {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count)
               : "memory");
}

/// Makes barrier initialisation visible to the copy engine.
__device__ __forceinline__ void mbar_fence_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

/// Orders this thread's earlier generic shared-memory accesses before later async-proxy ones
/// (wgmma operand reads, TMA writes).
__device__ __forceinline__ void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)),
               "r"(bytes)
               : "memory");
}

/// Waits until the phase of parity `phase` of `bar` has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t phase) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(phase)
        : "memory");
  } while (!done);
}

/// Whether the phase with parity `phase` of `bar` has completed, without waiting (test_wait).
__device__ __forceinline__ bool mbar_test(uint64_t* bar, uint32_t phase) {
  uint32_t done = 0;
  asm volatile(
      "{\n .reg .pred p;\n mbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      " selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(smem_addr(bar)), "r"(phase)
      : "memory");
  return done != 0;
}

__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}

/// TMA: box at coordinates (c0, c1, c2) of `map` into `dst`, completing on `bar`. Coordinates
/// outside the tensor fill zeros (and count as transferred bytes).
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, uint64_t* bar,
                                            int c0, int c1, int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_addr(bar))
      : "memory");
}

/// TMA prefetch of the box at (c0, c1, c2) of `map` into L2 (no shared memory, no barrier).
__device__ __forceinline__ void tma_prefetch_3d(const CUtensorMap* map, int c0, int c1, int c2) {
  asm volatile("cp.async.bulk.prefetch.tensor.3d.L2.global.tile [%0, {%1, %2, %3}];\n" ::"l"(
                   reinterpret_cast<uint64_t>(map)),
               "r"(c0), "r"(c1), "r"(c2)
               : "memory");
}

__device__ __forceinline__ void prefetch_tensormap(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

/// bar.sync on named barrier `id` (1..15) among `count` threads (a multiple of 32).
__device__ __forceinline__ void named_sync(int id, int count) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

/// A 32-bit load with acquire semantics at GPU scope (pairs with a release, or a fence before a
/// relaxed atomic, of another block).
__device__ __forceinline__ int ld_acquire_gpu(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

/// Matrix descriptor of a 128-byte-swizzled operand starting at shared address `addr`.
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  uint64_t d = 0;
  d |= static_cast<uint64_t>((addr & 0x3FFFF) >> 4);
  d |= static_cast<uint64_t>((lbo & 0x3FFFF) >> 4) << 16;
  d |= static_cast<uint64_t>((sbo & 0x3FFFF) >> 4) << 32;
  d |= static_cast<uint64_t>(1) << 62;  // swizzle mode 1: 128 bytes
  return d;
}

/// The descriptor of an operand `bytes` further into the same layout as descriptor d: d's start
/// address field (bits 0-13, address / 16) plus bytes / 16, added to the low word alone (shared
/// addresses stay below 2^18, so the field cannot carry into the bits above it). Built once per
/// tile and stepped by constants, a wgmma's descriptors cost an add each instead of the masks,
/// shifts and register moves of sw128_desc (bench/NOTES.md M20).
__device__ __forceinline__ uint64_t desc_add(uint64_t d, uint32_t bytes) {
  const uint32_t lo = static_cast<uint32_t>(d) + (bytes >> 4);
  return (d & 0xFFFFFFFF00000000ull) | lo;
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}

__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

/// Keeps the compiler from moving accesses of accumulator registers across wgmma issue / wait.
template <int N>
__device__ __forceinline__ void fence_regs(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

template <int M, int N>
__device__ __forceinline__ void fence_regs(float (&r)[M][N]) {
#pragma unroll
  for (int j = 0; j < M; ++j) fence_regs(r[j]);
}

template <int N>
__device__ __forceinline__ void fence_regs(uint32_t (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

/// barrier.sync (the unaligned form) on named barrier `id` among `count` threads: for threads that
/// reach the barrier from different code (warpgroups of different roles); bar.sync promises one
/// static instruction per barrier generation, and compute-sanitizer's synccheck holds code to it.
__device__ __forceinline__ void named_sync_roles(int id, int count) {
  asm volatile("barrier.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

/// bar.arrive on named barrier `id` (the arriving side of a producer / consumer pair: does not
/// wait; the bar.sync side of the same barrier waits for `count` threads in all).
__device__ __forceinline__ void named_arrive(int id, int count) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

/// The executing warpgroup's index (threadIdx.x / 128) through CUTLASS's canonical_warp_group_idx,
/// a __shfl_sync from lane 0: ptxas then knows it is warp-uniform, so the role branches on it are
/// uniform (no collective fallbacks for the shuffles inside, descriptors and barrier ids derived
/// from it stay in uniform registers) and a wgmma left in flight across such a branch does not
/// serialize every wgmma of the kernel (C7518). NOTES M47.
__device__ __forceinline__ int warpgroup_index() {
  return cutlass::canonical_warp_group_idx();
}

/// Register budget of the executing warpgroup (setmaxnreg): the producer gives registers back,
/// the consumers take them.
template <int kRegs>
__device__ __forceinline__ void regs_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

template <int kRegs>
__device__ __forceinline__ void regs_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

/// 2^x by the SFU (ex2.approx.ftz: 2 ulp; 2^-inf = 0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace qfuse::sm90
