// The Python extension qfuse._qfuse: the C++ API over DLPack tensors (nanobind), destination
// passing only. Every function takes caller-allocated tensors of any framework that exports
// DLPack (PyTorch, CuPy, JAX, ...), a stream as an integer (cudaStream_t; 0 = the legacy default
// stream), launches on that stream and allocates nothing. FP8/FP4 tensors come as the framework's
// dtype or as uint8 views: the quantization spec fixes the format of every output and scale
// buffer, so a uint8 tensor in such a slot is read as that format.
//
// Errors: the C++ Status, raised with its message unchanged (docs/python.md): an invalid argument
// as ValueError (TypeError when the argument is a dtype), an unsupported call as
// NotImplementedError, a CUDA error as RuntimeError. Nothing is launched on error.
#include <cuda_runtime_api.h>
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "binding_common.h"
#include "qfuse/act_quant/silu_mul.h"
#include "qfuse/core/dtype.h"
#include "qfuse/core/status.h"
#include "qfuse/core/tensor.h"
#include "qfuse/merge_states/merge_states.h"
#include "qfuse/mla_decode/mla_decode.h"
#include "qfuse/quant/capabilities.h"
#include "qfuse/quant/kind.h"
#include "qfuse/quant/quantize.h"
#include "qfuse/quant/reference.h"
#include "qfuse/vit_attention/vit_attention.h"

namespace nb = nanobind;

