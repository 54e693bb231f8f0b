"""PyTorch-layer tests that need no GPU: the op schemas, the fake implementations (FakeTensorMode
with CUDA fake tensors), the torch-side dtype and layout checks, and the fusion pass on FX
graphs (rewrites and match counts; the compiled-vs-eager numbers are in test_gpu.py)."""

import unittest
from unittest import mock

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp

import qfuse.torch as qt
import torch_fakes
from qfuse.torch import fusion
from qfuse.torch import ops as qops

FP8 = torch.float8_e4m3fn
BF16 = torch.bfloat16

# Every op, with the arguments its schema marks as written (the mutation annotations).
WRITES = {
    "quantize": {"out", "scales"},
    "silu_and_mul": {"out"},
    "silu_mul_quant": {"out", "scales"},
    "merge_states": {"out", "scales", "out_lse"},
    "dynamic_per_tensor_quant": {"out", "scale"},
    "static_scaled_fp8_quant": {"result"},
    "dynamic_scaled_fp8_quant": {"result", "scale"},
    "dynamic_per_token_scaled_fp8_quant": {"result", "scale"},
    "per_token_group_fp8_quant": {"output_q", "output_s"},
    "scaled_fp4_quant": {"output", "output_scale"},
    "silu_and_mul_per_block_quant": {"out", "scales"},
    "merge_attn_states": {"output", "output_lse"},
    "mla_write_cache": {"cache"},
    "mla_decode": {"out", "workspace", "scales", "lse"},
    "mla_decode_schedule": {"workspace", "schedule"},
    "vit_quantize_qkv": {"q_out", "k_out", "v_out"},
    "vit_attention": {"out", "scales", "workspace"},
}
for _n in ("static_scaled_fp8_quant", "dynamic_per_token_scaled_fp8_quant",
           "per_token_group_fp8_quant", "scaled_fp4_quant"):
    WRITES["silu_mul_" + _n] = WRITES[_n]


class Schemas(unittest.TestCase):
    def test_every_op_is_registered_with_its_mutations(self):
        self.assertEqual(set(qt.OPS), set(WRITES))
        for name, writes in WRITES.items():
            schema = getattr(torch.ops.qfuse, name).default._schema
            self.assertTrue(schema.is_mutable, name)
            self.assertEqual(len(schema.returns), 0, name)
            written = {a.name for a in schema.arguments
                       if a.alias_info is not None and a.alias_info.is_write}
            self.assertEqual(written, writes, name)
            # Written arguments each alias their own set (no two outputs share an annotation).
            sets = [a.alias_info.before_set for a in schema.arguments
                    if a.alias_info is not None]
            self.assertEqual(len(sets), len(set(map(frozenset, sets))), name)

    def test_dropin_schemas_keep_the_reference_names(self):
        def names(op):
            return [a.name for a in getattr(torch.ops.qfuse, op).default._schema.arguments]

        self.assertEqual(names("silu_and_mul_per_block_quant"),
                         ["out", "input", "scales", "group_size", "scale_ub",
                          "is_scale_transposed"])
        self.assertEqual(names("merge_attn_states"),
                         ["output", "output_lse", "prefix_output", "prefix_lse",
                          "suffix_output", "suffix_lse", "output_scale"])
        self.assertEqual(names("per_token_group_fp8_quant"),
                         ["input", "output_q", "output_s", "group_size", "eps", "fp8_min",
                          "fp8_max", "scale_ue8m0", "is_scale_transposed", "is_tma_aligned"])


