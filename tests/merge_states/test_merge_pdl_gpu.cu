// Programmatic dependent launch and the merge: its streaming kernel waits for the previous kernel
// only after its address arithmetic (quant/rowwise.cuh, kLatePdlWait). The previous kernel here
// lets its dependents launch at once, spins ~100 us, and only then writes the partials, their
// lse and the output's scale; the merge must see every one of those writes (it would read zeros
// otherwise). Both kernel forms: one wave (8 values a lane, load()) and more (NVFP4's 16-value
// lanes, fetch_pair()).
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/gpu.h"
#include "common/quant_check.h"
#include "qfuse/core/launch.h"
#include "qfuse/merge_states/merge_states.h"

namespace qfuse::test {
namespace {

/// Lets dependents launch, spins for `spin` cycles, then copies n1 bytes src1 -> dst1 and n2
/// bytes src2 -> dst2.
__global__ void late_copy(const uint8_t* src1, uint8_t* dst1, int64_t n1, const uint8_t* src2,
                          uint8_t* dst2, int64_t n2, long long spin) {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  const long long t0 = clock64();
  while (clock64() - t0 < spin) {
  }
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n1; i += stride)
    dst1[i] = src1[i];
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n2; i += stride)
    dst2[i] = src2[i];
}

void run_case(const char* spec_name, int64_t T) {
  const int64_t H = 16, D = 128, C = H * D;
  SCOPED_TRACE(std::string(spec_name) + " T=" + std::to_string(T));
  QuantSpec spec;
  ASSERT_TRUE(parse_quant_spec(spec_name, &spec).ok());
  // Partials 0 and 1 ([T, H, D] bf16) and their lse ([H, T] fp32), back to back in one arena.
  const int64_t o_bytes = T * C * 2, l_bytes = H * T * 4;
  std::vector<uint8_t> host(2 * o_bytes + 2 * l_bytes);
  std::vector<float> lse(2 * H * T);
  std::mt19937 rng(static_cast<uint32_t>(T));
  std::uniform_real_distribution<float> uni(-3.0f, 3.0f);
  for (float& l : lse) l = uni(rng);
  for (int i = 0; i < 2; ++i) {
    const std::vector<uint8_t> o =
        encode(random_floats(T * C, 11 + i, 1.5f), DType::kBF16, nullptr);
    std::memcpy(host.data() + i * o_bytes, o.data(), o_bytes);
  }
  std::memcpy(host.data() + 2 * o_bytes, lse.data(), 2 * l_bytes);

  ref::MergeHostInput hi;
  hi.n = 2, hi.dtype = DType::kBF16, hi.T = T, hi.H = H, hi.D = D;
  for (int i = 0; i < 2; ++i) {
    hi.o[i] = host.data() + i * o_bytes, hi.st[i] = C, hi.sh[i] = D;
    hi.lse[i] = lse.data() + i * H * T, hi.ld_lse[i] = T;
  }
  const std::vector<double> y = ref::merge_states(hi, {}, nullptr);
  double amax = 0;
  for (double v : y) amax = std::fmax(amax, std::fabs(v));
  const float scale =
      spec.kind == QuantKind::kNvfp4 ? static_cast<float>(448.0 * 6.0 / amax) * 1.3f : 0.0173f;

  DeviceBuffer src(host.size()), arena(host.size()), scale_src(4);
  src.upload(host.data(), host.size());
  arena.fill(0);  // what a merge reading too early would see
  scale_src.upload(&scale, 4);
  auto d = DeviceQuantOutput::make(spec, T, C, DType::kBF16, scale);
  const int64_t scale_bytes = spec.kind == QuantKind::kNone ? 0 : 4;
  if (scale_bytes) d.scale.fill(0);

  MergePartials p;
  p.n = 2;
  for (int i = 0; i < 2; ++i) {
    uint8_t* base = arena.as<uint8_t>();
    p.o[i] = TensorRef::contiguous(base + i * o_bytes, DType::kBF16, {T, H, D});
    p.lse[i] = TensorRef::contiguous(base + 2 * o_bytes + i * l_bytes, DType::kF32, {H, T});
  }
  cudaStream_t stream;
  QFUSE_CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  late_copy<<<264, 256, 0, stream>>>(src.as<uint8_t>(), arena.as<uint8_t>(),
                                     static_cast<int64_t>(host.size()), scale_src.as<uint8_t>(),
                                     d.scale.as<uint8_t>(), scale_bytes, 200000);
  QFUSE_CUDA_OK(cudaGetLastError());
  const Status st = merge_states(p, d.view(), {}, stream);
  ASSERT_TRUE(st.ok()) << st.to_string();
  QFUSE_CUDA_OK(cudaStreamSynchronize(stream));
  QFUSE_CUDA_OK(cudaStreamDestroy(stream));

  CheckOptions co;
  co.exact = false;
  co.scale_value = scale;
  co.rows = sample_rows(T, C, 3);
  co.scale_ulps = 64;
  co.rel_tol = 4e-6;
  co.abs_tol = 4e-6;
  EXPECT_TRUE(check_quant_output(d, y, co));
}

TEST(MergePdlGpu, SeesEveryWriteOfThePreviousKernel) {
  QFUSE_REQUIRE_GPU();
  // NOTE: with QFUSE_PDL=0 nothing launches early and the ordering holds trivially.
  if (!pdl_enabled()) GTEST_SKIP() << "QFUSE_PDL=0: no early launch to test";
  for (const char* spec : {"none", "fp8_per_tensor", "nvfp4:swizzled"})
    for (int64_t T : {256, 4096}) run_case(spec, T);
}

}  // namespace
}  // namespace qfuse::test
