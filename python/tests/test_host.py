"""Host tests of the core package (no GPU, no PyTorch): the vocabulary, DLPack metadata as the
binding reads it, and every validation as a Python exception with the C++ message.

Tensors are fake DLPack CUDA tensors (fake_dlpack.py): the binding validates before it touches
memory, so a call that passes validation reaches the device check and fails there instead
(RuntimeError without a GPU; ValueError naming the pointer on a GPU machine, where the fake
address is no device memory). A test that expects a validation error therefore fails if the
check it names is missing.
"""

import random
import unittest

import qfuse
import struct

from fake_dlpack import HostFloats, HostInt64s, HostInts, cpu, cuda

RNG = random.Random(20261204)


def gap(shape, item=2):
    """A fake address per call so no two tensors of a call alias."""
    return RNG.randrange(1 << 20, 1 << 40) // 256 * 256


def t(shape, dtype, strides=None):
    return cuda(shape, dtype, strides, gap(shape))


def arg_message(arg, expected, got):
    return f"argument '{arg}': expected {expected}, got {got}"


class Vocabulary(unittest.TestCase):
    def test_every_spec_round_trips(self):
        specs = qfuse.all_specs()
        self.assertIn("fp8_per_tensor", specs)
        self.assertIn("fp8_group128:col_tma:ue8m0_packed", specs)
        self.assertIn("nvfp4:swizzled", specs)
        self.assertEqual(len(specs), len(set(specs)))
        for s in specs:
            self.assertEqual(qfuse.canonical_spec(s), s)

    def test_bad_spec_names_the_text(self):
        with self.assertRaises(ValueError) as e:
            qfuse.canonical_spec("fp8_group96")
        self.assertIn("fp8_group96", str(e.exception))

    def test_engine_rule_suffix(self):
        # The reference engine's rule (the drop-ins' kinds): ":engine" on the kinds that round
        # differently from it; canonical and distinct from the native form; same buffers.
        engine = [s + ":engine" for s in qfuse.all_specs()
                  if s.startswith(("fp8_per_token", "fp8_group", "nvfp4"))]
        self.assertEqual(len(engine), 1 + 18 + 2)
        for s in engine:
            self.assertEqual(qfuse.canonical_spec(s), s)
            native = s[: -len(":engine")]
            self.assertEqual(qfuse.scale_shape(s, 7, 512), qfuse.scale_shape(native, 7, 512))
            self.assertEqual(qfuse.out_dtype(s), qfuse.out_dtype(native))
        self.assertNotIn("fp8_per_token:engine", qfuse.all_specs())  # all_specs: native only
        for bad in ("fp8_per_tensor:engine", "none:engine"):
            with self.assertRaises(ValueError) as e:
                qfuse.canonical_spec(bad)
            self.assertIn("no engine rule", str(e.exception))
            self.assertIn(f"'{bad}'", str(e.exception))
        for bad in ("fp8_per_token:engine:engine", "fp8_per_token:Engine", "engine",
                    "fp8_group128:row:engine", "nvfp4:swizzled:native"):
            with self.assertRaises(ValueError) as e:
                qfuse.canonical_spec(bad)
            self.assertIn("[:engine]", str(e.exception))

    def test_scale_shapes(self):
        # SPEC §0.3's worked example: 5 rows, n = 512 -> a 128 x 32 swizzled buffer.
        self.assertEqual(qfuse.scale_shape("nvfp4:swizzled", 5, 512), ("e4m3", [128, 32]))
        self.assertEqual(qfuse.scale_shape("nvfp4:linear", 5, 512), ("e4m3", [5, 32]))
        self.assertEqual(qfuse.scale_shape("fp8_per_token", 7, 100), ("fp32", [7]))
        self.assertEqual(qfuse.scale_shape("fp8_group128:row:f32", 7, 300), ("fp32", [7, 3]))
        self.assertEqual(qfuse.scale_shape("fp8_group64:col:f32", 7, 300), ("fp32", [5, 7]))
        self.assertEqual(qfuse.scale_shape("fp8_group128:col_tma:f32", 7, 300), ("fp32", [3, 8]))
        self.assertEqual(qfuse.scale_shape("fp8_per_tensor", 7, 300), ("fp32", []))
        self.assertEqual(qfuse.scale_shape("fp8_group128:col_tma:ue8m0_packed", 5, 256),
                         ("ue8m0", [1, 8, 4]))
        with self.assertRaises(ValueError) as e:
            qfuse.scale_shape("fp8_per_token", -1, 5)
        self.assertEqual(str(e.exception), arg_message(
            "rows", "a size >= 0", "-1 ([rows, cols] = [-1, 5])"))

    def test_out_dtypes(self):
        self.assertEqual(qfuse.out_dtype("fp8_per_token"), "e4m3")
        self.assertEqual(qfuse.out_dtype("nvfp4:linear"), "e2m1x2")
        self.assertIsNone(qfuse.out_dtype("none"))

    def test_capability_rows(self):
        for op in ("quantize", "silu_mul_quant", "merge_states"):
            specs = qfuse.op_specs(op)
            self.assertIn("fp8_per_tensor", specs, op)
            self.assertIn("nvfp4:swizzled", specs, op)
        with self.assertRaises(ValueError) as e:
            qfuse.op_specs("no_such_op")
        self.assertIn("silu_mul_quant", str(e.exception))
        self.assertIn("no_such_op", str(e.exception))
        # The engine rule: quantize has it for every kind that has one, silu_mul_quant for
        # per-group FP8 (silu_and_mul_per_block_quant), the merge for none.
        q = qfuse.op_specs("quantize")
        for s in ("fp8_per_token:engine", "fp8_group64:col_tma:ue8m0:engine",
                  "nvfp4:linear:engine"):
            self.assertIn(s, q)
        sm = qfuse.op_specs("silu_mul_quant")
        self.assertIn("fp8_group128:col:f32:engine", sm)
        self.assertNotIn("fp8_per_token:engine", sm)
        self.assertNotIn("nvfp4:swizzled:engine", sm)
        self.assertFalse([s for s in qfuse.op_specs("merge_states") if s.endswith(":engine")])


