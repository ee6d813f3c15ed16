"""Small linear algebra written out as elementwise ops: ``linalg="inline"``.

MJX's forward pass solves with the mass matrix (``jax.scipy.linalg.cho_factor`` and
``cho_solve``), and its Newton constraint solver factors its Hessian the same way, in every
iteration. JAX lowers those to library calls: LAPACK on a CPU, cuSOLVER's ``potrf`` and cuBLAS's
triangular solve on an NVIDIA GPU. For an env's matrices (the pendulum's are 3 x 3) a library
call is mostly overhead, and on a GPU it is worse: XLA cannot put it in a command buffer (a
CUDA graph), so it splits the env step's kernels into many launches, and it keeps the solver's
data-dependent loop on the host, which then waits on the GPU at every iteration.

:func:`inline_linalg` rewrites a function so that every ``cholesky`` and ``triangular_solve``
of a real matrix of at most :data:`MAX_SIZE` rows, wherever it sits (inside ``jit``, loops,
conditionals, ``vmap``), becomes the textbook algorithm in elementwise ops, which XLA fuses
with their neighbours. Everything else binds exactly as before. The results equal the
library's up to float32 rounding (``tests/test_linalg.py``); they are not the same bits, which
is why it is a choice (``PPOConfig.linalg``) and not the default.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.extend import core as jcore
from jax.lax import linalg as lax_linalg

MAX_SIZE = 32  # larger matrices keep the library call (the inline ops grow as n^3)
_TARGETS = (lax_linalg.cholesky_p, lax_linalg.triangular_solve_p)


def cholesky(a: jax.Array) -> jax.Array:
    """The lower Cholesky factor of ``a [..., n, n]`` read from its lower triangle (as the
    ``cholesky`` primitive reads it), column by column; zeros above the diagonal. A matrix
    that is not positive definite gives NaN (or inf, at a zero pivot) from the failing
    column on, where the library gives NaN everywhere."""
    n = a.shape[-1]
    rows = jnp.arange(n)
    cols: list[jax.Array] = []
    for j in range(n):
        s = a[..., :, j]
        for k in range(j):
            s = s - cols[k] * cols[k][..., j:j + 1]
        d = jnp.sqrt(s[..., j:j + 1])
        cols.append(jnp.where(rows > j, s / d, jnp.where(rows == j, d, jnp.zeros_like(s))))
    return jnp.stack(cols, axis=-1)


def triangular_solve(a: jax.Array, b: jax.Array, *, left_side: bool, lower: bool,
                     transpose_a: bool, conjugate_a: bool, unit_diagonal: bool) -> jax.Array:
    """``jax.lax.linalg.triangular_solve`` for real ``a [..., m, m]`` by substitution, row by
    row: ``op(a) x = b`` (``left_side``) or ``x op(a) = b``, ``op`` the transpose where
    ``transpose_a``; only ``a``'s ``lower`` (or upper) triangle is read."""
    del conjugate_a  # real matrices only (see _inlined)
    if not left_side:  # x op(a) = b  <=>  op(a)^T x^T = b^T
        x = triangular_solve(a, jnp.swapaxes(b, -1, -2), left_side=True, lower=lower,
                             transpose_a=not transpose_a, conjugate_a=False,
                             unit_diagonal=unit_diagonal)
        return jnp.swapaxes(x, -1, -2)
    m = a.shape[-1]
    a = jnp.tril(a) if lower else jnp.triu(a)
    if transpose_a:
        a = jnp.swapaxes(a, -1, -2)
    forward = lower != transpose_a  # op(a) is lower triangular: first row first
    order = range(m) if forward else range(m - 1, -1, -1)
    rows: list[Any] = [None] * m
    solved: list[int] = []
    for r in order:
        s = b[..., r, :]
        for c in solved:
            s = s - a[..., r, c:c + 1] * rows[c]
        rows[r] = s if unit_diagonal else s / a[..., r, r:r + 1]
        solved.append(r)
    return jnp.stack(rows, axis=-2)


def _inlined(eqn) -> bool:
    """Whether ``eqn`` is a small real ``cholesky`` or ``triangular_solve``."""
    if eqn.primitive not in _TARGETS:
        return False
    a = eqn.invars[0].aval
    return jnp.issubdtype(a.dtype, jnp.floating) and 1 <= a.shape[-1] <= MAX_SIZE


def _is_jaxpr(value) -> bool:
    return isinstance(value, (jcore.ClosedJaxpr, jcore.Jaxpr))