class FakeImpls(unittest.TestCase):
    """Every op traces under FakeTensorMode (what torch.compile and opcheck's fake test do)."""

    def test_ops_and_wrappers_run_on_fake_cuda_tensors(self):
        with FakeTensorMode():
            dev = "cuda"
            x = torch.empty(6, 512, dtype=BF16, device=dev)
            s1 = torch.empty(1, device=dev)
            out8 = torch.empty(6, 512, dtype=FP8, device=dev)
            torch.ops.qfuse.quantize(x, out8, "fp8_per_tensor", None, s1, None)
            torch.ops.qfuse.silu_mul_quant(x, out8[:, :256], "fp8_per_tensor", None, s1, None)
            torch.ops.qfuse.dynamic_per_tensor_quant(x, out8, s1)
            o = [torch.empty(6, 4, 64, dtype=BF16, device=dev) for _ in range(3)]
            lse = [torch.empty(4, 6, device=dev) for _ in range(3)]
            torch.ops.qfuse.merge_states(o, lse, torch.empty(6, 256, dtype=BF16, device=dev))

            q, s = qt.scaled_fp8_quant(x, s1)
            self.assertEqual((q.shape, q.dtype, s.shape), ((6, 512), FP8, (1,)))
            q, s = qt.scaled_fp8_quant(x, num_token_padding=16)
            self.assertEqual((q.shape, s.shape), ((16, 512), (1,)))
            q, s = qt.scaled_fp8_quant(x, use_per_token_if_dynamic=True)
            self.assertEqual(s.shape, (6, 1))
            q, bs = qt.scaled_fp4_quant(x, s1)
            self.assertEqual((q.shape, q.dtype, bs.shape, bs.dtype),
                             ((6, 256), torch.uint8, (128, 32), FP8))
            q, bs = qt.scaled_fp4_quant(x, s1, is_sf_swizzled_layout=False)
            self.assertEqual(bs.shape, (6, 32))
            q, sc = qt.silu_and_mul_per_block_quant(x, 64, FP8, is_scale_transposed=True)
            self.assertEqual((q.shape, sc.shape, sc.stride()), ((6, 256), (6, 4), (1, 6)))
            qt.silu_and_mul_per_block_quant(q, x, sc, 64, None, True)  # destination form
            qt.per_token_group_fp8_quant(x, out8, torch.empty(6, 4, device=dev), 128)
            qt.merge_attn_states(torch.empty(6, 4, 64, dtype=FP8, device=dev), None, o[0],
                                 lse[0], o[1], lse[1], s1)
            out, scales = qt.quantize_alloc(x, "fp8_group128:col_tma:ue8m0_packed")
            self.assertEqual((out.dtype, scales.shape, scales.dtype),
                             (FP8, (1, 8, 4), torch.uint8))
            out, scales, lse_out = qt.merge_states_alloc(o, lse, "nvfp4:linear", s1,
                                                         return_lse=True)
            self.assertEqual((out.shape, scales.shape, lse_out.shape), ((6, 128), (6, 16), (4, 6)))

    def test_wrapper_argument_errors(self):
        with FakeTensorMode():
            x = torch.empty(6, 500, dtype=BF16, device="cuda")
            with self.assertRaises(ValueError):
                qt.scaled_fp4_quant(x, torch.empty(1, device="cuda"))  # 500 % 16
            with self.assertRaises(ValueError):
                qt.scaled_fp8_quant(x, torch.empty(2, device="cuda"))  # scale of 2 elements
            with self.assertRaises(TypeError):
                qt.silu_and_mul_per_block_quant(x, 128, torch.float8_e5m2)


