#include "common/gpu.h"

#include <stdexcept>

#include "qfuse/quant/reference.h"

namespace qfuse::test {

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (cudaMalloc(&ptr_, bytes ? bytes : 1) != cudaSuccess) throw std::runtime_error("cudaMalloc");
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}

void DeviceBuffer::fill(uint8_t value) {
  // NOTE: cudaMemset of device memory may return before it is done, and the legacy stream it
  // runs on does not order work on a non-blocking stream: a test that poisons, then launches on
  // one, could have its output poisoned after the kernel wrote it (QuantizeGpu.
  // CapturedInCudaGraph read NaN scales once, twenty-seventh session). Done before it returns.
  if (cudaMemset(ptr_, value, bytes_) != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess)
    throw std::runtime_error("cudaMemset");
}

void DeviceBuffer::upload(const void* src, size_t bytes) {
  // NOTE: from pageable memory cudaMemcpy may return before the DMA into ptr_ is done (CUDA's
  // API synchronization notes), unordered with a non-blocking stream as fill() is: waited for.
  if (cudaMemcpy(ptr_, src, bytes, cudaMemcpyHostToDevice) != cudaSuccess ||
      cudaDeviceSynchronize() != cudaSuccess)
    throw std::runtime_error("cudaMemcpy H2D");
}

std::vector<uint8_t> DeviceBuffer::download() const {
  std::vector<uint8_t> v(bytes_);
  if (cudaMemcpy(v.data(), ptr_, bytes_, cudaMemcpyDeviceToHost) != cudaSuccess)
    throw std::runtime_error("cudaMemcpy D2H");
  return v;
}

int64_t changed_bytes(const DeviceBuffer& b, int64_t n) {
  const std::vector<uint8_t> bytes = b.download();
  const int64_t end = n < 0 ? static_cast<int64_t>(bytes.size()) : n;
  int64_t changed = 0;
  for (int64_t i = 0; i < end; ++i) changed += bytes[i] != kPoison;
  return changed;
}

int64_t changed_elements(const DeviceBuffer& b, int elem_bytes) {
  const std::vector<uint8_t> bytes = b.download();
  int64_t changed = 0;
  for (size_t i = 0; i + elem_bytes <= bytes.size(); i += elem_bytes) {
    bool any = false;
    for (int k = 0; k < elem_bytes; ++k) any |= bytes[i + k] != kPoison;
    changed += any;
  }
  return changed;
}

std::vector<float> random_floats(size_t n, uint64_t seed, float sigma) {
  // NOTE: a pool of 2^16 normal draws (1 % of them 20x outliers) indexed by a 64-bit LCG keeps
  // multi-gigabyte test inputs cheap to generate; every seed gives a different pool and order.
  constexpr size_t kPool = size_t{1} << 16;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> pool(kPool);
  for (auto& x : pool) {
    x = normal(rng);
    if (u(rng) < 0.01f) x *= 20.0f;  // outliers set the group amax
  }
  std::vector<float> v(n);
  uint64_t state = rng();
  for (auto& x : v) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    x = pool[state >> 48];
  }
  if (n > 0 && v[0] == 0.0f) v[0] = 1.0f;
  return v;
}

std::vector<uint8_t> encode(const std::vector<float>& v, DType dtype, std::vector<float>* rounded) {
  const size_t es = dtype_size(dtype);
  std::vector<uint8_t> out(v.size() * es);
  if (rounded) rounded->resize(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    float r = v[i];
    if (dtype == DType::kBF16) {
      const uint16_t b = ref::bf16_bits(v[i]);
      std::memcpy(&out[i * 2], &b, 2);
      r = ref::bf16_value(b);
    } else if (dtype == DType::kF16) {
      const uint16_t b = ref::f16_bits(v[i]);
      std::memcpy(&out[i * 2], &b, 2);
      r = ref::f16_value(b);
    } else if (dtype == DType::kF32) {
      std::memcpy(&out[i * 4], &v[i], 4);
    } else {
      throw std::invalid_argument("encode: dtype");
    }
    if (rounded) (*rounded)[i] = r;
  }
  return out;
}

CapturedGraph::CapturedGraph(const std::function<Status(cudaStream_t)>& enqueue) {
  cudaError_t e = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking);
  if (e == cudaSuccess) e = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal);
  if (e != cudaSuccess) {
    status_ = Status(StatusCode::kCudaError, cudaGetErrorString(e));
    return;
  }
  status_ = enqueue(stream_);
  e = cudaStreamEndCapture(stream_, &graph_);
  if (status_.ok() && e != cudaSuccess)
    status_ = Status(StatusCode::kCudaError, cudaGetErrorString(e));
  if (status_.ok() && (e = cudaGraphInstantiate(&exec_, graph_, 0)) != cudaSuccess)
    status_ = Status(StatusCode::kCudaError, cudaGetErrorString(e));
}

CapturedGraph::~CapturedGraph() {
  if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
  if (graph_ != nullptr) cudaGraphDestroy(graph_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

cudaError_t CapturedGraph::replay(int times) const {
  if (exec_ == nullptr) return cudaErrorInvalidValue;
  for (int i = 0; i < times; ++i)
    if (const cudaError_t e = cudaGraphLaunch(exec_, stream_); e != cudaSuccess) return e;
  return cudaStreamSynchronize(stream_);
}

}  // namespace qfuse::test
