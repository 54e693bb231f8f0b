// `qfuse bench --suite wgmma_rate`: what one SM's tensor pipe gives a wgmma shape (bench/NOTES.md
// M25). The MLA decode kernels at 16 / 32 query rows issue m64n16k16 / m64n32k16 wgmmas (the
// rows as N, the swapped form), 68 a 64-token tile; whether such a narrow N runs at the pipe's
// rate or pays a per-instruction cost decides whether the FP8 cache's 16-row path can reach the
// read ceiling with 16-bit products at all (36 KB a tile leaves ~2200 cycles a tile on an H200),
// and what 8-bit products (k32: half the instructions) would buy.
//
// Each block (one per SM) runs WG warpgroups; each warpgroup issues ITERS groups of CH
// independent accumulators x 4 k-steps (CH = 1: one dependent chain, as the MLA QK over a box;
// CH = 8: eight, as its PV over the m-tiles) on operands in shared memory (or A from registers:
// `rs`), one commit group per iteration, at most two groups in flight. TFLOPS = the rate; per SM
// and cycle: TFLOPS / (SMs x clock).
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bench/family.h"
#include "bench/harness.h"
#include "common/gmma.cuh"
#include "common/sm90.cuh"
#include "qfuse/core/arch.h"
#include "qfuse/core/cuda_check.h"

namespace qfuse::bench {
namespace {

using namespace ::qfuse::sm90;

constexpr int kSmemBytes = 64 * 1024;
constexpr int kKSteps = 4;

// The shapes: Atom, N, K (elements of one k-step), whether A comes from registers.
template <class Atom_, int kN_, int kK_, bool kRs_>
struct Op {
  using Atom = Atom_;
  static constexpr int kN = kN_, kK = kK_;
  static constexpr bool kRs = kRs_;
};
using KM = gmma::Major;
using Bf16N16 = Op<gmma::MMA_64x16x16_F32BF16BF16_SS<KM::K, KM::K>, 16, 16, false>;
using Bf16N32 = Op<gmma::MMA_64x32x16_F32BF16BF16_SS<KM::K, KM::K>, 32, 16, false>;
using Bf16N64 = Op<gmma::MMA_64x64x16_F32BF16BF16_SS<KM::K, KM::K>, 64, 16, false>;
using Bf16N256 = Op<gmma::MMA_64x256x16_F32BF16BF16_SS<KM::K, KM::K>, 256, 16, false>;
using F16RsN16 = Op<gmma::MMA_64x16x16_F32F16F16_RS<KM::K, KM::K>, 16, 16, true>;
using F16RsN32 = Op<gmma::MMA_64x32x16_F32F16F16_RS<KM::K, KM::K>, 32, 16, true>;
using E4m3N16 = Op<gmma::MMA_64x16x32_F32E4M3E4M3_SS_TN<>, 16, 32, false>;
using E4m3N32 = Op<gmma::MMA_64x32x32_F32E4M3E4M3_SS_TN<>, 32, 32, false>;
using E4m3N64 = Op<gmma::MMA_64x64x32_F32E4M3E4M3_SS_TN<>, 64, 32, false>;
using E4m3RsN16 = Op<gmma::MMA_64x16x32_F32E4M3E4M3_RS_TN<>, 16, 32, true>;

template <class S, int kCh>
__global__ void __launch_bounds__(384, 1) wgmma_rate_kernel(int iters, float* sink) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ uint8_t smem_raw[];
  // The operands' swizzle atoms want 1024-byte alignment (the launch adds 1 KB of slack).
  uint8_t* smem = smem_raw + ((1024 - (reinterpret_cast<uintptr_t>(smem_raw) & 1023)) & 1023);
  // Small random-looking values (bf16 / fp16 around 1, E4M3 codes 0x30-0x3f): the data only has
  // to be finite; the pipe's timing should not depend on it.
  for (int i = threadIdx.x; i < kSmemBytes / 4; i += blockDim.x) {
    const uint32_t h = (static_cast<uint32_t>(i) * 2654435761u) ^ (blockIdx.x * 40503u);
    reinterpret_cast<uint32_t*>(smem)[i] =
        S::kK == 32 ? (h & 0x0F0F0F0Fu) | 0x30303030u : (h & 0x007F007Fu) | 0x3F003F00u;
  }
  fence_proxy_async_shared();
  __syncthreads();
  const uint32_t base = smem_addr(smem);
  // A: 64 rows x 128 bytes per k-step group (8 KB), B: N rows x 128 bytes after 32 KB.
  const uint64_t da = sw128_desc(base, 16, 1024);
  const uint64_t db = sw128_desc(base + 32 * 1024, 16, 1024);
  const uint32_t a_regs[4] = {0x3C003C00u ^ threadIdx.x, 0x3C003C00u, 0x38003800u, 0x3C003C00u};
  float d[kCh][S::kN / 2];
#pragma unroll
  for (int c = 0; c < kCh; ++c)
#pragma unroll
    for (int k = 0; k < S::kN / 2; ++k) d[c][k] = 0.0f;
  for (int it = 0; it < iters; ++it) {
    wgmma_fence();
#pragma unroll
    for (int c = 0; c < kCh; ++c)
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
        if constexpr (S::kRs) {
          gmma_rs<typename S::Atom>(d[c], a_regs, desc_add(db, ks * 32), 1);
        } else {
          gmma_ss<typename S::Atom>(d[c], desc_add(da, (c & 3) * 8192 + ks * 32),
                                    desc_add(db, ks * 32), 1);
        }
      }
    wgmma_commit();
    wgmma_wait<1>();
  }
  wgmma_wait<0>();
  float acc = 0.0f;
#pragma unroll
  for (int c = 0; c < kCh; ++c)
#pragma unroll
    for (int k = 0; k < S::kN / 2; ++k) acc += d[c][k];
  if (acc == 1.2345f) sink[0] = acc;  // keeps the products
#endif
}

