// The benchmark harness: registries, random inputs, CUDA-graph timing, the copy baseline and the
// case runner (see harness.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <limits>
#include <map>

#include "bench/harness.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/quant/chunk.cuh"

namespace qfuse::bench {

// ---- device memory and inputs ---------------------------------------------------------------

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ != nullptr) cudaFree(ptr_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
  o.ptr_ = nullptr;
  o.bytes_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

Status DeviceBuffer::allocate(size_t bytes) {
  if (ptr_ != nullptr) {
    QFUSE_CUDA_RETURN(cudaFree(ptr_));
    ptr_ = nullptr;
    bytes_ = 0;
  }
  const cudaError_t err = cudaMalloc(&ptr_, std::max<size_t>(bytes, 1));
  if (err != cudaSuccess) {
    ptr_ = nullptr;
    return cuda_status(err, ("cudaMalloc of " + std::to_string(bytes) + " bytes").c_str());
  }
  bytes_ = bytes;
  return Status::Ok();
}

namespace {

__host__ __device__ inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// Irwin-Hall sum of four uniforms, scaled to unit variance (|v| <= 3.47); 1% scaled by 2.5.
__device__ inline float random_value(uint64_t seed, int64_t i) {
  const uint64_t h = splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(i));
  float s = 0.0f;
#pragma unroll
  for (int k = 0; k < 4; ++k) s += static_cast<float>((h >> (16 * k)) & 0xffffu) / 32768.0f - 1.0f;
  float v = s * 0.8660254f;
  if ((splitmix64(h) & 0xffffu) < 655u) v *= 2.5f;
  return v;
}

template <class T>
__global__ void fill_random_kernel(T* data, int64_t n, uint64_t seed) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    data[i] = quant::from_float<T>(random_value(seed, i));
}

template <class T>
Status launch_fill(void* data, int64_t n, uint64_t seed, cudaStream_t stream) {
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, 65536);
  fill_random_kernel<T>
      <<<static_cast<unsigned>(blocks), threads, 0, stream>>>(static_cast<T*>(data), n, seed);
  QFUSE_CHECK_LAUNCH("fill_random_kernel");
  return Status::Ok();
}

}  // namespace

Status fill_random(void* data, DType dtype, int64_t n, uint64_t seed, cudaStream_t stream) {
  if (n <= 0) return Status::Ok();
  switch (dtype) {
    case DType::kBF16:
      return launch_fill<__nv_bfloat16>(data, n, seed, stream);
    case DType::kF16:
      return launch_fill<__half>(data, n, seed, stream);
    case DType::kF32:
      return launch_fill<float>(data, n, seed, stream);
    default:
      return Status::InvalidArgument("dtype", "bf16|fp16|fp32", std::string(to_string(dtype)));
  }
}

Status device_scalar(float value, DeviceBuffer* buf) {
  QFUSE_RETURN_IF_ERROR(buf->allocate(sizeof(float)));
  QFUSE_CUDA_RETURN(cudaMemcpy(buf->get(), &value, sizeof(float), cudaMemcpyHostToDevice));
  return Status::Ok();
}

// ---- registries -----------------------------------------------------------------------------

Status Shape::get(std::string_view key, int64_t* value) const {
  for (const auto& [k, v] : dims) {
    if (k == key) {
      if (v < 0) return Status::InvalidArgument("shape." + k, ">= 0", std::to_string(v));
      *value = v;
      return Status::Ok();
    }
  }
  return Status::InvalidArgument("shape", "a dimension '" + std::string(key) + "'", to_string());
}

std::string Shape::to_string() const {
  std::string s;
  for (const auto& [k, v] : dims) s += (s.empty() ? "" : " ") + k + "=" + std::to_string(v);
  return s;
}

namespace {

std::map<std::string, Routine, std::less<>>& routine_registry() {
  static std::map<std::string, Routine, std::less<>> r;
  return r;
}

std::map<std::string, Suite, std::less<>>& suite_registry() {
  static std::map<std::string, Suite, std::less<>> r;
  return r;
}

}  // namespace

void register_routine(Routine routine) {
  std::string name = routine.name;
  routine_registry()[name] = std::move(routine);
}

const Routine* find_routine(std::string_view name) {
  const auto it = routine_registry().find(name);
  return it == routine_registry().end() ? nullptr : &it->second;
}

std::vector<const Routine*> all_routines() {
  std::vector<const Routine*> v;
  for (const auto& [name, r] : routine_registry()) v.push_back(&r);
  return v;
}

void register_suite(Suite suite) {
  std::string name = suite.name;
  suite_registry()[name] = std::move(suite);
}

