"""A trained policy as ONE ONNX graph: observations ``[batch, obs_dim]`` float32 -> actions.

The graph is the function ppo_jax evaluates a policy with, for raw observations::

    action = deterministic_action(*actor_apply(params.actor, normalize(obs_stats, obs)), mode)

that is ``obs * scale + loc`` (the run's restored ``ObservationNorm`` statistics), the actor
MLP and its ``NormalParamExtractor`` head (``loc``, ``scale``), then the deterministic action:
``"mean"`` = E[tanh(X)], X ~ N(loc, scale), by 64-node Gauss-Hermite quadrature, or
``"tanh_loc"`` = tanh(loc) (TorchRL's ``ExplorationType.DETERMINISTIC``). Its input ``obs``
is ``[batch, obs_dim]`` float32 with a dynamic ``batch`` axis; its output ``action`` is
``[batch, action_dim]`` float32. The model's metadata (``custom_metadata_map``) names the
format, env, mode and source checkpoint.

Route: the JAX function itself is traced (``jax.make_jaxpr`` with a symbolic batch
dimension, :mod:`jax.export`'s ``symbolic_shape``) and its jaxpr is translated primitive by
primitive into ONNX nodes here (:func:`jax_to_onnx`), the parameters becoming initializers.
So the graph computes what ``actor_apply`` and :mod:`ppo_jax.core.distributions` compute,
whatever the network's sizes, without a second implementation of the network, softplus head
or quadrature to keep in step; a primitive with no translation is a one-line
:class:`OnnxExportError` naming it. Needs only ``onnx`` (to build and check the graph) and
``onnxruntime`` (to check it: :func:`export_onnx` runs the graph against the JAX function
on probe observations before it writes the file). The alternatives, as checked here (their
package metadata, installed sizes):

* ``jax2onnx`` (0.17.1) requires ``orbax-checkpoint<0.11.37`` while ppo_jax's checkpoints
  need ``orbax-checkpoint>=0.12``: installing it downgrades orbax (and brings equinox,
  huggingface_hub, netron, orbax-export, dm-pix); exporting Brax PPO policies with it has
  been reported to fail (jax2onnx#101, closed as wontfix; #155).
* ``torch.onnx`` through :mod:`ppo_jax.interop.torchrl.export` needs torch (~750 MB installed), and in
  torch 2.13 its default (dynamo) exporter also ``onnxscript``; the Gauss-Hermite mean would
  have to be written again in torch.

The graph is full float32 (the run's ``matmul_precision`` does not carry over). It
normalizes the float32 observation, as the MJX evaluation does; the MuJoCo C evaluation
(:func:`ppo_jax.eval.evaluate.make_host_policy`) normalizes in float64 before casting, TorchRL's
order (measured differences: ``tests/test_export_onnx.py``).

onnx and onnxruntime are imported only inside the functions here; everything that goes
wrong is an :class:`OnnxExportError` with a one-line message.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ppo_jax.util import write_atomic

FORMAT = "ppo_jax.interop.onnx_export/1"
MODES = ("mean", "tanh_loc")
MIN_OPSET = 18  # Split's num_outputs, Reduce* axes as an input
INPUT_NAME = "obs"
OUTPUT_NAME = "action"
BATCH = "batch"
ONNX_HINT = "install the onnx extra: pip install -e '.[onnx]' (onnx, onnxruntime)"
CHECK_ATOL = 1e-5  # max |ONNX - JAX| accepted on the probe observations
CHECK_OBSERVATIONS = 256


class OnnxExportError(Exception):
    """A missing extra, a function the translator cannot express, a failed check or a file
    that cannot be written."""


def require_onnx():
    """Import ``onnx``; :class:`OnnxExportError` (:data:`ONNX_HINT`) if missing."""
    try:
        import onnx
    except ImportError as e:
        raise OnnxExportError(f"{ONNX_HINT} ({e.name or e} is missing)") from None
    return onnx


def require_onnxruntime():
    """Import ``onnxruntime``; :class:`OnnxExportError` (:data:`ONNX_HINT`) if missing."""
    try:
        import onnxruntime
    except ImportError as e:
        raise OnnxExportError(f"{ONNX_HINT} ({e.name or e} is missing)") from None
    return onnxruntime


# --- the function ---------------------------------------------------------------------------


def policy_function(trainer, state, mode: str = "mean") -> Callable[[jax.Array], jax.Array]:
    """``f(obs [..., obs_dim] float32) -> action [..., action_dim]``: normalization, actor and
    deterministic action of ``state`` (ONE run's :class:`~ppo_jax.core.train.PPOState`)."""
    from ppo_jax.core.distributions import deterministic_action
    from ppo_jax.core.normalization import ObsNormStats, normalize
    from ppo_jax.core.train import one_run

    state = one_run(state)
    if mode not in MODES:
        raise OnnxExportError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    actor_params = jax.tree_util.tree_map(jnp.asarray, state.params.actor)
    stats = ObsNormStats(loc=jnp.asarray(state.obs_stats.loc, jnp.float32),
                         scale=jnp.asarray(state.obs_stats.scale, jnp.float32))

    def policy(obs):
        loc, scale = trainer.actor_apply(actor_params, normalize(stats, obs))
        return deterministic_action(loc, scale, mode, trainer.bounds)

    return policy


# --- jaxpr -> ONNX --------------------------------------------------------------------------

_UNARY = {"neg": "Neg", "abs": "Abs", "exp": "Exp", "log": "Log", "tanh": "Tanh",
          "logistic": "Sigmoid", "sqrt": "Sqrt", "sign": "Sign", "floor": "Floor",
          "ceil": "Ceil", "sin": "Sin", "cos": "Cos", "erf": "Erf", "not": "Not",
          "copy": "Identity"}
_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div",
           "max": "Max", "min": "Min", "pow": "Pow", "eq": "Equal", "lt": "Less",
           "gt": "Greater", "le": "LessOrEqual", "ge": "GreaterOrEqual", "and": "And",
           "or": "Or"}
