// The qfuse benchmark harness (SPEC §8): routines registered by name, timed by CUDA-graph replay.
//
// A routine is a named factory: given a shape it makes an Instance, which
//   - says the minimum bytes one call must move (each input read once, each output and scale
//     written once),
//   - allocates K rotating input/output sets, K * bytes >= 2 * L2 (K <= 64, K = 1 when one call
//     already exceeds it), initialised with random data,
//   - enqueues one call on a given set (no allocation, no synchronisation: it is graph-captured).
// measure() warms up, captures a graph of N calls (N a multiple of K) rotating through the sets,
// replays it R times with CUDA events around each replay and reports the median and minimum time
// per call. The device-to-device copy bandwidth is measured by the same method, so every result
// can be given as a fraction of it. A routine may name its unfused peer (the same computation as
// separate library kernels); the runner times the peer on the same shape right after it.
//
// This header is plain C++ (no CUDA device code) so that the CLI can include it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qfuse/core/arch.h"
#include "qfuse/core/dtype.h"
#include "qfuse/core/status.h"

namespace qfuse::bench {

// ---- device memory and inputs ---------------------------------------------------------------

/// Owning device allocation.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;

  /// Frees what is held and allocates `bytes` bytes (at least 1), 256-byte aligned.
  Status allocate(size_t bytes);
  void* get() const { return ptr_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

/// Fills n elements of `dtype` (bf16, fp16 or fp32) with random values (roughly N(0, 1), 1% of
/// them scaled by 2.5, never all zero; |v| < 8.7), deterministic in (seed, index).
Status fill_random(void* data, DType dtype, int64_t n, uint64_t seed, cudaStream_t stream);
/// Largest magnitude fill_random produces.
constexpr float kRandomBound = 8.7f;

/// Allocates one device fp32 holding `value` (a per-tensor or NVFP4 global scale).
Status device_scalar(float value, DeviceBuffer* buf);

// ---- routines -------------------------------------------------------------------------------

/// Named integer dimensions of a case, e.g. {{"T", 4096}, {"H", 7168}}.
struct Shape {
  std::vector<std::pair<std::string, int64_t>> dims;

  /// The value of `key`; an InvalidArgument naming the key when it is missing or negative.
  Status get(std::string_view key, int64_t* value) const;
  /// "T=4096 H=7168"
  std::string to_string() const;
  bool operator==(const Shape& o) const { return dims == o.dims; }
};

class Instance {
 public:
  virtual ~Instance() = default;
  /// Minimum bytes one call must move (SPEC §8).
  virtual int64_t min_bytes() const = 0;
  /// Allocates and initialises `num_sets` independent input/output sets (synchronous).
  virtual Status setup(int num_sets, cudaStream_t stream) = 0;
  /// Enqueues one call on set `set` in [0, num_sets).
  virtual Status launch(int set, cudaStream_t stream) = 0;
};

struct Routine {
  std::string name;         // "silu_mul_quant/fp8_group128:row:f32"
  std::string unfused;      // name of the unfused peer routine, "" when there is none
  std::string description;  // one line for `qfuse bench --list`
  std::function<Status(const Shape&, std::unique_ptr<Instance>*)> make;
};

/// Adds a routine; a second routine of the same name replaces the first.
void register_routine(Routine routine);
/// nullptr when no routine has that name.
const Routine* find_routine(std::string_view name);
/// Every registered routine, sorted by name.
std::vector<const Routine*> all_routines();

/// One measurement to make; `section` groups rows in the report.
struct Case {
  std::string section;
  std::string routine;
  Shape shape;
};

struct Suite {
  std::string name;
  std::string description;
  std::vector<Case> cases;
};
void register_suite(Suite suite);
const Suite* find_suite(std::string_view name);
std::vector<const Suite*> all_suites();

// ---- timing ---------------------------------------------------------------------------------

struct TimingOptions {
  int min_calls = 20;  // calls per graph at least (rounded up to a multiple of the set count)
  int replays = 25;    // timed graph replays
  int warmup = 2;      // untimed replays before timing
};

struct Timing {
  int64_t bytes = 0;        // minimum bytes per call
  int sets = 0;             // K
  int calls_per_graph = 0;  // N
  int replays = 0;          // R
  double median_us = 0.0;   // per call
  double min_us = 0.0;
  double max_us = 0.0;
  double gbps() const { return median_us > 0.0 ? bytes / (median_us * 1e3) : 0.0; }
};

/// Sets K for a call moving `bytes` bytes on a device with `l2_bytes` of L2 (SPEC §8).
int rotating_sets(int64_t bytes, int64_t l2_bytes);

/// Sets up `inst`, warms it up and times it as described in the file comment.
Status measure(Instance& inst, const TimingOptions& opt, cudaStream_t stream, Timing* out);

/// Times several ways of doing the same work against each other (e.g. a fused and an unfused
/// graph): each `run` is captured once as a CUDA graph of `calls` calls, then the graphs are
/// replayed interleaved, `replays` rounds of one replay each, the order reversed every other
/// round (A B, B A, ...), so that clock and temperature drift, which are large next to a few
/// per cent for GEMM-heavy work, affect all of them alike. `median_us[i]` is run i's median
/// time per call; `ratio_to_first[i]` the median over rounds of time(run 0) / time(run i).
Status time_interleaved(const std::vector<std::function<Status(cudaStream_t)>>& runs, int calls,
                        int replays, cudaStream_t stream, std::vector<double>* median_us,
                        std::vector<double>* ratio_to_first);

/// Device-to-device copy of `buffer_bytes` (>= 256 MiB), timed like a routine; bytes counts read
/// plus write.
Status measure_copy(int64_t buffer_bytes, const TimingOptions& opt, cudaStream_t stream,
                    Timing* out);
constexpr int64_t kCopyBufferBytes = int64_t{256} << 20;

// ---- running cases --------------------------------------------------------------------------

struct Result {
  std::string section;
  std::string routine;
  Shape shape;
  Timing timing;
  double copy_fraction = 0.0;  // gbps / copy gbps
  bool is_peer = false;        // measured as the unfused peer of the row before it
  std::string unfused;         // the peer's name when it was measured
  double unfused_ratio = 0.0;  // time(unfused) / time(fused); 0 when not measured
  std::string error;           // non-empty: the case failed with this status (timing unset)
};

struct Report {
  DeviceInfo device;
  std::string date;  // UTC, ISO 8601
  Timing copy;
  TimingOptions options;
  std::vector<Result> results;
};

struct RunOptions {
  TimingOptions timing;
  bool with_unfused = true;  // also time each routine's unfused peer
  /// Called with a line of progress before each measurement (may be empty).
  std::function<void(const std::string&)> progress;
};

/// Measures the copy bandwidth, then every case (and its unfused peer). Needs a GPU. A case that
/// fails is reported in its Result's `error` and the run goes on.
Status run_cases(const std::vector<Case>& cases, const RunOptions& opt, Report* report);

// ---- build facts ----------------------------------------------------------------------------

/// The CUDA architectures the bench/library code was compiled for, e.g. "sm_90".
std::string build_cuda_archs();
/// The CUDA toolkit version the code was compiled with, e.g. "13.0".
std::string build_cuda_version();
/// Ok when this build has kernel code the current device can run.
Status check_kernel_image();

}  // namespace qfuse::bench