namespace {

using Array = nb::ndarray<>;
using OptArray = std::optional<Array>;
using qfuse::DType;
using qfuse::Status;
using qfuse::StatusCode;
using qfuse::TensorRef;

[[noreturn]] void raise(PyObject* type, const std::string& message) {
  PyErr_SetString(type, message.c_str());
  throw nb::python_error();
}

/// Raises the C++ status as the matching Python exception, message unchanged.
void check(const Status& s) {
  if (s.ok()) return;
  switch (s.code()) {
    case StatusCode::kInvalidArgument:
      // NOTE: "argument 'x.dtype': ..." is a wrong type of tensor: TypeError, as Python does.
      raise(s.message().find(".dtype'") != std::string::npos ? PyExc_TypeError : PyExc_ValueError,
            s.message());
    case StatusCode::kNotSupported:
      raise(PyExc_NotImplementedError, s.message());
    default:
      raise(PyExc_RuntimeError, s.to_string());
  }
}

void invalid(const std::string& arg, const std::string& expected, const std::string& actual) {
  check(Status::InvalidArgument(arg, expected, actual));
}

std::string dlpack_dtype_name(nb::dlpack::dtype d) {
  using C = nb::dlpack::dtype_code;
  std::string base;
  switch (static_cast<C>(d.code)) {
    case C::Int:
      base = "int";
      break;
    case C::UInt:
      base = "uint";
      break;
    case C::Float:
      base = "float";
      break;
    case C::Bfloat:
      base = "bfloat";
      break;
    case C::Complex:
      base = "complex";
      break;
    case C::Bool:
      return "bool";
    case C::Float8_E4M3FN:
      return "float8_e4m3fn";
    case C::Float8_E5M2:
      return "float8_e5m2";
    case C::Float8_E8M0FNU:
      return "float8_e8m0fnu";
    case C::Float4_E2M1FN:
      return "float4_e2m1fn";
    default:
      base = "dlpack code " + std::to_string(d.code) + " bits ";
  }
  std::string s = base + std::to_string(d.bits);
  if (d.lanes != 1) s += "x" + std::to_string(d.lanes);
  return s;
}

/// The qfuse dtype of a DLPack dtype (nullopt when qfuse has none).
std::optional<DType> qfuse_dtype(nb::dlpack::dtype d) {
  using C = nb::dlpack::dtype_code;
  if (d.lanes != 1) return std::nullopt;
  switch (static_cast<C>(d.code)) {
    case C::Float:
      if (d.bits == 16) return DType::kF16;
      if (d.bits == 32) return DType::kF32;
      return std::nullopt;
    case C::Bfloat:
      return d.bits == 16 ? std::optional(DType::kBF16) : std::nullopt;
    case C::Int:
      return d.bits == 32 ? std::optional(DType::kI32) : std::nullopt;
    case C::UInt:
      return d.bits == 8 ? std::optional(DType::kU8) : std::nullopt;
    case C::Float8_E4M3FN:
      return d.bits == 8 ? std::optional(DType::kE4M3) : std::nullopt;
    case C::Float8_E8M0FNU:
      return d.bits == 8 ? std::optional(DType::kUE8M0) : std::nullopt;
    default:
      return std::nullopt;
  }
}

bool is_cuda_device(int32_t type) {
  return type == nb::device::cuda::value || type == nb::device::cuda_host::value ||
         type == nb::device::cuda_managed::value;
}

std::string device_name(int32_t type, int32_t id) {
  switch (type) {
    case nb::device::cpu::value:
      return "cpu";
    case nb::device::cuda::value:
      return "cuda:" + std::to_string(id);
    case nb::device::cuda_host::value:
      return "cuda_host";
    case nb::device::cuda_managed::value:
      return "cuda_managed:" + std::to_string(id);
    default:
      return "DLPack device type " + std::to_string(type);
  }
}

/// A TensorRef over a DLPack tensor. `byte_as`: the format a uint8 tensor in this slot holds (FP8
/// codes, packed E2M1, UE8M0 or E4M3 scales), fixed by the caller's spec. `need_device`: false only
/// for the metadata helper.
TensorRef to_ref(const Array& a, const std::string& name, std::optional<DType> byte_as = {},
                 bool need_device = true) {
  const std::optional<DType> dt = qfuse_dtype(a.dtype());
  if (!dt)
    invalid(name + ".dtype", "a dtype of qfuse (bf16|fp16|fp32|e4m3|ue8m0|i32|u8)",
            dlpack_dtype_name(a.dtype()));
  if (need_device && !is_cuda_device(a.device_type()))
    invalid(name + ".device", "a CUDA tensor", device_name(a.device_type(), a.device_id()));
  if (a.ndim() > static_cast<size_t>(TensorRef::kMaxRank))
    invalid(name + ".rank", "<= " + std::to_string(TensorRef::kMaxRank), std::to_string(a.ndim()));
  TensorRef t;
  t.data = a.data();
  t.dtype = *dt == DType::kU8 && byte_as ? *byte_as : *dt;
  t.rank = static_cast<int>(a.ndim());
  for (int i = 0; i < t.rank; ++i) {
    t.sizes[i] = a.shape(i);
    t.strides[i] = a.stride(i);  // elements (nanobind normalises DLPack's null strides)
  }
  return t;
}

/// The device pointer of a one-element fp32 tensor (a scale read by a kernel).
const float* scalar_ptr(const OptArray& a, const std::string& name) {
  if (!a) return nullptr;
  const float* ptr = nullptr;
  check(qfuse::binding::scalar_ptr(to_ref(*a, name), name, &ptr));
  return ptr;
}

qfuse::QuantSpec parse_spec(const std::string& text) {
  qfuse::QuantSpec spec;
  check(qfuse::parse_quant_spec(text, &spec));
  return spec;
}

using qfuse::binding::scale_byte_format;

TensorRef flatten_heads(const TensorRef& t) {
  TensorRef m;
  check(qfuse::binding::flatten_heads(t, &m));
  return m;
}

qfuse::QuantOutput quant_output(const std::string& spec_text, const Array& out,
                                const OptArray& scales, const OptArray& scale,
                                const OptArray& scale_ub, bool heads = false) {
  qfuse::QuantOutput q;
  q.spec = parse_spec(spec_text);
  q.out = to_ref(out, "out", qfuse::quantized_dtype(q.spec));
  if (heads) q.out = flatten_heads(q.out);
  if (scales) q.scales = to_ref(*scales, "out.scales", scale_byte_format(q.spec));
  q.scale = scalar_ptr(scale, "out.scale");
  q.scale_ub = scalar_ptr(scale_ub, "out.scale_ub");
  return q;
}

cudaStream_t as_stream(uintptr_t s) {
  return reinterpret_cast<cudaStream_t>(s);
}

void quantize(const Array& x, const Array& out, const std::string& spec, const OptArray& scales,
              const OptArray& scale, const OptArray& scale_ub, uintptr_t stream, float eps) {
  const TensorRef xr = to_ref(x, "x");
  qfuse::QuantOutput q = quant_output(spec, out, scales, scale, scale_ub);
  q.eps = eps;
  check(qfuse::quantize(xr, q, as_stream(stream)));
}

/// Dynamic per-tensor FP8: writes `scale` (one device fp32) = max(amax / 448, FLT_MIN) and out.
void dynamic_per_tensor_quant(const Array& x, const Array& out, const Array& scale,
                              uintptr_t stream) {
  const TensorRef xr = to_ref(x, "x");
  const TensorRef outr = to_ref(out, "out", DType::kE4M3);
  const float* s = scalar_ptr(scale, "out.scale");
  check(qfuse::quantize_fp8_dynamic_per_tensor(xr, outr, const_cast<float*>(s), as_stream(stream)));
}

void silu_and_mul(const Array& x, const Array& out, uintptr_t stream) {
  check(qfuse::silu_and_mul(to_ref(x, "x"), to_ref(out, "out"), as_stream(stream)));
}

void silu_mul_quant(const Array& x, const Array& out, const std::string& spec,
                    const OptArray& scales, const OptArray& scale, const OptArray& scale_ub,
                    uintptr_t stream, float eps) {
  const TensorRef xr = to_ref(x, "x");
  qfuse::QuantOutput q = quant_output(spec, out, scales, scale, scale_ub);
  q.eps = eps;
  check(qfuse::silu_mul_quant(xr, q, as_stream(stream)));
}

qfuse::MergeOptions merge_options(const OptArray& out_lse, int lse_base, int64_t copy_from) {
  qfuse::MergeOptions opt;
  if (lse_base != 0 && lse_base != 2)
    invalid("lse_base", "0 (natural) or 2", std::to_string(lse_base));
  opt.lse_base = lse_base == 2 ? qfuse::LseBase::kBase2 : qfuse::LseBase::kNatural;
  opt.copy_from = copy_from;
  if (out_lse) opt.out_lse = to_ref(*out_lse, "out_lse");
  return opt;
}

void merge_states(const std::vector<Array>& outputs, const std::vector<Array>& lses,
                  const Array& out, const std::string& spec, const OptArray& scales,
                  const OptArray& scale, const OptArray& scale_ub, const OptArray& out_lse,
                  int lse_base, int64_t copy_from, uintptr_t stream) {
  if (outputs.size() != lses.size())
    invalid("lses", std::to_string(outputs.size()) + " tensors (one per partial output)",
            std::to_string(lses.size()));
  if (outputs.size() < 2 || outputs.size() > static_cast<size_t>(qfuse::kMaxMergeStates))
    invalid("outputs", "2 to " + std::to_string(qfuse::kMaxMergeStates) + " partial states",
            std::to_string(outputs.size()));
  qfuse::MergePartials in;
  in.n = static_cast<int>(outputs.size());
  for (int i = 0; i < in.n; ++i) {
    in.o[i] = to_ref(outputs[i], "o[" + std::to_string(i) + "]");
    in.lse[i] = to_ref(lses[i], "lse[" + std::to_string(i) + "]");
  }
  const qfuse::QuantOutput q = quant_output(spec, out, scales, scale, scale_ub, true);
  const qfuse::MergeOptions opt = merge_options(out_lse, lse_base, copy_from);
  check(qfuse::merge_states(in, q, opt, as_stream(stream)));
}

void merge_states_stacked(const Array& o, const Array& lse, const Array& out,
                          const std::string& spec, const OptArray& scales, const OptArray& scale,
                          const OptArray& scale_ub, const OptArray& out_lse, int lse_base,
                          int64_t copy_from, uintptr_t stream) {
  const TensorRef orr = to_ref(o, "o");
  const TensorRef lr = to_ref(lse, "lse");
  const qfuse::QuantOutput q = quant_output(spec, out, scales, scale, scale_ub, true);
  const qfuse::MergeOptions opt = merge_options(out_lse, lse_base, copy_from);
  check(qfuse::merge_states_stacked(orr, lr, q, opt, as_stream(stream)));
}

// ---- MLA decode (SPEC §3) -------------------------------------------------------------------

/// The device pointer of a contiguous 1-D int64 tensor of `n` elements (slot_mapping: qfuse has
/// no int64 TensorRef dtype).
const int64_t* i64_vector(const Array& a, const std::string& name, int64_t n) {
  if (a.dtype() != nb::dtype<int64_t>())
    invalid(name + ".dtype", "int64", dlpack_dtype_name(a.dtype()));
  if (!is_cuda_device(a.device_type()))
    invalid(name + ".device", "a CUDA tensor", device_name(a.device_type(), a.device_id()));
  if (a.ndim() != 1 || static_cast<int64_t>(a.shape(0)) != n || (n > 1 && a.stride(0) != 1))
    invalid(name, "a contiguous [" + std::to_string(n) + "] vector",
            "rank " + std::to_string(a.ndim()) +
                (a.ndim() == 1 ? " size " + std::to_string(a.shape(0)) : std::string()));
  return static_cast<const int64_t*>(a.data());
}

qfuse::MlaDecodeOptions mla_options(const std::string& split, const std::string& kernel) {
  qfuse::MlaDecodeOptions opt;
  check(qfuse::binding::mla_options(split, kernel, &opt));
  return opt;
}

void mla_write_cache(const Array& kv_c, const Array& k_pe, const Array& slot_mapping,
                     const Array& cache, const OptArray& k_scale, uintptr_t stream) {
  qfuse::MlaCacheWriteArgs a;
  a.kv_c = to_ref(kv_c, "kv_c");
  a.k_pe = to_ref(k_pe, "k_pe");
  a.slot_mapping = i64_vector(slot_mapping, "slot_mapping", a.kv_c.rank >= 1 ? a.kv_c.sizes[0] : 0);
  a.cache = to_ref(cache, "cache", DType::kE4M3);
  a.k_scale = scalar_ptr(k_scale, "k_scale");
  check(qfuse::mla_write_cache(a, as_stream(stream)));
}

size_t mla_workspace_size(int64_t batch, int s_q, int num_heads, const std::string& split,
                          const std::string& kernel) {
  size_t bytes = 0;
  check(
      qfuse::mla_decode_workspace_size(batch, s_q, num_heads, mla_options(split, kernel), &bytes));
  return bytes;
}

qfuse::MlaWorkspace mla_workspace(const Array& ws) {
  qfuse::MlaWorkspace w;
  check(qfuse::binding::byte_buffer(to_ref(ws, "workspace", DType::kU8), "workspace", &w.data,
                                    &w.bytes));
  return w;
}

/// The words of a schedule argument: a contiguous host int64 vector of kMlaScheduleWords.
int64_t* schedule_words(const Array& a) {
  if (a.dtype() != nb::dtype<int64_t>())
    invalid("schedule.dtype", "int64", dlpack_dtype_name(a.dtype()));
  if (a.device_type() != nb::device::cpu::value)
    invalid("schedule.device", "cpu", device_name(a.device_type(), a.device_id()));
  if (a.ndim() != 1 || static_cast<int64_t>(a.shape(0)) != qfuse::binding::kMlaScheduleWords ||
      a.stride(0) != 1)
    invalid("schedule",
            "a contiguous [" + std::to_string(qfuse::binding::kMlaScheduleWords) + "] vector",
            "rank " + std::to_string(a.ndim()) +
                (a.ndim() == 1 ? " size " + std::to_string(a.shape(0)) : std::string()));
  return static_cast<int64_t*>(a.data());
}

qfuse::MlaDecodeArgs mla_args(const Array& q, const Array& cache, const Array& block_table,
                              const Array& seq_lens, const Array& out, int s_q, float softmax_scale,
                              const std::string& spec, const OptArray& scales,
                              const OptArray& scale, const OptArray& scale_ub,
                              const OptArray& k_scale, const OptArray& lse, const OptArray& w_uv) {
  qfuse::MlaDecodeArgs a;
  a.q = to_ref(q, "q");
  a.cache = to_ref(cache, "cache", DType::kE4M3);
  a.k_scale = scalar_ptr(k_scale, "k_scale");
  a.block_table = to_ref(block_table, "block_table");
  a.seq_lens = to_ref(seq_lens, "seq_lens");
  a.s_q = s_q;
  a.softmax_scale = softmax_scale;
  a.out = quant_output(spec, out, scales, scale, scale_ub);
  if (lse) a.lse = to_ref(*lse, "lse");
  if (w_uv) a.w_uv = to_ref(*w_uv, "w_uv");
  return a;
}

void mla_decode(const Array& q, const Array& cache, const Array& block_table, const Array& seq_lens,
                const Array& out, const Array& workspace, int s_q, float softmax_scale,
                const std::string& spec, const OptArray& scales, const OptArray& scale,
                const OptArray& scale_ub, const OptArray& k_scale, const OptArray& lse,
                const std::string& split, const std::string& kernel, const OptArray& schedule,
                const OptArray& w_uv, uintptr_t stream) {
  const qfuse::MlaDecodeArgs a = mla_args(q, cache, block_table, seq_lens, out, s_q, softmax_scale,
                                          spec, scales, scale, scale_ub, k_scale, lse, w_uv);
  qfuse::MlaDecodeOptions opt = mla_options(split, kernel);
  qfuse::MlaSchedule sched;
  if (schedule) {
    check(qfuse::binding::unpack_schedule(schedule_words(*schedule), &sched));
    opt.schedule = &sched;
  }
  check(qfuse::mla_decode(a, mla_workspace(workspace), opt, as_stream(stream)));
}

/// The split schedule of a decode step into `workspace`, described in `schedule` (host int64
/// [16]) for the step's mla_decode calls (schedule=...): they then launch no scheduler.
void mla_decode_schedule(const Array& q, const Array& cache, const Array& block_table,
                         const Array& seq_lens, const Array& out, const Array& workspace,
                         const Array& schedule, int s_q, float softmax_scale,
                         const std::string& spec, const OptArray& scales, const OptArray& scale,
                         const OptArray& scale_ub, const OptArray& k_scale, const OptArray& lse,
                         const std::string& split, const std::string& kernel, const OptArray& w_uv,
                         uintptr_t stream) {
  const qfuse::MlaDecodeArgs a = mla_args(q, cache, block_table, seq_lens, out, s_q, softmax_scale,
                                          spec, scales, scale, scale_ub, k_scale, lse, w_uv);
  int64_t* words = schedule_words(schedule);
  qfuse::MlaSchedule sched;
  check(qfuse::mla_decode_schedule(a, mla_workspace(workspace), mla_options(split, kernel), &sched,
                                   as_stream(stream)));
  qfuse::binding::pack_schedule(sched, words);
}

/// mla_attention, the engine-contract op (qfuse/mla_decode/mla_decode.h): the step's real rows
/// (num_actual_tokens) through the cache write (kv_c / k_pe given) and the decode with W_UV,
/// written in `spec` into `output` ([num_tokens, N * 128]); rows past them untouched.
qfuse::MlaAttentionArgs mla_attention_args(
    const Array& q, const Array& cache, const Array& w_uv, const Array& output, float softmax_scale,
    const std::string& spec, const OptArray& kv_c, const OptArray& k_pe, const OptArray& k_scale,
    const OptArray& output_scale, const OptArray& output_block_scale, const OptArray& lse) {
  qfuse::MlaAttentionArgs a;
  a.q = to_ref(q, "q");
  a.kv_cache = to_ref(cache, "cache", DType::kE4M3);
  a.k_scale = scalar_ptr(k_scale, "k_scale");
  a.w_uv = to_ref(w_uv, "w_uv");
  a.softmax_scale = softmax_scale;
  a.output = quant_output(spec, output, output_block_scale, output_scale, std::nullopt);
  if (kv_c) a.kv_c = to_ref(*kv_c, "kv_c");
  if (k_pe) a.k_pe = to_ref(*k_pe, "k_pe");
  if (lse) a.lse = to_ref(*lse, "lse");
  return a;
}

qfuse::MlaAttentionMetadata mla_attention_metadata(int64_t num_actual_tokens,
                                                   int64_t num_decode_tokens, int decode_s_q,
                                                   const Array& block_table, const Array& seq_lens,
                                                   const OptArray& slot_mapping) {
  qfuse::MlaAttentionMetadata m;
  m.num_actual_tokens = num_actual_tokens;
  m.num_decode_tokens = num_decode_tokens;
  m.decode_s_q = decode_s_q;
  m.block_table = to_ref(block_table, "block_table");
  m.seq_lens = to_ref(seq_lens, "seq_lens");
  if (slot_mapping) m.slot_mapping = i64_vector(*slot_mapping, "slot_mapping", num_actual_tokens);
  return m;
}

void mla_attention(const Array& q, const Array& cache, const Array& w_uv, const Array& output,
                   const Array& workspace, const Array& block_table, const Array& seq_lens,
                   int64_t num_actual_tokens, int64_t num_decode_tokens, int decode_s_q,
                   float softmax_scale, const std::string& spec, const OptArray& kv_c,
                   const OptArray& k_pe, const OptArray& slot_mapping, const OptArray& k_scale,
                   const OptArray& output_scale, const OptArray& output_block_scale,
                   const OptArray& lse, uintptr_t stream) {
  const qfuse::MlaAttentionArgs a =
      mla_attention_args(q, cache, w_uv, output, softmax_scale, spec, kv_c, k_pe, k_scale,
                         output_scale, output_block_scale, lse);
  const qfuse::MlaAttentionMetadata m = mla_attention_metadata(
      num_actual_tokens, num_decode_tokens, decode_s_q, block_table, seq_lens, slot_mapping);
  check(qfuse::mla_attention(a, m, mla_workspace(workspace), as_stream(stream)));
}

size_t mla_attention_workspace_size(int64_t num_decode_tokens, int decode_s_q, int num_heads) {
  if (decode_s_q < 1 || num_decode_tokens % decode_s_q != 0)
    invalid("num_decode_tokens", "a multiple of decode_s_q = " + std::to_string(decode_s_q),
            std::to_string(num_decode_tokens));
  return mla_workspace_size(num_decode_tokens / decode_s_q, decode_s_q, num_heads, "auto", "auto");
}

/// Device-side errors of the last mla_decode on `workspace` (synchronises the stream).
void mla_decode_check(const Array& workspace, uintptr_t stream) {
  check(qfuse::mla_decode_check(mla_workspace(workspace), as_stream(stream)));
}

// ---- ViT attention (SPEC §5) ----------------------------------------------------------------

using qfuse::binding::v_layout;

qfuse::VitQkvQuantArgs vit_quant_args(const Array& q, const Array& k, const Array& v,
                                      const Array& q_out, const Array& k_out, const Array& v_out,
                                      bool v_transposed) {
  qfuse::VitQkvQuantArgs a;
  a.q = to_ref(q, "q");
  a.k = to_ref(k, "k");
  a.v = to_ref(v, "v");
  a.q_out = to_ref(q_out, "q_out", DType::kE4M3);
  a.k_out = to_ref(k_out, "k_out", DType::kE4M3);
  a.v_out = to_ref(v_out, "v_out", DType::kE4M3);
  a.v_layout = v_layout(v_transposed);
  return a;
}

void vit_quantize_qkv(const Array& q, const Array& k, const Array& v, const Array& q_out,
                      const Array& k_out, const Array& v_out, const Array& q_scale,
                      const Array& k_scale, const Array& v_scale, bool v_transposed,
                      uintptr_t stream) {
  qfuse::VitQkvQuantArgs a = vit_quant_args(q, k, v, q_out, k_out, v_out, v_transposed);
  a.q_scale = scalar_ptr(q_scale, "q_scale");
  a.k_scale = scalar_ptr(k_scale, "k_scale");
  a.v_scale = scalar_ptr(v_scale, "v_scale");
  check(qfuse::vit_quantize_qkv(a, as_stream(stream)));
}

size_t vit_scale_state_bytes(int num_layers) {
  if (num_layers < 1) invalid("num_layers", ">= 1", std::to_string(num_layers));
  return qfuse::vit_scale_state_bytes(num_layers);
}

qfuse::VitScaleState vit_state(const Array& state, int num_layers) {
  const TensorRef t = to_ref(state, "state", DType::kU8);
  if (t.dtype != DType::kU8 || !t.is_contiguous())
    invalid("state", "a contiguous uint8 tensor", t.describe());
  return {t.data, static_cast<size_t>(t.numel()), num_layers};
}

void vit_quantize_qkv_dynamic(const Array& q, const Array& k, const Array& v, const Array& q_out,
                              const Array& k_out, const Array& v_out, const Array& state,
                              int num_layers, int layer, bool v_transposed, uintptr_t stream) {
  const qfuse::VitQkvQuantArgs a = vit_quant_args(q, k, v, q_out, k_out, v_out, v_transposed);
  check(qfuse::vit_quantize_qkv_dynamic(a, vit_state(state, num_layers), layer, as_stream(stream)));
}

void vit_scale_state_reset(const Array& state, int num_layers, uintptr_t stream) {
  check(qfuse::vit_scale_state_reset(vit_state(state, num_layers), as_stream(stream)));
}

qfuse::VitKernel vit_kernel(const std::string& k) {
  qfuse::VitKernel kernel = qfuse::VitKernel::kAuto;
  check(qfuse::binding::vit_kernel(k, &kernel));
  return kernel;
}

void vit_attention(const Array& q, const Array& k, const Array& v, const Array& out, int head_dim,
                   float softmax_scale, const OptArray& cu_seqlens, const OptArray& cu_seqlens_host,
                   const std::string& spec, const OptArray& scales, const OptArray& scale,
                   const OptArray& scale_ub, const OptArray& q_scale, const OptArray& k_scale,
                   const OptArray& v_scale, bool v_transposed, const std::string& kernel,
                   const OptArray& workspace, uintptr_t stream) {
  qfuse::VitAttentionArgs a;
  a.q = to_ref(q, "q", DType::kE4M3);
  a.k = to_ref(k, "k", DType::kE4M3);
  a.v = to_ref(v, "v", DType::kE4M3);
  a.v_layout = v_layout(v_transposed);
  a.head_dim = head_dim;
  a.q_scale = scalar_ptr(q_scale, "q_scale");
  a.k_scale = scalar_ptr(k_scale, "k_scale");
  a.v_scale = scalar_ptr(v_scale, "v_scale");
  check(qfuse::binding::cu_seqlens_given(cu_seqlens.has_value(), cu_seqlens_host.has_value()));
  if (cu_seqlens) {
    const TensorRef d = to_ref(*cu_seqlens, "cu_seqlens");
    const TensorRef h = to_ref(*cu_seqlens_host, "cu_seqlens_host", {}, false);
    if (cu_seqlens_host->device_type() != nb::device::cpu::value)
      invalid("cu_seqlens_host.device", "cpu",
              device_name(cu_seqlens_host->device_type(), cu_seqlens_host->device_id()));
    check(qfuse::binding::cu_seqlens_args(d, h, &a));
  }
  a.softmax_scale = softmax_scale;
  a.out = quant_output(spec, out, scales, scale, scale_ub);
  if (workspace)
    check(qfuse::binding::byte_buffer(to_ref(*workspace, "workspace", DType::kU8), "workspace",
                                      &a.workspace, &a.workspace_bytes));
  check(qfuse::vit_attention(a, qfuse::VitAttentionOptions{vit_kernel(kernel)}, as_stream(stream)));
}

/// Bytes of vit_attention's optional workspace on the current device (0 without one).
size_t vit_attention_workspace_size(int64_t s_total, int64_t num_heads, int head_dim) {
  return qfuse::vit_attention_workspace_bytes(s_total, num_heads, head_dim);
}

// ---- the vocabulary, for allocating wrappers and tests ---------------------------------------

std::string canonical_spec(const std::string& text) {
  return qfuse::to_string(parse_spec(text));
}

/// (dtype name, sizes) of the scale buffer of `spec` for [rows, cols] values; sizes () if none.
std::tuple<std::string, std::vector<int64_t>> scale_shape(const std::string& text, int64_t rows,
                                                          int64_t cols) {
  qfuse::ScaleShape s;
  check(qfuse::scale_shape(parse_spec(text), rows, cols, &s));
  std::vector<int64_t> sizes(s.sizes, s.sizes + s.rank);
  return {std::string(qfuse::to_string(s.dtype)), sizes};
}

/// The output dtype of `spec` ("e4m3", "e2m1x2"); None for none (the caller's float dtype).
std::optional<std::string> out_dtype(const std::string& text) {
  const std::optional<DType> d = qfuse::quantized_dtype(parse_spec(text));
  if (!d) return std::nullopt;
  return std::string(qfuse::to_string(*d));
}

std::vector<std::string> all_specs() {
  std::vector<std::string> v;
  for (const qfuse::QuantSpec& s : qfuse::all_quant_specs()) v.push_back(qfuse::to_string(s));
  return v;
}

/// The output kinds `op` writes (its capability row); an error for an unknown op.
std::vector<std::string> op_specs(const std::string& op) {
  const qfuse::OpCapability* cap = qfuse::find_op_capability(op);
  if (cap == nullptr) {
    std::string known;
    for (const qfuse::OpCapability& c : qfuse::op_capabilities())
      known += (known.empty() ? "" : "|") + c.op;
    invalid("op", known, op);
  }
  std::vector<std::string> v;
  for (const qfuse::QuantSpec& s : cap->output_specs) v.push_back(qfuse::to_string(s));
  return v;
}

/// What the binding reads from a DLPack tensor (for tests and debugging): dtype (qfuse name after
/// `byte_as`), shape, strides (elements), device, data pointer. Any device.
nb::dict tensor_info(const Array& a, const std::optional<std::string>& byte_as) {
  std::optional<DType> as;
  if (byte_as) {
    as = qfuse::parse_dtype(*byte_as);
    if (!as) invalid("byte_as", "a qfuse dtype name", *byte_as);
  }
  const TensorRef t = to_ref(a, "tensor", as, false);
  nb::dict d;
  d["dtype"] = std::string(qfuse::to_string(t.dtype));
  std::vector<int64_t> shape(t.sizes.begin(), t.sizes.begin() + t.rank);
  std::vector<int64_t> strides(t.strides.begin(), t.strides.begin() + t.rank);
  d["shape"] = nb::tuple(nb::cast(shape));
  d["strides"] = nb::tuple(nb::cast(strides));
  d["device"] = device_name(a.device_type(), a.device_id());
  d["data"] = reinterpret_cast<uintptr_t>(t.data);
  d["contiguous"] = t.is_contiguous();
  return d;
}

/// The host reference of the quantizers (reference.h) on a host fp32 matrix y [rows, cols]
/// (contiguous, any DLPack CPU producer): (output bytes, scale bytes) exactly as a device op
/// writes them. `scale`: per-tensor / NVFP4 global scale; `none_dtype`: output of kind none;
/// `eps`: QuantOutput::eps (engine-rule per-group FP8).
std::tuple<nb::bytes, nb::bytes> ref_quantize(const Array& y, const std::string& spec, float scale,
                                              float scale_ub, const std::string& none_dtype,
                                              float eps) {
  const TensorRef t = to_ref(y, "y", {}, false);
  if (y.device_type() != nb::device::cpu::value)
    invalid("y.device", "a CPU tensor", device_name(y.device_type(), y.device_id()));
  if (t.dtype != DType::kF32) invalid("y.dtype", "fp32", std::string(qfuse::to_string(t.dtype)));
  if (t.rank != 2 || !t.is_contiguous())
    invalid("y", "a contiguous [rows, cols] matrix", t.describe());
  qfuse::ref::RefScalars sc;
  sc.scale = scale;
  sc.scale_ub = scale_ub;
  const std::optional<DType> nd = qfuse::parse_dtype(none_dtype);
  if (!nd) invalid("none_dtype", "bf16|fp16|fp32", none_dtype);
  sc.none_dtype = *nd;
  sc.eps = eps;
  const qfuse::ref::QuantResult r = qfuse::ref::quantize(
      static_cast<const float*>(t.data), t.sizes[0], t.sizes[1], parse_spec(spec), sc);
  check(r.status);
  return {nb::bytes(reinterpret_cast<const char*>(r.out.data()), r.out.size()),
          nb::bytes(reinterpret_cast<const char*>(r.scales.data()), r.scales.size())};
}

}  // namespace

