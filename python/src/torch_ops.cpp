// The PyTorch op library qfuse/_torch_ops.so: the CUDA kernels of torch.ops.qfuse.*, registered
// with the PyTorch dispatcher, so that an eager call is Python -> dispatcher -> this file -> the
// qfuse C++ API, with no Python in between (docs/python.md). The schemas are defined by
// qfuse.torch (ops.py, dropin.py: OPS); each kernel here is registered by qfuse_torch_register()
// only where the schema qfuse.torch defined is the one it was written for, so a schema edited on
// one side only leaves that op on the Python path (today's: DLPack into qfuse._qfuse) instead of
// misreading its arguments.
//
// Every kernel does what the Python path does, in C++: the same tensor conversion (FP8/FP4 torch
// dtypes or uint8 views in the slots whose format the spec fixes; no copies), the same
// drop-in argument handling (dropin.py), the same checks with the same messages, on the current
// CUDA stream of the first tensor's device, under a device guard. Errors: the qfuse Status as
// c10::ValueError (TypeError for a ".dtype" argument), c10::NotImplementedError or c10::Error,
// which PyTorch raises as ValueError, TypeError, NotImplementedError or RuntimeError with the
// message unchanged; nothing is launched on error.
//
// NOTE: the classic TORCH_LIBRARY API, not the stable ABI (torch/csrc/stable): in PyTorch 2.11 a
// stable-ABI kernel can only throw std exceptions (STD_TORCH_CHECK: std::runtime_error), which
// reach Python as RuntimeError (std::invalid_argument as ValueError); nothing there raises
// TypeError or NotImplementedError, which the Python API pins. So this library is built for one
// PyTorch version (qfuse_torch_built_for(); qfuse.torch loads it only under that version).
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>
#include <torch/csrc/jit/frontend/function_schema_parser.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "binding_common.h"
#include "qfuse/act_quant/silu_mul.h"
#include "qfuse/core/dtype.h"
#include "qfuse/core/pointer_checks.h"
#include "qfuse/core/status.h"
#include "qfuse/core/tensor.h"
#include "qfuse/merge_states/merge_states.h"
#include "qfuse/mla_decode/mla_decode.h"
#include "qfuse/quant/kind.h"
#include "qfuse/quant/quantize.h"
#include "qfuse/vit_attention/vit_attention.h"

#ifndef QFUSE_TORCH_VERSION
#error "QFUSE_TORCH_VERSION: the torch.__version__ this library is built against (CMake sets it)"
#endif

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using qfuse::DType;
using qfuse::Status;
using qfuse::StatusCode;
using qfuse::TensorRef;

// ---- errors: as the nanobind binding raises them (module.cpp: check) ---------------------------

[[noreturn]] void raise(const Status& s) {
  switch (s.code()) {
    case StatusCode::kInvalidArgument:
      // NOTE: "argument 'x.dtype': ..." is a wrong type of tensor: TypeError, as Python does.
      if (s.message().find(".dtype'") != std::string::npos) C10_THROW_ERROR(TypeError, s.message());
      C10_THROW_ERROR(ValueError, s.message());
    case StatusCode::kNotSupported:
      C10_THROW_ERROR(NotImplementedError, s.message());
    default:
      C10_THROW_ERROR(Error, s.to_string());
  }
}

void check(const Status& s) {
  if (!s.ok()) raise(s);
}

[[noreturn]] void invalid(const std::string& arg, const std::string& expected,
                          const std::string& actual) {
  raise(Status::InvalidArgument(arg, expected, actual));
}

// ---- Python's spelling of values in the messages the Python layer writes ------------------------