class DLPackMetadata(unittest.TestCase):
    def test_round_trip(self):
        for dtype, name in [("bf16", "bf16"), ("fp16", "fp16"), ("fp32", "fp32"),
                            ("e4m3", "e4m3"), ("e8m0", "ue8m0"), ("i32", "i32"), ("u8", "u8")]:
            shape = (RNG.randrange(1, 50), RNG.randrange(1, 50), RNG.randrange(1, 9))
            strides = (shape[1] * shape[2] * 3, shape[2] + 5, 1)
            addr = gap(shape)
            info = qfuse.tensor_info(cuda(shape, dtype, strides, addr))
            self.assertEqual(info["dtype"], name)
            self.assertEqual(info["shape"], shape)
            self.assertEqual(info["strides"], strides)
            self.assertEqual(info["data"], addr)
            self.assertEqual(info["device"], "cuda:0")
            self.assertFalse(info["contiguous"])
        info = qfuse.tensor_info(cpu((3, 4), "fp32"))
        self.assertEqual(info["device"], "cpu")
        self.assertTrue(info["contiguous"])

    def test_uint8_takes_the_slot_format(self):
        self.assertEqual(qfuse.tensor_info(t((4, 8), "u8"), "e4m3")["dtype"], "e4m3")
        self.assertEqual(qfuse.tensor_info(t((4, 8), "u8"), "e2m1x2")["dtype"], "e2m1x2")
        # Only uint8 is reinterpreted: a real dtype keeps its name (and is then rejected).
        self.assertEqual(qfuse.tensor_info(t((4, 8), "bf16"), "e4m3")["dtype"], "bf16")

    def test_unsupported_dtypes_and_ranks(self):
        with self.assertRaises(TypeError) as e:
            qfuse.tensor_info(t((4,), "fp64"))
        self.assertEqual(str(e.exception), arg_message(
            "tensor.dtype", "a dtype of qfuse (bf16|fp16|fp32|e4m3|ue8m0|i32|u8)", "float64"))
        with self.assertRaises(TypeError):
            qfuse.tensor_info(t((4,), "e5m2"))
        with self.assertRaises(ValueError) as e:
            qfuse.tensor_info(t((1, 2, 3, 4, 5), "fp32"))
        self.assertEqual(str(e.exception), arg_message("tensor.rank", "<= 4", "5"))