_REDUCE = {"reduce_sum": "ReduceSum", "reduce_max": "ReduceMax", "reduce_min": "ReduceMin",
           "reduce_prod": "ReduceProd"}
# primitives whose body is inlined -> the params key of the sub-jaxpr (jax.jit, custom_jvp
# such as softplus's logaddexp, custom_vjp, jax.checkpoint)
_INLINE = {"jit": "jaxpr", "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
           "remat2": "jaxpr"}
_INT64_MAX = np.iinfo(np.int64).max


class _Graph:
    """ONNX nodes and initializers being built from one jaxpr with one symbolic batch dim."""

    def __init__(self, onnx, batch_dim, input_name: str):
        self.onnx = onnx
        self.batch_dim = batch_dim
        self.input_name = input_name
        self.nodes: list = []
        self.initializers: list = []
        self.values: dict[str, np.ndarray] = {}  # constants known at export time
        self._ids = itertools.count()
        self._batch_size: str | None = None

    def fresh(self, hint: str) -> str:
        return f"{hint}_{next(self._ids)}"

    def const(self, value, hint: str = "c") -> str:
        value = np.asarray(value)
        name = self.fresh(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(value, name))
        self.values[name] = value
        return name

    def node(self, op: str, inputs: Sequence[str], n_out: int = 1, **attrs):
        outs = [self.fresh(op.lower()) for _ in range(n_out)]
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), outs, **attrs))
        return outs[0] if n_out == 1 else outs

    # shapes: ints, or the batch dim (read from the input at run time)
    def is_batch(self, d) -> bool:
        if isinstance(d, (int, np.integer)):
            return False
        try:
            return bool(d == self.batch_dim)
        except Exception:  # an expression of the batch dim (2 * batch, ...)
            return False

    def static(self, d) -> int:
        if isinstance(d, (int, np.integer)):
            return int(d)
        raise OnnxExportError(f"cannot export: dimension {d} is not the batch dimension or "
                              f"an integer")

    def same_dim(self, a, b) -> bool:
        if self.is_batch(a) or self.is_batch(b):
            return self.is_batch(a) and self.is_batch(b)
        return self.static(a) == self.static(b)

    def shape_tensor(self, shape) -> str:
        """An int64 ``[len(shape)]`` tensor of ``shape`` (the batch dim read from the input)."""
        if not any(self.is_batch(d) for d in shape):
            return self.const(np.array([self.static(d) for d in shape], np.int64), "shape")
        if self._batch_size is None:
            self._batch_size = self.node("Shape", [self.input_name], start=0, end=1)
        parts = [self._batch_size if self.is_batch(d)
                 else self.const(np.array([self.static(d)], np.int64), "dim") for d in shape]
        return self.node("Concat", parts, axis=0)

    def is_static(self, shape) -> bool:
        return not any(self.is_batch(d) for d in shape)