/// repr() of a Python float: the shortest round-trip digits, positional for 1e-4 <= |v| < 1e16
/// (with ".0" when integral), else d.ddde+XX.
std::string py_float(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string s(buf, r.ptr);  // "-1.2345e-05"
  const size_t e = s.find('e');
  const int exp = std::stoi(s.substr(e + 1));
  const bool neg = s[0] == '-';
  std::string digits;
  for (char c : s.substr(0, e))
    if (c >= '0' && c <= '9') digits += c;
  std::string out = neg ? "-" : "";
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out += "0." + std::string(-exp - 1, '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exp + 1) {
      out += digits + std::string(exp + 1 - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char ebuf[16];
  std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
  return out + ebuf;
}

/// str() of a Python list of ints: "[5, 3]".
std::string py_list(c10::IntArrayRef v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// ---- tensors: what ops.py's _dl and the binding's to_ref do -------------------------------------

/// The format a slot of the Python layer accepts FP8/FP4 torch dtypes for (ops.py: _BYTE_SLOT).
enum class Slot : uint8_t { kAny, kE4M3, kE2M1x2, kUE8M0 };

Slot slot_of(std::optional<DType> fmt) {
  if (!fmt) return Slot::kAny;
  switch (*fmt) {
    case DType::kE4M3:
      return Slot::kE4M3;
    case DType::kE2M1x2:
      return Slot::kE2M1x2;
    case DType::kUE8M0:
      return Slot::kUE8M0;
    default:
      return Slot::kAny;
  }
}

const char* slot_name(Slot s) {
  switch (s) {
    case Slot::kE4M3:
      return "e4m3";
    case Slot::kE2M1x2:
      return "e2m1x2";
    case Slot::kUE8M0:
      return "ue8m0";
    default:
      return nullptr;
  }
}

bool slot_accepts(Slot s, c10::ScalarType t) {
  switch (s) {
    case Slot::kE4M3:
      return t == c10::ScalarType::Float8_e4m3fn;
    case Slot::kE2M1x2:
      return t == c10::ScalarType::Float4_e2m1fn_x2;
    case Slot::kUE8M0:
      return t == c10::ScalarType::Float8_e8m0fnu;
    default:
      return false;
  }
}

/// The qfuse dtype of a torch dtype, as the binding maps the DLPack dtype PyTorch exports.
std::optional<DType> qfuse_dtype(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::BFloat16:
      return DType::kBF16;
    case c10::ScalarType::Half:
      return DType::kF16;
    case c10::ScalarType::Float:
      return DType::kF32;
    case c10::ScalarType::Int:
      return DType::kI32;
    case c10::ScalarType::Byte:
      return DType::kU8;
    case c10::ScalarType::Float8_e4m3fn:
      return DType::kE4M3;
    case c10::ScalarType::Float8_e8m0fnu:
      return DType::kUE8M0;
    default:
      return std::nullopt;
  }
}

/// The name the binding gives a dtype it does not take: that of the DLPack dtype PyTorch exports
/// (module.cpp: dlpack_dtype_name); nullopt for a one-byte float dtype PyTorch does not export,
/// which the Python layer refuses itself (ops.py: _dl).
std::optional<std::string> dlpack_name(c10::ScalarType t) {
  using S = c10::ScalarType;
  switch (t) {
    case S::Bool:
      return "bool";
    case S::Byte:
      return "uint8";
    case S::Char:
      return "int8";
    case S::Short:
      return "int16";
    case S::Int:
      return "int32";
    case S::Long:
      return "int64";
    case S::UInt16:
      return "uint16";
    case S::UInt32:
      return "uint32";
    case S::UInt64:
      return "uint64";
    case S::Half:
      return "float16";
    case S::Float:
      return "float32";
    case S::Double:
      return "float64";
    case S::BFloat16:
      return "bfloat16";
    case S::ComplexHalf:
      return "complex32";
    case S::ComplexFloat:
      return "complex64";
    case S::ComplexDouble:
      return "complex128";
    case S::Float8_e4m3fn:
      return "float8_e4m3fn";
    case S::Float8_e5m2:
      return "float8_e5m2";
    case S::Float8_e8m0fnu:
      return "float8_e8m0fnu";
    case S::Float8_e4m3fnuz:
      return "dlpack code 11 bits 8";
    case S::Float8_e5m2fnuz:
      return "dlpack code 13 bits 8";
    case S::Float4_e2m1fn_x2:
      return "float4_e2m1fn";
    default:
      return std::nullopt;
  }
}

/// ops.py's _name: the short name of the common dtypes, else torch's.
std::string torch_name(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::BFloat16:
      return "bf16";
    case c10::ScalarType::Half:
      return "fp16";
    case c10::ScalarType::Float:
      return "fp32";
    case c10::ScalarType::Float8_e4m3fn:
      return "e4m3";
    case c10::ScalarType::Int:
      return "i32";
    case c10::ScalarType::Byte:
      return "u8";
    default: {
      // c10::toString gives the C++ name ("Float8_e5m2"); Python's str(dtype) the lower-case one.
      std::string s = c10::toString(t);
      for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return s;
    }
  }
}

std::string device_name(const c10::Device& d) {
  if (d.is_cpu()) return "cpu";
  if (d.is_cuda()) return "cuda:" + std::to_string(d.index() < 0 ? 0 : d.index());
  return d.str();
}

constexpr const char* kAnyDtype = "a dtype of qfuse (bf16|fp16|fp32|e4m3|ue8m0|i32|u8)";

/// The dtype the binding sees for `t` in a slot of format `slot`: a one-byte float dtype the slot
/// takes becomes uint8 (ops.py: a uint8 view); one PyTorch cannot export is refused as ops.py does.
c10::ScalarType seen_dtype(const Tensor& t, std::string_view name, Slot slot) {
  using S = c10::ScalarType;
  const S st = t.scalar_type();
  // NOTE: PyTorch exports the sub-byte integer dtypes (one byte each) as uint8 / int8.
  switch (st) {
    case S::UInt1:
    case S::UInt2:
    case S::UInt3:
    case S::UInt4:
    case S::UInt5:
    case S::UInt6:
    case S::UInt7:
      return S::Byte;
    case S::Int1:
    case S::Int2:
    case S::Int3:
    case S::Int4:
    case S::Int5:
    case S::Int6:
    case S::Int7:
      return S::Char;
    default:
      break;
  }
  if (c10::elementSize(st) == 1 && st != S::Byte && st != S::Char && st != S::Bool) {
    if (slot_accepts(slot, st)) return c10::ScalarType::Byte;
    if (!dlpack_name(st)) {
      const char* want = slot_name(slot);
      invalid(std::string(name) + ".dtype", want ? want : kAnyDtype, torch_name(st));
    }
  }
  return st;
}

/// The devices of the CUDA tensors an op call has handed to the C++ API so far (to_ref,
/// i64_vector: every device pointer a kernel function passes goes through one of them), read
/// and reset by launch(): where they are all on the device the op runs on, the API's per-pointer
/// driver queries are redundant (qfuse/core/pointer_checks.h). A call that fails before launch()
/// leaves its entries for the next call, which can only make that call check its pointers.
struct CallDevices {
  int device = -1;     // the device of the first CUDA tensor seen (-1: none yet)
  bool mixed = false;  // a CUDA tensor on another device
};
thread_local CallDevices t_call_devices;
std::atomic<int64_t> g_trusted_calls{0};  // calls that skipped the driver queries (tests)
std::atomic<bool> g_trust{true};  // off: the API checks every call's pointers (bench_overhead)

void note_device(const Tensor& t) {
  if (!t.is_cuda()) return;
  const int d = t.device().index();
  CallDevices& c = t_call_devices;
  if (c.device < 0)
    c.device = d;
  else if (c.device != d)
    c.mixed = true;
}

/// A TensorRef over `t` (module.cpp: to_ref). `slot`: the format ops.py's _dl is given (which
/// one-byte torch dtypes pass as uint8); `byte_as`: what the binding reads a uint8 tensor in this
/// slot as (fixed by the spec); `need_device`: false for host tensors.
/// NOTE: on the per-call path (issue 17's overhead bar): `name` is a view (the argument names are
/// literals; strings are built for an error only), sizes and strides are read once.
TensorRef to_ref(const Tensor& t, std::string_view name, Slot slot = Slot::kAny,
                 std::optional<DType> byte_as = {}, bool need_device = true) {
  const c10::ScalarType st = seen_dtype(t, name, slot);
  const std::optional<DType> dt = qfuse_dtype(st);
  if (!dt)
    invalid(std::string(name) + ".dtype", kAnyDtype, dlpack_name(st).value_or(torch_name(st)));
  if (need_device && !t.is_cuda())
    invalid(std::string(name) + ".device", "a CUDA tensor", device_name(t.device()));
  const c10::IntArrayRef sizes = t.sizes(), strides = t.strides();
  const int64_t rank = static_cast<int64_t>(sizes.size());
  if (rank > TensorRef::kMaxRank)
    invalid(std::string(name) + ".rank", "<= " + std::to_string(TensorRef::kMaxRank),
            std::to_string(rank));
  TensorRef r;
  note_device(t);
  // NOTE: mutable_data_ptr, as to_dlpack's: a copy-on-write tensor gets its own storage first.
  r.data = t.mutable_data_ptr();
  r.dtype = *dt == DType::kU8 && byte_as ? *byte_as : *dt;
  r.rank = static_cast<int>(rank);
  for (int i = 0; i < r.rank; ++i) {
    r.sizes[i] = sizes[i];
    r.strides[i] = strides[i];
  }
  return r;
}

/// The device pointer of a one-element fp32 tensor (module.cpp: scalar_ptr).
const float* scalar_ptr(const OptTensor& a, std::string_view name) {
  if (!a) return nullptr;
  const float* ptr = nullptr;
  check(qfuse::binding::scalar_ptr(to_ref(*a, name), name, &ptr));
  return ptr;
}

/// Parses a spec, remembering the last one this thread parsed (the ops are called with a few
/// fixed specs).
qfuse::QuantSpec parse_spec(std::string_view text) {
  thread_local std::string last_text;
  thread_local qfuse::QuantSpec last;
  thread_local bool valid = false;
  if (valid && text == last_text) return last;
  qfuse::QuantSpec spec;
  check(qfuse::parse_quant_spec(text, &spec));
  last_text.assign(text);
  last = spec;
  valid = true;
  return spec;
}

using qfuse::binding::scale_byte_format;

/// ops.py's _scale_fmt: the slot format of the scale buffer of `spec`.
Slot scale_slot(const qfuse::QuantSpec& spec) {
  if (spec.kind == qfuse::QuantKind::kNvfp4) return Slot::kE4M3;
  if (spec.format == qfuse::ScaleFormat::kUe8m0Packed) return Slot::kUE8M0;
  return Slot::kAny;
}

TensorRef flatten_heads(const TensorRef& t) {
  TensorRef m;
  check(qfuse::binding::flatten_heads(t, &m));
  return m;
}

/// The spec's output, scale buffer and scalars (module.cpp: quant_output); the slots are those
/// ops.py gives the core ops (`out`: the spec's output format; `scales`: _scale_fmt).
qfuse::QuantOutput quant_output(std::string_view spec_text, const Tensor& out,
                                const OptTensor& scales, const OptTensor& scale,
                                const OptTensor& scale_ub, bool heads = false) {
  qfuse::QuantOutput q;
  q.spec = parse_spec(spec_text);
  const std::optional<DType> od = qfuse::quantized_dtype(q.spec);
  q.out = to_ref(out, "out", slot_of(od), od);
  if (heads) q.out = flatten_heads(q.out);
  if (scales)
    q.scales = to_ref(*scales, "out.scales", scale_slot(q.spec), scale_byte_format(q.spec));
  q.scale = scalar_ptr(scale, "out.scale");
  q.scale_ub = scalar_ptr(scale_ub, "out.scale_ub");
  return q;
}

// ---- the launch: stream, device guard, the benchmark hook ---------------------------------------

std::atomic<int> g_bench_calls{0};   // > 0: the next launches repeat the API call this many times
std::atomic<int64_t> g_bench_ns{0};  // host time of the last repeated launch, all calls

/// Runs `api(stream)` (a qfuse API call) on the current CUDA stream of `t`'s device, with that
/// device current, as the Python path does (ops.py: _stream). A tensor off the GPU gets stream 0;
/// so does a process without a device (only tensors that describe memory without owning it get
/// here then; the library's device checks refuse them). Where the call's CUDA tensors are all on
/// `t`'s device (t_call_devices: at least one, none elsewhere), the API skips its driver queries
/// of the pointers (TrustedDevicePointers: a PyTorch CUDA tensor's memory is its device's, which
/// is then the current one; bench/NOTES.md P2); anything else is checked by the API as before.
template <class Api>
void launch(const Tensor& t, Api&& api) {
  const CallDevices seen = std::exchange(t_call_devices, CallDevices{});
  c10::cuda::OptionalCUDAGuard guard;
  cudaStream_t stream = nullptr;
  std::optional<qfuse::TrustedDevicePointers> trusted;
  if (t.is_cuda() && c10::cuda::device_count() > 0) {
    guard.set_device(t.device());
    stream = c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
    // NOTE: a call that noted no CUDA tensor (none reached to_ref since the last launch) is
    // not vouched for: the API checks whatever it was given.
    if (!seen.mixed && seen.device == t.device().index() &&
        g_trust.load(std::memory_order_relaxed)) {
      trusted.emplace();
      g_trusted_calls.fetch_add(1, std::memory_order_relaxed);
    }
  }
  const int n = g_bench_calls.load(std::memory_order_relaxed);
  if (n <= 0) {
    check(api(stream));
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) check(api(stream));
  const auto t1 = std::chrono::steady_clock::now();
  g_bench_ns.store(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
}

// ---- ops mirroring the C++ API (ops.py)
// ----------------------------------------------------------

void quantize_kernel(const Tensor& x, const Tensor& out, c10::string_view spec,
                     const OptTensor& scales, const OptTensor& scale, const OptTensor& scale_ub) {
  const TensorRef xr = to_ref(x, "x");
  const qfuse::QuantOutput q = quant_output(spec, out, scales, scale, scale_ub);
  launch(x, [&](cudaStream_t s) { return qfuse::quantize(xr, q, s); });
}

void silu_and_mul_kernel(const Tensor& x, const Tensor& out) {
  const TensorRef xr = to_ref(x, "x"), outr = to_ref(out, "out");
  launch(x, [&](cudaStream_t s) { return qfuse::silu_and_mul(xr, outr, s); });
}

void silu_mul_quant_kernel(const Tensor& x, const Tensor& out, c10::string_view spec,
                           const OptTensor& scales, const OptTensor& scale,
                           const OptTensor& scale_ub) {
  const TensorRef xr = to_ref(x, "x");
  const qfuse::QuantOutput q = quant_output(spec, out, scales, scale, scale_ub);
  launch(x, [&](cudaStream_t s) { return qfuse::silu_mul_quant(xr, q, s); });
}

qfuse::MergeOptions merge_options(const OptTensor& out_lse, int64_t lse_base, int64_t copy_from) {
  qfuse::MergeOptions opt;
  if (lse_base != 0 && lse_base != 2)
    invalid("lse_base", "0 (natural) or 2", std::to_string(lse_base));
  opt.lse_base = lse_base == 2 ? qfuse::LseBase::kBase2 : qfuse::LseBase::kNatural;
  opt.copy_from = copy_from;
  if (out_lse) opt.out_lse = to_ref(*out_lse, "out_lse");
  return opt;
}

/// The partial states of a merge: `n` tensors at `at(i)` (a TensorList's, or the two of
/// merge_attn_states), without a copy of the list.
struct Partials {
  size_t n;
  const Tensor* list;     // n contiguous tensors (a TensorList), or
  const Tensor* pair[2];  // the two of merge_attn_states (list null)
  const Tensor& at(size_t i) const { return list ? list[i] : *pair[i]; }
};

Partials partials(at::TensorList l) {
  return {l.size(), l.data(), {nullptr, nullptr}};
}

Partials partials(const Tensor& a, const Tensor& b) {
  return {2, nullptr, {&a, &b}};
}

/// "o[i]" / "lse[i]", built once (to_ref's names of the partial states).
const std::string& partial_name(bool lse, int i) {
  static const auto* names = [] {
    auto* v = new std::array<std::array<std::string, qfuse::kMaxMergeStates>, 2>();
    for (int k = 0; k < qfuse::kMaxMergeStates; ++k) {
      (*v)[0][k] = "o[" + std::to_string(k) + "]";
      (*v)[1][k] = "lse[" + std::to_string(k) + "]";
    }
    return v;
  }();
  return (*names)[lse ? 1 : 0][i];
}

/// merge_states over the partials `o`/`lse` (module.cpp: merge_states); `first`: the tensor whose
/// device's stream runs it.
void merge(const Partials& o, const Partials& lse, const Tensor& out, std::string_view spec,
           const OptTensor& scales, const OptTensor& scale, const OptTensor& scale_ub,
           const OptTensor& out_lse, int64_t lse_base, int64_t copy_from, const Tensor& first) {
  if (o.n != lse.n)
    invalid("lses", std::to_string(o.n) + " tensors (one per partial output)",
            std::to_string(lse.n));
  if (o.n < 2 || o.n > static_cast<size_t>(qfuse::kMaxMergeStates))
    invalid("outputs", "2 to " + std::to_string(qfuse::kMaxMergeStates) + " partial states",
            std::to_string(o.n));
  qfuse::MergePartials in;
  in.n = static_cast<int>(o.n);
  for (int i = 0; i < in.n; ++i) {
    in.o[i] = to_ref(o.at(i), partial_name(false, i));
    in.lse[i] = to_ref(lse.at(i), partial_name(true, i));
  }
  const qfuse::QuantOutput q = quant_output(spec, out, scales, scale, scale_ub, true);
  const qfuse::MergeOptions opt = merge_options(out_lse, lse_base, copy_from);
  launch(first, [&](cudaStream_t s) { return qfuse::merge_states(in, q, opt, s); });
}

void merge_states_kernel(at::TensorList outputs, at::TensorList lses, const Tensor& out,
                         c10::string_view spec, const OptTensor& scales, const OptTensor& scale,
                         const OptTensor& scale_ub, const OptTensor& out_lse, int64_t lse_base,
                         int64_t copy_from) {
  if (outputs.empty()) invalid("outputs", "2 to 8 partial states", "0");
  merge(partials(outputs), partials(lses), out, spec, scales, scale, scale_ub, out_lse, lse_base,
        copy_from, outputs[0]);
}

void dynamic_per_tensor_quant_kernel(const Tensor& x, const Tensor& out, const Tensor& scale) {
  const TensorRef xr = to_ref(x, "x");
  const TensorRef outr = to_ref(out, "out", Slot::kE4M3, DType::kE4M3);
  float* s = const_cast<float*>(scalar_ptr(scale, "out.scale"));
  launch(x,
         [&](cudaStream_t st) { return qfuse::quantize_fp8_dynamic_per_tensor(xr, outr, s, st); });
}

/// The device pointer of a contiguous 1-D int64 tensor of `n` elements (module.cpp: i64_vector).
const int64_t* i64_vector(const Tensor& a, std::string_view name, int64_t n) {
  const c10::ScalarType st = seen_dtype(a, name, Slot::kAny);
  if (st != c10::ScalarType::Long)
    invalid(std::string(name) + ".dtype", "int64", dlpack_name(st).value_or(torch_name(st)));
  if (!a.is_cuda())
    invalid(std::string(name) + ".device", "a CUDA tensor", device_name(a.device()));
  if (a.dim() != 1 || a.size(0) != n || (n > 1 && a.stride(0) != 1))
    invalid(std::string(name), "a contiguous [" + std::to_string(n) + "] vector",
            "rank " + std::to_string(a.dim()) +
                (a.dim() == 1 ? " size " + std::to_string(a.size(0)) : std::string()));
  note_device(a);
  return static_cast<const int64_t*>(a.mutable_data_ptr());
}

qfuse::MlaDecodeOptions mla_options(std::string_view split, std::string_view kernel) {
  qfuse::MlaDecodeOptions opt;
  check(qfuse::binding::mla_options(split, kernel, &opt));
  return opt;
}

void mla_write_cache_kernel(const Tensor& kv_c, const Tensor& k_pe, const Tensor& slot_mapping,
                            const Tensor& cache, const OptTensor& k_scale) {
  qfuse::MlaCacheWriteArgs a;
  a.kv_c = to_ref(kv_c, "kv_c");
  a.k_pe = to_ref(k_pe, "k_pe");
  a.slot_mapping = i64_vector(slot_mapping, "slot_mapping", a.kv_c.rank >= 1 ? a.kv_c.sizes[0] : 0);
  a.cache = to_ref(cache, "cache", Slot::kE4M3, DType::kE4M3);
  a.k_scale = scalar_ptr(k_scale, "k_scale");
  launch(kv_c, [&](cudaStream_t s) { return qfuse::mla_write_cache(a, s); });
}

qfuse::MlaWorkspace mla_workspace(const Tensor& ws) {
  qfuse::MlaWorkspace w;
  check(qfuse::binding::byte_buffer(to_ref(ws, "workspace", Slot::kAny, DType::kU8), "workspace",
                                    &w.data, &w.bytes));
  return w;
}

qfuse::MlaDecodeArgs mla_args(const Tensor& q, const Tensor& cache, const Tensor& block_table,
                              const Tensor& seq_lens, const Tensor& out, int64_t s_q,
                              double softmax_scale, c10::string_view spec, const OptTensor& scales,
                              const OptTensor& scale, const OptTensor& scale_ub,
                              const OptTensor& k_scale, const OptTensor& lse,
                              const OptTensor& w_uv) {
  qfuse::MlaDecodeArgs a;
  a.q = to_ref(q, "q");
  a.cache = to_ref(cache, "cache", Slot::kE4M3, DType::kE4M3);
  a.k_scale = scalar_ptr(k_scale, "k_scale");
  a.block_table = to_ref(block_table, "block_table");
  a.seq_lens = to_ref(seq_lens, "seq_lens");
  a.s_q = static_cast<int>(s_q);
  a.softmax_scale = static_cast<float>(softmax_scale);
  a.out = quant_output(spec, out, scales, scale, scale_ub);
  if (lse) a.lse = to_ref(*lse, "lse");
  if (w_uv) a.w_uv = to_ref(*w_uv, "w_uv");
  return a;
}

/// The words of a schedule argument: a contiguous host int64 vector of kMlaScheduleWords.
int64_t* schedule_words(const Tensor& t) {
  const c10::ScalarType st = seen_dtype(t, "schedule", Slot::kAny);
  if (st != c10::ScalarType::Long)
    invalid("schedule.dtype", "int64", dlpack_name(st).value_or(torch_name(st)));
  if (!t.is_cpu()) invalid("schedule.device", "cpu", device_name(t.device()));
  if (t.dim() != 1 || t.size(0) != qfuse::binding::kMlaScheduleWords || t.stride(0) != 1)
    invalid("schedule",
            "a contiguous [" + std::to_string(qfuse::binding::kMlaScheduleWords) + "] vector",
            "rank " + std::to_string(t.dim()) +
                (t.dim() == 1 ? " size " + std::to_string(t.size(0)) : std::string()));
  return static_cast<int64_t*>(t.mutable_data_ptr());
}

void mla_decode_kernel(const Tensor& q, const Tensor& cache, const Tensor& block_table,
                       const Tensor& seq_lens, const Tensor& out, const Tensor& workspace,
                       int64_t s_q, double softmax_scale, c10::string_view spec,
                       const OptTensor& scales, const OptTensor& scale, const OptTensor& scale_ub,
                       const OptTensor& k_scale, const OptTensor& lse, c10::string_view split,
                       c10::string_view kernel, const OptTensor& schedule, const OptTensor& w_uv) {
  const qfuse::MlaDecodeArgs a = mla_args(q, cache, block_table, seq_lens, out, s_q, softmax_scale,
                                          spec, scales, scale, scale_ub, k_scale, lse, w_uv);
  const qfuse::MlaWorkspace ws = mla_workspace(workspace);
  qfuse::MlaDecodeOptions opt = mla_options(split, kernel);
  qfuse::MlaSchedule sched;
  if (schedule) {
    check(qfuse::binding::unpack_schedule(schedule_words(*schedule), &sched));
    opt.schedule = &sched;
  }
  launch(q, [&](cudaStream_t s) { return qfuse::mla_decode(a, ws, opt, s); });
}

void mla_decode_schedule_kernel(const Tensor& q, const Tensor& cache, const Tensor& block_table,
                                const Tensor& seq_lens, const Tensor& out, const Tensor& workspace,
                                const Tensor& schedule, int64_t s_q, double softmax_scale,
                                c10::string_view spec, const OptTensor& scales,
                                const OptTensor& scale, const OptTensor& scale_ub,
                                const OptTensor& k_scale, const OptTensor& lse,
                                c10::string_view split, c10::string_view kernel,
                                const OptTensor& w_uv) {
  const qfuse::MlaDecodeArgs a = mla_args(q, cache, block_table, seq_lens, out, s_q, softmax_scale,
                                          spec, scales, scale, scale_ub, k_scale, lse, w_uv);
  const qfuse::MlaWorkspace ws = mla_workspace(workspace);
  const qfuse::MlaDecodeOptions opt = mla_options(split, kernel);
  int64_t* words = schedule_words(schedule);
  qfuse::MlaSchedule sched;
  launch(q, [&](cudaStream_t s) { return qfuse::mla_decode_schedule(a, ws, opt, &sched, s); });
  qfuse::binding::pack_schedule(sched, words);
}

using qfuse::binding::v_layout;

void vit_quantize_qkv_kernel(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& q_out,
                             const Tensor& k_out, const Tensor& v_out, const Tensor& q_scale,
                             const Tensor& k_scale, const Tensor& v_scale, bool v_transposed) {
  qfuse::VitQkvQuantArgs a;
  a.q = to_ref(q, "q");
  a.k = to_ref(k, "k");
  a.v = to_ref(v, "v");
  a.q_out = to_ref(q_out, "q_out", Slot::kE4M3, DType::kE4M3);
  a.k_out = to_ref(k_out, "k_out", Slot::kE4M3, DType::kE4M3);
  a.v_out = to_ref(v_out, "v_out", Slot::kE4M3, DType::kE4M3);
  a.v_layout = v_layout(v_transposed);
  a.q_scale = scalar_ptr(q_scale, "q_scale");
  a.k_scale = scalar_ptr(k_scale, "k_scale");
  a.v_scale = scalar_ptr(v_scale, "v_scale");
  launch(q, [&](cudaStream_t s) { return qfuse::vit_quantize_qkv(a, s); });
}

qfuse::VitKernel vit_kernel(std::string_view k) {
  qfuse::VitKernel kernel = qfuse::VitKernel::kAuto;
  check(qfuse::binding::vit_kernel(k, &kernel));
  return kernel;
}

void vit_attention_kernel(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                          int64_t head_dim, double softmax_scale, const OptTensor& cu_seqlens,
                          const OptTensor& cu_seqlens_cpu, c10::string_view spec,
                          const OptTensor& scales, const OptTensor& scale,
                          const OptTensor& scale_ub, const OptTensor& q_scale,
                          const OptTensor& k_scale, const OptTensor& v_scale, bool v_transposed,
                          c10::string_view kernel, const OptTensor& workspace) {
  qfuse::VitAttentionArgs a;
  a.q = to_ref(q, "q", Slot::kE4M3, DType::kE4M3);
  a.k = to_ref(k, "k", Slot::kE4M3, DType::kE4M3);
  a.v = to_ref(v, "v", Slot::kE4M3, DType::kE4M3);
  a.v_layout = v_layout(v_transposed);
  a.head_dim = static_cast<int>(head_dim);
  a.q_scale = scalar_ptr(q_scale, "q_scale");
  a.k_scale = scalar_ptr(k_scale, "k_scale");
  a.v_scale = scalar_ptr(v_scale, "v_scale");
  check(qfuse::binding::cu_seqlens_given(cu_seqlens.has_value(), cu_seqlens_cpu.has_value()));
  if (cu_seqlens) {
    const TensorRef d = to_ref(*cu_seqlens, "cu_seqlens");
    const TensorRef h = to_ref(*cu_seqlens_cpu, "cu_seqlens_host", Slot::kAny, {}, false);
    if (!cu_seqlens_cpu->is_cpu())
      invalid("cu_seqlens_host.device", "cpu", device_name(cu_seqlens_cpu->device()));
    check(qfuse::binding::cu_seqlens_args(d, h, &a));
  }
  a.softmax_scale = static_cast<float>(softmax_scale);
  a.out = quant_output(spec, out, scales, scale, scale_ub);
  if (workspace)
    check(qfuse::binding::byte_buffer(to_ref(*workspace, "workspace", Slot::kAny, DType::kU8),
                                      "workspace", &a.workspace, &a.workspace_bytes));
  const qfuse::VitAttentionOptions opt{vit_kernel(kernel)};
  launch(q, [&](cudaStream_t s) { return qfuse::vit_attention(a, opt, s); });
}

// ---- the reference engine's ops (dropin.py)
// ------------------------------------------------------

constexpr double kFp8Max = 448.0;

// NOTE: the drop-ins write their kinds with the reference engine's rounding rule where it differs
// from qfuse's (dropin.py: _rule; the C++ QuantRule::kEngine, spec suffix ":engine", and
// QuantOutput::eps), except in the fused twins.

/// dropin.py's _rule: the reference engine's rule, except in a fused twin.
std::string engine_rule(std::string spec, bool silu) {
  return silu ? spec : spec + ":engine";
}

/// x[0] of a Python tuple (torch.Size): IndexError on a 0-d tensor, as Python.
int64_t dim0(const Tensor& t) {
  if (t.dim() == 0) C10_THROW_ERROR(IndexError, "tuple index out of range");
  return t.size(0);
}

/// `result[:n]` for a 2-D result (dropin.py: num_token_padding rows stay unwritten).
TensorRef first_rows(TensorRef r, int64_t n) {
  if (r.rank == 2 && r.sizes[0] > n) r.sizes[0] = n < 0 ? 0 : n;
  return r;
}

/// The quantizing call of a drop-in op: quantize, or silu_mul_quant for the fused twin.
Status run_quant(bool silu, const TensorRef& x, const qfuse::QuantOutput& q, cudaStream_t s) {
  return silu ? qfuse::silu_mul_quant(x, q, s) : qfuse::quantize(x, q, s);
}

template <bool kSilu>
void static_scaled_fp8_quant_kernel(const Tensor& result, const Tensor& input,
                                    const Tensor& scale) {
  const int64_t rows = result.dim() == 2 ? dim0(input) : 0;
  const TensorRef xr = to_ref(input, "x");
  qfuse::QuantOutput q;
  q.spec = parse_spec("fp8_per_tensor");
  q.out = first_rows(to_ref(result, "out", Slot::kE4M3, DType::kE4M3), rows);
  q.scale = scalar_ptr(scale, "out.scale");
  launch(input, [&](cudaStream_t s) { return run_quant(kSilu, xr, q, s); });
}

void dynamic_scaled_fp8_quant_kernel(const Tensor& result, const Tensor& input,
                                     const Tensor& scale) {
  const int64_t rows = result.dim() == 2 ? dim0(input) : 0;
  const TensorRef xr = to_ref(input, "x");
  const TensorRef outr = first_rows(to_ref(result, "out", Slot::kE4M3, DType::kE4M3), rows);
  float* s = const_cast<float*>(scalar_ptr(scale, "out.scale"));
  launch(input,
         [&](cudaStream_t st) { return qfuse::quantize_fp8_dynamic_per_tensor(xr, outr, s, st); });
}

template <bool kSilu>
void dynamic_per_token_scaled_fp8_quant_kernel(const Tensor& result, const Tensor& input,
                                               const Tensor& scale, const OptTensor& scale_ub) {
  const int64_t T = dim0(input);
  const TensorRef xr = to_ref(input, "x");
  static const std::string spec = engine_rule("fp8_per_token", kSilu);
  qfuse::QuantOutput q;
  q.spec = parse_spec(spec);
  q.out = first_rows(to_ref(result, "out", Slot::kE4M3, DType::kE4M3), T);
  q.scales = to_ref(scale, "out.scales", Slot::kAny, scale_byte_format(q.spec));
  if (q.scales.rank == 2 && q.scales.sizes[1] == 1) {  // the reference's [T, 1] as [T]
    q.scales.rank = 1;
    q.scales.sizes[1] = q.scales.strides[1] = 0;
  }
  q.scale_ub = scalar_ptr(scale_ub, "out.scale_ub");
  launch(input, [&](cudaStream_t s) { return run_quant(kSilu, xr, q, s); });
}

std::string group_spec(int64_t group_size, bool ue8m0, bool transposed, bool tma) {
  const char* layout = transposed ? (tma ? "col_tma" : "col") : "row";
  return "fp8_group" + std::to_string(group_size) + ":" + layout + ":" + (ue8m0 ? "ue8m0" : "f32");
}

/// The [groups, ld] buffer behind column-major scales (dropin.py: _col_major_base): the
/// reference's [rows, groups] view with strides (1, ld), or a contiguous [groups, ld] tensor.
/// Returns whether `s` is the view (whose buffer the scales then are: apply_col_major).
bool col_major_view(const Tensor& s, int64_t rows, int64_t groups, int64_t ld, const char* name) {
  const c10::IntArrayRef sz = s.sizes(), st = s.strides();
  if (sz.size() == 2 && sz[0] == groups && sz[1] == ld && s.is_contiguous()) return false;
  if (sz.size() == 2 && sz[0] == rows && sz[1] == groups && (groups == 1 || st[1] == ld) &&
      (rows <= 1 || st[0] == 1))
    return true;
  invalid(name,
          "column-major scales, a [" + std::to_string(rows) + ", " + std::to_string(groups) +
              "] view with strides (1, " + std::to_string(ld) + ") or a contiguous [" +
              std::to_string(groups) + ", " + std::to_string(ld) + "] tensor",
          py_list(sz) + " strides " + py_list(st));
}

/// s.as_strided((groups, ld), (ld, 1)) of the view col_major_view accepted.
TensorRef apply_col_major(TensorRef r, int64_t groups, int64_t ld) {
  r.sizes = {groups, ld, 0, 0};
  r.strides = {ld, 1, 0, 0};
  return r;
}

/// -(-h // g) in Python, for g > 0 and h >= 0.
int64_t ceil_div(int64_t h, int64_t g) {
  return (h + g - 1) / g;
}

int64_t round_up(int64_t a, int64_t b) {
  return (a + b - 1) / b * b;
}

template <bool kSilu>
void per_token_group_fp8_quant_kernel(const Tensor& input, const Tensor& output_q,
                                      const Tensor& output_s, int64_t group_size, double eps,
                                      double fp8_min, double fp8_max, bool scale_ue8m0,
                                      bool is_scale_transposed, bool is_tma_aligned) {
  if (fp8_min != -kFp8Max || fp8_max != kFp8Max)
    invalid("fp8_min/fp8_max", "-448.0/448.0 (float8_e4m3fn)",
            py_float(fp8_min) + "/" + py_float(fp8_max));
  if (eps <= 0) invalid("eps", "> 0", py_float(eps));
  const std::string spec =
      engine_rule(group_spec(group_size, scale_ue8m0, is_scale_transposed, is_tma_aligned), kSilu);
  const int64_t T = dim0(input);
  const int64_t H = input.size(-1) / (kSilu ? 2 : 1);
  int64_t G = 0, ld = 0;
  bool view = false;
  if (is_scale_transposed) {
    // NOTE: a group size <= 0 (an invalid spec) is refused by the spec's parser first, where
    // Python would divide by it (ZeroDivisionError) before the binding parses the spec.
    if (group_size <= 0) (void)parse_spec(spec);
    G = ceil_div(H, group_size);
    ld = is_tma_aligned ? round_up(T, 4) : T;
    view = col_major_view(output_s, T, G, ld, "output_s");
  }
  const TensorRef xr = to_ref(input, "x");
  qfuse::QuantOutput q;
  q.spec = parse_spec(spec);
  q.out = to_ref(output_q, "out", Slot::kE4M3, DType::kE4M3);
  q.scales = to_ref(output_s, "out.scales", Slot::kAny, scale_byte_format(q.spec));
  if (view) q.scales = apply_col_major(q.scales, G, ld);
  q.eps = kSilu ? 0.0f : static_cast<float>(eps);  // the engine's floor: max(amax, eps) / 448
  launch(input, [&](cudaStream_t s) { return run_quant(kSilu, xr, q, s); });
}

/// The NVFP4 block scales as bytes (dropin.py: _fp4_scale_bytes): int32 (four E4M3 bytes each) or
/// float8_e4m3fn are viewed as uint8, which the e4m3 slot reads as E4M3.
TensorRef fp4_scale_bytes(const Tensor& s) {
  if (s.scalar_type() != c10::ScalarType::Int)
    return to_ref(s, "out.scales", Slot::kE4M3, DType::kE4M3);
  if (s.dim() == 0 || s.stride(-1) != 1) (void)s.view(c10::ScalarType::Byte);  // torch's error
  TensorRef r = to_ref(s, "out.scales");
  r.dtype = DType::kE4M3;
  for (int i = 0; i + 1 < r.rank; ++i) r.strides[i] *= 4;
  r.sizes[r.rank - 1] *= 4;
  return r;
}

template <bool kSilu>
void scaled_fp4_quant_kernel(const Tensor& output, const Tensor& input, const Tensor& output_scale,
                             const Tensor& input_global_scale, bool is_sf_swizzled_layout) {
  const TensorRef xr = to_ref(input, "x");
  qfuse::QuantOutput q;
  static const std::string swizzled = engine_rule("nvfp4:swizzled", kSilu);
  static const std::string linear = engine_rule("nvfp4:linear", kSilu);
  q.spec = parse_spec(is_sf_swizzled_layout ? swizzled : linear);
  q.out = to_ref(output, "out", Slot::kE2M1x2, DType::kE2M1x2);
  q.scales = fp4_scale_bytes(output_scale);
  q.scale = scalar_ptr(input_global_scale, "out.scale");
  launch(input, [&](cudaStream_t s) { return run_quant(kSilu, xr, q, s); });
}

void silu_and_mul_per_block_quant_kernel(const Tensor& out, const Tensor& input,
                                         const Tensor& scales, int64_t group_size,
                                         const OptTensor& scale_ub, bool is_scale_transposed) {
  // The engine's rule, its SiLU arithmetic included (the reference op itself, not a twin).
  const std::string spec =
      engine_rule(group_spec(group_size, false, is_scale_transposed, false), false);
  int64_t G = 0, T = 0;
  bool view = false;
  if (is_scale_transposed) {
    T = dim0(input);
    if (input.dim() < 2) C10_THROW_ERROR(IndexError, "tuple index out of range");
    if (group_size <= 0) (void)parse_spec(spec);  // as in per_token_group_fp8_quant
    G = ceil_div(input.size(1) / 2, group_size);
    view = col_major_view(scales, T, G, T, "scales");
  }
  const TensorRef xr = to_ref(input, "x");
  qfuse::QuantOutput q;
  q.spec = parse_spec(spec);
  q.out = to_ref(out, "out", Slot::kE4M3, DType::kE4M3);
  q.scales = to_ref(scales, "out.scales", Slot::kAny, scale_byte_format(q.spec));
  if (view) q.scales = apply_col_major(q.scales, G, T);
  q.scale_ub = scalar_ptr(scale_ub, "out.scale_ub");
  launch(input, [&](cudaStream_t s) { return qfuse::silu_mul_quant(xr, q, s); });
}

void merge_attn_states_kernel(const Tensor& output, const OptTensor& output_lse,
                              const Tensor& prefix_output, const Tensor& prefix_lse,
                              const Tensor& suffix_output, const Tensor& suffix_lse,
                              const OptTensor& output_scale) {
  merge(partials(prefix_output, suffix_output), partials(prefix_lse, suffix_lse), output,
        output_scale ? "fp8_per_tensor" : "none", std::nullopt, output_scale, std::nullopt,
        output_lse, 0, -1, prefix_output);
}

// ---- registration -------------------------------------------------------------------------------

struct OpEntry {
  const char* name;
  const char* schema;  // as qfuse.torch defines it (ops.py / dropin.py: OPS)
  void (*add)(torch::Library&, const char* name);
};

#define QFUSE_KERNEL(fn) [](torch::Library& m, const char* n) { m.impl(n, TORCH_FN(fn)); }

#define QFUSE_QUANT_ARGS \
  "str spec, Tensor(b!)? scales=None, Tensor? scale=None, Tensor? scale_ub=None"

#define QFUSE_STATIC_FP8 \
  "static_scaled_fp8_quant(Tensor(a!) result, Tensor input, Tensor scale) -> ()"
#define QFUSE_PER_TOKEN_FP8                                                                \
  "dynamic_per_token_scaled_fp8_quant(Tensor(a!) result, Tensor input, Tensor(b!) scale, " \
  "Tensor? scale_ub=None) -> ()"
#define QFUSE_GROUP_FP8                                                                \
  "per_token_group_fp8_quant(Tensor input, Tensor(a!) output_q, Tensor(b!) output_s, " \
  "int group_size, float eps=1e-10, float fp8_min=-448.0, float fp8_max=448.0, "       \
  "bool scale_ue8m0=False, bool is_scale_transposed=False, bool is_tma_aligned=False) -> ()"
#define QFUSE_FP4                                                               \
  "scaled_fp4_quant(Tensor(a!) output, Tensor input, Tensor(b!) output_scale, " \
  "Tensor input_global_scale, bool is_sf_swizzled_layout=True) -> ()"

const OpEntry kOps[] = {
    {"quantize", "quantize(Tensor x, Tensor(a!) out, " QFUSE_QUANT_ARGS ") -> ()",
     QFUSE_KERNEL(quantize_kernel)},
    {"silu_and_mul", "silu_and_mul(Tensor x, Tensor(a!) out) -> ()",
     QFUSE_KERNEL(silu_and_mul_kernel)},
    {"silu_mul_quant", "silu_mul_quant(Tensor x, Tensor(a!) out, " QFUSE_QUANT_ARGS ") -> ()",
     QFUSE_KERNEL(silu_mul_quant_kernel)},
    {"merge_states",
     "merge_states(Tensor[] outputs, Tensor[] lses, Tensor(a!) out, str spec=\"none\", "
     "Tensor(b!)? scales=None, Tensor? scale=None, Tensor? scale_ub=None, "
     "Tensor(c!)? out_lse=None, int lse_base=0, int copy_from=-1) -> ()",
     QFUSE_KERNEL(merge_states_kernel)},
    {"dynamic_per_tensor_quant",
     "dynamic_per_tensor_quant(Tensor x, Tensor(a!) out, Tensor(b!) scale) -> ()",
     QFUSE_KERNEL(dynamic_per_tensor_quant_kernel)},
    {"mla_write_cache",
     "mla_write_cache(Tensor kv_c, Tensor k_pe, Tensor slot_mapping, Tensor(a!) cache, "
     "Tensor? k_scale=None) -> ()",
     QFUSE_KERNEL(mla_write_cache_kernel)},
    {"mla_decode",
     "mla_decode(Tensor q, Tensor cache, Tensor block_table, Tensor seq_lens, Tensor(a!) out, "
     "Tensor(b!) workspace, int s_q, float softmax_scale, str spec=\"none\", "
     "Tensor(c!)? scales=None, Tensor? scale=None, Tensor? scale_ub=None, Tensor? k_scale=None, "
     "Tensor(d!)? lse=None, str split=\"auto\", str kernel=\"auto\", "
     "Tensor? schedule=None, Tensor? w_uv=None) -> ()",
     QFUSE_KERNEL(mla_decode_kernel)},
    {"mla_decode_schedule",
     "mla_decode_schedule(Tensor q, Tensor cache, Tensor block_table, Tensor seq_lens, "
     "Tensor out, Tensor(a!) workspace, Tensor(b!) schedule, int s_q, float softmax_scale, "
     "str spec=\"none\", Tensor? scales=None, Tensor? scale=None, Tensor? scale_ub=None, "
     "Tensor? k_scale=None, Tensor? lse=None, str split=\"auto\", str kernel=\"auto\", "
     "Tensor? w_uv=None) -> ()",
     QFUSE_KERNEL(mla_decode_schedule_kernel)},
    {"vit_quantize_qkv",
     "vit_quantize_qkv(Tensor q, Tensor k, Tensor v, Tensor(a!) q_out, Tensor(b!) k_out, "
     "Tensor(c!) v_out, Tensor q_scale, Tensor k_scale, Tensor v_scale, "
     "bool v_transposed=False) -> ()",
     QFUSE_KERNEL(vit_quantize_qkv_kernel)},
    {"vit_attention",
     "vit_attention(Tensor q, Tensor k, Tensor v, Tensor(a!) out, int head_dim, "
     "float softmax_scale, Tensor? cu_seqlens=None, Tensor? cu_seqlens_cpu=None, "
     "str spec=\"none\", Tensor(b!)? scales=None, Tensor? scale=None, Tensor? scale_ub=None, "
     "Tensor? q_scale=None, Tensor? k_scale=None, Tensor? v_scale=None, "
     "bool v_transposed=False, str kernel=\"auto\", Tensor(c!)? workspace=None) -> ()",
     QFUSE_KERNEL(vit_attention_kernel)},
    {"static_scaled_fp8_quant", QFUSE_STATIC_FP8,
     QFUSE_KERNEL(static_scaled_fp8_quant_kernel<false>)},
    {"silu_mul_static_scaled_fp8_quant", "silu_mul_" QFUSE_STATIC_FP8,
     QFUSE_KERNEL(static_scaled_fp8_quant_kernel<true>)},
    {"dynamic_scaled_fp8_quant",
     "dynamic_scaled_fp8_quant(Tensor(a!) result, Tensor input, Tensor(b!) scale) -> ()",
     QFUSE_KERNEL(dynamic_scaled_fp8_quant_kernel)},
    {"dynamic_per_token_scaled_fp8_quant", QFUSE_PER_TOKEN_FP8,
     QFUSE_KERNEL(dynamic_per_token_scaled_fp8_quant_kernel<false>)},
    {"silu_mul_dynamic_per_token_scaled_fp8_quant", "silu_mul_" QFUSE_PER_TOKEN_FP8,
     QFUSE_KERNEL(dynamic_per_token_scaled_fp8_quant_kernel<true>)},
    {"per_token_group_fp8_quant", QFUSE_GROUP_FP8,
     QFUSE_KERNEL(per_token_group_fp8_quant_kernel<false>)},
    {"silu_mul_per_token_group_fp8_quant", "silu_mul_" QFUSE_GROUP_FP8,
     QFUSE_KERNEL(per_token_group_fp8_quant_kernel<true>)},
    {"scaled_fp4_quant", QFUSE_FP4, QFUSE_KERNEL(scaled_fp4_quant_kernel<false>)},
    {"silu_mul_scaled_fp4_quant", "silu_mul_" QFUSE_FP4,
     QFUSE_KERNEL(scaled_fp4_quant_kernel<true>)},
    {"silu_and_mul_per_block_quant",
     "silu_and_mul_per_block_quant(Tensor(a!) out, Tensor input, Tensor(b!) scales, "
     "int group_size, Tensor? scale_ub=None, bool is_scale_transposed=False) -> ()",
     QFUSE_KERNEL(silu_and_mul_per_block_quant_kernel)},
    {"merge_attn_states",
     "merge_attn_states(Tensor(a!) output, Tensor(b!)? output_lse, Tensor prefix_output, "
     "Tensor prefix_lse, Tensor suffix_output, Tensor suffix_lse, "
     "Tensor? output_scale=None) -> ()",
     QFUSE_KERNEL(merge_attn_states_kernel)},
};

const OpEntry* find_op(std::string_view name) {
  for (const OpEntry& e : kOps)
    if (name == e.name) return &e;
  return nullptr;
}

void set_message(char* buf, size_t size, const std::string& text) {
  if (buf == nullptr || size == 0) return;
  const size_t n = std::min(size - 1, text.size());
  std::memcpy(buf, text.data(), n);
  buf[n] = '\0';
}

}  // namespace

// ---- the C interface qfuse.torch loads (ctypes)
// ---------------------------------------------------

#define QFUSE_EXPORT extern "C" __attribute__((visibility("default")))

/// The torch.__version__ this library is built against; qfuse.torch loads it only under that one.
QFUSE_EXPORT const char* qfuse_torch_built_for() {
  return QFUSE_TORCH_VERSION;
}

/// The schema this library's kernel of op `name` is written for ("quantize(Tensor x, ...) -> ()"),
/// or null where it has none.
QFUSE_EXPORT const char* qfuse_torch_schema(const char* name) {
  const OpEntry* e = find_op(name);
  return e ? e->schema : nullptr;
}

namespace {

/// The floor's kernel (qfuse_torch_register_floor): takes the arguments off the stack, no more.
void noop_kernel(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  torch::jit::drop(*stack, op.schema().arguments().size());
}

int register_op(const char* ns, const char* name, char* msg, size_t msg_size, bool noop) {
  try {
    const OpEntry* e = find_op(name);
    if (e == nullptr) return 0;
    const std::string prefix = std::string(ns) + "::";
    const auto op = c10::Dispatcher::singleton().findSchema({prefix + name, ""});
    if (!op) {
      set_message(msg, msg_size, prefix + name + " is not defined");
      return -2;
    }
    const c10::FunctionSchema mine = torch::jit::parseSchema(prefix + e->schema);
    if (!(op->schema() == mine)) {
      set_message(msg, msg_size,
                  "defined as " + c10::toString(op->schema()) + ", the C++ kernel is written for " +
                      c10::toString(mine));
      return -1;
    }
    // NOTE: one IMPL library a namespace, kept for the life of the process (the registrations
    // last as long as it does; never destroyed, so nothing runs at exit).
    static std::mutex mu;
    static auto* libs = new std::map<std::string, torch::Library*>();
    const std::lock_guard<std::mutex> lock(mu);
    torch::Library*& lib = (*libs)[ns];
    if (lib == nullptr)
      lib =
          new torch::Library(torch::Library::IMPL, ns, c10::DispatchKey::CUDA, __FILE__, __LINE__);
    if (noop)
      lib->impl(name, torch::CppFunction::makeFromBoxedFunction<&noop_kernel>());
    else
      e->add(*lib, name);
    return 1;
  } catch (const std::exception& ex) {
    set_message(msg, msg_size, ex.what());
    return -2;
  }
}

}  // namespace

/// Registers the CUDA kernel of op `ns`::`name`, which qfuse.torch has defined (ns: "qfuse"; the
/// tests use others). Returns 1 when registered; 0 when this library has no kernel of that name;
/// -1 when the defined schema is not the one the kernel is written for (nothing registered; `msg`
/// says how they differ); -2 on another error (`msg`).
QFUSE_EXPORT int qfuse_torch_register(const char* ns, const char* name, char* msg,
                                      size_t msg_size) {
  return register_op(ns, name, msg, msg_size, false);
}

/// Benchmark floor (python/bench_overhead.py): registers, as qfuse_torch_register does (same
/// schema check, same returns), a CUDA kernel that does nothing for op `ns`::`name` (ns: a
/// namespace of its own, never "qfuse"), so that a call of it costs what PyTorch alone costs for
/// that schema and those arguments: its Python argument parsing, the dispatcher, the autograd
/// fallback.
QFUSE_EXPORT int qfuse_torch_register_floor(const char* ns, const char* name, char* msg,
                                            size_t msg_size) {
  return register_op(ns, name, msg, msg_size, true);
}

/// Benchmark hook (python/bench_overhead.py): with n > 0, every following op call repeats its
/// qfuse API call (validation and launch, after the argument conversion) n times back to back and
/// records the host time; n = 0 turns it off. qfuse_torch_bench_ns: that time of the last call.
QFUSE_EXPORT void qfuse_torch_bench_calls(int n) {
  g_bench_calls.store(n < 0 ? 0 : n);
}
QFUSE_EXPORT int64_t qfuse_torch_bench_ns() {
  return g_bench_ns.load();
}

/// How many op calls vouched for their tensors' devices (launch(): the API's driver queries of
/// the pointers skipped) so far (tests).
QFUSE_EXPORT int64_t qfuse_torch_trusted_calls() {
  return g_trusted_calls.load(std::memory_order_relaxed);
}

/// Whether launch() may vouch for a call's pointers (1, the default) or always lets the API
/// query the driver (0): bench_overhead times both in one run.
QFUSE_EXPORT void qfuse_torch_trust_pointers(int on) {
  g_trust.store(on != 0);
}
