// The eager fast path of qfuse.torch's ops (part of qfuse/_torch_ops.so; docs/python.md, issue 17).
//
// A call of torch.ops.qfuse.<op> from Python pays PyTorch's generic argument parser (each
// argument converted to an IValue by schema-driven pybind casts) and the dispatcher's boxed
// autograd fallback before our kernel runs: 3-9 µs for the schemas with many arguments, more than
// the kernel launch itself. qfuse.torch therefore exposes, for every op whose CUDA kernel is this
// library's, a C function with the op's signature that converts the arguments itself (exact
// tensors, ints, floats, bools, strings, tensor lists: a few tens of ns each) and calls the op's
// CUDA kernel through the dispatcher's table (OperatorHandle::redispatchBoxed), i.e. the very
// kernel the op would reach, with the same checks and the same exceptions.
//
// It takes the fast path only where the op call would reach that kernel with nothing around it:
// every tensor a plain torch.Tensor (or Parameter), not requiring grad while grad mode is on, the
// dispatch keys of the tensors and the thread (included minus excluded), less autograd, in-place/
// view tracking and autocast (all of which pass a mutating custom op without autograd through),
// selecting the CUDA kernel; no TorchFunctionMode, no TorchDispatchMode, no JIT tracer, no
// RecordFunction callbacks (the profiler then sees the op as usual). Anything else, an argument
// of any other Python type or a missing one included, goes to the op itself (the callable it was
// made with), so the errors, torch.compile, FX tracing, FakeTensor, functionalization, vmap and
// the profiler see torch.ops.qfuse.<op> as before. torch.compile (Dynamo) traces the function's
// polyfill (ops.py: torch.compiler.substitute_in_graph), which calls the op.
//
// NOTE: the GIL is released around the kernel call, as PyTorch's op path does.
#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/record_function.h>
#include <c10/core/DispatchKeySet.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/frontend/function_schema_parser.h>
#include <torch/csrc/jit/frontend/tracer.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <vector>

namespace {

enum class Kind : uint8_t { kTensor, kOptTensor, kTensorList, kInt, kFloat, kBool, kStr };

struct Arg {
  PyObject* name;  // interned
  Kind kind;
  std::optional<c10::IValue> default_value;  // the schema's default, where it has one
};

struct FastOp {
  c10::OperatorHandle op;
  PyObject* fallback;  // the op (a strong reference, kept for the life of the process)
  std::vector<Arg> args;
};

/// The dispatch keys that pass a mutating custom op without an autograd kernel through: autograd
/// (the fallback redispatches when no input requires grad), ADInplaceOrView (a fallthrough),
/// autocast (a fallthrough for ops without an autocast kernel) and BackendSelect (in the thread's
/// included set; a fallthrough for every op but factories).
std::atomic<int64_t> g_taken{0};  // calls that took the fast path (qfuse_torch_fast_taken)

const c10::DispatchKeySet kPassThrough = c10::autograd_dispatch_keyset_with_ADInplaceOrView |
                                         c10::autocast_dispatch_keyset |
                                         c10::DispatchKeySet(c10::DispatchKey::BackendSelect);

/// Where a call must go to the op instead (a thread or process state something else hooks into).
bool state_needs_op() {
  return at::impl::torch_function_mode_enabled() || c10::impl::dispatch_mode_enabled() ||
         torch::jit::tracer::isTracing() || at::hasCallbacks();
}

/// Collects a tensor argument; false where the call goes to the op.
bool add_tensor(PyObject* o, bool grad, c10::DispatchKeySet& ks, c10::IValue& v) {
  if (!THPVariable_CheckExact(o)) return false;
  const at::Tensor& t = THPVariable_Unpack(o);
  if (grad && t.requires_grad()) return false;
  ks = ks | t.key_set();
  v = c10::IValue(t);
  return true;
}

bool convert(const Arg& a, PyObject* o, bool grad, c10::DispatchKeySet& ks, c10::IValue& v) {
  switch (a.kind) {
    case Kind::kTensor:
      return add_tensor(o, grad, ks, v);
    case Kind::kOptTensor:
      if (o == Py_None) {
        v = c10::IValue();
        return true;
      }
      return add_tensor(o, grad, ks, v);
    case Kind::kTensorList: {
      if (!PyList_CheckExact(o) && !PyTuple_CheckExact(o)) return false;
      const Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
      PyObject** items = PySequence_Fast_ITEMS(o);
      c10::List<at::Tensor> list;
      list.reserve(n);
      for (Py_ssize_t i = 0; i < n; ++i) {
        c10::IValue t;
        if (!add_tensor(items[i], grad, ks, t)) return false;
        list.push_back(std::move(t).toTensor());
      }
      v = c10::IValue(std::move(list));
      return true;
    }
    case Kind::kInt: {
      if (!PyLong_CheckExact(o)) return false;  // bool, SymInt, numpy: the op decides
      int overflow = 0;
      const long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
      if (overflow != 0) return false;
      v = c10::IValue(static_cast<int64_t>(x));
      return true;
    }
    case Kind::kFloat:
      if (PyFloat_CheckExact(o)) {
        v = c10::IValue(PyFloat_AS_DOUBLE(o));
        return true;
      }
      if (PyLong_CheckExact(o)) {
        int overflow = 0;
        const long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow != 0) return false;
        v = c10::IValue(static_cast<double>(x));
        return true;
      }
      return false;
    case Kind::kBool:
      if (o != Py_True && o != Py_False) return false;
      v = c10::IValue(o == Py_True);
      return true;
    case Kind::kStr: {
      if (!PyUnicode_CheckExact(o)) return false;
      Py_ssize_t n = 0;
      const char* s = PyUnicode_AsUTF8AndSize(o, &n);
      if (s == nullptr) {
        PyErr_Clear();
        return false;
      }
      v = c10::IValue(std::string(s, static_cast<size_t>(n)));
      return true;
    }
  }
  return false;
}