def _onnx_dtype(onnx, dtype) -> int:
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _translate_eqn(g: _Graph, eqn, ins: list[str]) -> list[str]:
    """ONNX node outputs for one jaxpr equation (inputs already translated)."""
    name = eqn.primitive.name
    p = eqn.params
    in_avals = [v.aval for v in eqn.invars]
    out_aval = eqn.outvars[0].aval
    if name in _UNARY:
        return [g.node(_UNARY[name], ins)]
    if name in _BINARY:
        return [g.node(_BINARY[name], ins)]
    if name == "ne":
        return [g.node("Not", [g.node("Equal", ins)])]
    if name == "square":
        return [g.node("Mul", [ins[0], ins[0]])]
    if name == "rsqrt":
        return [g.node("Reciprocal", [g.node("Sqrt", ins)])]
    if name == "integer_pow":
        if p["y"] == 2:
            return [g.node("Mul", [ins[0], ins[0]])]
        return [g.node("Pow", [ins[0], g.const(np.array(p["y"], in_avals[0].dtype), "y")])]
    if name == "log1p":
        # Goldberg: log1p(x) = log(u) * x / (u - 1), u = 1 + x (exact where u == 1)
        one = g.const(np.array(1, in_avals[0].dtype), "one")
        u = g.node("Add", [ins[0], one])
        um1 = g.node("Sub", [u, one])
        ratio = g.node("Div", [g.node("Mul", [g.node("Log", [u]), ins[0]]), um1])
        return [g.node("Where", [g.node("Equal", [u, one]), ins[0], ratio])]
    if name == "expm1":
        # Kahan: expm1(x) = (u - 1) * x / log(u), u = exp(x) (x where u == 1, -1 where u == 0)
        one = g.const(np.array(1, in_avals[0].dtype), "one")
        u = g.node("Exp", ins)
        um1 = g.node("Sub", [u, one])
        ratio = g.node("Div", [g.node("Mul", [um1, ins[0]]), g.node("Log", [u])])
        tiny = g.node("Where", [g.node("Equal", [u, one]), ins[0], ratio])
        minus1 = g.const(np.array(-1, in_avals[0].dtype), "m1")
        return [g.node("Where", [g.node("Equal", [um1, minus1]), minus1, tiny])]
    if name == "clamp":  # clamp(lo, x, hi)
        return [g.node("Min", [g.node("Max", [ins[1], ins[0]]), ins[2]])]
    if name == "select_n":
        pred, cases = ins[0], ins[1:]
        if in_avals[0].dtype == np.bool_:
            return [g.node("Where", [pred, cases[1], cases[0]])]
        out = cases[0]
        for i, case in enumerate(cases[1:], 1):
            idx = g.const(np.array(i, in_avals[0].dtype), "case")
            out = g.node("Where", [g.node("Equal", [pred, idx]), case, out])
        return [out]
    if name == "convert_element_type":
        if np.dtype(p["new_dtype"]) == np.dtype(in_avals[0].dtype):
            return [g.node("Identity", ins)]
        return [g.node("Cast", ins, to=_onnx_dtype(g.onnx, p["new_dtype"]))]
    if name == "broadcast_in_dim":
        shape, dims = p["shape"], tuple(p["broadcast_dimensions"])
        new_axes = [i for i in range(len(shape)) if i not in dims]
        x = ins[0]
        if new_axes:
            x = g.node("Unsqueeze", [x, g.const(np.array(new_axes, np.int64), "axes")])
        have = [1] * len(shape)
        for src, dst in enumerate(dims):
            have[dst] = in_avals[0].shape[src]
        if not all(g.same_dim(a, b) for a, b in zip(have, shape)):
            x = g.node("Expand", [x, g.shape_tensor(shape)])
        return [x]
    if name == "reshape":
        if p.get("dimensions") is not None:
            raise OnnxExportError("cannot export: reshape with dimensions")
        return [g.node("Reshape", [ins[0], g.shape_tensor(p["new_sizes"])])]
    if name == "squeeze":
        return [g.node("Squeeze", [ins[0], g.const(np.array(p["dimensions"], np.int64), "axes")])]
    if name == "transpose":
        return [g.node("Transpose", ins, perm=[int(i) for i in p["permutation"]])]
    if name == "concatenate":
        return [g.node("Concat", ins, axis=int(p["dimension"]))]
    if name == "split":
        sizes = np.array([g.static(s) for s in p["sizes"]], np.int64)
        outs = g.node("Split", [ins[0], g.const(sizes, "split")], n_out=len(sizes),
                      axis=int(p["axis"]))
        return list(outs) if len(sizes) > 1 else [outs]
    if name == "slice":
        shape = in_avals[0].shape
        starts = [g.static(s) for s in p["start_indices"]]
        ends = [_INT64_MAX if g.is_batch(e) and g.same_dim(e, d) else g.static(e)
                for e, d in zip(p["limit_indices"], shape)]
        steps = [g.static(s) for s in (p["strides"] or [1] * len(starts))]
        args = [np.array(a, np.int64) for a in (starts, ends, range(len(starts)), steps)]
        return [g.node("Slice", [ins[0], *(g.const(a, "slice") for a in args)])]
    if name in _REDUCE:
        axes = [int(a) for a in p["axes"]]
        if not axes:
            return [g.node("Identity", ins)]
        return [g.node(_REDUCE[name], [ins[0], g.const(np.array(axes, np.int64), "axes")],
                       keepdims=0)]
    if name == "dot_general":
        return [_dot_general(g, ins, in_avals, p, out_aval)]
    raise OnnxExportError(f"cannot export: JAX primitive {name!r} has no ONNX translation "
                          f"in ppo_jax.interop.onnx_export")