const Suite* find_suite(std::string_view name) {
  const auto it = suite_registry().find(name);
  return it == suite_registry().end() ? nullptr : &it->second;
}

std::vector<const Suite*> all_suites() {
  std::vector<const Suite*> v;
  for (const auto& [name, s] : suite_registry()) v.push_back(&s);
  return v;
}

// ---- timing ---------------------------------------------------------------------------------

TimingPlan plan_timing(const TimingOptions& opt, int sets, double call_us) {
  TimingPlan p;
  sets = std::max(sets, 1);
  const int calls = std::max(opt.min_calls, sets);
  p.calls_per_graph = (calls + sets - 1) / sets * sets;
  p.replays = opt.replays;
  p.warmup = opt.warmup;
  const double budget_us = opt.budget_s * 1e6;
  if (!(opt.budget_s > 0.0) || !(call_us > 0.0) ||
      call_us * p.calls_per_graph * (p.replays + p.warmup) <= budget_us)
    return p;
  // NOTE: fewer calls per graph first (each call is long: launch gaps do not matter), then
  // fewer replays, so that the median keeps as many replays as the budget allows.
  p.budget_limited = true;
  p.warmup = 0;
  const double per_graph = budget_us / (call_us * p.replays);
  const int fit = per_graph >= p.calls_per_graph ? p.calls_per_graph
                                                 : static_cast<int>(per_graph) / sets * sets;
  p.calls_per_graph = std::max(sets, fit);
  if (call_us * p.calls_per_graph * p.replays > budget_us) {
    const double r = budget_us / (call_us * p.calls_per_graph);
    p.replays = std::max(std::min(opt.replays, kBudgetMinReplays),
                         r >= p.replays ? p.replays : static_cast<int>(r));
  }
  return p;
}

int rotating_sets(int64_t bytes, int64_t l2_bytes) {
  constexpr int kMaxSets = 64;
  const int64_t target = 2 * l2_bytes;
  if (bytes <= 0) return 1;
  if (bytes >= target) return 1;
  return static_cast<int>(std::min<int64_t>((target + bytes - 1) / bytes, kMaxSets));
}

