"""The torch.compile fusion pass: PyTorch-level patterns rewritten into qfuse's fused ops.

    quant(silu(x[:, :H]) * x[:, H:])       ->  silu_mul_<quant>(x)     (act → quant)
    merge_attn_states(o, ...); quant(o)    ->  merge_attn_states(q, ..., output_scale=s)

where quant is a qfuse quantizing op as the graph calls it (``qfuse.torch.scaled_fp8_quant``
and friends, or ``torch.ops.qfuse.*`` directly): static per-tensor, dynamic per-token and
per-group FP8, NVFP4 for the activation; static per-tensor FP8 for the merge. A pattern is
replaced only where the fused op's capability row (``qfuse.op_specs``, the table the C++ passes
read) lists the kind the quantizer writes; otherwise it stays unfused and the report says why.

Use it as a torch.compile backend (it runs on the graph Dynamo captures, before AOT autograd and
Inductor)::

    compiled = torch.compile(model, backend=qfuse.torch.fusion.backend())
    compiled(x); print(qfuse.torch.fusion.last_report())

or call :func:`fuse` on any ``torch.fx.GraphModule``.
"""

import dataclasses
import operator

import torch

import qfuse as _q

from . import ops as _ops  # noqa: F401  (registers the ops the pass emits)
from . import dropin as _dropin  # noqa: F401

__all__ = ["FusionReport", "fuse", "backend", "last_report"]


@dataclasses.dataclass
class FusionReport:
    matched: dict = dataclasses.field(default_factory=dict)   # pattern -> count
    replaced: dict = dataclasses.field(default_factory=dict)  # pattern -> count
    skipped: list = dataclasses.field(default_factory=list)   # "pattern at node: reason"

    def _add(self, d, key):
        d[key] = d.get(key, 0) + 1

    def __str__(self):
        lines = [f"{k}: matched {self.matched.get(k, 0)}, replaced {self.replaced.get(k, 0)}"
                 for k in sorted(set(self.matched) | set(self.replaced))]
        lines += [f"skipped {s}" for s in self.skipped]
        return "\n".join(lines) or "no pattern matched"


# ---- recognising nodes ---------------------------------------------------------------------

def _op_name(target):
    """'qfuse::name' of an OpOverload / OpOverloadPacket target, else None."""
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.name
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target._qualified_op_name
    return None


def _schema(target):
    if isinstance(target, torch._ops.OpOverloadPacket):
        target = target.default
    return target._schema


def _args(node):
    """The node's arguments by schema name (positional and keyword), defaults filled."""
    schema = _schema(node.target)
    out = {}
    for i, a in enumerate(schema.arguments):
        if i < len(node.args):
            out[a.name] = node.args[i]
        elif a.name in node.kwargs:
            out[a.name] = node.kwargs[a.name]
        elif a.has_default_value():
            out[a.name] = a.default_value
        else:
            out[a.name] = None
    return out


def _set_arg(node, name, value):
    schema = _schema(node.target)
    names = [a.name for a in schema.arguments]
    i = names.index(name)
    if i < len(node.args):
        args = list(node.args)
        args[i] = value
        node.args = tuple(args)
    else:
        kwargs = dict(node.kwargs)
        kwargs[name] = value
        node.kwargs = kwargs


def _val(node):
    """The example (fake) tensor Dynamo or make_fx recorded for a node, if any."""
    if not isinstance(node, torch.fx.Node):
        return None
    return node.meta.get("example_value", node.meta.get("val"))


_SILU = {torch.nn.functional.silu, torch.ops.aten.silu.default, torch.ops.aten.silu}
_MUL = {operator.mul, torch.mul, torch.ops.aten.mul.Tensor, torch.ops.aten.mul}


def _is_call(node, targets):
    return isinstance(node, torch.fx.Node) and (
        (node.op == "call_function" and node.target in targets)
        or (node.op == "call_method" and node.target in {"mul"} and operator.mul in targets))