def _dot_general(g: _Graph, ins, in_avals, p, out_aval) -> str:
    """``dot_general`` as MatMul (``[..., K] @ [K, N]``) or, in general, Einsum."""
    (lc, rc), (lb, rb) = p["dimension_numbers"]
    lhs, rhs = in_avals
    nl, nr = len(lhs.shape), len(rhs.shape)
    if not lb and tuple(lc) == (nl - 1,) and tuple(rc) == (0,) and nr in (1, 2):
        out = g.node("MatMul", ins)
    else:
        letters = iter("abcdefghijklmnopqrstuvwxyz")
        ls = [next(letters) for _ in range(nl)]
        rs = [next(letters) for _ in range(nr)]
        for i, j in itertools.chain(zip(lc, rc), zip(lb, rb)):
            rs[j] = ls[i]
        free_l = [ls[i] for i in range(nl) if i not in lc and i not in lb]
        free_r = [rs[j] for j in range(nr) if j not in rc and j not in rb]
        out_s = [ls[i] for i in lb] + free_l + free_r
        eq = f"{''.join(ls)},{''.join(rs)}->{''.join(out_s)}"
        out = g.node("Einsum", ins, equation=eq)
    if np.dtype(out_aval.dtype) != np.dtype(lhs.dtype):
        out = g.node("Cast", [out], to=_onnx_dtype(g.onnx, out_aval.dtype))
    return out