class Quantize(unittest.TestCase):
    T, H = 5, 256

    def call(self, x=None, out=None, spec="fp8_per_tensor", scales=None, scale="default",
             scale_ub=None):
        x = x or t((self.T, self.H), "bf16")
        out = out or t((self.T, self.H), "e4m3")
        if scale == "default":
            scale = t((1,), "fp32") if spec in ("fp8_per_tensor",) or spec.startswith("nvfp4") \
                else None
        qfuse.quantize(x, out, spec, scales=scales, scale=scale, scale_ub=scale_ub)

    def expect(self, exc, message, **kw):
        with self.assertRaises(exc) as e:
            self.call(**kw)
        self.assertEqual(str(e.exception), message)

    def test_valid_call_reaches_the_device_check(self):
        # Validation passes; the fake pointers are then refused by the device (or there is none).
        for spec, scales in [("fp8_per_tensor", None),
                             ("fp8_per_token", t((self.T,), "fp32")),
                             ("fp8_group128:col_tma:ue8m0_packed", t((1, 8, 4), "u8")),
                             ("nvfp4:swizzled", t((128, 16), "u8"))]:
            out = t((self.T, self.H // 2), "u8") if spec.startswith("nvfp4") else None
            with self.assertRaises((RuntimeError, ValueError)) as e:
                self.call(spec=spec, scales=scales, out=out)
            if isinstance(e.exception, ValueError):
                self.assertIn(".data'", str(e.exception))
            else:
                self.assertIn("CUDA error", str(e.exception))

    def test_empty_input_is_a_no_op(self):
        qfuse.quantize(t((0, self.H), "bf16"), t((0, self.H), "e4m3"), "fp8_per_tensor",
                       scale=t((1,), "fp32"))

    def test_wrong_input_dtype(self):
        self.expect(TypeError, arg_message("x.dtype", "bf16|fp16|fp32", "e4m3"),
                    x=t((self.T, self.H), "e4m3"))

    def test_wrong_output_dtype(self):
        self.expect(TypeError, arg_message("out.dtype", "e4m3", "bf16"),
                    out=t((self.T, self.H), "bf16"))

    def test_wrong_output_shape(self):
        self.expect(ValueError, arg_message("out.sizes[1]", str(self.H), str(self.H - 1)),
                    out=t((self.T, self.H - 1), "e4m3"))
        self.expect(ValueError, arg_message("out.sizes[0]", str(self.T), "4"),
                    out=t((4, self.H), "e4m3"))

    def test_non_contiguous_rows(self):
        self.expect(ValueError, arg_message("x.strides[1]", "1 (last dimension contiguous)", "2"),
                    x=t((self.T, self.H), "bf16", (2 * self.H, 2)))

    def test_cpu_tensor(self):
        self.expect(ValueError, arg_message("x.device", "a CUDA tensor", "cpu"),
                    x=cpu((self.T, self.H), "bf16"))
        self.expect(ValueError, arg_message("out.device", "a CUDA tensor", "cpu"),
                    out=cpu((self.T, self.H), "e4m3"))

    def test_missing_scale(self):
        self.expect(ValueError,
                    arg_message("out.scale", "a device fp32 scale for fp8_per_tensor", "null"),
                    scale=None)

    def test_scale_of_wrong_dtype_or_size(self):
        self.expect(TypeError, arg_message("out.scale.dtype", "fp32", "bf16"),
                    scale=t((1,), "bf16"))
        self.expect(ValueError, arg_message("out.scale", "a tensor of one fp32 element",
                                            "[2] (2 elements)"), scale=t((2,), "fp32"))

    def test_scale_where_none_is_read(self):
        self.expect(ValueError, arg_message(
            "out.scale", "null (fp8_per_token reads no given scale)", "a pointer"),
            spec="fp8_per_token", scales=t((self.T,), "fp32"), scale=t((1,), "fp32"))

    def test_scale_ub_where_none_applies(self):
        self.expect(ValueError, arg_message(
            "out.scale_ub", "null (fp8_per_tensor has no dynamic scale)", "a pointer"),
            scale_ub=t((1,), "fp32"))

    def test_missing_or_wrong_scales(self):
        with self.assertRaises(ValueError) as e:
            self.call(spec="fp8_per_token")
        self.assertIn("'out.scales'", str(e.exception))
        with self.assertRaises(ValueError) as e:
            self.call(spec="fp8_group128:row:f32", scales=t((self.T, 3), "fp32"))
        self.assertIn("expected [5, 2] fp32 contiguous", str(e.exception))
        with self.assertRaises(ValueError) as e:  # packed UE8M0 given as fp32
            self.call(spec="fp8_group128:col_tma:ue8m0_packed", scales=t((1, 8, 4), "fp32"))
        self.assertIn("'out.scales'", str(e.exception))

    def test_engine_rule_and_eps(self):
        # Every engine-rule kind passes validation (and reaches the device check) ...
        for spec, scales in [("fp8_per_token:engine", t((self.T,), "fp32")),
                             ("fp8_group128:col_tma:ue8m0_packed:engine", t((1, 8, 4), "u8")),
                             ("nvfp4:swizzled:engine", t((128, 16), "u8"))]:
            out = t((self.T, self.H // 2), "u8") if spec.startswith("nvfp4") else None
            with self.assertRaises((RuntimeError, ValueError)) as e:
                self.call(spec=spec, scales=scales, out=out)
            if isinstance(e.exception, ValueError):
                self.assertIn(".data'", str(e.exception))
        with self.assertRaises((RuntimeError, ValueError)) as e:
            qfuse.quantize(t((self.T, self.H), "bf16"), t((self.T, self.H), "e4m3"),
                           "fp8_group64:row:f32:engine", scales=t((self.T, 4), "fp32"), eps=1e-10)
        if isinstance(e.exception, ValueError):
            self.assertIn(".data'", str(e.exception))
        # ... eps is refused where no amax floor exists, and must be finite and >= 0.
        g = dict(out=t((self.T, self.H), "e4m3"), scales=t((self.T, 2), "fp32"))
        for spec, eps, message in [
                ("fp8_group128:row:f32", 1e-10, arg_message(
                    "out.eps", "0 (fp8_group128:row:f32 has no amax floor: only per-group FP8 "
                    "with the engine rule)", "1.00000001e-10")),
                ("fp8_group128:row:f32:engine", -1.0,
                 arg_message("out.eps", "a finite value >= 0", "-1")),
                ("fp8_group128:row:f32:engine", float("inf"),
                 arg_message("out.eps", "a finite value >= 0", "inf")),
                ("fp8_group128:row:f32:engine", float("nan"),
                 arg_message("out.eps", "a finite value >= 0", "nan"))]:
            with self.assertRaises(ValueError) as e:
                qfuse.quantize(t((self.T, self.H), "bf16"), g["out"], spec, scales=g["scales"],
                               eps=eps)
            self.assertEqual(str(e.exception), message)
        with self.assertRaises(ValueError) as e:
            qfuse.quantize(t((self.T, self.H), "bf16"), t((self.T, self.H), "e4m3"),
                           "fp8_per_token:engine", scales=t((self.T,), "fp32"), eps=1e-10)
        self.assertIn("'out.eps'", str(e.exception))
        with self.assertRaises(ValueError) as e:  # an amax floor comes without a scale bound
            qfuse.quantize(t((self.T, self.H), "bf16"), g["out"], "fp8_group128:row:f32:engine",
                           scales=g["scales"], scale_ub=t((1,), "fp32"), eps=1e-10)
        self.assertEqual(str(e.exception), arg_message(
            "out.scale_ub", "null with eps > 0 (no scale bound with an amax floor)", "a pointer"))

    def test_bad_spec(self):
        with self.assertRaises(ValueError) as e:
            self.call(spec="fp8_per_block")
        self.assertIn("fp8_per_block", str(e.exception))

    def test_nvfp4_output_must_be_packed(self):
        with self.assertRaises((ValueError, TypeError)) as e:
            self.call(spec="nvfp4:linear", scales=t((self.T, 16), "u8"),
                      out=t((self.T, self.H), "u8"))
        self.assertIn("'out.sizes[1]'", str(e.exception))
        self.expect(TypeError, arg_message("out.dtype", "e2m1x2", "e4m3"), spec="nvfp4:linear",
                    scales=t((self.T, 16), "u8"), out=t((self.T, self.H // 2), "e4m3"))


class DynamicPerTensor(unittest.TestCase):
    def test_validation(self):
        x, out, s = t((3, 64), "fp16"), t((3, 64), "u8"), t((1,), "fp32")
        with self.assertRaises(TypeError) as e:
            qfuse.dynamic_per_tensor_quant(x, t((3, 64), "fp16"), s)
        self.assertEqual(str(e.exception), arg_message("out.dtype", "e4m3", "fp16"))
        with self.assertRaises(ValueError) as e:
            qfuse.dynamic_per_tensor_quant(x, t((3, 63), "u8"), s)
        self.assertEqual(str(e.exception), arg_message("out.sizes[1]", "64", "63"))
        with self.assertRaises(TypeError):
            qfuse.dynamic_per_tensor_quant(x, out, t((1,), "i32"))
        with self.assertRaises((RuntimeError, ValueError)):  # valid: the device check refuses
            qfuse.dynamic_per_tensor_quant(x, out, s)
        qfuse.dynamic_per_tensor_quant(t((0, 64), "fp16"), t((0, 64), "u8"), s)  # empty: no-op


class SiluMul(unittest.TestCase):
    def test_validation(self):
        x = t((4, 512), "bf16")
        with self.assertRaises(ValueError) as e:
            qfuse.silu_mul_quant(x, t((4, 512), "e4m3"), "fp8_per_tensor", scale=t((1,), "fp32"))
        self.assertEqual(str(e.exception), arg_message("out.sizes[1]", "256", "512"))
        with self.assertRaises(TypeError) as e:
            qfuse.silu_mul_quant(t((4, 512), "fp32"), t((4, 256), "e4m3"), "fp8_per_tensor",
                                 scale=t((1,), "fp32"))
        self.assertEqual(str(e.exception), arg_message("x.dtype", "bf16|fp16", "fp32"))
        with self.assertRaises(ValueError) as e:
            qfuse.silu_mul_quant(t((4, 511), "bf16"), t((4, 255), "e4m3"), "fp8_per_tensor",
                                 scale=t((1,), "fp32"))
        self.assertIn("'x.sizes[1]'", str(e.exception))
        with self.assertRaises(TypeError) as e:
            qfuse.silu_and_mul(x, t((4, 256), "e4m3"))
        self.assertIn("'out.dtype'", str(e.exception))
        with self.assertRaises((RuntimeError, ValueError)):  # valid
            qfuse.silu_mul_quant(x, t((4, 256), "u8"), "fp8_group64:col:ue8m0",
                                 scales=t((4, 4), "fp32"))

    def test_engine_rule(self):
        # The engine rule only where the op builds it (per-group FP8: the drop-in
        # silu_and_mul_per_block_quant); eps only with it.
        x = t((4, 512), "bf16")
        with self.assertRaises(ValueError) as e:
            qfuse.silu_mul_quant(x, t((4, 256), "e4m3"), "fp8_per_token:engine",
                                 scales=t((4,), "fp32"))
        self.assertIn("'silu_mul_quant.out.spec'", str(e.exception))
        self.assertIn("got fp8_per_token:engine", str(e.exception))
        with self.assertRaises((RuntimeError, ValueError)) as e:  # valid
            qfuse.silu_mul_quant(x, t((4, 256), "e4m3"), "fp8_group128:col:f32:engine",
                                 scales=t((2, 4), "fp32"), scale_ub=t((1,), "fp32"))
        if isinstance(e.exception, ValueError):
            self.assertIn(".data'", str(e.exception))
        with self.assertRaises(ValueError) as e:
            qfuse.silu_mul_quant(x, t((4, 256), "e4m3"), "fp8_group128:col:f32",
                                 scales=t((2, 4), "fp32"), eps=1e-10)
        self.assertIn("'out.eps'", str(e.exception))


class Merge(unittest.TestCase):
    T, H, D = 6, 4, 64

    def parts(self, n, dtype="bf16"):
        return ([t((self.T, self.H, self.D), dtype) for _ in range(n)],
                [t((self.H, self.T), "fp32") for _ in range(n)])

    def test_valid_calls_reach_the_device_check(self):
        o, lse = self.parts(3)
        for out in (t((self.T, self.H * self.D), "bf16"), t((self.T, self.H, self.D), "bf16")):
            with self.assertRaises((RuntimeError, ValueError)) as e:
                qfuse.merge_states(o, lse, out, out_lse=t((self.H, self.T), "fp32"))
            self.assertNotIn("'out", str(e.exception))

    def test_partial_counts(self):
        o, lse = self.parts(2)
        with self.assertRaises(ValueError) as e:
            qfuse.merge_states(o[:1], lse[:1], t((self.T, self.H * self.D), "bf16"))
        self.assertEqual(str(e.exception), arg_message("outputs", "2 to 8 partial states", "1"))
        with self.assertRaises(ValueError) as e:
            qfuse.merge_states(o, lse[:1], t((self.T, self.H * self.D), "bf16"))
        self.assertEqual(str(e.exception),
                         arg_message("lses", "2 tensors (one per partial output)", "1"))

    def test_mixed_dtypes_and_shapes(self):
        o, lse = self.parts(2)
        o[1] = t((self.T, self.H, self.D), "fp16")
        with self.assertRaises(TypeError) as e:
            qfuse.merge_states(o, lse, t((self.T, self.H * self.D), "bf16"))
        self.assertIn("'o[1].dtype'", str(e.exception))
        o, lse = self.parts(2)
        lse[0] = t((self.T, self.H), "fp32")
        with self.assertRaises(ValueError) as e:
            qfuse.merge_states(o, lse, t((self.T, self.H * self.D), "bf16"))
        self.assertIn("'lse[0]", str(e.exception))

    def test_output_views(self):
        o, lse = self.parts(2)
        padded = t((self.T, self.H, self.D), "bf16", (self.H * (self.D + 8), self.D + 8, 1))
        with self.assertRaises(ValueError) as e:
            qfuse.merge_states(o, lse, padded)
        self.assertEqual(str(e.exception), arg_message(
            "out.strides[1]", f"{self.D} (heads contiguous within a row)", str(self.D + 8)))
        with self.assertRaises(ValueError) as e:
            qfuse.merge_states(o, lse, t((self.T, self.H * self.D + 1), "bf16"))
        self.assertIn("'out.sizes[1]'", str(e.exception))

    def test_no_engine_rule(self):
        o, lse = self.parts(2)
        with self.assertRaises(ValueError) as e:
            qfuse.merge_states(o, lse, t((self.T, self.H * self.D), "e4m3"),
                               "fp8_group64:row:f32:engine",
                               scales=t((self.T, self.H * self.D // 64), "fp32"))
        self.assertIn("'merge_states.out.spec'", str(e.exception))

    def test_fp8_output_needs_its_scale(self):
        o, lse = self.parts(2)
        with self.assertRaises(ValueError) as e:
            qfuse.merge_states(o, lse, t((self.T, self.H * self.D), "u8"), "fp8_per_tensor")
        self.assertEqual(str(e.exception), arg_message(
            "out.scale", "a device fp32 scale for fp8_per_tensor", "null"))

    def test_options(self):
        o, lse = self.parts(2)
        out = t((self.T, self.H * self.D), "fp32")
        with self.assertRaises(ValueError) as e:
            qfuse.merge_states(o, lse, out, lse_base=10)
        self.assertEqual(str(e.exception), arg_message("lse_base", "0 (natural) or 2", "10"))
        with self.assertRaises(ValueError) as e:
            qfuse.merge_states(o, lse, out, copy_from=self.T + 1)
        self.assertIn("copy_from", str(e.exception))
        with self.assertRaises(ValueError) as e:
            qfuse.merge_states(o, lse, out, out_lse=t((self.T, self.H), "fp32"))
        self.assertIn("out_lse", str(e.exception))

    def test_stacked(self):
        o = t((3, self.T, self.H, self.D), "fp32")
        lse = t((3, self.H, self.T), "fp32")
        with self.assertRaises((RuntimeError, ValueError)) as e:  # valid
            qfuse.merge_states_stacked(o, lse, t((self.T, self.H * self.D), "fp32"))
        # (On a GPU machine the device check names the first pointer it checks, o[0].data.)
        if "device memory" not in str(e.exception):
            self.assertNotIn("'o", str(e.exception))
        with self.assertRaises(ValueError):
            qfuse.merge_states_stacked(t((9, self.T, self.H, self.D), "fp32"),
                                       t((9, self.H, self.T), "fp32"),
                                       t((self.T, self.H * self.D), "fp32"))
        with self.assertRaises(ValueError) as e:
            qfuse.merge_states_stacked(o, t((3, self.H, self.T + 1), "fp32"),
                                       t((self.T, self.H * self.D), "fp32"))
        self.assertIn("lse", str(e.exception))


class MlaDecode(unittest.TestCase):
    B, N, BS, NB, MB = 3, 16, 64, 10, 4  # requests, heads, block size, blocks, blocks per request

    def call(self, **kw):
        T = self.B
        a = dict(q=t((T, self.N, 576), "bf16"), cache=t((self.NB, self.BS, 576), "bf16"),
                 block_table=t((self.B, self.MB), "i32"), seq_lens=t((self.B,), "i32"),
                 out=t((T, self.N * 512), "bf16"), workspace=t((1 << 20,), "u8"), s_q=1,
                 softmax_scale=192 ** -0.5)
        a.update(kw)
        qfuse.mla_decode(**a)

    def test_valid_call_reaches_the_device(self):
        with self.assertRaises((RuntimeError, ValueError)) as e:
            self.call()
        self.assertNotIn("'q", str(e.exception))
        self.assertNotIn("'cache", str(e.exception))
        with self.assertRaises((RuntimeError, ValueError)) as e:  # with W_UV: o [T, N * 128]
            self.call(w_uv=t((self.N, 512, 128), "bf16"), out=t((self.B, self.N * 128), "bf16"))
        self.assertNotIn("'w_uv", str(e.exception))
        self.assertNotIn("'out", str(e.exception))

    def test_validation(self):
        for kw, exc, arg in [
            (dict(block_table=t((self.B, self.MB), "fp32")), TypeError, "'block_table.dtype'"),
            (dict(seq_lens=t((self.B + 1,), "i32")), ValueError, "'seq_lens.sizes[0]'"),
            (dict(softmax_scale=float("nan")), ValueError, "'softmax_scale'"),
            (dict(k_scale=t((1,), "fp32")), ValueError, "'k_scale'"),  # a bf16 cache
            (dict(cache=t((self.NB, self.BS, 576), "u8")), ValueError, "'k_scale'"),  # FP8
            (dict(workspace=t((64,), "fp32")), ValueError, "'workspace'"),
            (dict(split="sometimes"), ValueError, "'split'"),
            (dict(kernel="fast"), ValueError, "'kernel'"),
            (dict(q=cpu((self.B, self.N, 576), "bf16")), ValueError, "'q.device'"),
            # W_UV: the output is then o [T, N * 128], and W_UV must be [N, 512, 128] bf16.
            (dict(w_uv=t((self.N, 512, 128), "bf16")), ValueError, "'out.sizes[1]'"),
            (dict(w_uv=t((self.N, 512, 64), "bf16"), out=t((self.B, self.N * 128), "bf16")),
             ValueError, "'w_uv.sizes'"),
            (dict(w_uv=t((self.N, 512, 128), "fp32"), out=t((self.B, self.N * 128), "bf16")),
             TypeError, "'w_uv.dtype'"),
        ]:
            with self.subTest(arg=arg):
                with self.assertRaises(exc) as e:
                    self.call(**kw)
                self.assertIn(arg, str(e.exception))

    def test_schedule_argument(self):
        # The schedule's words are checked before the call reaches the library (or the device);
        # a vector mla_decode_schedule never wrote is refused by its tag.
        W = qfuse.MLA_SCHEDULE_WORDS
        self.schedule_call(HostInt64s([0] * W))  # valid: reaches the device check
        tag = HostInt64s([0] * W)
        bad_field = [0x3164656863736C6D] + [0] * (W - 1)  # the tag (binding_common.h)
        bad_field[6] = 1 << 40
        for sched, exc, arg in [
            (tag, ValueError, "mla_decode_schedule"),
            (HostInt64s(bad_field), ValueError, "'schedule[6]'"),
            (cpu((W,), "i32"), TypeError, "'schedule.dtype'"),
            (t((W,), "i64"), ValueError, "'schedule.device'"),
            (HostInt64s([0] * (W - 1)), ValueError, "'schedule'"),
            (cpu((W,), "i64", strides=(2,)), ValueError, "'schedule'"),
        ]:
            with self.subTest(arg=arg):
                with self.assertRaises(exc) as e:
                    self.call(schedule=sched)
                self.assertIn(arg, str(e.exception))
        for sched, exc, arg in [
            (cpu((W,), "i32"), TypeError, "'schedule.dtype'"),
            (t((W,), "i64"), ValueError, "'schedule.device'"),
            (HostInt64s([0] * (W + 1)), ValueError, "'schedule'"),
        ]:
            with self.subTest(schedule_call=arg):
                with self.assertRaises(exc) as e:
                    self.schedule_call(sched)
                self.assertIn(arg, str(e.exception))

    def schedule_call(self, schedule, **kw):
        """mla_decode_schedule on the call's tensors; returns the words, or raises."""
        T = self.B
        a = dict(q=t((T, self.N, 576), "bf16"), cache=t((self.NB, self.BS, 576), "bf16"),
                 block_table=t((self.B, self.MB), "i32"), seq_lens=t((self.B,), "i32"),
                 out=t((T, self.N * 512), "bf16"), workspace=t((1 << 20,), "u8"),
                 schedule=schedule, s_q=1, softmax_scale=192 ** -0.5)
        a.update(kw)
        try:
            qfuse.mla_decode_schedule(**a)
        except (RuntimeError, ValueError) as e:
            # A valid call reaches the device check, and nothing is written on error.
            if "'schedule" in str(e) or not isinstance(schedule, HostInt64s):
                raise
            self.assertEqual(list(schedule.buffer), [0] * len(schedule.buffer))
        return list(schedule.buffer)

    def attention_call(self, **kw):
        """mla_attention over 4 token rows, 3 real, all decode (s_q 1)."""
        a = dict(q=t((4, self.N, 576), "bf16"), cache=t((self.NB, self.BS, 576), "bf16"),
                 w_uv=t((self.N, 512, 128), "bf16"), output=t((4, self.N * 128), "bf16"),
                 workspace=t((1 << 20,), "u8"), block_table=t((self.B, self.MB), "i32"),
                 seq_lens=t((self.B,), "i32"), num_actual_tokens=3, num_decode_tokens=3,
                 decode_s_q=1, softmax_scale=192 ** -0.5)
        a.update(kw)
        qfuse.mla_attention(**a)

    def test_attention_op(self):
        with self.assertRaises((RuntimeError, ValueError)) as e:  # valid: reaches the device
            self.attention_call()
        self.assertNotIn("metadata", str(e.exception))
        self.assertNotIn("'w_uv", str(e.exception))
        for kw, exc, arg in [
            (dict(num_actual_tokens=5), ValueError, "'metadata.num_actual_tokens'"),
            (dict(num_decode_tokens=2, block_table=t((2, self.MB), "i32"),
                  seq_lens=t((2,), "i32")), NotImplementedError, "prefill"),
            (dict(w_uv=t((self.N, 512, 64), "bf16")), ValueError, "'w_uv.sizes'"),
            (dict(kv_c=t((4, 512), "bf16")), ValueError, "'kv_c / k_pe'"),
            (dict(kv_c=t((4, 512), "bf16"), k_pe=t((4, 64), "bf16")), ValueError,
             "'metadata.slot_mapping'"),
            (dict(kv_c=t((4, 512), "bf16"), k_pe=t((4, 64), "bf16"),
                  slot_mapping=t((3,), "i32")), TypeError, "'slot_mapping.dtype'"),
            (dict(output=t((2, self.N * 128), "bf16")), ValueError, "'out.sizes[0]'"),
        ]:
            with self.subTest(arg=arg):
                with self.assertRaises(exc) as e:
                    self.attention_call(**kw)
                self.assertIn(arg, str(e.exception))
        with self.assertRaises(ValueError) as e:
            qfuse.mla_attention_workspace_size(3, 2, 16)
        self.assertIn("num_decode_tokens", str(e.exception))

    def test_workspace_size_arguments(self):
        with self.assertRaises(ValueError) as e:
            qfuse.mla_workspace_size(4, 3, 16)
        self.assertEqual(str(e.exception), arg_message("s_q", "1, 2 or 4", "3"))
        with self.assertRaises(ValueError):
            qfuse.mla_workspace_size(4, 1, 24)

    def test_write_cache(self):
        kv, pe = t((5, 512), "bf16"), t((5, 64), "bf16")
        cache = t((self.NB, self.BS, 576), "bf16")
        with self.assertRaises(TypeError) as e:
            qfuse.mla_write_cache(kv, pe, t((5,), "i32"), cache)
        self.assertEqual(str(e.exception), arg_message("slot_mapping.dtype", "int64", "int32"))
        with self.assertRaises(ValueError) as e:
            qfuse.mla_write_cache(kv, pe, t((4,), "i64"), cache)
        self.assertIn("'slot_mapping'", str(e.exception))
        with self.assertRaises((RuntimeError, ValueError)) as e:  # valid
            qfuse.mla_write_cache(kv, pe, t((5,), "i64"), cache)
        self.assertNotIn("'slot_mapping", str(e.exception))


class HostReference(unittest.TestCase):
    """The C++ host reference through the binding (what the GPU tests compare bytes against)."""

    def test_per_tensor_codes_and_ties(self):
        # x * (1 / 0.5): 0.53125 -> 1.0625, the midpoint of 1.0 (0x38) and 1.125 (0x39): to even.
        # 0.59375 -> 1.1875, midpoint of 1.125 (0x39) and 1.25 (0x3A): to even (0x3A). 1000 and
        # -inf saturate to +-448 (0x7E / 0xFE); NaN stays NaN (0x7F).
        vals = [1.0, 0.53125, 0.59375, 1000.0, float("-inf"), float("nan"), -0.25, 0.0]
        out, scales = qfuse.ref_quantize(HostFloats(1, len(vals), vals), "fp8_per_tensor",
                                         scale=0.5)
        self.assertEqual(list(out), [0x40, 0x38, 0x3A, 0x7E, 0xFE, 0x7F, 0xB0, 0x00])
        self.assertEqual(scales, b"")

    def test_per_token_scale(self):
        vals = [RNG.uniform(-3, 3) for _ in range(2 * 32)]
        vals[5] = 7.0  # row 0's amax
        out, scales = qfuse.ref_quantize(HostFloats(2, 32, vals), "fp8_per_token")
        s0, s1 = struct.unpack("<2f", scales)
        self.assertEqual(s0, struct.unpack("<f", struct.pack("<f", 7.0 / 448.0))[0])
        self.assertEqual(out[5], 0x7E)  # the amax lands on 448
        self.assertGreater(s1, 0)
        # scale_ub bounds the per-token amax: s = min(amax, ub) / 448
        _, bounded = qfuse.ref_quantize(HostFloats(2, 32, vals), "fp8_per_token", scale_ub=1.0)
        self.assertEqual(struct.unpack("<2f", bounded)[0],
                         struct.unpack("<f", struct.pack("<f", 1.0 / 448.0))[0])

    def test_engine_rule_ties_eps_and_checks(self):
        # A tie: s = 392 / 448 = 0.875, x = 0.341796875 = 0.390625 s, the midpoint of 0.375 (0x2C)
        # and 0.40625 (0x2D). x / s is the midpoint: even 0x2C; x * RN(1 / s) is an ulp above it:
        # 0x2D (qfuse's native rule).
        vals = [392.0, 0.341796875, -0.341796875, 0.0]
        eng, s_eng = qfuse.ref_quantize(HostFloats(1, 4, vals), "fp8_per_token:engine")
        nat, s_nat = qfuse.ref_quantize(HostFloats(1, 4, vals), "fp8_per_token")
        self.assertEqual(list(eng), [0x7E, 0x2C, 0xAC, 0x00])
        self.assertEqual(list(nat), [0x7E, 0x2D, 0xAD, 0x00])
        self.assertEqual(s_eng, s_nat)
        # eps floors the amax of an engine-rule group (a zero group: eps / 448, no scale floor).
        zeros = HostFloats(1, 128, [0.0] * 128)
        _, s = qfuse.ref_quantize(zeros, "fp8_group128:row:f32:engine", eps=1e-10)
        self.assertEqual(struct.unpack("<f", s)[0],
                         struct.unpack("<f", struct.pack("<f", struct.unpack(
                             "<f", struct.pack("<f", 1e-10))[0] / 448.0))[0])
        _, s = qfuse.ref_quantize(zeros, "fp8_group128:row:f32:engine")
        self.assertEqual(struct.unpack("<f", s)[0],
                         struct.unpack("<f", struct.pack("<f", 1.0 / (448 * 512)))[0])

    def test_nvfp4_sizes(self):
        vals = [RNG.uniform(-1, 1) for _ in range(5 * 64)]
        out, scales = qfuse.ref_quantize(HostFloats(5, 64, vals), "nvfp4:swizzled", scale=900.0)
        self.assertEqual(len(out), 5 * 32)
        self.assertEqual(len(scales), 128 * 4)

    def test_rejects_device_and_dtype(self):
        with self.assertRaises(ValueError) as e:
            qfuse.ref_quantize(t((2, 2), "fp32"), "fp8_per_tensor")
        self.assertIn("'y.device'", str(e.exception))
        with self.assertRaises(ValueError):
            qfuse.ref_quantize(HostFloats(1, 4, [1, 2, 3, 4]), "fp8_nope")


class Streams(unittest.TestCase):
    def test_stream_must_be_an_integer(self):
        with self.assertRaises(TypeError):
            qfuse.quantize(t((1, 16), "bf16"), t((1, 16), "u8"), "fp8_per_tensor",
                           scale=t((1,), "fp32"), stream="default")


if __name__ == "__main__":
    unittest.main()


class VitAttention(unittest.TestCase):
    """vit_quantize_qkv(_dynamic) and vit_attention: each check named as the C++ API names it."""

    S, H, D, DP = 17, 4, 72, 80

    def views(self):
        S, H, D = self.S, self.H, self.D
        base = gap(None)
        ss = 3 * H * D
        return [cuda((S, H, D), "bf16", (ss, D, 1), base + 2 * i * H * D) for i in range(3)]

    def fp8(self, shape=None):
        return t(shape or (self.S, self.H, self.DP), "e4m3")

    def scale(self):
        return t((1,), "fp32")

    def test_quantize_valid_call_reaches_the_device(self):
        q, k, v = self.views()
        with self.assertRaises((RuntimeError, ValueError)) as e:
            qfuse.vit_quantize_qkv(q, k, v, self.fp8(), self.fp8(), self.fp8(), self.scale(),
                                   self.scale(), self.scale())
        self.assertNotIn("_out", str(e.exception))

    def test_quantize_validation(self):
        q, k, v = self.views()
        S, H, DP = self.S, self.H, self.DP
        for args, kw, exc, frag in [
            ((q, k, v, self.fp8((S, H, 72))), {}, ValueError, "'q_out.sizes'"),
            ((q, k, t((S, H, 72), "fp16")), {}, TypeError, "'v.dtype'"),
            ((q, k, v), dict(v_transposed=True), ValueError, "'v_out.sizes'"),
        ]:
            with self.subTest(frag=frag):
                full = list(args) + [self.fp8() for _ in range(6 - len(args))]
                with self.assertRaises(exc) as e:
                    qfuse.vit_quantize_qkv(*full, self.scale(), self.scale(), self.scale(), **kw)
                self.assertIn(frag, str(e.exception))
        with self.assertRaises(ValueError) as e:  # V transposed: [H, Dp, S rounded up to 32]
            qfuse.vit_quantize_qkv(q, k, v, self.fp8(), self.fp8(), self.fp8((H, DP, 17)),
                                   self.scale(), self.scale(), self.scale(), v_transposed=True)
        self.assertIn("[4, 80, 32]", str(e.exception))

    def test_dynamic_state(self):
        self.assertEqual(qfuse.vit_scale_state_bytes(3), 3 * 256)
        with self.assertRaises(ValueError):
            qfuse.vit_scale_state_bytes(0)
        q, k, v = self.views()
        state = t((256,), "u8")  # one layer's worth
        with self.assertRaises(ValueError) as e:
            qfuse.vit_quantize_qkv_dynamic(q, k, v, self.fp8(), self.fp8(), self.fp8(), state,
                                           num_layers=2, layer=0)
        self.assertIn("'state.bytes'", str(e.exception))
        with self.assertRaises(ValueError) as e:
            qfuse.vit_quantize_qkv_dynamic(q, k, v, self.fp8(), self.fp8(), self.fp8(), state,
                                           num_layers=1, layer=1)
        self.assertIn("'layer'", str(e.exception))

    def attention(self, **kw):
        S, H, D = self.S, self.H, self.D
        a = dict(q=self.fp8(), k=self.fp8(), v=self.fp8(), out=t((S, H * D), "bf16"),
                 head_dim=D, softmax_scale=D ** -0.5, cu_seqlens=t((3,), "i32"),
                 cu_seqlens_host=HostInts([0, 5, S]), q_scale=self.scale(),
                 k_scale=self.scale(), v_scale=self.scale())
        a.update(kw)
        qfuse.vit_attention(**a)

    def test_attention_valid_call_reaches_the_device(self):
        ws = max(qfuse.vit_attention_workspace_size(self.S, self.H, self.D), 16)
        for kw in ({}, dict(workspace=t((ws,), "u8"))):
            with self.subTest(workspace="workspace" in kw):
                with self.assertRaises((RuntimeError, ValueError)) as e:
                    self.attention(**kw)
                self.assertNotIn("cu_seqlens", str(e.exception))
                self.assertNotIn("workspace", str(e.exception))

    def test_attention_workspace_size(self):
        # None for an empty call or a head size the kernels do not take (and none without a
        # device: the stream-K slots are a few per SM).
        self.assertEqual(qfuse.vit_attention_workspace_size(0, 16, 72), 0)
        self.assertEqual(qfuse.vit_attention_workspace_size(4096, 16, 48), 0)
        self.assertGreaterEqual(qfuse.vit_attention_workspace_size(4096, 16, 72), 0)

    def test_attention_validation(self):
        for kw, exc, frag in [
            (dict(head_dim=48), ValueError, "'head_dim'"),
            (dict(cu_seqlens_host=HostInts([0, 9, 5])), ValueError, "'cu_seqlens[2]'"),
            (dict(cu_seqlens_host=HostInts([1, 5, 17])), ValueError, "'cu_seqlens[0]'"),
            (dict(cu_seqlens_host=HostInts([0, 5, 16])), ValueError, "'cu_seqlens[2]'"),
            (dict(cu_seqlens_host=HostInts([0, 17])), ValueError, "'cu_seqlens_host.sizes[0]'"),
            (dict(cu_seqlens_host=None), ValueError, "'cu_seqlens'"),
            (dict(cu_seqlens_host=cuda((3,), "i32")), ValueError, "'cu_seqlens_host.device'"),
            (dict(v_scale=None), ValueError, "'v_scale'"),
            (dict(softmax_scale=0.0), ValueError, "'softmax_scale'"),
            (dict(kernel="fastest"), ValueError, "'kernel'"),
            (dict(workspace=t((64,), "fp32")), ValueError, "'workspace'"),
            (dict(kernel="tensor_core"), NotImplementedError, "transposed"),
            (dict(spec="fp8_per_tensor", out=t((self.S, self.H * self.D), "e4m3")), ValueError,
             "'out.scale'"),
        ]:
            with self.subTest(frag=frag):
                with self.assertRaises(exc) as e:
                    self.attention(**kw)
                self.assertIn(frag, str(e.exception))


class SharedRuntime(unittest.TestCase):
    """The extensions link the shared libstdc++ (bench/NOTES.md P1: the device's build of
    _qfuse carried a static copy, its NEEDED list without libstdc++.so, and PyTorch's import
    crashed after it had loaded): each built .so of the package NEEDs libstdc++.so.6."""

    def test_extensions_need_the_shared_libstdcxx(self):
        import glob
        import os
        import shutil
        import subprocess
        import sys

        if not sys.platform.startswith("linux"):
            self.skipTest("ELF only")
        readelf = shutil.which("readelf")
        if readelf is None:
            self.skipTest("no readelf")
        import qfuse

        here = os.path.dirname(os.path.abspath(qfuse.__file__))
        libs = sorted(glob.glob(os.path.join(here, "_qfuse*.so")) +
                      glob.glob(os.path.join(here, "_torch_ops.so")))
        self.assertTrue(libs, f"no extension in {here}")
        for lib in libs:
            with self.subTest(lib=os.path.basename(lib)):
                out = subprocess.run([readelf, "-d", lib], capture_output=True, text=True,
                                     check=True).stdout
                needed = [line.split("[")[-1].rstrip("]") for line in out.splitlines()
                          if "(NEEDED)" in line]
                self.assertTrue(any(n.startswith("libstdc++.so") for n in needed), needed)


class ImportOrder(unittest.TestCase):
    """`import qfuse` imports PyTorch before its extension where PyTorch is installed (bench/
    NOTES.md P1: on the device, torch's own import crashed after the extension). A stand-in
    `torch` package on the path records the modules loaded before it; the extension must not be
    among them, and without a `torch` on the path none is imported."""

    def run_import(self, with_torch, body=None):
        import os
        import subprocess
        import sys
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            if with_torch:
                os.makedirs(os.path.join(d, "torch"))
                with open(os.path.join(d, "torch", "__init__.py"), "w") as f:
                    f.write(body or "import sys\nEXTENSION_BEFORE = 'qfuse._qfuse' in sys.modules\n")
            code = ("import sys, qfuse\nt = sys.modules.get('torch')\n"
                    "print('torch' if t else 'no-torch', getattr(t, 'EXTENSION_BEFORE', None),"
                    " 'qfuse._qfuse' in sys.modules)\n")
            path = os.pathsep.join([d] + [p for p in sys.path if p])
            env = dict(os.environ, PYTHONPATH=path)
            p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               env=env, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        return p.stdout.split()

    def test_torch_first(self):
        self.assertEqual(self.run_import(True), ["torch", "False", "True"])

    def test_broken_torch_leaves_the_core(self):
        self.assertEqual(self.run_import(True, body="raise ImportError('broken')\n"),
                         ["no-torch", "None", "True"])

    def test_no_torch_none_imported(self):
        import importlib.util

        if importlib.util.find_spec("torch") is not None:
            self.skipTest("PyTorch is installed here")
        self.assertEqual(self.run_import(False), ["no-torch", "None", "True"])
