// Benchmark routines of the merge_states family (SPEC §2, §8):
//
//   merge_states/<spec>            fused: N partials o_i [T, H, D] bf16 + lse_i [H, T] -> [T, H*D]
//                                  in the form <spec>
//   merge_states+quantize/<spec>   its unfused peer: merge to a bf16 [T, H*D] temporary, then
//                                  quantize with the same spec (two kernels)
//   merge_states                   plain: -> bf16 [T, H*D]
//   merge_states+lse/<spec>        fused, and the merged lse [H, T] fp32 written too (what the
//                                  engine's merge_attn_states and the torch.compile peer write;
//                                  bench/NOTES.md 44: that output's cost, as an A/B of one binary)
// Shape keys: N, T, H, D. Partials come as one stacked [N, T, H, D] tensor (what a split-KV
// kernel writes). lse: random in [-4, 4], every 16th entry -inf (empty partials). Minimum bytes:
// every partial and lse read once + output values + scale buffer + 4 bytes of given scale;
// read_bytes() (partials, lse, given scale) sets the row's read-mostly ceiling.
#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "bench/family.h"
#include "bench/routines.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/merge_states/merge_states.h"
#include "qfuse/quant/capabilities.h"

namespace qfuse::bench {
namespace {

__global__ void fill_lse_kernel(float* lse, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    uint64_t x = (static_cast<uint64_t>(i) + seed) * 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 32;
    const float u = static_cast<float>(x & 0xFFFFFF) / 16777216.0f;
    lse[i] = (i % 16 == 5) ? -INFINITY : u * 8.0f - 4.0f;
  }
}

enum class Path { kFused, kUnfused, kPlain, kFusedLse };

class MergeInstance final : public Instance {
 public:
  MergeInstance(Path path, QuantSpec spec, int64_t N, int64_t T, int64_t H, int64_t D)
      : path_(path), spec_(spec), N_(N), T_(T), H_(H), D_(D) {}

  int64_t min_bytes() const override {
    const int64_t in = N_ * T_ * H_ * D_ * 2 + N_ * H_ * T_ * 4;
    if (path_ == Path::kPlain) return in + T_ * H_ * D_ * 2;
    int64_t value_bytes = 0, scale_bytes = 0;
    if (!quant_output_bytes(spec_, T_, H_ * D_, &value_bytes, &scale_bytes).ok()) return in;
    return in + value_bytes + scale_bytes + (spec_.reads_scale() ? 4 : 0) +
           (path_ == Path::kFusedLse ? H_ * T_ * 4 : 0);
  }

  int64_t read_bytes() const override {
    const int64_t in = N_ * T_ * H_ * D_ * 2 + N_ * H_ * T_ * 4;
    return in + (path_ != Path::kPlain && spec_.reads_scale() ? 4 : 0);
  }

  Status setup(int num_sets, cudaStream_t stream) override {
    if (path_ != Path::kPlain && spec_.reads_scale())
      QFUSE_RETURN_IF_ERROR(device_scalar(bench_given_scale(spec_), &given_scale_));
    sets_.clear();
    sets_.resize(num_sets);
    const int64_t cols = H_ * D_;
    for (int s = 0; s < num_sets; ++s) {
      Set& set = sets_[s];
      QFUSE_RETURN_IF_ERROR(set.o.allocate(N_ * T_ * cols * 2));
      QFUSE_RETURN_IF_ERROR(fill_random(set.o.get(), DType::kBF16, N_ * T_ * cols, 31 + s, stream));
      QFUSE_RETURN_IF_ERROR(set.lse.allocate(N_ * H_ * T_ * 4));
      fill_lse_kernel<<<256, 256, 0, stream>>>(set.lse.as<float>(), N_ * H_ * T_, 97 + s);
      QFUSE_CUDA_RETURN(cudaGetLastError());
      set.o_ref = TensorRef::contiguous(set.o.get(), DType::kBF16, {N_, T_, H_, D_});
      set.lse_ref = TensorRef::contiguous(set.lse.get(), DType::kF32, {N_, H_, T_});
      if (path_ != Path::kFused) {
        QFUSE_RETURN_IF_ERROR(set.y.allocate(T_ * cols * 2));
        QFUSE_CUDA_RETURN(cudaMemsetAsync(set.y.get(), 0, T_ * cols * 2, stream));
        set.y_ref = TensorRef::contiguous(set.y.get(), DType::kBF16, {T_, cols});
      }
      if (path_ != Path::kPlain)
        QFUSE_RETURN_IF_ERROR(
            make_quant_buffers(spec_, T_, cols, given_scale_.as<float>(), &set.q));
      if (path_ == Path::kFusedLse) {
        QFUSE_RETURN_IF_ERROR(set.out_lse.allocate(H_ * T_ * 4));
        set.opt.out_lse = TensorRef::contiguous(set.out_lse.get(), DType::kF32, {H_, T_});
      }
    }
    return Status::Ok();
  }

  Status launch(int set, cudaStream_t stream) override {
    const Set& s = sets_[set];
    QuantOutput plain;
    plain.out = s.y_ref;
    switch (path_) {
      case Path::kFused:
      case Path::kFusedLse:
        return merge_states_stacked(s.o_ref, s.lse_ref, s.q.q, s.opt, stream);
      case Path::kUnfused:
        QFUSE_RETURN_IF_ERROR(merge_states_stacked(s.o_ref, s.lse_ref, plain, {}, stream));
        return quantize(s.y_ref, s.q.q, stream);
      case Path::kPlain:
        return merge_states_stacked(s.o_ref, s.lse_ref, plain, {}, stream);
    }
    return Status(StatusCode::kInternal, "unknown benchmark path");
  }