def _fold(g: _Graph, eqn, ins: list[str]) -> list[str] | None:
    """Shape and dtype equations on constants (e.g. a bias broadcast to ``[1, n]``) computed
    at export time; None where not foldable."""
    name = eqn.primitive.name
    if any(i not in g.values for i in ins):
        return None
    p = eqn.params
    x = g.values[ins[0]] if ins else None
    out_aval = eqn.outvars[0].aval
    if not g.is_static(out_aval.shape):
        return None
    if name == "broadcast_in_dim":
        shape, dims = p["shape"], tuple(p["broadcast_dimensions"])
        y = np.expand_dims(x, [i for i in range(len(shape)) if i not in dims])
        y = np.broadcast_to(y, tuple(int(d) for d in shape))
    elif name == "reshape" and p.get("dimensions") is None:
        y = x.reshape(tuple(int(d) for d in p["new_sizes"]))
    elif name == "convert_element_type":
        y = x.astype(p["new_dtype"])
    elif name == "squeeze":
        y = np.squeeze(x, tuple(p["dimensions"]))
    elif name == "transpose":
        y = np.transpose(x, p["permutation"])
    else:
        return None
    return [g.const(np.ascontiguousarray(y, out_aval.dtype), name)]


def _emit_jaxpr(g: _Graph, jaxpr, consts: Sequence[Any], args: Sequence[str]) -> list[str]:
    """Translate ``jaxpr`` (consts and inputs given as ONNX names / values); its outputs."""
    from jax.extend import core

    env: dict[Any, str] = {}

    def read(atom) -> str:
        if isinstance(atom, core.Literal):
            return g.const(np.asarray(atom.val, atom.aval.dtype), "lit")
        return env[atom]

    for var, c in zip(jaxpr.constvars, consts):
        env[var] = c if isinstance(c, str) else g.const(np.asarray(c), "param")
    for var, a in zip(jaxpr.invars, args):
        env[var] = a
    for eqn in jaxpr.eqns:
        if all(isinstance(v, core.DropVar) for v in eqn.outvars) and not eqn.effects:
            continue  # dead code (e.g. the scale, unused by tanh_loc)
        if eqn.effects:
            raise OnnxExportError(f"cannot export: {eqn.primitive.name!r} has side effects "
                                  f"({', '.join(map(str, eqn.effects))})")
        ins = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name in _INLINE:
            sub = eqn.params[_INLINE[name]]
            sub_jaxpr, sub_consts = (sub.jaxpr, sub.consts) if hasattr(sub, "consts") \
                else (sub, ())
            outs = _emit_jaxpr(g, sub_jaxpr, sub_consts, ins)
        else:
            outs = _fold(g, eqn, ins) or _translate_eqn(g, eqn, ins)
        for var, out in zip(eqn.outvars, outs):
            if not isinstance(var, core.DropVar):
                env[var] = out
    return [read(v) for v in jaxpr.outvars]


def _prune(nodes: list, initializers: list, output: str) -> tuple[list, list]:
    """The nodes and initializers that ``output`` depends on (dead code and the constants
    that folding replaced are dropped)."""
    needed, kept = {output}, []
    for node in reversed(nodes):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(node.input)
    return kept[::-1], [t for t in initializers if t.name in needed]


def _value_info(g: _Graph, name: str, aval, batch_name: str):
    """The graph input/output ``name`` of ``aval``'s dtype and shape (batch: ``batch_name``)."""
    dims = [batch_name if g.is_batch(d) else g.static(d) for d in aval.shape]
    return g.onnx.helper.make_tensor_value_info(name, _onnx_dtype(g.onnx, aval.dtype), dims)


