// Test problems of the MLA decode family: random q and a paged cache with shuffled, non-contiguous
// block tables, NaN in the slots past each sequence (never to be read), garbage in the unused
// block-table entries, and the fp64 reference of the whole batch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/gpu.h"
#include "qfuse/mla_decode/mla_decode.h"

namespace qfuse::test {

struct MlaCase {
  int heads = 16;
  int s_q = 1;
  int block_size = 64;
  DType cache = DType::kBF16;
  bool strided = false;  // padded q head stride, cache as a layer slice with padded rows
  std::vector<int> lens = {1, 63, 64, 65, 1000, 4097};
  float k_scale = 0.037f;
  uint64_t seed = 1;
};

std::string describe(const MlaCase& c);

/// Host data, device buffers and the reference of one problem.
struct MlaProblem {
  MlaCase c;
  int64_t B = 0, T = 0, N = 0, num_blocks = 0, max_blocks = 0;
  int64_t q_sh = 0, q_st = 0;             // q strides (elements)
  int64_t c_st = 0, c_sb = 0, c_off = 0;  // cache strides, offset of the view (elements)
  std::vector<uint16_t> q;                // [T, N, 576] contiguous (reference layout)
  std::vector<uint8_t> cache_bytes;       // the whole allocation
  std::vector<int32_t> block_table, lens;
  DeviceBuffer d_q, d_cache, d_scale, d_bt, d_lens;
  float softmax_scale = 0.0f;
  std::vector<double> ref_out, ref_lse;

  /// The device arguments with `out` / `lse` views (filled by the caller).
  MlaDecodeArgs args() const;
  ref::MlaHostCache host_cache() const;
  void compute_reference();
};

/// Builds (and uploads) a problem.
MlaProblem make_problem(const MlaCase& c);

/// Relative L2 error of a bf16 [T, N * 512] output against ref (over all values), and the
/// largest relative L2 error of one (token, head) row with a non-zero reference.
struct MlaError {
  double rel_l2 = 0.0;
  double worst_row = 0.0;
  int64_t bad_zero_rows = 0;  // rows whose reference is 0 (no visible key) but the output is not
  int64_t nonfinite = 0;
};
MlaError compare_bf16(const std::vector<uint16_t>& out, int64_t ld, const MlaProblem& p);

/// lse values [T, N] (row stride ld) farther than 1e-3 (relative above 1) from the reference, or
/// not -inf where it is; `first` describes the first.
int64_t lse_mismatches(const std::vector<float>& lse, int64_t ld, const MlaProblem& p,
                       std::string* first);

}  // namespace qfuse::test