class TorchSideChecks(unittest.TestCase):
    """The checks the torch layer makes before the binding (CPU tensors: the binding then
    refuses the device, which proves the check before it let the call through)."""

    def test_fp8_dtypes_by_slot(self):
        import qfuse

        cap = qt.ops._dl(torch.empty(4, 64, dtype=FP8), "out", "e4m3")  # an FP8 slot
        self.assertEqual(qfuse.tensor_info(cap, "e4m3")["dtype"], "e4m3")
        # A one-byte dtype the slot does not take: refused here (PyTorch without FP8 DLPack) or
        # by the binding, naming the argument, either way a TypeError.
        with self.assertRaises(TypeError) as e:
            qfuse.tensor_info(qt.ops._dl(torch.empty(4, 64, dtype=torch.float8_e5m2), "out",
                                         "e4m3"), "e4m3")
        self.assertIn("float8_e5m2", str(e.exception))
        x = torch.randn(4, 64, dtype=BF16)
        with self.assertRaises(ValueError) as e:  # all right but the device: the binding says so
            qt.ops._quantize_impl(x, torch.empty(4, 64, dtype=FP8), "fp8_per_tensor", None,
                                  torch.ones(1), None)
        self.assertEqual(str(e.exception),
                         "argument 'x.device': expected a CUDA tensor, got cpu")

    def test_column_major_scales(self):
        base = torch.empty(3, 8)
        self.assertIs(qt.dropin._col_major_base(base, 5, 3, 8, "s"), base)
        view = base.t()[:5]  # [5, 3] with strides (1, 8): DeepGEMM's TMA-aligned form
        b = qt.dropin._col_major_base(view, 5, 3, 8, "s")
        self.assertEqual((b.shape, b.stride(), b.data_ptr()), ((3, 8), (8, 1), base.data_ptr()))
        with self.assertRaises(ValueError) as e:
            qt.dropin._col_major_base(torch.empty(5, 3), 5, 3, 8, "output_s")
        self.assertIn("'output_s'", str(e.exception))

    def test_fp8_range_and_eps(self):
        x = torch.randn(4, 128, dtype=BF16)
        with self.assertRaises(ValueError):
            qt.dropin._per_token_group_impl(x, torch.empty(4, 128, dtype=FP8), torch.empty(4, 1),
                                            128, 1e-10, -240.0, 240.0)
        with self.assertRaises(ValueError):
            qt.dropin._per_token_group_impl(x, torch.empty(4, 128, dtype=FP8), torch.empty(4, 1),
                                            128, 0.0)


# ---- the fusion pass on FX graphs ----------------------------------------------------------

H = 256


class Mlp(torch.nn.Module):
    def __init__(self, quant, form="slice"):
        super().__init__()
        self.quant, self.form = quant, form

    def forward(self, x, out, scales, scale):
        if self.form == "slice":
            y = F.silu(x[:, :H]) * x[:, H:]
        elif self.form == "reversed":
            y = x[..., H:] * F.silu(x[..., :H])
        elif self.form == "chunk":
            halves = x.chunk(2, dim=-1)
            y = F.silu(halves[0]) * halves[1]
        else:  # not the pattern: the halves swapped
            y = F.silu(x[:, H:]) * x[:, :H]
        if self.quant == "static":
            torch.ops.qfuse.static_scaled_fp8_quant(out, y, scale)
        elif self.quant == "group":
            torch.ops.qfuse.per_token_group_fp8_quant(y, out, scales, 128, 1e-10, -448.0, 448.0,
                                                      False, True, True)
        elif self.quant == "fp4":
            torch.ops.qfuse.scaled_fp4_quant(out, y, scales, scale, True)
        elif self.quant == "token":
            torch.ops.qfuse.dynamic_per_token_scaled_fp8_quant(out, y, scales, None)
        return out


class MlpTwoUsers(torch.nn.Module):
    def forward(self, x, out, scales, scale):
        y = F.silu(x[:, :H]) * x[:, H:]
        torch.ops.qfuse.static_scaled_fp8_quant(out, y, scale)
        return out, y.sum()


class Combine(torch.nn.Module):
    def __init__(self, leak=False):
        super().__init__()
        self.leak = leak

    def forward(self, merged, q, po, plse, so, slse, scale):
        torch.ops.qfuse.merge_attn_states(merged, None, po, plse, so, slse, None)
        torch.ops.qfuse.static_scaled_fp8_quant(q, merged.view(merged.shape[0], -1), scale)
        return (q, merged.sum()) if self.leak else q


def traced(module, *inputs):
    gm = torch.fx.symbolic_trace(module)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        FakeTensorProp(gm, mode).propagate(*[mode.from_tensor(i) for i in inputs])
    return gm


