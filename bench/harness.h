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
// per call. Every run also measures two bandwidth ceilings (see "ceilings" below): the copy
// ceiling and, per read:write ratio of the rows, a read-mostly ceiling; every row is given as a
// fraction of both. A routine may name its unfused peer (the same computation as separate
// library kernels); the runner times the peer on the same shape right after it.
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
  /// Of min_bytes(), the bytes read (inputs, given scales); the rest are written. It sets the
  /// read-mostly ceiling of the row; -1 (the default): not stated, no read-mostly ceiling.
  virtual int64_t read_bytes() const { return -1; }
  /// Allocates and initialises `num_sets` independent input/output sets (synchronous).
  virtual Status setup(int num_sets, cudaStream_t stream) = 0;
  /// Enqueues one call on set `set` in [0, num_sets).
  virtual Status launch(int set, cudaStream_t stream) = 0;
  /// Floating-point operations of one call (attention: 4 S_q S_kv H D, SPEC §8); 0 (the
  /// default): not stated, the row has no TFLOPS.
  virtual int64_t flops() const { return 0; }
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
  /// Seconds the warm-up and timed replays of one measurement may take (<= 0: no limit). A call
  /// slow enough to go past it gets fewer calls per graph (down to the set count K), then fewer
  /// replays (down to kBudgetMinReplays) and no warm-up replays (the eager warm-up has run every
  /// set): plan_timing(). With the default counts only calls above ~5 ms reach it (the CUDA-core
  /// ViT attention: ~0.05-2 s a call); every other routine stays far below.
  double budget_s = 3.0;
};

/// The fewest timed replays a time budget leaves (the median of three).
constexpr int kBudgetMinReplays = 3;

/// Calls per graph, replays and warm-up replays of one measurement.
struct TimingPlan {
  int calls_per_graph = 0;
  int replays = 0;
  int warmup = 0;
  bool budget_limited = false;  // fewer than `opt` asks for, to stay within opt.budget_s
};

/// The plan of a measurement with `sets` sets whose calls take `call_us` each (<= 0: unknown,
/// no limit): calls per graph = max(min_calls, sets) rounded up to a multiple of sets, reduced
/// as TimingOptions::budget_s says when call_us x calls x (replays + warmup) exceeds it.
TimingPlan plan_timing(const TimingOptions& opt, int sets, double call_us);

struct Timing {
  int64_t bytes = 0;        // minimum bytes per call
  int sets = 0;             // K
  int calls_per_graph = 0;  // N
  int replays = 0;          // R
  double median_us = 0.0;   // per call
  double min_us = 0.0;
  double max_us = 0.0;
  int64_t flops = 0;            // per call (Instance::flops(); 0: not stated)
  bool budget_limited = false;  // calls or replays cut by TimingOptions::budget_s
  double gbps() const { return median_us > 0.0 ? bytes / (median_us * 1e3) : 0.0; }
  double tflops() const { return median_us > 0.0 ? flops / (median_us * 1e6) : 0.0; }
};

/// Sets K for a call moving `bytes` bytes on a device with `l2_bytes` of L2 (SPEC §8).
int rotating_sets(int64_t bytes, int64_t l2_bytes);

/// Sets up `inst`, warms it up and times it as described in the file comment.
Status measure(Instance& inst, const TimingOptions& opt, cudaStream_t stream, Timing* out);
/// The same without a graph: each timed replay is calls_per_graph eager launches between two
/// events (for cudaMemcpyAsync, which a graph turns into a memcpy node).
Status measure_eager(Instance& inst, const TimingOptions& opt, cudaStream_t stream, Timing* out);

/// Times several ways of doing the same work against each other (e.g. a fused and an unfused
/// graph): each `run` is captured once as a CUDA graph of `calls` calls, then the graphs are
/// replayed interleaved, `replays` rounds of one replay each, the order reversed every other
/// round (A B, B A, ...), so that clock and temperature drift, which are large next to a few
/// per cent for GEMM-heavy work, affect all of them alike. `median_us[i]` is run i's median
/// time per call; `ratio_to_first[i]` the median over rounds of time(run 0) / time(run i).
Status time_interleaved(const std::vector<std::function<Status(cudaStream_t)>>& runs, int calls,
                        int replays, cudaStream_t stream, std::vector<double>* median_us,
                        std::vector<double>* ratio_to_first);

// ---- ceilings (bench/ceilings.cu) -----------------------------------------------------------
//
//   copy         the best of an eager device-to-device cudaMemcpyAsync and copy kernels of ours
//                (16-byte loads and stores, several loads in flight per lane, a grid sized from
//                the SM count and the kernel's occupancy; a few forms, the best kept); bytes
//                read + written.
//   read-mostly  a kernel that reads and writes in a given ratio (reads:writes, e.g. ~4:1 for
//                silu_mul_quant bf16 -> fp8 or a 2-way merge to fp8, ~2:1 for quantize bf16 ->
//                fp8, read-only for decode-like ops), measured once per ratio in a run; a row's
//                ratio comes from its Instance's read_bytes() and min_bytes().
// HBM reads cost less than writes, so an op that reads four bytes for each one it writes can
// run above a copy's bandwidth: the read-mostly figure at the op's own ratio is the one it
// cannot beat. A cudaMemcpyAsync captured in a graph becomes a memcpy node that may run on a
// copy engine, slower than a kernel: memcpy is timed eagerly, the kernels by graph replay, all
// after warm_up_gpu. Working sets: 2 x 256 MiB (copy), 512 MiB read (read-mostly).