namespace {

struct GraphGuard {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ~GraphGuard() {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
  }
};

struct EventGuard {
  std::vector<cudaEvent_t> events;
  ~EventGuard() {
    for (cudaEvent_t e : events) cudaEventDestroy(e);
  }
};

/// Captures `calls` launches rotating through `sets` sets into g->exec.
Status capture(Instance& inst, int sets, int calls, cudaStream_t stream, GraphGuard* g) {
  // NOTE: thread-local capture mode: a library call that synchronises or allocates inside the
  // captured region fails the capture (SPEC §7: every launch path must be capture-safe).
  QFUSE_CUDA_RETURN(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  const Status st = [&] {
    for (int i = 0; i < calls; ++i) QFUSE_RETURN_IF_ERROR(inst.launch(i % sets, stream));
    return Status::Ok();
  }();
  const cudaError_t end = cudaStreamEndCapture(stream, &g->graph);
  if (!st.ok()) {
    cudaGetLastError();
    return Status(st.code(), "during graph capture: " + st.message());
  }
  QFUSE_RETURN_IF_ERROR(
      cuda_status(end, "cudaStreamEndCapture (was the launch path capture-safe?)"));
  QFUSE_CUDA_RETURN(cudaGraphInstantiate(&g->exec, g->graph, 0));
  QFUSE_CUDA_RETURN(cudaGraphUpload(g->exec, stream));
  return Status::Ok();
}

}  // namespace

namespace {

/// Sets up `inst` and times it: graph replays of calls_per_graph calls (`graph`), or the same
/// calls launched eagerly between the events.
Status measure_impl(Instance& inst, const TimingOptions& opt, bool graph, cudaStream_t stream,
                    Timing* out) {
  if (opt.min_calls < 1 || opt.replays < 1 || opt.warmup < 0)
    return Status::InvalidArgument("timing options", "min_calls >= 1, replays >= 1, warmup >= 0",
                                   std::to_string(opt.min_calls) + ", " +
                                       std::to_string(opt.replays) + ", " +
                                       std::to_string(opt.warmup));
  DeviceInfo dev;
  QFUSE_RETURN_IF_ERROR(current_device_info(&dev));
  Timing t;
  t.bytes = inst.min_bytes();
  t.sets = rotating_sets(t.bytes, dev.l2_bytes);
  t.replays = opt.replays;
  QFUSE_RETURN_IF_ERROR(inst.setup(t.sets, stream));
  // NOTE: a device-wide sync: setup may also use the legacy default stream (cudaMemset).
  QFUSE_CUDA_RETURN(cudaDeviceSynchronize());

  // Eager warm-up on every set: reports argument errors plainly and loads the kernels' modules.
  const auto t0 = std::chrono::steady_clock::now();
  for (int s = 0; s < t.sets; ++s) QFUSE_RETURN_IF_ERROR(inst.launch(s, stream));
  QFUSE_CUDA_RETURN(cudaStreamSynchronize(stream));
  const auto us_since = [](std::chrono::steady_clock::time_point a) {
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count();
  };
  // NOTE: the warm-up's time per call includes loading modules, so it can only overstate a
  // call; when it says the budget may be exceeded and a call looks shorter than 0.25 s (where
  // loading could be a large part of it), one more eager call is timed alone.
  double call_us = us_since(t0) / t.sets;
  if (call_us < 2.5e5 && plan_timing(opt, t.sets, call_us).budget_limited) {
    const auto t1 = std::chrono::steady_clock::now();
    QFUSE_RETURN_IF_ERROR(inst.launch(0, stream));
    QFUSE_CUDA_RETURN(cudaStreamSynchronize(stream));
    call_us = us_since(t1);
  }
  const TimingPlan plan = plan_timing(opt, t.sets, call_us);
  t.calls_per_graph = plan.calls_per_graph;
  t.replays = plan.replays;
  t.budget_limited = plan.budget_limited;
  t.flops = inst.flops();
  GraphGuard g;
  if (graph) QFUSE_RETURN_IF_ERROR(capture(inst, t.sets, t.calls_per_graph, stream, &g));
  const auto replay = [&]() -> Status {
    if (graph) {
      QFUSE_CUDA_RETURN(cudaGraphLaunch(g.exec, stream));
      return Status::Ok();
    }
    for (int i = 0; i < t.calls_per_graph; ++i)
      QFUSE_RETURN_IF_ERROR(inst.launch(i % t.sets, stream));
    return Status::Ok();
  };
  for (int i = 0; i < plan.warmup; ++i) QFUSE_RETURN_IF_ERROR(replay());

  EventGuard ev;
  ev.events.resize(2 * static_cast<size_t>(t.replays), nullptr);
  for (cudaEvent_t& e : ev.events) QFUSE_CUDA_RETURN(cudaEventCreate(&e));
  for (int r = 0; r < t.replays; ++r) {
    QFUSE_CUDA_RETURN(cudaEventRecord(ev.events[2 * r], stream));
    QFUSE_RETURN_IF_ERROR(replay());
    QFUSE_CUDA_RETURN(cudaEventRecord(ev.events[2 * r + 1], stream));
  }
  QFUSE_CUDA_RETURN(cudaStreamSynchronize(stream));
  std::vector<double> us(t.replays);
  for (int r = 0; r < t.replays; ++r) {
    float ms = 0.0f;
    QFUSE_CUDA_RETURN(cudaEventElapsedTime(&ms, ev.events[2 * r], ev.events[2 * r + 1]));
    us[r] = 1e3 * ms / t.calls_per_graph;
  }
  std::sort(us.begin(), us.end());
  const size_t n = us.size();
  t.median_us = n % 2 ? us[n / 2] : 0.5 * (us[n / 2 - 1] + us[n / 2]);
  t.min_us = us.front();
  t.max_us = us.back();
  *out = t;
  return Status::Ok();
}

}  // namespace

Status measure(Instance& inst, const TimingOptions& opt, cudaStream_t stream, Timing* out) {
  return measure_impl(inst, opt, /*graph=*/true, stream, out);
}

Status measure_eager(Instance& inst, const TimingOptions& opt, cudaStream_t stream, Timing* out) {
  return measure_impl(inst, opt, /*graph=*/false, stream, out);
}

Status time_interleaved(const std::vector<std::function<Status(cudaStream_t)>>& runs, int calls,
                        int replays, cudaStream_t stream, std::vector<double>* median_us,
                        std::vector<double>* ratio_to_first) {
  if (runs.empty() || calls < 1 || replays < 1)
    return Status::InvalidArgument("time_interleaved", "runs, calls >= 1, replays >= 1",
                                   std::to_string(runs.size()) + ", " + std::to_string(calls) +
                                       ", " + std::to_string(replays));
  const size_t n = runs.size();
  std::vector<GraphGuard> graphs(n);
  for (size_t i = 0; i < n; ++i) {
    QFUSE_RETURN_IF_ERROR(runs[i](stream));  // eager warm-up: plain errors, modules loaded
    QFUSE_CUDA_RETURN(cudaStreamSynchronize(stream));
    QFUSE_CUDA_RETURN(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    const auto capture = [&]() -> Status {
      for (int c = 0; c < calls; ++c) QFUSE_RETURN_IF_ERROR(runs[i](stream));
      return Status::Ok();
    };
    const Status st = capture();  // the capture is ended before any error returns
    const cudaError_t end = cudaStreamEndCapture(stream, &graphs[i].graph);
    QFUSE_RETURN_IF_ERROR(st);
    QFUSE_CUDA_RETURN(end);
    QFUSE_CUDA_RETURN(cudaGraphInstantiate(&graphs[i].exec, graphs[i].graph, 0));
    QFUSE_CUDA_RETURN(cudaGraphLaunch(graphs[i].exec, stream));  // warm-up replay
  }
  EventGuard ev;
  ev.events.resize(2 * n * static_cast<size_t>(replays), nullptr);
  for (cudaEvent_t& e : ev.events) QFUSE_CUDA_RETURN(cudaEventCreate(&e));
  for (int r = 0; r < replays; ++r) {
    for (size_t k = 0; k < n; ++k) {
      const size_t i = r % 2 ? n - 1 - k : k;
      cudaEvent_t* e = &ev.events[2 * (static_cast<size_t>(r) * n + i)];
      QFUSE_CUDA_RETURN(cudaEventRecord(e[0], stream));
      QFUSE_CUDA_RETURN(cudaGraphLaunch(graphs[i].exec, stream));
      QFUSE_CUDA_RETURN(cudaEventRecord(e[1], stream));
    }
  }
  QFUSE_CUDA_RETURN(cudaStreamSynchronize(stream));
  std::vector<std::vector<double>> us(n, std::vector<double>(replays));
  for (int r = 0; r < replays; ++r) {
    for (size_t i = 0; i < n; ++i) {
      const cudaEvent_t* e = &ev.events[2 * (static_cast<size_t>(r) * n + i)];
      float ms = 0.0f;
      QFUSE_CUDA_RETURN(cudaEventElapsedTime(&ms, e[0], e[1]));
      us[i][r] = 1e3 * ms / calls;
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t m = v.size();
    return m % 2 ? v[m / 2] : 0.5 * (v[m / 2 - 1] + v[m / 2]);
  };
  median_us->assign(n, 0.0);
  ratio_to_first->assign(n, 0.0);
  for (size_t i = 0; i < n; ++i) {
    (*median_us)[i] = median(us[i]);
    std::vector<double> ratio(replays);
    for (int r = 0; r < replays; ++r) ratio[r] = us[0][r] / us[i][r];
    (*ratio_to_first)[i] = median(ratio);
  }
  return Status::Ok();
}

namespace {

struct StreamGuard {
  cudaStream_t stream = nullptr;
  ~StreamGuard() {
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

/// The read-mostly ceiling's GB/s at `ratio`, measured now when the run has none yet; 0 when it
/// could not be measured (the failure is recorded once, in the ceiling's `error`).
double read_mostly_gbps(double ratio, const RunOptions& opt, cudaStream_t stream, Report* report) {
  for (const ReadMostlyCeiling& c : report->read_mostly)
    if (c.ratio == ratio) return c.gbps();
  if (opt.progress) opt.progress("ceiling: read-mostly, reads:writes " + ratio_label(ratio));
  ReadMostlyCeiling c;
  const Status st = measure_read_mostly_ceiling(ratio, opt.timing, stream, &c);
  if (!st.ok()) {
    cudaGetLastError();
    c = ReadMostlyCeiling{};
    c.ratio = ratio;
    c.error = st.to_string();
  }
  report->read_mostly.push_back(std::move(c));
  return report->read_mostly.back().gbps();
}

Status run_one(const Case& c, const RunOptions& opt, cudaStream_t stream, Report* report,
               Result* r) {
  r->section = c.section;
  r->routine = c.routine;
  r->shape = c.shape;
  const Routine* routine = find_routine(c.routine);
  if (routine == nullptr)
    return Status::InvalidArgument("routine", "a registered routine (qfuse bench --list)",
                                   "'" + c.routine + "'");
  std::unique_ptr<Instance> inst;
  QFUSE_RETURN_IF_ERROR(routine->make(c.shape, &inst));
  // NOTE: the row's read-mostly ceiling is measured before the row when its ratio is new.
  const int64_t read = inst->read_bytes();
  const int64_t written = inst->min_bytes() - read;
  r->ceiling_ratio = ceiling_ratio(read, written);
  r->read_write_ratio = read < 0      ? 0.0
                        : written > 0 ? static_cast<double>(read) / static_cast<double>(written)
                                      : std::numeric_limits<double>::infinity();
  r->read_mostly_gbps =
      r->ceiling_ratio > 0.0 ? read_mostly_gbps(r->ceiling_ratio, opt, stream, report) : 0.0;
  if (opt.progress) opt.progress(c.routine + " " + c.shape.to_string());
  QFUSE_RETURN_IF_ERROR(measure(*inst, opt.timing, stream, &r->timing));
  const double copy_gbps = report->copy.gbps();
  r->copy_fraction = copy_gbps > 0.0 ? r->timing.gbps() / copy_gbps : 0.0;
  if (r->read_mostly_gbps > 0.0) r->read_mostly_fraction = r->timing.gbps() / r->read_mostly_gbps;
  return Status::Ok();
}

}  // namespace

Status run_cases(const std::vector<Case>& cases, const RunOptions& opt, Report* report) {
  if (!gpu_available()) return Status::NotSupported("no CUDA device: the benchmark needs a GPU");
  QFUSE_RETURN_IF_ERROR(check_kernel_image());
  QFUSE_RETURN_IF_ERROR(current_device_info(&report->device));
  report->date = utc_now();
  report->options = opt.timing;
  StreamGuard sg;
  QFUSE_CUDA_RETURN(cudaStreamCreateWithFlags(&sg.stream, cudaStreamNonBlocking));

  if (opt.progress) opt.progress("ceiling: warm-up (GPU clocks), then copy");
  QFUSE_RETURN_IF_ERROR(warm_up_gpu(opt.warmup_s, sg.stream));
  report->warmup_s = opt.warmup_s;
  QFUSE_RETURN_IF_ERROR(measure_copy_ceiling(opt.timing, sg.stream, &report->copy));

  for (const Case& c : cases) {
    Result r;
    const Status st = run_one(c, opt, sg.stream, report, &r);
    if (!st.ok()) {
      // NOTE: a failed case is reported in its row and the run goes on with the next one.
      r.error = st.to_string();
      cudaGetLastError();
      report->results.push_back(r);
      continue;
    }
    const Routine* routine = find_routine(c.routine);
    if (!opt.with_unfused || routine->unfused.empty()) {
      report->results.push_back(r);
      continue;
    }
    Result peer;
    const Status pst =
        run_one({c.section, routine->unfused, c.shape}, opt, sg.stream, report, &peer);
    peer.is_peer = true;
    if (!pst.ok()) {
      peer.error = pst.to_string();
      cudaGetLastError();
    } else {
      r.unfused = peer.routine;
      r.unfused_ratio = peer.timing.median_us / r.timing.median_us;
    }
    report->results.push_back(r);
    report->results.push_back(peer);
  }
  return Status::Ok();
}

// ---- build facts ----------------------------------------------------------------------------

#define QFUSE_BENCH_STR2(...) #__VA_ARGS__
#define QFUSE_BENCH_STR(...) QFUSE_BENCH_STR2(__VA_ARGS__)

std::string build_cuda_archs() {
#if defined(__CUDA_ARCH_LIST__)
  const std::string list = QFUSE_BENCH_STR(__CUDA_ARCH_LIST__);
  std::string out;
  size_t pos = 0;
  while (pos <= list.size()) {
    const size_t comma = std::min(list.find(',', pos), list.size());
    const int arch = std::atoi(list.substr(pos, comma - pos).c_str());
    out += (out.empty() ? "" : ", ") + std::string("sm_") + std::to_string(arch / 10);
    pos = comma + 1;
  }
  return out;
#else
  return "unknown";
#endif
}

std::string build_cuda_version() {
  return std::to_string(__CUDACC_VER_MAJOR__) + "." + std::to_string(__CUDACC_VER_MINOR__);
}

Status check_kernel_image() {
  cudaFuncAttributes attr{};
  const cudaError_t err = cudaFuncGetAttributes(&attr, fill_random_kernel<float>);
  if (err != cudaSuccess) {
    cudaGetLastError();
    DeviceInfo dev;
    QFUSE_RETURN_IF_ERROR(current_device_info(&dev));
    return Status::NotSupported("this build has no kernels for the device (built for " +
                                build_cuda_archs() + ", device is sm_" +
                                std::to_string(dev.cc_major * 10 + dev.cc_minor) +
                                "): " + cudaGetErrorString(err));
  }
  return Status::Ok();
}

}  // namespace qfuse::bench