def targets(gm):
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def mlp_inputs(quant, T=8):
    x = torch.randn(T, 2 * H, dtype=BF16)
    scale = torch.ones(1)
    if quant == "fp4":
        return (x, torch.empty(T, H // 2, dtype=torch.uint8),
                torch.empty(128, 16, dtype=torch.uint8), scale)
    if quant == "group":
        return x, torch.empty(T, H, dtype=FP8), torch.empty(2, 8).t(), scale
    return x, torch.empty(T, H, dtype=FP8), torch.empty(T, 1), scale


class FusionPass(unittest.TestCase):
    def test_act_quant_patterns_are_replaced(self):
        for quant, fused in [("static", "silu_mul_static_scaled_fp8_quant"),
                             ("group", "silu_mul_per_token_group_fp8_quant"),
                             ("fp4", "silu_mul_scaled_fp4_quant"),
                             ("token", "silu_mul_dynamic_per_token_scaled_fp8_quant")]:
            for form in ("slice", "reversed", "chunk"):
                with self.subTest(quant=quant, form=form):
                    gm = traced(Mlp(quant, form), *mlp_inputs(quant))
                    report = fusion.fuse(gm)
                    self.assertEqual(sum(report.replaced.values()), 1, str(report))
                    t = targets(gm)
                    self.assertIn(getattr(torch.ops.qfuse, fused).default, t)
                    self.assertNotIn(F.silu, t)  # the unfused product is gone
                    fused_node = next(n for n in gm.graph.nodes
                                      if n.target == getattr(torch.ops.qfuse, fused).default)
                    x = next(n for n in gm.graph.nodes if n.name == "x")
                    self.assertIn(x, fused_node.all_input_nodes)

    def test_non_patterns_stay(self):
        gm = traced(Mlp("static", "swapped"), *mlp_inputs("static"))
        report = fusion.fuse(gm)
        self.assertEqual(report.replaced, {})
        self.assertIn(F.silu, targets(gm))

    def test_product_with_other_users_is_skipped(self):
        gm = traced(MlpTwoUsers(), *mlp_inputs("static"))
        report = fusion.fuse(gm)
        self.assertEqual(report.matched, {"silu_and_mul -> static_scaled_fp8_quant": 1})
        self.assertEqual(report.replaced, {})
        self.assertIn("other users", report.skipped[0])

    def test_capability_table_decides(self):
        gm = traced(Mlp("group"), *mlp_inputs("group"))
        with mock.patch.object(fusion._q, "op_specs", lambda op: ["fp8_per_tensor"]):
            report = fusion.fuse(gm)
        self.assertEqual(report.replaced, {})
        self.assertIn("fp8_group128:col_tma:f32", report.skipped[0])
        self.assertIn(F.silu, targets(gm))

    def test_flags(self):
        gm = traced(Mlp("static"), *mlp_inputs("static"))
        self.assertEqual(fusion.fuse(gm, act_quant=False).matched, {})

    def merge_inputs(self, T=8, Hh=4, D=64):
        return (torch.empty(T, Hh, D, dtype=BF16), torch.empty(T, Hh * D, dtype=FP8),
                torch.randn(T, Hh, D, dtype=BF16), torch.randn(Hh, T),
                torch.randn(T, Hh, D, dtype=BF16), torch.randn(Hh, T), torch.ones(1))

    def test_merge_quant_is_replaced(self):
        gm = traced(Combine(), *self.merge_inputs())
        report = fusion.fuse(gm)
        self.assertEqual(report.replaced, {"merge_attn_states -> static_scaled_fp8_quant": 1})
        t = targets(gm)
        self.assertNotIn(torch.ops.qfuse.static_scaled_fp8_quant.default, t)
        merge = next(n for n in gm.graph.nodes
                     if n.target in (torch.ops.qfuse.merge_attn_states,
                                     torch.ops.qfuse.merge_attn_states.default))
        args = fusion._args(merge)
        self.assertEqual(args["output"].name, "q")
        self.assertEqual(args["output_scale"].name, "scale")

    def test_merge_with_a_used_output_is_skipped(self):
        gm = traced(Combine(leak=True), *self.merge_inputs())
        report = fusion.fuse(gm)
        self.assertEqual(report.replaced, {})
        self.assertIn("other users", report.skipped[0])


def _stub_backend(captured):
    """A torch.compile backend that keeps the (rewritten) graph and returns zeros of its outputs'
    shapes: Dynamo's capture and the pass run without executing the CUDA ops."""

    def inner(gm, example_inputs):
        captured.append(gm)
        out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
        vals = [o.meta["example_value"] for o in out]
        return lambda *args: [torch.zeros(v.shape, dtype=v.dtype) for v in vals]

    return fusion.backend(inner=inner)


class DynamoGraphs(unittest.TestCase):
    """The pass on the graphs Dynamo captures from the drop-in wrappers (CPU tensors; the
    compiled code is a stub, the numbers are in test_gpu.py)."""

    def setUp(self):
        torch._dynamo.reset()

    def test_mlp(self):
        def mlp(x, scale):
            y = F.silu(x[:, :H]) * x[:, H:]
            q, _ = qt.scaled_fp8_quant(y, scale)
            q2, s2 = qt.scaled_fp4_quant(F.silu(x[..., :H]) * x[..., H:], scale * 1000)
            q3 = torch.empty(x.shape[0], H, dtype=FP8)
            s3 = torch.empty(x.shape[0], H // 128)
            qt.per_token_group_fp8_quant(F.silu(x[:, :H]) * x[:, H:], q3, s3, 128)
            q4, s4 = qt.scaled_fp8_quant(F.silu(x[:, :H]) * x[:, H:],
                                         use_per_token_if_dynamic=True)
            return q, q2, s2, q3, q4, s4

        captured = []
        torch.compile(mlp, backend=_stub_backend(captured), fullgraph=True)(
            torch.randn(8, 2 * H, dtype=BF16), torch.ones(1))
        report = fusion.last_report()
        self.assertEqual(report.replaced, {
            "silu_and_mul -> static_scaled_fp8_quant": 1,
            "silu_and_mul -> scaled_fp4_quant": 1,
            "silu_and_mul -> per_token_group_fp8_quant": 1,
            "silu_and_mul -> dynamic_per_token_scaled_fp8_quant": 1}, str(report))
        self.assertNotIn(F.silu, targets(captured[0]))

    def test_combine(self):
        T, Hh, D = 8, 4, 64

        def combine(po, pl, so, sl, scale):
            merged = torch.empty_like(po)
            qt.merge_attn_states(merged, None, po, pl, so, sl)
            q, _ = qt.scaled_fp8_quant(merged.view(T, Hh * D), scale)
            return q

        captured = []
        torch.compile(combine, backend=_stub_backend(captured), fullgraph=True)(
            torch.randn(T, Hh, D, dtype=BF16), torch.randn(Hh, T),
            torch.randn(T, Hh, D, dtype=BF16), torch.randn(Hh, T), torch.ones(1))
        report = fusion.last_report()
        self.assertEqual(report.replaced, {"merge_attn_states -> static_scaled_fp8_quant": 1})
        merges = [n for n in captured[0].graph.nodes
                  if fusion._op_name(n.target) == "qfuse::merge_attn_states"]
        self.assertEqual(len(merges), 1)
        self.assertIsNotNone(fusion._args(merges[0])["output_scale"])


class CppOps(unittest.TestCase):
    """The C++ op library (python/src/torch_ops.cpp), where it is built: every op's CUDA kernel is
    the C++ one, written for the schema OPS defines, and it raises what the Python path raises,
    type and message, on fake CUDA tensors (torch_fakes.py): its checks run before anything
    touches memory, so every check of both paths runs without a GPU."""

    def setUp(self):
        if qops._CPP is None:
            self.skipTest(f"no C++ op library ({qops.CPP_UNUSED})")

    def test_every_op_runs_in_cpp(self):
        self.assertEqual(qops.CPP_OPS, set(qops.OPS))
        for name, schema in qops.OPS.items():
            self.assertEqual(qops._CPP.qfuse_torch_schema(name.encode()).decode(), schema, name)
            cuda = [line for line in torch._C._dispatch_dump(f"qfuse::{name}").splitlines()
                    if line.startswith("CUDA")]
            self.assertEqual(len(cuda), 1, name)
            self.assertIn("torch_ops.cpp", cuda[0], name)

    def test_a_schema_that_differs_stays_on_python(self):
        lib = torch.library.Library("qfuse_cpp_test", "FRAGMENT")
        self.addCleanup(lib._destroy)
        lib.define("quantize(Tensor x, Tensor(a!) out, str spec) -> ()")  # an argument less
        lib.define(qops.OPS["silu_and_mul"])
        lib.define("not_in_cpp(Tensor x) -> ()")
        with self.assertWarnsRegex(UserWarning, "the C\\+\\+ kernel is written for"):
            self.assertFalse(qops._register_cpp("quantize", "qfuse_cpp_test"))
        self.assertFalse(qops._register_cpp("not_in_cpp", "qfuse_cpp_test"))
        self.assertTrue(qops._register_cpp("silu_and_mul", "qfuse_cpp_test"))
        x, out = torch_fakes.fake((4, 64)), torch_fakes.fake((4, 32), torch.float64)
        with self.assertRaises(TypeError) as e:  # the C++ kernel, reached through the dispatcher
            torch.ops.qfuse_cpp_test.silu_and_mul(x, out)
        self.assertIn("argument 'out.dtype'", str(e.exception))

    @staticmethod
    def outcome(fn, args):
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - the outcome compared is the exception
            return type(e).__name__, str(e)
        return "ok", ""

    def test_same_errors_as_the_python_path(self):
        cases = torch_fakes.valid_cases()
        self.assertEqual(set(cases), set(qops.OPS))
        stream0 = [mock.patch.object(m, "_stream", lambda t: 0) for m in (qops, qt.dropin)]
        for p in stream0:
            p.start()
            self.addCleanup(p.stop)
        compared, kinds = 0, {}
        with torch_fakes.no_device_indexing():
            for name, args in cases.items():
                calls = [("valid", args)] + list(torch_fakes.mutations(name, args))
                for label, a in calls:
                    with self.subTest(op=name, case=label):
                        cpp = self.outcome(getattr(torch.ops.qfuse, name).default, a)
                        py = self.outcome(qops._IMPLS[name], a)
                        self.assertEqual(cpp, py)
                        # qfuse.torch's function (the eager fast path where there is one)
                        self.assertEqual(self.outcome(qops.CALL[name], a), cpp)
                        compared += 1
                        kinds[cpp[0]] = kinds.get(cpp[0], 0) + 1
        # Every valid call passes every check and stops at the device (none here).
        print(f"\nCppOps: {compared} calls, the same outcome on the three paths: {kinds}")
        self.assertGreater(kinds.get("TypeError", 0), 100)
        self.assertGreater(kinds.get("ValueError", 0), 100)

    def test_valid_calls_reach_the_device_check(self):
        if torch.cuda.is_available():
            self.skipTest("with a device, the library's pointer check refuses the fake pointers "
                          "(test_same_errors_as_the_python_path compares that)")
        for name, args in torch_fakes.valid_cases().items():
            with self.subTest(op=name):
                kind, msg = self.outcome(getattr(torch.ops.qfuse, name).default, args)
                self.assertEqual(kind, "RuntimeError", msg)
                self.assertIn("cuda", msg.lower())

    def test_another_torch_keeps_the_python_path(self):
        with mock.patch.object(torch, "__version__", "2.0.0"), \
                self.assertWarnsRegex(UserWarning, "is built for torch .*, not 2.0.0"):
            lib, why = qops._load_cpp()
        self.assertIsNone(lib)
        self.assertIn("built for torch", why)
        with mock.patch.dict("os.environ", {"QFUSE_TORCH_OPS": "0"}):
            self.assertEqual(qops._load_cpp(), (None, "QFUSE_TORCH_OPS=0"))

    def test_python_float_spelling(self):
        x = torch_fakes.fake((4, 128))
        for lo, text in [(-240.0, "-240.0"), (-1e-05, "-1e-05"), (-0.0001, "-0.0001"),
                         (-1e16, "-1e+16"), (-123456.789, "-123456.789"), (-0.1, "-0.1"),
                         (float("-inf"), "-inf")]:
            with self.assertRaises(ValueError) as e:
                torch.ops.qfuse.per_token_group_fp8_quant(
                    x, torch_fakes.fake((4, 128), FP8), torch_fakes.fake((4, 1), torch.float32),
                    128, 1e-10, lo, 448.0)
            self.assertEqual(str(e.exception), "argument 'fp8_min/fp8_max': expected "
                             f"-448.0/448.0 (float8_e4m3fn), got {text}/448.0")
            self.assertEqual(repr(lo), text)


class FastPath(unittest.TestCase):
    """The eager fast path (python/src/torch_fast.cpp): qfuse.torch's function of every C++ op
    converts the arguments itself and calls the op's CUDA kernel, and hands every call it cannot
    take as the op would run it (a mode, a tracer, a subclass, autograd, the profiler, an
    argument of another type) to the op. Fake CUDA tensors: quantize of T = 0 passes every check
    and launches nothing, so it succeeds here."""

    def setUp(self):
        if qops._FAST is None:
            self.skipTest(f"no fast path ({qops.CPP_UNUSED or 'QFUSE_TORCH_FAST=0'})")
        stream0 = mock.patch.object(qops, "_stream", lambda t: 0)
        stream0.start()
        self.addCleanup(stream0.stop)
        fk = torch_fakes.fake
        self.x, self.out = fk((0, 256)), fk((0, 256), FP8)
        self.s = fk((1,), torch.float32)

    def call(self, fn=None, **kw):
        """(fast path taken, outcome) of quantize(x, out, "fp8_per_tensor", scale=s)."""
        fn = fn or qt.quantize
        args = dict(x=self.x, out=self.out, spec="fp8_per_tensor", scale=self.s)
        args.update(kw)
        before = qops.fast_calls_taken()
        outcome = CppOps.outcome(lambda: fn(**args), ())
        return qops.fast_calls_taken() - before, outcome

    def test_every_cpp_op_has_one(self):
        self.assertEqual(qops.FAST_OPS, qops.CPP_OPS)
        for name in qops.FAST_OPS:
            self.assertIsNot(qops.CALL[name], getattr(torch.ops.qfuse, name), name)
            self.assertEqual(qops.CALL[name].__name__, name)
        self.assertIs(qt.quantize, qops.CALL["quantize"])

    def test_taken_with_positional_and_keyword_arguments(self):
        self.assertEqual(self.call(), (1, ("ok", "")))
        before = qops.fast_calls_taken()
        qt.quantize(self.x, self.out, "fp8_per_tensor", None, self.s, None)
        qt.quantize(self.x, self.out, "fp8_per_tensor", None, self.s)
        qt.quantize(self.x, self.out, spec="fp8_per_tensor", scale=self.s, scales=None)
        self.assertEqual(qops.fast_calls_taken() - before, 3)
        # every valid call of every op (they stop at the device check here)
        for name, args in torch_fakes.valid_cases().items():
            before = qops.fast_calls_taken()
            with torch_fakes.no_device_indexing():
                CppOps.outcome(qops.CALL[name], args)
            self.assertGreaterEqual(qops.fast_calls_taken() - before, 1, name)

    def test_errors_are_the_ops(self):
        op = torch.ops.qfuse.quantize
        for kw in [dict(spec="bogus"), dict(x=torch_fakes.fake((0, 256), torch.float64)),
                   dict(out=torch_fakes.fake((0, 128), FP8)), dict(scale=None)]:
            taken, fast = self.call(**kw)
            self.assertEqual(taken, 1, kw)
            self.assertEqual(fast, self.call(op, **kw)[1], kw)
            self.assertNotEqual(fast[0], "ok", kw)

    def test_other_arguments_go_to_the_op(self):
        op = torch.ops.qfuse.quantize
        cases = [dict(spec=b"fp8_per_tensor"), dict(spec=None), dict(scale=1.0),
                 dict(x=[self.x]), dict(bogus=1), dict(x=torch.zeros(0, 256, dtype=BF16),
                                                       out=torch.zeros(0, 256, dtype=FP8),
                                                       scale=torch.ones(1))]
        for kw in cases:  # (PyTorch takes bytes for a str)
            taken, fast = self.call(**kw)
            self.assertEqual(taken, 0, kw)
            self.assertEqual(fast, self.call(op, **kw)[1], kw)
        before = qops.fast_calls_taken()
        for args in [(), (self.x,), (self.x, self.out, "fp8_per_tensor", None, self.s, None, 1)]:
            self.assertEqual(CppOps.outcome(qt.quantize, args), CppOps.outcome(op, args))
        # an int where a float goes, a float and a bool where an int goes
        q = torch_fakes.valid_cases()["mla_decode"]
        for i, v in [(7, 1), (6, 1.0), (6, True)]:
            a = q[:i] + (v,) + q[i + 1:]
            self.assertEqual(CppOps.outcome(qt.mla_decode, a),
                             CppOps.outcome(torch.ops.qfuse.mla_decode, a))
        self.assertEqual(qops.fast_calls_taken() - before, 1)  # the int for softmax_scale

    def test_modes_tracers_autograd_and_the_profiler_get_the_op(self):
        class Seen(torch.overrides.TorchFunctionMode):
            def __init__(self):
                super().__init__()
                self.funcs = []

            def __torch_function__(self, func, types, args=(), kwargs=None):
                self.funcs.append(func)
                return func(*args, **(kwargs or {}))

        with Seen() as mode:
            self.assertEqual(self.call(), (0, ("ok", "")))
        self.assertIn(torch.ops.qfuse.quantize, mode.funcs)

        with FakeTensorMode(allow_non_fake_inputs=True) as fm:
            x, out, s = (fm.from_tensor(t) for t in (self.x, self.out, self.s))
            self.assertEqual(self.call(x=x, out=out, scale=s), (0, ("ok", "")))

        x = torch_fakes.fake((0, 256)).requires_grad_()
        self.assertEqual(self.call(x=x)[0], 0)
        with torch.no_grad():
            self.assertEqual(self.call(x=x), (1, ("ok", "")))
        with torch.inference_mode():
            self.assertEqual(self.call(), (1, ("ok", "")))

        with torch.autograd.profiler.profile() as prof:
            self.assertEqual(self.call(), (0, ("ok", "")))
        self.assertIn("qfuse::quantize", [e.name for e in prof.function_events])

        class Sub(torch.Tensor):
            pass

        self.assertEqual(self.call(x=self.x.as_subclass(Sub))[0], 0)

    def test_fx_tracing_records_the_op(self):
        def f(x, out, s):
            qt.quantize(x, out, "fp8_per_tensor", None, s, None)
            return out

        gm = torch.fx.symbolic_trace(f)
        self.assertIn(torch.ops.qfuse.quantize, targets(gm))

    def test_off_by_environment(self):
        with mock.patch.dict("os.environ", {"QFUSE_TORCH_FAST": "0"}):
            self.assertIsNone(qops._load_fast(qops.CPP_LIBRARY))
        self.assertIsNone(qops._load_fast(None))


class OnHostReference(unittest.TestCase):
    """test_gpu's drop-in, torch.compile (Inductor, CPU) and opcheck tests on CPU tensors, the
    launch functions emulated through the C++ host reference (host_backend.py): the Python
    layers end to end without a GPU. The kernels themselves are tested by test_gpu."""

    def setUp(self):
        import host_backend
        import test_gpu

        self.g = test_gpu
        patches = [mock.patch.object(m, "_q", host_backend.BACKEND)
                   for m in host_backend.MODULES]
        patches += [mock.patch.object(test_gpu, "DEV", "cpu"),
                    mock.patch.object(qt, "mla_workspace",
                                      lambda *a, **k: torch.empty(16, dtype=torch.uint8))]
        for p in patches:
            p.start()
            self.addCleanup(p.stop)
        torch._dynamo.reset()

    def run_case(self, case):
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
        result = unittest.TestResult()
        suite.run(result)
        self.assertTrue(result.wasSuccessful(),
                        "\n".join(text for _, text in result.failures + result.errors))
        self.assertEqual(result.testsRun, suite.countTestCases())

    def test_dropins(self):
        self.run_case(self.g.DropIns)

    def test_compile_with_the_fusion_pass(self):
        self.run_case(self.g.Compile)

    def test_opcheck(self):
        for name, args in self.g.opcheck_cases().items():
            if name.startswith(("mla_", "vit_")):  # no host emulation of these kernels
                continue
            with self.subTest(op=name):
                torch.library.opcheck(getattr(torch.ops.qfuse, name).default, args)


if __name__ == "__main__":
    unittest.main()
