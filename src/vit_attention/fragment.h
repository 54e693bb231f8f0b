// Register-fragment index maps of the tensor-core ViT attention (attention_tc.cuh), host and
// device, so that host tests can check them against the transposed-V key order
// (vit_vt_position) the quantizer writes.
//
// fp32 accumulator of an m64nN wgmma, per thread (lane quad position qd): element i holds column
// 8 (i / 4) + 2 qd + (i % 2) of row g + 8 ((i / 2) % 2).
// e4m3 A operand of a k32 wgmma, per thread: register `slot` (0..3) byte u (0..3) holds column
// 16 (slot / 2) + 4 qd + u of row g + 8 (slot % 2).
#pragma once

#if defined(__CUDACC__)
#define QFUSE_FRAG_HD __host__ __device__ __forceinline__
#else
#define QFUSE_FRAG_HD inline
#endif

namespace qfuse::vit {

/// The accumulator element of a 64 x 128 score tile that P's A fragment of k32 step `ks` takes
/// for register `slot`, byte `u`: both halves of the step read two consecutive n8 blocks, rows
/// chosen by the slot.
QFUSE_FRAG_HD constexpr int p_source_index(int ks, int slot, int u) {
  return 16 * ks + 8 * (slot >> 1) + 4 * (u >> 1) + 2 * (slot & 1) + (u & 1);
}

/// Column (key within the tile) of accumulator element i for lane quad position qd.
QFUSE_FRAG_HD constexpr int acc_column(int i, int qd) {
  return 8 * (i >> 2) + 2 * qd + (i & 1);
}

/// Column (position within the tile's 128 keys) of A fragment register `slot`, byte `u`, k32
/// step `ks`, lane quad position qd.
QFUSE_FRAG_HD constexpr int a_column(int ks, int slot, int u, int qd) {
  return 32 * ks + 16 * (slot >> 1) + 4 * qd + u;
}

}  // namespace qfuse::vit