def check_opset(opset: int) -> None:
    """:class:`OnnxExportError` (one line) unless the installed onnx writes ``opset`` and
    the graph's ops exist there (``MIN_OPSET`` on)."""
    onnx = require_onnx()
    max_opset = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= max_opset:
        raise OnnxExportError(f"opset must be in [{MIN_OPSET}, {max_opset}] (the installed "
                              f"onnx's newest), got {opset}")


def jax_to_onnx(
    fn: Callable[[jax.Array], jax.Array],
    feature_shape: Sequence[int],
    dtype=np.float32,
    *,
    opset: int = MIN_OPSET,
    input_name: str = INPUT_NAME,
    output_name: str = OUTPUT_NAME,
    batch_name: str = BATCH,
    metadata: Mapping[str, Any] | None = None,
):
    """The ONNX model of ``fn(x [batch, *feature_shape]) -> y [batch, ...]`` (one input, one
    output; ``batch`` dynamic): ``fn`` is traced with a symbolic batch size and its jaxpr
    translated; closed-over arrays become initializers. ``metadata`` values are stored as
    strings in the model's ``metadata_props``."""
    check_opset(opset)
    onnx = require_onnx()
    (batch_dim,) = jax.export.symbolic_shape(batch_name)
    spec = jax.ShapeDtypeStruct((batch_dim, *feature_shape), dtype)
    closed = jax.make_jaxpr(fn)(spec)
    if len(closed.jaxpr.outvars) != 1:
        raise OnnxExportError(f"cannot export: the function returns "
                              f"{len(closed.jaxpr.outvars)} arrays, not one")
    g = _Graph(onnx, batch_dim, input_name)
    (out,) = _emit_jaxpr(g, closed.jaxpr, closed.consts, [input_name])
    g.nodes.append(onnx.helper.make_node("Identity", [out], [output_name]))
    nodes, initializers = _prune(g.nodes, g.initializers, output_name)
    graph = onnx.helper.make_graph(
        nodes, "ppo_jax_policy",
        [_value_info(g, input_name, closed.jaxpr.invars[0].aval, batch_name)],
        [_value_info(g, output_name, closed.jaxpr.outvars[0].aval, batch_name)],
        initializer=initializers,
    )
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", opset)], producer_name="ppo_jax")
    # the oldest IR version that the opset needs: runtimes older than the installed onnx load it
    model.ir_version = min(model.ir_version, _ir_version_for(onnx, opset))
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=str(k), value=str(v))
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # onnx.checker.ValidationError, shape inference errors
        raise OnnxExportError(f"cannot export: the ONNX checker rejects the graph: "
                              f"{str(e).strip().splitlines()[0]}") from None
    return model


def _ir_version_for(onnx, opset: int) -> int:
    for row in onnx.helper.VERSION_TABLE:  # (release, ir_version, ai.onnx opset, ...)
        if row[2] >= opset:
            return row[1]
    return onnx.IR_VERSION


# --- the policy file ------------------------------------------------------------------------


def policy_model(trainer, state, mode: str = "mean", opset: int = MIN_OPSET,
                 metadata: Mapping[str, Any] | None = None):
    """The policy's ONNX model (see the module docstring)."""
    env = trainer.env
    meta = {"format": FORMAT, "env_id": env.env_id,
            "mode": mode, "observation_size": env.observation_size,
            "action_size": env.action_size,
            "hidden_sizes": ",".join(str(h) for h in trainer.config.hidden_sizes),
            **(metadata or {})}
    return jax_to_onnx(policy_function(trainer, state, mode), (env.observation_size,),
                       np.float32, opset=opset, metadata=meta)


