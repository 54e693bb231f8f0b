// Test helpers: device buffers, GPU gating, random inputs.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <ostream>
#include <random>
#include <utility>
#include <vector>

#include "qfuse/core/arch.h"
#include "qfuse/core/dtype.h"
#include "qfuse/core/status.h"
#include "qfuse/quant/kind.h"

/// GPU tests skip (reported as skipped, never passed) on machines without a CUDA device.
#define QFUSE_REQUIRE_GPU()                                                  \
  do {                                                                       \
    if (!::qfuse::gpu_available()) GTEST_SKIP() << "no CUDA device present"; \
  } while (0)

#define QFUSE_CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call

namespace qfuse::test {

/// Owning device allocation of `bytes` bytes.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }

  void* get() const { return ptr_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }
  /// Fills every byte with `value` (poisoning before a run).
  void fill(uint8_t value);
  void upload(const void* src, size_t bytes);
  std::vector<uint8_t> download() const;

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

/// Poison byte written to outputs before a run: 0x7F is an E4M3 NaN and no valid scale.
constexpr uint8_t kPoison = 0x7F;

/// Bytes of the first `n` bytes of `b` (all when n < 0) that are no longer the poison.
int64_t changed_bytes(const DeviceBuffer& b, int64_t n = -1);

/// Elements of `elem_bytes` bytes in `b` with at least one byte no longer the poison: for 16-bit
/// outputs, where a written value's low or high byte is 0x7F about once in 256 (0x7F7F, bf16
/// 3.4e38 or fp16 NaN, is no output value).
int64_t changed_elements(const DeviceBuffer& b, int elem_bytes);

/// `enqueue` captured into a CUDA graph on a non-blocking stream of its own (thread-local capture
/// mode) and instantiated. `status`: the enqueue's Status, or the capture's CUDA error (then
/// replay() does nothing and returns cudaErrorInvalidValue). replay() launches it `times` times
/// and waits for the stream.
class CapturedGraph {
 public:
  explicit CapturedGraph(const std::function<Status(cudaStream_t)>& enqueue);
  ~CapturedGraph();
  CapturedGraph(const CapturedGraph&) = delete;
  CapturedGraph& operator=(const CapturedGraph&) = delete;
  cudaError_t replay(int times = 1) const;
  const Status& status() const { return status_; }

 private:
  cudaStream_t stream_ = nullptr;
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
  Status status_ = Status::Ok();
};

/// Random fp32 values ~ N(0, sigma) with some larger outliers, never all zero.
std::vector<float> random_floats(size_t n, uint64_t seed, float sigma = 1.0f);
/// The values stored as dtype bits (bf16/fp16/fp32), and the rounded fp32 values.
std::vector<uint8_t> encode(const std::vector<float>& v, DType dtype, std::vector<float>* rounded);

}  // namespace qfuse::test

namespace qfuse {
// Readable names for parameterised tests.
inline void PrintTo(DType t, std::ostream* os) {
  *os << to_string(t);
}
inline void PrintTo(const QuantSpec& s, std::ostream* os) {
  *os << to_string(s);
}
}  // namespace qfuse
