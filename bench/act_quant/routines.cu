// Benchmark routines of the act_quant family (SPEC §1):
//
//   silu_mul_quant/<spec>          fused: x [T, 2H] bf16 -> silu(gate) * up in the form <spec>
//   silu_and_mul+quantize/<spec>   its unfused peer: silu_and_mul to a bf16 [T, H] temporary, then
//                                  quantize with the same spec (two kernels)
//   silu_and_mul                   x [T, 2H] bf16 -> bf16 [T, H]
// Minimum bytes: the input read once + output values + the scale buffer (scale_shape(), padding
// included) + 4 bytes of given scale where the spec reads one. The unfused peer is charged the
// same minimum bytes as the fused op, so its GB/s is the rate at which it delivers that result.
// read_bytes() (the input and the given scale) sets the row's read-mostly ceiling.
#include <cuda_runtime.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bench/family.h"
#include "bench/routines.h"
#include "qfuse/act_quant/silu_mul.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/quant/capabilities.h"
#include "qfuse/quant/kind.h"

namespace qfuse::bench {

namespace {

enum class Path { kFused, kUnfused, kPlain };

class ActQuantInstance final : public Instance {
 public:
  ActQuantInstance(Path path, QuantSpec spec, int64_t T, int64_t H)
      : path_(path), spec_(spec), T_(T), H_(H) {}

  int64_t min_bytes() const override {
    const int64_t in = T_ * 2 * H_ * 2;
    if (path_ == Path::kPlain) return in + T_ * H_ * 2;
    int64_t value_bytes = 0, scale_bytes = 0;
    if (!quant_output_bytes(spec_, T_, H_, &value_bytes, &scale_bytes).ok()) return in;
    return in + value_bytes + scale_bytes + (spec_.reads_scale() ? 4 : 0);
  }

  int64_t read_bytes() const override {
    const int64_t in = T_ * 2 * H_ * 2;
    return in + (path_ != Path::kPlain && spec_.reads_scale() ? 4 : 0);
  }

  Status setup(int num_sets, cudaStream_t stream) override {
    const bool quantized = path_ != Path::kPlain;
    if (quantized && spec_.reads_scale())
      QFUSE_RETURN_IF_ERROR(device_scalar(bench_given_scale(spec_), &given_scale_));
    sets_.clear();
    sets_.resize(num_sets);
    const int64_t in_cols = 2 * H_;
    for (int s = 0; s < num_sets; ++s) {
      Set& set = sets_[s];
      QFUSE_RETURN_IF_ERROR(set.x.allocate(T_ * in_cols * 2));
      QFUSE_RETURN_IF_ERROR(fill_random(set.x.get(), DType::kBF16, T_ * in_cols, 17 + s, stream));
      set.x_ref = TensorRef::contiguous(set.x.get(), DType::kBF16, {T_, in_cols});
      if (path_ == Path::kUnfused || path_ == Path::kPlain) {
        QFUSE_RETURN_IF_ERROR(set.y.allocate(T_ * H_ * 2));
        QFUSE_CUDA_RETURN(cudaMemsetAsync(set.y.get(), 0, T_ * H_ * 2, stream));
        set.y_ref = TensorRef::contiguous(set.y.get(), DType::kBF16, {T_, H_});
      }
      if (quantized)
        QFUSE_RETURN_IF_ERROR(make_quant_buffers(spec_, T_, H_, given_scale_.as<float>(), &set.q));
    }
    return Status::Ok();
  }

  Status launch(int set, cudaStream_t stream) override {
    const Set& s = sets_[set];
    switch (path_) {
      case Path::kFused:
        return silu_mul_quant(s.x_ref, s.q.q, stream);
      case Path::kUnfused:
        QFUSE_RETURN_IF_ERROR(silu_and_mul(s.x_ref, s.y_ref, stream));
        return quantize(s.y_ref, s.q.q, stream);
      case Path::kPlain:
        return silu_and_mul(s.x_ref, s.y_ref, stream);
    }
    return Status(StatusCode::kInternal, "unknown benchmark path");
  }

