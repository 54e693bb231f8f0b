// Benchmark routines of the quantize family:
//
//   quantize/<spec>   x [T, H] bf16 -> <spec>
// Minimum bytes: the input read once + output values + the scale buffer (scale_shape(), padding
// included) + 4 bytes of given scale where the spec reads one; read_bytes() (the input and the
// given scale) sets the row's read-mostly ceiling.
#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "bench/family.h"
#include "bench/routines.h"
#include "qfuse/quant/capabilities.h"
#include "qfuse/quant/quantize.h"

namespace qfuse::bench {
namespace {

class QuantizeInstance final : public Instance {
 public:
  QuantizeInstance(QuantSpec spec, int64_t T, int64_t H) : spec_(spec), T_(T), H_(H) {}

  int64_t min_bytes() const override {
    int64_t value_bytes = 0, scale_bytes = 0;
    if (!quant_output_bytes(spec_, T_, H_, &value_bytes, &scale_bytes).ok()) return T_ * H_ * 2;
    return T_ * H_ * 2 + value_bytes + scale_bytes + (spec_.reads_scale() ? 4 : 0);
  }

  int64_t read_bytes() const override { return T_ * H_ * 2 + (spec_.reads_scale() ? 4 : 0); }

  Status setup(int num_sets, cudaStream_t stream) override {
    if (spec_.reads_scale())
      QFUSE_RETURN_IF_ERROR(device_scalar(bench_given_scale(spec_), &given_scale_));
    sets_.clear();
    sets_.resize(num_sets);
    for (int s = 0; s < num_sets; ++s) {
      Set& set = sets_[s];
      QFUSE_RETURN_IF_ERROR(set.x.allocate(T_ * H_ * 2));
      QFUSE_RETURN_IF_ERROR(fill_random(set.x.get(), DType::kBF16, T_ * H_, 17 + s, stream));
      set.x_ref = TensorRef::contiguous(set.x.get(), DType::kBF16, {T_, H_});
      QFUSE_RETURN_IF_ERROR(make_quant_buffers(spec_, T_, H_, given_scale_.as<float>(), &set.q));
    }
    return Status::Ok();
  }

  Status launch(int set, cudaStream_t stream) override {
    return quantize(sets_[set].x_ref, sets_[set].q.q, stream);
  }

 private:
  struct Set {
    DeviceBuffer x;
    TensorRef x_ref;
    QuantBuffers q;
  };
  QuantSpec spec_;
  int64_t T_, H_;
  DeviceBuffer given_scale_;
  std::vector<Set> sets_;
};

Shape th(int64_t T, int64_t H) {
  return Shape{{{"T", T}, {"H", H}}};
}

}  // namespace
}  // namespace qfuse::bench

QFUSE_REGISTER_TOOL_FAMILY(quantize) {
  using namespace qfuse;
  using namespace qfuse::bench;
  if (const OpCapability* cap = find_op_capability("quantize")) {
    for (const QuantSpec& spec : cap->output_specs) {
      if (spec.kind == QuantKind::kNone) continue;
      const std::string s = to_string(spec);
      r.add_routine({"quantize/" + s, "", "quantize, x [T, H] bf16 -> " + s,
                     [spec](const Shape& shape, std::unique_ptr<Instance>* out) -> Status {
                       int64_t T = 0, H = 0;
                       QFUSE_RETURN_IF_ERROR(shape.get("T", &T));
                       QFUSE_RETURN_IF_ERROR(shape.get("H", &H));
                       *out = std::make_unique<QuantizeInstance>(spec, T, H);
                       return Status::Ok();
                     }});
    }
  }
  std::vector<Case> issue2;
  for (int64_t H : {2048, 7168})
    for (const char* s : {"fp8_per_tensor", "fp8_per_token", "fp8_group128:row:f32",
                          "fp8_group128:col_tma:ue8m0_packed", "nvfp4:swizzled"})
      issue2.push_back({"standalone quantize", std::string("quantize/") + s, th(16384, H)});
  r.add_suite_cases("issue2", "", std::move(issue2));
  r.add_suite_cases("quick", "", {{"quick", "quantize/fp8_per_token", th(16384, 2048)}});
  r.add_bench_op({"quantize", "x [T, H] bf16; --quant a quantized spec", th(16384, 7168),
                  [](const QuantSpec& spec, std::string* why) {
                    return quant_routine("quantize", "", "quantize", spec, why);
                  }});
}