/// Bytes each copy-ceiling buffer holds (source and destination each); a call moves twice this.
constexpr int64_t kCeilingCopyBytes = int64_t{256} << 20;
/// Bytes the read-mostly kernel reads per call (it writes this over the ratio).
constexpr int64_t kCeilingReadBytes = int64_t{512} << 20;

/// Runs copy kernels on `stream` for at least `seconds` of wall time, so that the clocks of an
/// idle GPU have risen before anything is timed.
Status warm_up_gpu(double seconds, cudaStream_t stream);

/// One way of reaching a ceiling, and its timing.
struct CeilingForm {
  std::string form;  // e.g. "kernel, 8 x 16 B a lane, streaming hints, 8 blocks/SM x 256"
  Timing timing;
};

struct CopyCeiling {
  CeilingForm memcpy;                // cudaMemcpyAsync D2D, eager
  std::vector<CeilingForm> kernels;  // every copy-kernel form tried
  /// The fastest of memcpy and the kernel forms (median GB/s).
  const CeilingForm& best() const;
  double gbps() const { return best().timing.gbps(); }
};

/// Measures memcpy and every copy-kernel form; each kernel's output is checked against its input.
Status measure_copy_ceiling(const TimingOptions& opt, cudaStream_t stream, CopyCeiling* out);

/// The read-mostly ratio a row is set against: reads:writes rounded to a quarter below 8, to a
/// whole number from 8 to 64, read-only (+inf) from 64 on or without writes. 0 (no read-mostly
/// ceiling) when `read_bytes` < 0 or the op writes more than it reads.
double ceiling_ratio(int64_t read_bytes, int64_t write_bytes);
/// "4:1", "7.25:1", "read-only"; "" for 0.
std::string ratio_label(double ratio);

struct ReadMostlyCeiling {
  double ratio = 0.0;              // the ceiling_ratio() key; +inf for read-only
  double measured_ratio = 0.0;     // reads / writes the kernel made; +inf for read-only
  std::vector<CeilingForm> forms;  // every form tried; empty when the measurement failed
  std::string error;               // why it failed
  /// The fastest form (median GB/s); forms must not be empty.
  const CeilingForm& best() const;
  double gbps() const { return forms.empty() ? 0.0 : best().timing.gbps(); }
};

/// Measures the read-mostly kernel at `ratio` (a ceiling_ratio() key: >= 1, or +inf), every
/// form; bytes counted as read + written.
Status measure_read_mostly_ceiling(double ratio, const TimingOptions& opt, cudaStream_t stream,
                                   ReadMostlyCeiling* out);

// ---- running cases --------------------------------------------------------------------------

struct Result {
  std::string section;
  std::string routine;
  Shape shape;
  Timing timing;
  double copy_fraction = 0.0;  // gbps / copy ceiling
  /// Reads:writes of the row's bytes (+inf: no writes; 0: not stated), the read-mostly ceiling's
  /// ratio it is set against (ceiling_ratio(); 0: none), and the fraction of that ceiling.
  double read_write_ratio = 0.0;
  double ceiling_ratio = 0.0;
  double read_mostly_gbps = 0.0;
  double read_mostly_fraction = 0.0;
  bool is_peer = false;        // measured as the unfused peer of the row before it
  std::string unfused;         // the peer's name when it was measured
  double unfused_ratio = 0.0;  // time(unfused) / time(fused); 0 when not measured
  std::string error;           // non-empty: the case failed with this status (timing unset)
};

struct Report {
  DeviceInfo device;
  std::string date;       // UTC, ISO 8601
  double warmup_s = 0.0;  // seconds of copy kernels before the ceilings
  CopyCeiling copy;
  std::vector<ReadMostlyCeiling> read_mostly;  // one per ratio the rows needed, in first use order
  TimingOptions options;
  std::vector<Result> results;
};

struct RunOptions {
  TimingOptions timing;
  bool with_unfused = true;  // also time each routine's unfused peer
  double warmup_s = 0.5;     // seconds of copy kernels before the ceilings (GPU clocks up)
  /// Called with a line of progress before each measurement (may be empty); lines about the
  /// ceilings start with "ceiling: ".
  std::function<void(const std::string&)> progress;
};

/// Warms the GPU up, measures the copy ceiling, then every case (and its unfused peer), with the
/// read-mostly ceiling of each new ratio measured before the first row that needs it. Needs a
/// GPU. A case that fails is reported in its Result's `error` and the run goes on.
Status run_cases(const std::vector<Case>& cases, const RunOptions& opt, Report* report);

// ---- build facts ----------------------------------------------------------------------------

/// The CUDA architectures the bench/library code was compiled for, e.g. "sm_90".
std::string build_cuda_archs();
/// The CUDA toolkit version the code was compiled with, e.g. "13.0".
std::string build_cuda_version();
/// Ok when this build has kernel code the current device can run.
Status check_kernel_image();

}  // namespace qfuse::bench
