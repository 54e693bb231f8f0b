// The quantizer protocol's adapters for attention epilogues, on the GPU, against the host
// reference byte for byte: every kind through the shared-memory-tile adapter (fp32 and bf16 tiles,
// tiles at the output's bottom and right edges, a partial last group) and through the wgmma
// accumulator-fragment adapter (fragments filled by the register layout of wgmma.m64nN's fp32
// accumulator, clipped at the edges). Kinds an adapter cannot serve for a geometry are checked
// to be refused by can_store_tile / can_store_wgmma_fragment. Outputs are poisoned first.
#include <cmath>
#include <string>
#include <vector>

#include "common/gpu.h"
#include "common/quant_check.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/quant/adapters/smem_tile.cuh"
#include "qfuse/quant/adapters/wgmma_fragment.cuh"
#include "qfuse/quant/dispatch.cuh"

namespace qfuse::test {
namespace {

constexpr int64_t kRows = 70;   // a partial last tile of rows
constexpr int64_t kCols = 208;  // a partial last tile of columns and partial groups of 64 / 128
constexpr int kTileRows = 32;

template <class Core, class T>
__global__ void tile_kernel(const typename Core::Params params, const float* x, int64_t rows,
                            int cols, int tile_cols, int ld) {
  extern __shared__ uint4 smem[];
  T* tile = reinterpret_cast<T*>(smem);
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTileRows;
  const int col0 = blockIdx.x * tile_cols;
  for (int i = threadIdx.x; i < kTileRows * tile_cols; i += blockDim.x) {
    const int r = i / tile_cols, c = i % tile_cols;
    // Outside the output the tile holds garbage the adapter must neither store nor count.
    const bool in = row0 + r < rows && col0 + c < cols;
    tile[r * ld + c] = quant::from_float<T>(in ? x[(row0 + r) * cols + col0 + c] : 1e4f);
  }
  __syncthreads();
  Core core(params);
  core.begin();
  const quant::SmemTile<T> t{tile, ld, kTileRows, tile_cols, row0, col0, rows, cols};
  quant::store_tile(core, t, threadIdx.x, blockDim.x);
  if (blockIdx.x == 0 && blockIdx.y == 0) core.zero_padding(threadIdx.x, blockDim.x);
}

template <int N, class Core>
__global__ void __launch_bounds__(128)
    fragment_kernel(const typename Core::Params params, const float* x, int64_t rows, int cols) {
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * 64;
  const int col0 = blockIdx.x * N;
  const int t = threadIdx.x, w = t / 32, l = t % 32;
  float acc[N / 2];
#pragma unroll
  for (int j = 0; j < N / 8; ++j)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int64_t r = row0 + 16 * w + l / 4 + 8 * h;
        const int c = col0 + 8 * j + 2 * (l % 4) + e;
        acc[4 * j + 2 * h + e] = r < rows && c < cols ? x[r * cols + c] : -1e4f;
      }
  Core core(params);
  core.begin();
  quant::store_wgmma_fragment<N>(core, acc, row0, col0, rows, cols);
  if (blockIdx.x == 0 && blockIdx.y == 0) core.zero_padding(threadIdx.x, blockDim.x);
}

struct Inputs {
  std::vector<float> x;  // fp32 values (bf16-representable where the tile is bf16)
  DeviceBuffer dx;
};

Inputs make_inputs(bool bf16, uint64_t seed) {
  Inputs in;
  in.x = random_floats(kRows * kCols, seed, 1.5f);
  if (bf16) {
    std::vector<float> rounded;
    encode(in.x, DType::kBF16, &rounded);
    in.x = rounded;
  }
  in.dx = DeviceBuffer(in.x.size() * sizeof(float));
  in.dx.upload(in.x.data(), in.x.size() * sizeof(float));
  return in;
}

float given_scale(const QuantSpec& spec, const std::vector<float>& x) {
  if (spec.kind != QuantKind::kNvfp4) return 0.0173f;  // non-unit; outliers saturate
  float amax = 0;
  for (float v : x) amax = std::fmax(amax, std::fabs(v));
  return 448.0f * 6.0f / amax * 1.3f;
}

void check(const DeviceQuantOutput& d, const std::vector<float>& x, float scale) {
  CheckOptions opt;
  opt.exact = true;
  opt.scale_value = scale;
  opt.none_dtype = DType::kBF16;
  EXPECT_TRUE(check_quant_output(d, std::vector<double>(x.begin(), x.end()), opt));
}

class AdapterKinds : public ::testing::TestWithParam<QuantSpec> {};

TEST_P(AdapterKinds, SmemTileMatchesReference) {
  QFUSE_REQUIRE_GPU();
  const QuantSpec spec = GetParam();
  const bool row_scope = quant_needs(spec).scope == ScaleScope::kRow;
  const int tile_cols = row_scope ? 256 : 128;
  ASSERT_TRUE(quant::can_store_tile(spec, tile_cols, 0, kCols));
  if (row_scope) EXPECT_FALSE(quant::can_store_tile(spec, 128, 0, kCols));
  if (quant_needs(spec).scope == ScaleScope::kGroup)
    EXPECT_FALSE(quant::can_store_tile(spec, 128 + 8, 0, kCols));
  for (bool bf16 : {false, true}) {
    SCOPED_TRACE(to_string(spec) + (bf16 ? " bf16 tile" : " fp32 tile"));
    Inputs in = make_inputs(bf16, bf16 ? 7 : 8);
    const float scale = given_scale(spec, in.x);
    DeviceQuantOutput d = DeviceQuantOutput::make(spec, kRows, kCols, DType::kBF16, scale);
    const int ld = tile_cols + (bf16 ? 8 : 4);  // padded rows (16-byte multiples)
    const size_t smem = static_cast<size_t>(kTileRows) * ld * (bf16 ? 2 : 4);
    const dim3 grid((kCols + tile_cols - 1) / tile_cols, (kRows + kTileRows - 1) / kTileRows);
    const Status st =
        quant::visit_quantizer(d.view(), kRows, kCols, [&](auto tag, const auto& params, int64_t) {
          using Core = typename decltype(tag)::type;
          if (bf16)
            tile_kernel<Core, __nv_bfloat16>
                <<<grid, 96, smem>>>(params, in.dx.as<float>(), kRows, kCols, tile_cols, ld);
          else
            tile_kernel<Core, float>
                <<<grid, 96, smem>>>(params, in.dx.as<float>(), kRows, kCols, tile_cols, ld);
          QFUSE_CHECK_LAUNCH("tile_kernel");
          return Status::Ok();
        });
    ASSERT_TRUE(st.ok()) << st.to_string();
    QFUSE_CUDA_OK(cudaDeviceSynchronize());
    check(d, in.x, scale);
  }
}

TEST_P(AdapterKinds, WgmmaFragmentMatchesReference) {
  QFUSE_REQUIRE_GPU();
  const QuantSpec spec = GetParam();
  const bool row_scope = quant_needs(spec).scope == ScaleScope::kRow;
  constexpr int kN = 128, kWide = 256;
  const int n = row_scope ? kWide : kN;
  ASSERT_TRUE(quant::can_store_wgmma_fragment(spec, n, 0, kCols));
  if (row_scope) EXPECT_FALSE(quant::can_store_wgmma_fragment(spec, kN, 0, kCols));
  if (quant_needs(spec).scope == ScaleScope::kGroup)
    EXPECT_FALSE(quant::can_store_wgmma_fragment(spec, 72, 0, kCols));
  Inputs in = make_inputs(false, 9);
  const float scale = given_scale(spec, in.x);
  DeviceQuantOutput d = DeviceQuantOutput::make(spec, kRows, kCols, DType::kBF16, scale);
  const dim3 grid((kCols + n - 1) / n, (kRows + 63) / 64);
  const Status st =
      quant::visit_quantizer(d.view(), kRows, kCols, [&](auto tag, const auto& params, int64_t) {
        using Core = typename decltype(tag)::type;
        if (row_scope)
          fragment_kernel<kWide, Core><<<grid, 128>>>(params, in.dx.as<float>(), kRows, kCols);
        else
          fragment_kernel<kN, Core><<<grid, 128>>>(params, in.dx.as<float>(), kRows, kCols);
        QFUSE_CHECK_LAUNCH("fragment_kernel");
        return Status::Ok();
      });
  ASSERT_TRUE(st.ok()) << st.to_string();
  QFUSE_CUDA_OK(cudaDeviceSynchronize());
  check(d, in.x, scale);
}

INSTANTIATE_TEST_SUITE_P(AllKinds, AdapterKinds, ::testing::ValuesIn(all_quant_specs()),
                         [](const auto& info) {
                           std::string s = to_string(info.param);
                           for (char& c : s)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

}  // namespace
}  // namespace qfuse::test
