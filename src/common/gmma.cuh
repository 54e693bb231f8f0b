// CuTe's SM90 GMMA atoms (CUTLASS 4.x, cute/arch/mma_sm90_gmma.hpp: one struct per wgmma shape
// and type, whose fma takes every accumulator register by reference) called with the accumulator
// fragment as an array: the wrappers the hand-written kernels use instead of their own inline
// PTX. scale_d 0 overwrites D, 1 accumulates.
#pragma once

// The N that are not multiples of 32 (72, 80, 96 ... the head sizes) are CuTe's extended shapes.
#ifndef CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#define CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#endif
#include <cute/arch/mma_sm90_gmma.hpp>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace qfuse::sm90 {

namespace gmma = ::cute::SM90::GMMA;

namespace detail {
template <class Atom, int kRegs, size_t... I>
__device__ __forceinline__ void gmma_ss(float (&d)[kRegs], uint64_t da, uint64_t db, int scale_d,
                                        std::index_sequence<I...>) {
  Atom::fma(da, db, d[I]..., static_cast<gmma::ScaleOut>(scale_d));
}
template <class Atom, int kRegs, size_t... I>
__device__ __forceinline__ void gmma_rs(float (&d)[kRegs], const uint32_t* a, uint64_t db,
                                        int scale_d, std::index_sequence<I...>) {
  Atom::fma(a[0], a[1], a[2], a[3], db, d[I]..., static_cast<gmma::ScaleOut>(scale_d));
}
}  // namespace detail

/// D (+)= A B, A and B from shared memory (matrix descriptors da, db).
template <class Atom, int kRegs>
__device__ __forceinline__ void gmma_ss(float (&d)[kRegs], uint64_t da, uint64_t db, int scale_d) {
  detail::gmma_ss<Atom>(d, da, db, scale_d, std::make_index_sequence<kRegs>{});
}

/// D (+)= A B, A from registers (a[0..3]: the four .b32 of the thread's A fragment), B from
/// shared memory.
template <class Atom, int kRegs>
__device__ __forceinline__ void gmma_rs(float (&d)[kRegs], const uint32_t* a, uint64_t db,
                                        int scale_d) {
  detail::gmma_rs<Atom>(d, a, db, scale_d, std::make_index_sequence<kRegs>{});
}

}  // namespace qfuse::sm90
