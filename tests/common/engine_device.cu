#include "common/engine_device.h"

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"

namespace qfuse::test {
namespace {

template <class Fn>
__global__ void apply_kernel(const float* x, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = Fn{}(x[i]);
}

void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

template <class Fn>
std::vector<float> on_device(const std::vector<float>& xs) {
  const int64_t n = static_cast<int64_t>(xs.size());
  std::vector<float> ys(xs.size());
  if (n == 0) return ys;
  float *dx = nullptr, *dy = nullptr;
  cuda_check(cudaMalloc(&dx, n * 4), "cudaMalloc");
  cuda_check(cudaMalloc(&dy, n * 4), "cudaMalloc");
  cuda_check(cudaMemcpy(dx, xs.data(), n * 4, cudaMemcpyHostToDevice), "upload");
  apply_kernel<Fn>
      <<<static_cast<unsigned>((n + 255) / 256 < 1024 ? (n + 255) / 256 : 1024), 256>>>(dx, dy, n);
  cuda_check(cudaGetLastError(), "apply_kernel");
  cuda_check(cudaMemcpy(ys.data(), dy, n * 4, cudaMemcpyDeviceToHost), "download");
  cudaFree(dx);
  cudaFree(dy);
  return ys;
}

/// f on the device, cached per argument (keyed by its bits).
template <class Fn>
struct Cached {
  std::unordered_map<uint32_t, float> values;
  void fetch(const std::vector<float>& xs) {
    std::vector<float> missing;
    for (float x : xs)
      if (!values.count(rules::float_bits(x))) missing.push_back(x);
    const std::vector<float> ys = on_device<Fn>(missing);
    for (size_t i = 0; i < missing.size(); ++i) values[rules::float_bits(missing[i])] = ys[i];
  }
  float operator()(float x) {
    auto it = values.find(rules::float_bits(x));
    if (it != values.end()) return it->second;
    fetch({x});
    return values.at(rules::float_bits(x));
  }
};

/// Records the arguments rules::engine_sigmoid_den passes to ex2.
struct Recorder {
  std::vector<float>* args;
  float operator()(float x) const {
    args->push_back(x);
    return 1.0f;
  }
};

}  // namespace

std::vector<float> device_rcp_approx(const std::vector<float>& xs) {
  return on_device<rules::RcpApproxFtz>(xs);
}

std::vector<float> device_ex2_approx(const std::vector<float>& xs) {
  return on_device<rules::Ex2ApproxFtz>(xs);
}

std::function<float(float)> device_rcp_hook() {
  auto c = std::make_shared<Cached<rules::RcpApproxFtz>>();
  return [c](float x) { return (*c)(x); };
}

std::function<float(float)> device_ex2_hook(DType dtype) {
  auto c = std::make_shared<Cached<rules::Ex2ApproxFtz>>();
  std::vector<float> args;
  for (uint32_t b = 0; b < 0x10000u; ++b) {
    const uint16_t h = static_cast<uint16_t>(b);
    const float g = dtype == DType::kBF16 ? ref::bf16_value(h) : ref::f16_value(h);
    (void)rules::engine_sigmoid_den(g, Recorder{&args});
  }
  c->fetch(args);
  return [c](float x) { return (*c)(x); };
}

}  // namespace qfuse::test
