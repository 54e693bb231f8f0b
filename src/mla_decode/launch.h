// Host twins of the MLA decode family's kernels (each defined in its own translation unit).
#pragma once

#include <cuda_runtime_api.h>

#include "mla_decode/params.h"
#include "qfuse/core/status.h"
#include "qfuse/quant/quantize.h"

namespace qfuse::mla {

/// How a kernel writes each piece: fp32 partials + lse into the workspace (split mode), or
/// o_latent bf16 + lse directly (MlaSplitMode::kNone).
enum class EpilogueKind { kPartial, kOutput };

Status launch_schedule(const int* seq_lens, int batch, int capacity, const Schedule& s,
                       cudaStream_t stream);

/// The tensor-core kernel for kRows query rows per block (16 or 32), one instantiation per file
/// (instantiations/). grid = (row blocks, parts or B).
template <int kRows, CacheKind kCache, EpilogueKind kEpi>
Status launch_tc(const TcParams& tp, dim3 grid, cudaStream_t stream);

/// The FP8-cache tensor-core kernel with two consumer warpgroups taking alternate tiles
/// (mainloop_fp8.cuh: consumer_fp8_alt), 16 query rows per block; the same grid as launch_tc.
/// kQ8: the QK on E4M3 products, Q split into two E4M3 halves (bench/NOTES.md M26).
template <EpilogueKind kEpi, bool kQ8>
Status launch_tc_fp8alt(const TcParams& tp, dim3 grid, cudaStream_t stream);

/// The FP8-cache kernel form at 16 rows per block: 3, the default, form 2 with the QK on E4M3
/// products of the split query (bench/NOTES.md M26, M29: 1.14-1.27x faster than form 2 on the
/// H200's N 16 rows, mixed lengths included); 2, two consumer warpgroups taking alternate tiles
/// with the QK on converted fp16 products (M14); 1, one consumer warpgroup. Process-wide;
/// QFUSE_MLA_FP8_FORM=1 or 2 sets it at start-up (same-binary A/B runs); tests switch it here.
void set_fp8_form(int form);
int fp8_form();

/// The wide tensor-core kernel (mainloop_wide.cuh): 64 query rows per block; an FP8 cache is
/// converted to bf16 tiles by the producer warpgroup.
template <CacheKind kCache, EpilogueKind kEpi>
Status launch_wide(const TcParams& tp, dim3 grid, cudaStream_t stream);

/// The pair form of the wide kernel for a bf16 cache (mainloop_pair.cuh: FlashMLA's schedule, two
/// warpgroups, no producer), one instantiation per file; the same grid as launch_wide.
template <EpilogueKind kEpi>
Status launch_pair(const TcParams& tp, dim3 grid, cudaStream_t stream);

/// The wide form for a bf16 cache: 1, mainloop_wide.cuh (producer + two consumers, the default);
/// 2, the pair form (mainloop_pair.cuh; correct, measured slower: bench/NOTES.md M17).
/// Process-wide; QFUSE_MLA_WIDE_FORM=2 sets it at start-up (same-binary A/B runs); tests switch
/// it here.
void set_wide_form(int form);
int wide_form();

/// Whether an FP8 cache takes the wide form where a request has 64 rows or more (1, the default:
/// 1.75-1.78x faster than the swapped form at the compute-bound bar shape, bench/NOTES.md M15) or
/// the swapped form at 32 rows per block (0). Process-wide; QFUSE_MLA_FP8_WIDE=0 sets it at
/// start-up (same-binary A/B runs); tests switch it here.
void set_fp8_wide(bool wide);
bool fp8_wide();

/// When the 16 / 32-row bf16 consumer releases the previous tile's stage (mainloop.cuh): 0, after
/// the next tile has landed and its QK is issued (the PV overlaps that QK); 1 (the default),
/// adaptive: where the next tile has not landed when the consumer reaches it, the previous PV is
/// waited for and the stage released before the wait for the tile, so the producer refills it
/// while the consumer waits (bench/NOTES.md M32: 2-5 % faster at the H200's 16k memory-bound
/// rows); 2, always before the wait (M23's order; the tests' way to run that path on every tile).
/// Process-wide; QFUSE_MLA_RELEASE=0 or 2 sets it at start-up (same-binary A/B runs); tests
/// switch it here.
void set_bf16_release(int mode);
int bf16_release();

/// Whether split mode with a plain bf16 output lets the decode kernel write the output where the
/// schedule leaves every request in one piece (the combine then skips: DecodeParams::direct; 1,
/// the default) or always goes through the partials and the combine (0). Process-wide;
/// QFUSE_MLA_DIRECT=0 sets it at start-up (same-binary A/B runs); tests switch it here.
void set_direct_output(bool direct);
bool direct_output();

/// The split schedule's cost of a piece for a kernel of `rows` query rows a block:
/// piece_overhead (schedule_rules.h), or QFUSE_MLA_PIECE_OVERHEAD's value for measurements.
int scheduler_piece_overhead(int rows, CacheKind cache);

/// Rows per block of the tensor-core kernels for `rows` = heads * s_q query rows: the wide form
/// (64) where a request has 64 rows or more (an FP8 cache: where fp8_wide()), else the swapped
/// form (16, 32).
inline int tc_rows_per_block(int rows, CacheKind cache) {
  if (rows >= 64 && (cache == CacheKind::kBf16 || fp8_wide())) return 64;
  return rows <= 16 ? 16 : 32;
}

/// The CUDA-core kernel (simple_kernel.cuh); grid = (ceil(rows / 8), parts or B).
template <CacheKind kCache>
Status launch_simple(const DecodeParams& p, EpilogueKind epi, dim3 grid, cudaStream_t stream);
constexpr int kSimpleRowsPerBlock = 8;

/// Merges the pieces' partials of every (token, head) into `out` ([T, N * 512]) through its
/// quantizer policy, and writes lse [T, N] when `lse` is non-null.
Status launch_combine(const DecodeParams& p, const QuantOutput& out, cudaStream_t stream);

}  // namespace qfuse::mla