def _half(node):
    """(x, 0 | 1) when node is x[..., :H] / x[:, :H] (0) or x[..., H:] (1) with H = width / 2,
    or chunk(x, 2, -1)[i]; else None."""
    if not (isinstance(node, torch.fx.Node) and node.op == "call_function"
            and node.target is operator.getitem):
        return None
    src, idx = node.args
    if isinstance(src, torch.fx.Node) and isinstance(idx, int) and idx in (0, 1) and (
            (src.op == "call_method" and src.target == "chunk")
            or (src.op == "call_function" and src.target is torch.chunk)):
        x, chunks = src.args[0], src.args[1] if len(src.args) > 1 else src.kwargs.get("chunks")
        dim = src.args[2] if len(src.args) > 2 else src.kwargs.get("dim", 0)
        v = _val(x)
        if chunks == 2 and v is not None and dim in (-1, v.dim() - 1) and v.shape[-1] % 2 == 0:
            return x, idx
        return None
    v = _val(src)
    if v is None or v.dim() != 2 or not isinstance(idx, tuple) or len(idx) != 2:
        return None
    if not (idx[0] is Ellipsis or idx[0] == slice(None, None, None)):
        return None
    s, width = idx[1], v.shape[-1]
    if not isinstance(s, slice) or s.step not in (None, 1) or width % 2 != 0:
        return None
    h = width // 2
    if s.start in (None, 0) and s.stop == h:
        return src, 0
    if s.start == h and s.stop in (None, width):
        return src, 1
    return None


def _silu_mul_source(node):
    """x when node computes silu(x[:, :H]) * x[:, H:] (either operand order), else None."""
    if not _is_call(node, _MUL) or len(node.args) != 2:
        return None
    a, b = node.args
    for gate_side, up in ((a, b), (b, a)):
        if _is_call(gate_side, _SILU):
            gate = _half(gate_side.args[0])
            upx = _half(up)
            if gate and upx and gate[0] is upx[0] and gate[1] == 0 and upx[1] == 1:
                return gate[0]
    return None


# ---- what each quantizing op writes (for the capability check) -------------------------------

def _act_spec(name, args):
    """The qfuse kind the quant op `name` writes with these arguments, or None if not constant."""
    if name == "static_scaled_fp8_quant":
        return "fp8_per_tensor"
    if name == "dynamic_per_token_scaled_fp8_quant":
        return "fp8_per_token"
    if name == "per_token_group_fp8_quant":
        g, ue, tr, tma = (args["group_size"], args["scale_ue8m0"], args["is_scale_transposed"],
                          args["is_tma_aligned"])
        if not all(isinstance(v, (int, bool)) for v in (g, ue, tr, tma)):
            return None
        layout = ("col_tma" if tma else "col") if tr else "row"
        return f"fp8_group{g}:{layout}:{'ue8m0' if ue else 'f32'}"
    if name == "scaled_fp4_quant":
        sw = args["is_sf_swizzled_layout"]
        return None if not isinstance(sw, bool) else ("nvfp4:swizzled" if sw else "nvfp4:linear")
    return None


_ACT_QUANTS = {"static_scaled_fp8_quant": "input", "dynamic_per_token_scaled_fp8_quant": "input",
               "per_token_group_fp8_quant": "input", "scaled_fp4_quant": "input"}


def _supported(op, spec):
    try:
        return spec in _q.op_specs(op)
    except ValueError:
        return False


def _fuse_act_quant(gm, report):
    g = gm.graph
    for node in list(g.nodes):
        name = _op_name(node.target) if node.op == "call_function" else None
        if not name or not name.startswith("qfuse::"):
            continue
        short = name.split("::", 1)[1]
        if short not in _ACT_QUANTS:
            continue
        args = _args(node)
        mul = args[_ACT_QUANTS[short]]
        x = _silu_mul_source(mul)
        if x is None:
            continue
        pattern = "silu_and_mul -> " + short
        report._add(report.matched, pattern)
        spec = _act_spec(short, args)
        if spec is None or not _supported("silu_mul_quant", spec):
            report.skipped.append(f"{pattern} at {node.name}: silu_mul_quant does not write "
                                  f"{spec or 'a non-constant kind'} (capability table)")
            continue
        if len(mul.users) != 1:
            report.skipped.append(f"{pattern} at {node.name}: the product has other users")
            continue
        if short in ("static_scaled_fp8_quant", "dynamic_per_token_scaled_fp8_quant"):
            out_v, x_v = _val(args["result"]), _val(x)
            if out_v is not None and x_v is not None and out_v.shape[0] != x_v.shape[0]:
                report.skipped.append(f"{pattern} at {node.name}: padded output rows")
                continue
        fused = getattr(torch.ops.qfuse, "silu_mul_" + short).default
        with g.inserting_before(node):
            new = g.call_function(fused, tuple(node.args), dict(node.kwargs))
        new.meta = dict(node.meta)
        _set_arg(new, _ACT_QUANTS[short], x)
        node.replace_all_uses_with(new)
        g.erase_node(node)
        _erase_dead_chain(g, mul)
        report._add(report.replaced, pattern)