def session(model_or_path):
    """An ``onnxruntime.InferenceSession`` (CPU) of a model or a file;
    :class:`OnnxExportError` (one line) when onnxruntime cannot load it."""
    ort = require_onnxruntime()
    src = model_or_path if isinstance(model_or_path, (str, os.PathLike)) \
        else model_or_path.SerializeToString()
    try:
        return ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's Fail, InvalidGraph, NoSuchFile, ...
        raise OnnxExportError(f"onnxruntime {ort.__version__} cannot load the graph: "
                              f"{_ort_reason(e)}") from None


def _ort_reason(e: Exception) -> str:
    """onnxruntime's message without its ``[ONNXRuntimeError] : 1 : FAIL : file:line
    function(...)`` prefix."""
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    m = re.search(r"\)\s+([A-Z][^()]*)$", line)
    return m.group(1) if m else line


def run_session(sess, obs: np.ndarray) -> np.ndarray:
    """Actions ``[B, action_dim]`` of observations ``[B, obs_dim]`` (cast to float32)."""
    return sess.run(None, {sess.get_inputs()[0].name: np.asarray(obs, np.float32)})[0]


def probe_observations(state, n: int = CHECK_OBSERVATIONS, seed: int = 0) -> np.ndarray:
    """``[n, obs_dim]`` float32 observations whose normalized values are N(0, 2^2)."""
    loc = np.asarray(state.obs_stats.loc, np.float64)
    scale = np.asarray(state.obs_stats.scale, np.float64)
    z = 2.0 * np.random.default_rng(seed).standard_normal((n, loc.shape[-1]))
    return ((z - loc) / scale).astype(np.float32)


def max_abs_diff(model, fn: Callable, obs: np.ndarray) -> float:
    """``max |onnxruntime(model)(obs) - fn(obs)|`` over ``obs`` ``[B, obs_dim]``."""
    ours = run_session(session(model), obs)
    ref = np.asarray(jax.jit(fn)(jnp.asarray(obs, jnp.float32)))
    if ours.shape != ref.shape:
        raise OnnxExportError(f"the ONNX graph returns shape {ours.shape}, ppo_jax {ref.shape}")
    return float(np.max(np.abs(ours.astype(np.float64) - ref)))


def save_model(model, path: str) -> str:
    """Write ``model`` to ``path`` atomically (a temporary file beside it, then rename); its
    absolute path. A failure leaves no file (and an existing one untouched)."""
    path = os.path.abspath(path)
    try:
        write_atomic(path, model.SerializeToString())
    except OSError as e:
        raise OnnxExportError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def export_onnx(
    trainer,
    state,
    path: str,
    mode: str = "mean",
    opset: int = MIN_OPSET,
    *,
    metadata: Mapping[str, Any] | None = None,
    check: bool = True,
) -> str:
    """Write ``state``'s policy (ONE run's :class:`~ppo_jax.core.train.PPOState`, e.g. from
    :func:`ppo_jax.run.checkpoint.restore_run`) to ``path`` as an ONNX graph; its absolute path.

    With ``check``, onnxruntime runs the graph on :func:`probe_observations` first and the
    file is written only if its actions are within :data:`CHECK_ATOL` of the JAX function's.
    A job's state (``[R, ...]``, from ``fit`` or ``restore``) of one run is taken as that
    run's; of several, ValueError (one line).
    """
    from ppo_jax.core.train import one_run

    state = one_run(state)
    model = policy_model(trainer, state, mode, opset, metadata)
    if check:
        obs = probe_observations(state)
        diff = max_abs_diff(model, policy_function(trainer, state, mode), obs)
        if not diff <= CHECK_ATOL:
            from ppo_jax.core.normalization import describe_residue, residue_entries

            residue = residue_entries(state.obs_stats)
            raise OnnxExportError(f"the ONNX graph's actions differ from ppo_jax's by {diff:.3g} "
                                  f"(> {CHECK_ATOL:g}) on {len(obs)} probe observations; "
                                  "not written" + (f" ({describe_residue(residue)})"
                                                   if residue else ""))
    return save_model(model, path)