def _jaxprs(value) -> list:
    """The jaxprs held by one equation parameter (a jaxpr, or a tuple holding some)."""
    if _is_jaxpr(value):
        return [value]
    return [v for v in value if _is_jaxpr(v)] if isinstance(value, tuple) else []


def _holds_target(jaxpr) -> bool:
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    return any(_inlined(eqn) or any(_holds_target(j) for v in eqn.params.values()
                                   for j in _jaxprs(v))
               for eqn in jaxpr.eqns)


def _rewrite_closed(closed):
    """``closed`` traced again through :func:`_evaluate`; ``closed`` itself (the library
    kept) where an input is not a plain array (a ref, a token), which a re-trace from shapes
    and dtypes would not reproduce."""
    if not all(type(v.aval) is jax.core.ShapedArray for v in closed.jaxpr.invars):
        return closed
    avals = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype, weak_type=v.aval.weak_type)
             for v in closed.jaxpr.invars]
    return jax.make_jaxpr(lambda *xs: _evaluate(closed.jaxpr, closed.consts, xs))(*avals)


def _rewrite_param(value):
    if isinstance(value, jcore.ClosedJaxpr):
        return _rewrite_closed(value) if _holds_target(value) else value
    if isinstance(value, jcore.Jaxpr):
        if not _holds_target(value):
            return value
        out = _rewrite_closed(jcore.ClosedJaxpr(value, ()))
        if out.consts:  # an open jaxpr has nowhere to keep constants: leave it to the library
            return value
        return out.jaxpr
    if isinstance(value, tuple) and _jaxprs(value):  # cond's branches, custom_linear_solve's
        parts = [_rewrite_param(v) if _is_jaxpr(v) else v for v in value]
        return type(value)(*parts) if hasattr(value, "_fields") else tuple(parts)
    return value


def _evaluate(jaxpr, consts, args) -> list:
    """``jaxpr`` evaluated (traced) with the small linear algebra inlined."""
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        if _inlined(eqn):
            fn = cholesky if eqn.primitive is lax_linalg.cholesky_p else functools.partial(
                triangular_solve, **eqn.params)
            outs = [fn(*invals).astype(eqn.outvars[0].aval.dtype)]
        else:
            params = {k: _rewrite_param(v) for k, v in eqn.params.items()}
            got = eqn.primitive.get_bind_params(params)
            subfuns, bind_params = got if isinstance(got, tuple) else ((), got)
            ctx = getattr(eqn, "ctx", None)
            with ctx.manager if ctx is not None else contextlib.nullcontext():
                outs = eqn.primitive.bind(*subfuns, *invals, **bind_params)
            if not eqn.primitive.multiple_results:
                outs = [outs]
        for v, x in zip(eqn.outvars, outs):
            if not isinstance(v, jcore.DropVar):
                env[v] = x
    return [read(v) for v in jaxpr.outvars]


def inline_linalg(fn: Callable) -> Callable:
    """``fn`` with every small real ``cholesky`` and ``triangular_solve`` it traces (at most
    :data:`MAX_SIZE` rows) written out as elementwise ops; pytrees in, pytrees out, as ``fn``.
    A function without them traces to the same program."""

    @functools.wraps(fn)
    def inlined(*args):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        if not _holds_target(closed):
            return fn(*args)
        outs = _evaluate(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves(args))
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs)

    return inlined


def with_linalg(env: Any, linalg: str) -> Any:
    """``env`` for ``PPOConfig.linalg``: itself for ``"library"``; for ``"inline"`` a shallow
    copy whose ``reset`` and ``step`` are :func:`inline_linalg`'s (the same class, the same
    identity otherwise; the given env is not changed)."""
    if linalg == "library":
        return env
    if linalg != "inline":
        raise ValueError(f"linalg must be 'library' or 'inline', got {linalg!r}")
    out = copy.copy(env)
    try:
        for name in ("reset", "step"):
            raw = inspect.getattr_static(env, name)
            # the class's method bound to the copy (so what it calls on self is the copy's);
            # a function the instance itself holds, as it is
            bound = (getattr(env, name) if name in getattr(env, "__dict__", {})
                     or not hasattr(raw, "__get__") else raw.__get__(out, type(out)))
            object.__setattr__(out, name, inline_linalg(bound))
    except (AttributeError, TypeError) as e:  # e.g. a class with __slots__
        raise ValueError(f"linalg 'inline' cannot wrap env {getattr(env, 'env_id', env)!r}: "
                         f"its reset and step cannot be set on a copy ({e})") from None
    return out