def _erase_dead_chain(g, node):
    """Erases node and, recursively, the pure producers only it used."""
    if not isinstance(node, torch.fx.Node) or node.users or node.op != "call_function" and \
            node.op != "call_method":
        return
    inputs = list(node.all_input_nodes)
    g.erase_node(node)
    for n in inputs:
        if n.op in ("call_function", "call_method") and not n.users and not _is_mutating(n):
            _erase_dead_chain(g, n)


def _is_mutating(node):
    name = _op_name(node.target) if node.op == "call_function" else None
    return name is not None and _schema(node.target).is_mutable


_VIEWS = {"view", "reshape", "flatten"}


def _metadata_only(node):
    """A user that reads a tensor's metadata (shape, size, dtype), not its values."""
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] in ("shape", "dtype", "device", "ndim")
    return node.op == "call_method" and node.target in ("size", "dim", "stride")


def _is_view_of(node, base):
    if not isinstance(node, torch.fx.Node) or not node.args or node.args[0] is not base:
        return False
    if node.op == "call_method" and node.target in _VIEWS:
        return True
    return node.op == "call_function" and node.target in (torch.reshape, torch.flatten)


def _fuse_merge_quant(gm, report):
    g = gm.graph
    for node in list(g.nodes):
        if node.op != "call_function" or _op_name(node.target) != "qfuse::static_scaled_fp8_quant":
            continue
        args = _args(node)
        src = args["input"]
        merge = None
        base = None
        if isinstance(src, torch.fx.Node):
            cand = src.args[0] if _is_view_of(src, src.args[0] if src.args else None) else src
            for user in (cand.users if isinstance(cand, torch.fx.Node) else ()):
                if user.op == "call_function" and \
                        _op_name(user.target) == "qfuse::merge_attn_states" and \
                        _args(user)["output"] is cand:
                    merge, base = user, cand
        if merge is None:
            continue
        pattern = "merge_attn_states -> static_scaled_fp8_quant"
        report._add(report.matched, pattern)
        margs = _args(merge)
        if not _supported("merge_states", "fp8_per_tensor"):
            report.skipped.append(f"{pattern} at {node.name}: merge_states does not write "
                                  "fp8_per_tensor (capability table)")
            continue
        if margs["output_scale"] is not None:
            report.skipped.append(f"{pattern} at {node.name}: the merge already quantizes")
            continue
        others = [u for u in base.users
                  if u is not merge and u is not src and u is not node and not _metadata_only(u)]
        if others or (src is not base and len(src.users) != 1):
            report.skipped.append(f"{pattern} at {node.name}: the merged output has other users")
            continue
        # NOTE: the fused merge takes the quant's place: its scale and destination exist there,
        # and nothing between reads the merged output (checked above).
        scale, result = args["scale"], args["result"]
        with g.inserting_before(node):
            new = g.call_function(merge.target, tuple(merge.args), dict(merge.kwargs))
        new.meta = dict(merge.meta)
        _set_arg(new, "output", result)
        _set_arg(new, "output_scale", scale)
        node.replace_all_uses_with(new)
        g.erase_node(node)
        g.erase_node(merge)
        if src is not base and not src.users:
            g.erase_node(src)
        report._add(report.replaced, pattern)


_LAST = [FusionReport()]


def fuse(gm, act_quant=True, attn_quant=True):
    """Rewrites gm in place (flags as the C++ config's fuse_act_quant / fuse_attn_quant);
    returns the report."""
    report = FusionReport()
    if act_quant:
        _fuse_act_quant(gm, report)
    if attn_quant:
        _fuse_merge_quant(gm, report)
    gm.graph.lint()
    gm.recompile()
    _LAST[0] = report
    return report


def last_report():
    """The report of the last fuse() (e.g. of the last graph torch.compile compiled)."""
    return _LAST[0]


def backend(inner="inductor", act_quant=True, attn_quant=True):
    """A torch.compile backend: runs fuse() on Dynamo's graph, then `inner` (a backend name or
    callable; "inductor" by default, "eager" to run the rewritten graph as is)."""

    def compile_fn(gm, example_inputs):
        fuse(gm, act_quant, attn_quant)
        if callable(inner):
            return inner(gm, example_inputs)
        from torch._dynamo.backends.registry import lookup_backend

        return lookup_backend(inner)(gm, example_inputs)

    return compile_fn