/// The arguments of a call as the op's stack; false where the call goes to the op.
bool build_stack(const FastOp& f, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames,
                 torch::jit::Stack& stack, c10::DispatchKeySet& ks) {
  const size_t n = f.args.size();
  if (nargs < 0 || static_cast<size_t>(nargs) > n) return false;
  const bool grad = c10::GradMode::is_enabled();
  stack.resize(n);
  std::vector<bool> given(n, false);
  for (Py_ssize_t i = 0; i < nargs; ++i) {
    if (!convert(f.args[i], args[i], grad, ks, stack[i])) return false;
    given[i] = true;
  }
  const Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t k = 0; k < nk; ++k) {
    PyObject* key = PyTuple_GET_ITEM(kwnames, k);
    size_t j = 0;
    while (j < n && f.args[j].name != key) ++j;  // interned names: identity first
    if (j == n) {
      j = 0;
      while (j < n && PyUnicode_Compare(f.args[j].name, key) != 0) ++j;
      if (PyErr_Occurred()) PyErr_Clear();
    }
    if (j == n || given[j]) return false;  // unknown or repeated: the op raises
    if (!convert(f.args[j], args[nargs + k], grad, ks, stack[j])) return false;
    given[j] = true;
  }
  for (size_t j = 0; j < n; ++j) {
    if (given[j]) continue;
    if (!f.args[j].default_value) return false;  // missing: the op raises
    stack[j] = *f.args[j].default_value;
  }
  return true;
}