NB_MODULE(_qfuse, m) {
  m.doc() = "qfuse C++ API over DLPack (destination passing; see the qfuse package)";
  const auto none = nb::none();
  m.def("quantize", &quantize, nb::arg("x"), nb::arg("out"), nb::arg("spec"),
        nb::arg("scales") = none, nb::arg("scale") = none, nb::arg("scale_ub") = none,
        nb::arg("stream") = 0, nb::arg("eps") = 0.0f);
  m.def("dynamic_per_tensor_quant", &dynamic_per_tensor_quant, nb::arg("x"), nb::arg("out"),
        nb::arg("scale"), nb::arg("stream") = 0);
  m.def("silu_and_mul", &silu_and_mul, nb::arg("x"), nb::arg("out"), nb::arg("stream") = 0);
  m.def("silu_mul_quant", &silu_mul_quant, nb::arg("x"), nb::arg("out"), nb::arg("spec"),
        nb::arg("scales") = none, nb::arg("scale") = none, nb::arg("scale_ub") = none,
        nb::arg("stream") = 0, nb::arg("eps") = 0.0f);
  m.def("merge_states", &merge_states, nb::arg("outputs"), nb::arg("lses"), nb::arg("out"),
        nb::arg("spec") = "none", nb::arg("scales") = none, nb::arg("scale") = none,
        nb::arg("scale_ub") = none, nb::arg("out_lse") = none, nb::arg("lse_base") = 0,
        nb::arg("copy_from") = -1, nb::arg("stream") = 0);
  m.def("merge_states_stacked", &merge_states_stacked, nb::arg("o"), nb::arg("lse"), nb::arg("out"),
        nb::arg("spec") = "none", nb::arg("scales") = none, nb::arg("scale") = none,
        nb::arg("scale_ub") = none, nb::arg("out_lse") = none, nb::arg("lse_base") = 0,
        nb::arg("copy_from") = -1, nb::arg("stream") = 0);
  m.def("mla_write_cache", &mla_write_cache, nb::arg("kv_c"), nb::arg("k_pe"),
        nb::arg("slot_mapping"), nb::arg("cache"), nb::arg("k_scale") = none,
        nb::arg("stream") = 0);
  m.def("mla_workspace_size", &mla_workspace_size, nb::arg("batch"), nb::arg("s_q"),
        nb::arg("num_heads"), nb::arg("split") = "auto", nb::arg("kernel") = "auto");
  m.def("mla_decode", &mla_decode, nb::arg("q"), nb::arg("cache"), nb::arg("block_table"),
        nb::arg("seq_lens"), nb::arg("out"), nb::arg("workspace"), nb::arg("s_q"),
        nb::arg("softmax_scale"), nb::arg("spec") = "none", nb::arg("scales") = none,
        nb::arg("scale") = none, nb::arg("scale_ub") = none, nb::arg("k_scale") = none,
        nb::arg("lse") = none, nb::arg("split") = "auto", nb::arg("kernel") = "auto",
        nb::arg("schedule") = none, nb::arg("w_uv") = none, nb::arg("stream") = 0);
  m.def("mla_decode_schedule", &mla_decode_schedule, nb::arg("q"), nb::arg("cache"),
        nb::arg("block_table"), nb::arg("seq_lens"), nb::arg("out"), nb::arg("workspace"),
        nb::arg("schedule"), nb::arg("s_q"), nb::arg("softmax_scale"), nb::arg("spec") = "none",
        nb::arg("scales") = none, nb::arg("scale") = none, nb::arg("scale_ub") = none,
        nb::arg("k_scale") = none, nb::arg("lse") = none, nb::arg("split") = "auto",
        nb::arg("kernel") = "auto", nb::arg("w_uv") = none, nb::arg("stream") = 0);
  m.attr("MLA_SCHEDULE_WORDS") = qfuse::binding::kMlaScheduleWords;
  m.def("mla_decode_check", &mla_decode_check, nb::arg("workspace"), nb::arg("stream") = 0);
  m.def("mla_attention", &mla_attention, nb::arg("q"), nb::arg("cache"), nb::arg("w_uv"),
        nb::arg("output"), nb::arg("workspace"), nb::arg("block_table"), nb::arg("seq_lens"),
        nb::arg("num_actual_tokens"), nb::arg("num_decode_tokens"), nb::arg("decode_s_q"),
        nb::arg("softmax_scale"), nb::arg("spec") = "none", nb::arg("kv_c") = none,
        nb::arg("k_pe") = none, nb::arg("slot_mapping") = none, nb::arg("k_scale") = none,
        nb::arg("output_scale") = none, nb::arg("output_block_scale") = none, nb::arg("lse") = none,
        nb::arg("stream") = 0);
  m.def("mla_attention_workspace_size", &mla_attention_workspace_size, nb::arg("num_decode_tokens"),
        nb::arg("decode_s_q"), nb::arg("num_heads"));
  m.def("vit_quantize_qkv", &vit_quantize_qkv, nb::arg("q"), nb::arg("k"), nb::arg("v"),
        nb::arg("q_out"), nb::arg("k_out"), nb::arg("v_out"), nb::arg("q_scale"),
        nb::arg("k_scale"), nb::arg("v_scale"), nb::arg("v_transposed") = false,
        nb::arg("stream") = 0);
  m.def("vit_scale_state_bytes", &vit_scale_state_bytes, nb::arg("num_layers"));
  m.def("vit_scale_state_reset", &vit_scale_state_reset, nb::arg("state"), nb::arg("num_layers"),
        nb::arg("stream") = 0);
  m.def("vit_quantize_qkv_dynamic", &vit_quantize_qkv_dynamic, nb::arg("q"), nb::arg("k"),
        nb::arg("v"), nb::arg("q_out"), nb::arg("k_out"), nb::arg("v_out"), nb::arg("state"),
        nb::arg("num_layers"), nb::arg("layer"), nb::arg("v_transposed") = false,
        nb::arg("stream") = 0);
  m.def("vit_attention", &vit_attention, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"),
        nb::arg("head_dim"), nb::arg("softmax_scale"), nb::arg("cu_seqlens") = none,
        nb::arg("cu_seqlens_host") = none, nb::arg("spec") = "none", nb::arg("scales") = none,
        nb::arg("scale") = none, nb::arg("scale_ub") = none, nb::arg("q_scale") = none,
        nb::arg("k_scale") = none, nb::arg("v_scale") = none, nb::arg("v_transposed") = false,
        nb::arg("kernel") = "auto", nb::arg("workspace") = none, nb::arg("stream") = 0);
  m.def("vit_attention_workspace_size", &vit_attention_workspace_size, nb::arg("s_total"),
        nb::arg("num_heads"), nb::arg("head_dim"));
  m.def("canonical_spec", &canonical_spec, nb::arg("spec"));
  m.def("scale_shape", &scale_shape, nb::arg("spec"), nb::arg("rows"), nb::arg("cols"));
  m.def("out_dtype", &out_dtype, nb::arg("spec"));
  m.def("all_specs", &all_specs);
  m.def("op_specs", &op_specs, nb::arg("op"));
  m.def("tensor_info", &tensor_info, nb::arg("tensor"), nb::arg("byte_as") = none);
  m.def("ref_quantize", &ref_quantize, nb::arg("y"), nb::arg("spec"), nb::arg("scale") = 1.0f,
        nb::arg("scale_ub") = INFINITY, nb::arg("none_dtype") = "bf16", nb::arg("eps") = 0.0f);
  m.attr("MAX_MERGE_STATES") = qfuse::kMaxMergeStates;
}