 private:
  struct Set {
    DeviceBuffer x, y;  // input; bf16 [T, H] (temporary of the unfused path / plain output)
    TensorRef x_ref, y_ref;
    QuantBuffers q;
  };
  Path path_;
  QuantSpec spec_;
  int64_t T_, H_;
  DeviceBuffer given_scale_;
  std::vector<Set> sets_;
};

Routine make_routine(Path path, const QuantSpec& spec) {
  const std::string s = to_string(spec);
  Routine r;
  switch (path) {
    case Path::kFused:
      r.name = "silu_mul_quant/" + s;
      r.unfused = "silu_and_mul+quantize/" + s;
      r.description = "fused silu_mul_quant, x [T, 2H] bf16 -> " + s;
      break;
    case Path::kUnfused:
      r.name = "silu_and_mul+quantize/" + s;
      r.description = "unfused: silu_and_mul to bf16 [T, H], then quantize -> " + s;
      break;
    case Path::kPlain:
      r.name = "silu_and_mul";
      r.description = "silu_and_mul, x [T, 2H] bf16 -> bf16 [T, H]";
      break;
  }
  r.make = [path, spec](const Shape& shape, std::unique_ptr<Instance>* out) -> Status {
    int64_t T = 0, H = 0;
    QFUSE_RETURN_IF_ERROR(shape.get("T", &T));
    QFUSE_RETURN_IF_ERROR(shape.get("H", &H));
    *out = std::make_unique<ActQuantInstance>(path, spec, T, H);
    return Status::Ok();
  };
  return r;
}

Shape th(int64_t T, int64_t H) {
  return Shape{{{"T", T}, {"H", H}}};
}

void add_suites(ToolRegistrar& r) {
  const char* fused_specs[] = {"fp8_group128:row:f32", "fp8_group128:col_tma:f32",
                               "nvfp4:swizzled"};
  std::vector<Case> issue2;
  for (int64_t T : {4096, 16384})
    for (int64_t H : {2048, 7168, 14336})
      for (const char* s : fused_specs)
        issue2.push_back(
            {"silu_mul_quant, large batch", std::string("silu_mul_quant/") + s, th(T, H)});
  for (int64_t H : {2048, 7168, 14336})
    for (const char* s : fused_specs)
      issue2.push_back(
          {"silu_mul_quant, small batch (T=16)", std::string("silu_mul_quant/") + s, th(16, H)});
  for (int64_t T : {4096, 16384})
    for (int64_t H : {7168, 14336})
      issue2.push_back({"plain silu_and_mul (bf16 out)", "silu_and_mul", th(T, H)});
  r.add_suite_cases("issue2",
                    "the performance bar of issue 2: fused silu_mul_quant vs unfused, small "
                    "batch, standalone quantize",
                    std::move(issue2));
  std::vector<Case> small;
  for (int64_t H : {2048, 7168, 14336})
    for (const char* s : fused_specs)
      small.push_back(
          {"silu_mul_quant, small batch (T=16)", std::string("silu_mul_quant/") + s, th(16, H)});
  r.add_suite_cases("small", "small batches (T=16): launch-bound latency, e.g. with QFUSE_PDL=0",
                    std::move(small));
  r.add_suite_cases("quick", "a few shapes, for a smoke test",
                    {
                        {"quick", "silu_mul_quant/fp8_group128:row:f32", th(4096, 7168)},
                        {"quick", "silu_mul_quant/nvfp4:swizzled", th(4096, 7168)},
                        {"quick", "silu_mul_quant/fp8_group128:col_tma:ue8m0_packed", th(16, 7168)},
                        {"quick", "silu_and_mul", th(4096, 7168)},
                    });
  std::vector<Case> specs;
  for (const QuantSpec& s : all_quant_specs())
    if (s.kind != QuantKind::kNone)
      specs.push_back(
          {"silu_mul_quant, every spec", "silu_mul_quant/" + to_string(s), th(4096, 7168)});
  r.add_suite_cases("specs", "every quantization spec, fused vs unfused, at T=4096 H=7168",
                    std::move(specs));
}

}  // namespace

void add_act_quant_demo(ToolRegistrar& r);  // demo.cpp

}  // namespace qfuse::bench

QFUSE_REGISTER_TOOL_FAMILY(act_quant) {
  using namespace qfuse;
  using namespace qfuse::bench;
  // NOTE: the routines follow the library's capability table: a spec an op does not declare gets
  // no routine.
  if (const OpCapability* cap = find_op_capability("silu_mul_quant")) {
    for (const QuantSpec& spec : cap->output_specs) {
      if (spec.kind == QuantKind::kNone) continue;
      r.add_routine(make_routine(Path::kFused, spec));
      r.add_routine(make_routine(Path::kUnfused, spec));
    }
  }
  r.add_routine(make_routine(Path::kPlain, QuantSpec::none()));
  add_suites(r);
  const Shape defaults = th(4096, 7168);
  for (const char* op : {"silu_mul_quant", "silu_and_mul+quantize", "silu_and_mul"})
    r.add_bench_op({op, "x [T, 2H] bf16; --quant a spec, or none with silu_and_mul", defaults,
                    [op = std::string(op)](const QuantSpec& spec, std::string* why) {
                      return quant_routine(op, "silu_and_mul", "silu_mul_quant", spec, why);
                    }});
  add_act_quant_demo(r);
}