PyObject* fast_call(PyObject* self, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  auto* f = static_cast<FastOp*>(PyCapsule_GetPointer(self, "qfuse.fast_op"));
  if (f == nullptr) return nullptr;
  const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  torch::jit::Stack stack;
  c10::DispatchKeySet ks;
  bool fast = !state_needs_op() && build_stack(*f, args, nargs, kwnames, stack, ks);
  if (fast) {
    const c10::impl::LocalDispatchKeySet tls = c10::impl::tls_local_dispatch_key_set();
    ks = ((ks | tls.included_) - tls.excluded_) - kPassThrough;
    fast = ks.highestPriorityTypeId() == c10::DispatchKey::CUDA;
  }
  if (!fast) {
    stack.clear();
    return PyObject_Vectorcall(f->fallback, args, nargsf, kwnames);
  }
  g_taken.fetch_add(1, std::memory_order_relaxed);
  std::exception_ptr error;
  Py_BEGIN_ALLOW_THREADS try {
    f->op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::CUDA), &stack);
  } catch (...) {
    error = std::current_exception();
  }
  stack.clear();  // the tensors' references go without the GIL, as in the op path
  Py_END_ALLOW_THREADS if (error) {
    HANDLE_TH_ERRORS
    std::rethrow_exception(error);
    END_HANDLE_TH_ERRORS
  }
  Py_RETURN_NONE;
}

std::optional<Kind> kind_of(const c10::Argument& a) {
  const c10::TypePtr& t = a.type();
  if (t->kind() == c10::TypeKind::TensorType) return Kind::kTensor;
  if (t->kind() == c10::TypeKind::IntType) return Kind::kInt;
  if (t->kind() == c10::TypeKind::FloatType) return Kind::kFloat;
  if (t->kind() == c10::TypeKind::BoolType) return Kind::kBool;
  if (t->kind() == c10::TypeKind::StringType) return Kind::kStr;
  if (auto opt = t->cast<c10::OptionalType>()) {
    if (opt->getElementType()->kind() == c10::TypeKind::TensorType) return Kind::kOptTensor;
    return std::nullopt;
  }
  if (auto list = t->cast<c10::ListType>()) {
    if (list->getElementType()->kind() == c10::TypeKind::TensorType) return Kind::kTensorList;
  }
  return std::nullopt;
}

}  // namespace

#define QFUSE_EXPORT extern "C" __attribute__((visibility("default")))

/// The fast-path function of the op `qualified` ("qfuse::quantize"), which calls `fallback` (the
/// op) wherever it does not take the fast path; a new reference, or null with a Python error set
/// (an op not defined, or an argument type the fast path does not convert). Called through
/// ctypes.PyDLL (with the GIL held).
QFUSE_EXPORT PyObject* qfuse_torch_fast(const char* qualified, PyObject* fallback) {
  HANDLE_TH_ERRORS
  const auto op = c10::Dispatcher::singleton().findSchema({qualified, ""});
  if (!op) {
    PyErr_Format(PyExc_ValueError, "%s is not defined", qualified);
    return nullptr;
  }
  // NOTE: never freed (an op lives as long as PyTorch): the op's data, its method entry.
  auto* f = new FastOp{*op, fallback, {}};
  for (const c10::Argument& a : op->schema().arguments()) {
    const std::optional<Kind> k = kind_of(a);
    if (!k || a.kwarg_only()) {
      PyErr_Format(PyExc_TypeError, "%s: argument '%s' of type %s has no fast path", qualified,
                   a.name().c_str(), a.type()->str().c_str());
      delete f;
      return nullptr;
    }
    f->args.push_back({PyUnicode_InternFromString(a.name().c_str()), *k, a.default_value()});
  }
  Py_INCREF(fallback);
  PyObject* capsule = PyCapsule_New(f, "qfuse.fast_op", nullptr);
  if (capsule == nullptr) return nullptr;
  const std::string& name = op->schema().name();
  auto* def = new PyMethodDef{strdup(name.substr(name.find("::") + 2).c_str()),
                              reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(fast_call)),
                              METH_FASTCALL | METH_KEYWORDS, nullptr};
  PyObject* fn = PyCFunction_NewEx(def, capsule, nullptr);
  Py_DECREF(capsule);
  return fn;
  END_HANDLE_TH_ERRORS
}

/// How many calls took the fast path so far (tests: that it is taken, and where it is not).
QFUSE_EXPORT int64_t qfuse_torch_fast_taken() {
  return g_taken.load(std::memory_order_relaxed);
}