 private:
  struct Set {
    DeviceBuffer o, lse, y, out_lse;
    TensorRef o_ref, lse_ref, y_ref;
    QuantBuffers q;
    MergeOptions opt;  // out_lse for kFusedLse
  };
  Path path_;
  QuantSpec spec_;
  int64_t N_, T_, H_, D_;
  DeviceBuffer given_scale_;
  std::vector<Set> sets_;
};

Routine make_routine(Path path, const QuantSpec& spec) {
  const std::string s = to_string(spec);
  Routine r;
  switch (path) {
    case Path::kFused:
      r.name = "merge_states/" + s;
      r.unfused = "merge_states+quantize/" + s;
      r.description = "fused merge_states, N x [T, H, D] bf16 + lse -> " + s;
      break;
    case Path::kUnfused:
      r.name = "merge_states+quantize/" + s;
      r.description = "unfused: merge_states to bf16 [T, H*D], then quantize -> " + s;
      break;
    case Path::kPlain:
      r.name = "merge_states";
      r.description = "merge_states, N x [T, H, D] bf16 + lse -> bf16 [T, H*D]";
      break;
    case Path::kFusedLse:
      r.name = "merge_states+lse/" + s;
      r.description = "fused merge_states writing the merged lse [H, T] too -> " + s;
      break;
  }
  r.make = [path, spec](const Shape& shape, std::unique_ptr<Instance>* out) -> Status {
    int64_t N = 0, T = 0, H = 0, D = 0;
    QFUSE_RETURN_IF_ERROR(shape.get("N", &N));
    QFUSE_RETURN_IF_ERROR(shape.get("T", &T));
    QFUSE_RETURN_IF_ERROR(shape.get("H", &H));
    QFUSE_RETURN_IF_ERROR(shape.get("D", &D));
    *out = std::make_unique<MergeInstance>(path, spec, N, T, H, D);
    return Status::Ok();
  };
  return r;
}

Shape nthd(int64_t N, int64_t T, int64_t H, int64_t D) {
  return Shape{{{"N", N}, {"T", T}, {"H", H}, {"D", D}}};
}

void add_suites(ToolRegistrar& r) {
  std::vector<Case> c;
  const std::string pt = "merge_states/fp8_per_tensor";
  for (int64_t N : {2, 4, 8}) {
    c.push_back({"merge, large", pt, nthd(N, 4096, 128, 128)});
    c.push_back({"merge, large", pt, nthd(N, 16384, 16, 512)});
  }
  for (int64_t T : {1, 16, 64, 256})
    c.push_back({"merge, latency-bound (H=16, D=128)", pt, nthd(2, T, 16, 128)});
  for (const char* q :
       {"fp8_group128:row:f32", "fp8_group128:col_tma:ue8m0_packed", "nvfp4:swizzled"}) {
    c.push_back(
        {"merge, per-group / NVFP4", std::string("merge_states/") + q, nthd(2, 4096, 128, 128)});
    c.push_back(
        {"merge, per-group / NVFP4", std::string("merge_states/") + q, nthd(2, 16384, 16, 512)});
  }
  c.push_back({"merge, plain bf16 out", "merge_states", nthd(2, 4096, 128, 128)});
  for (int64_t N : {2, 4}) {
    c.push_back(
        {"merge, with the merged lse", "merge_states+lse/fp8_per_tensor", nthd(N, 4096, 128, 128)});
  }
  c.push_back(
      {"merge, with the merged lse", "merge_states+lse/fp8_per_tensor", nthd(2, 16384, 16, 512)});
  r.add_suite_cases("issue3",
                    "the performance bar of issue 3: merge_states fused vs unfused (2/4/8-way, "
                    "large and latency-bound sizes, per-tensor, per-group and NVFP4 outputs)",
                    std::move(c));
}

}  // namespace

void add_merge_states_demo(ToolRegistrar& r);  // demo.cpp

}  // namespace qfuse::bench

QFUSE_REGISTER_TOOL_FAMILY(merge_states) {
  using namespace qfuse;
  using namespace qfuse::bench;
  if (const OpCapability* cap = find_op_capability("merge_states")) {
    for (const QuantSpec& spec : cap->output_specs) {
      if (spec.kind == QuantKind::kNone) continue;
      r.add_routine(make_routine(Path::kFused, spec));
      r.add_routine(make_routine(Path::kUnfused, spec));
      r.add_routine(make_routine(Path::kFusedLse, spec));
    }
  }
  r.add_routine(make_routine(Path::kPlain, QuantSpec::none()));
  add_suites(r);
  for (const char* op : {"merge_states", "merge_states+quantize", "merge_states+lse"})
    r.add_bench_op({op, "N partials [N, T, H, D] bf16 + lse [N, H, T]; --quant any spec",
                    nthd(2, 4096, 128, 128),
                    [op = std::string(op)](const QuantSpec& spec, std::string* why) {
                      return quant_routine(op, "merge_states", "merge_states", spec, why);
                    }});
  add_merge_states_demo(r);
}