class RateInstance final : public Instance {
 public:
  RateInstance(void (*kernel)(int, float*), int64_t flops_per_group, int wg, int iters)
      : kernel_(kernel), flops_per_group_(flops_per_group), wg_(wg), iters_(iters) {}
  int64_t min_bytes() const override { return 0; }
  int64_t flops() const override {
    return static_cast<int64_t>(blocks_) * wg_ * iters_ * flops_per_group_;
  }
  Status setup(int, cudaStream_t) override {
    DeviceInfo dev;
    QFUSE_RETURN_IF_ERROR(current_device_info(&dev));
    blocks_ = dev.sm_count;
    QFUSE_CUDA_RETURN(cudaFuncSetAttribute(kernel_, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           kSmemBytes + 1024));
    return sink_.allocate(4);
  }
  Status launch(int, cudaStream_t stream) override {
    kernel_<<<blocks_, 128 * wg_, kSmemBytes + 1024, stream>>>(iters_, sink_.as<float>());
    return cuda_status(cudaGetLastError(), "wgmma_rate_kernel");
  }

 private:
  void (*kernel_)(int, float*);
  int64_t flops_per_group_;
  int wg_, iters_, blocks_ = 0;
  DeviceBuffer sink_;
};

template <class S, int kCh>
Routine rate_routine(const std::string& type) {
  Routine r;
  r.name = "wgmma_rate/" + type + "_n" + std::to_string(S::kN) + "_ch" + std::to_string(kCh);
  r.description = "tensor-pipe rate of m64n" + std::to_string(S::kN) + "k" + std::to_string(S::kK) +
                  " " + type + ", " + std::to_string(kCh) +
                  " accumulator chain(s) x 4 k-steps a group; WG warpgroups a block, one block "
                  "an SM, ITERS groups";
  r.make = [](const Shape& s, std::unique_ptr<Instance>* out) {
    int64_t wg = 1, iters = 1;
    QFUSE_RETURN_IF_ERROR(s.get("WG", &wg));
    QFUSE_RETURN_IF_ERROR(s.get("ITERS", &iters));
    if (wg < 1 || wg > 3) return Status::InvalidArgument("WG", "1, 2 or 3", std::to_string(wg));
    const int64_t per_group = int64_t{2} * 64 * S::kN * S::kK * kKSteps * kCh;
    *out = std::make_unique<RateInstance>(&wgmma_rate_kernel<S, kCh>, per_group,
                                          static_cast<int>(wg), static_cast<int>(iters));
    return Status::Ok();
  };
  return r;
}

}  // namespace

void add_wgmma_rate(ToolRegistrar& r) {
  std::vector<Routine> rs = {
      rate_routine<Bf16N16, 1>("bf16_ss"),   rate_routine<Bf16N16, 8>("bf16_ss"),
      rate_routine<Bf16N32, 1>("bf16_ss"),   rate_routine<Bf16N32, 8>("bf16_ss"),
      rate_routine<Bf16N64, 1>("bf16_ss"),   rate_routine<Bf16N64, 4>("bf16_ss"),
      rate_routine<Bf16N256, 1>("bf16_ss"),  rate_routine<F16RsN16, 1>("f16_rs"),
      rate_routine<F16RsN16, 8>("f16_rs"),   rate_routine<F16RsN32, 8>("f16_rs"),
      rate_routine<E4m3N16, 1>("e4m3_ss"),   rate_routine<E4m3N16, 8>("e4m3_ss"),
      rate_routine<E4m3N32, 8>("e4m3_ss"),   rate_routine<E4m3N64, 4>("e4m3_ss"),
      rate_routine<E4m3RsN16, 8>("e4m3_rs"),
  };
  // NOTE: 16384 wgmmas a warpgroup (ITERS = 4096 / CH): 0.03-1 ms a call.
  std::vector<Case> cases;
  for (const Routine& ro : rs) {
    const int64_t ch = std::stoll(ro.name.substr(ro.name.rfind("_ch") + 3));
    for (int64_t wg : {1, 2})
      cases.push_back({"wgmma rate, WG warpgroups a block", ro.name,
                       Shape{{{"WG", wg}, {"ITERS", 4096 / ch}}}});
    r.add_routine(ro);
  }
  r.add_suite_cases("wgmma_rate",
                    "the tensor pipe's rate per wgmma shape (m64nNk16 bf16 / fp16, m64nNk32 e4m3; "
                    "one or several accumulator chains; 1-2 warpgroups an SM): bench/NOTES.md M25",
                    std::move(cases));
}

}  // namespace qfuse::bench

QFUSE_REGISTER_TOOL_FAMILY(tensor_rate) {
  qfuse::bench::add_wgmma_rate(r);
}
