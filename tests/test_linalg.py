"""``linalg="inline"`` (:mod:`ppo_jax.envs.linalg`): the small Cholesky factorizations and
triangular solves written out as elementwise ops.

Measured on a 2-core CPU, 2026-12-05, float32, 6 random well-conditioned matrices per size
(n = 1 to 32), against a float64 reference: the inline Cholesky factor is within 1.6e-7
relative (LAPACK's: 7.9e-8); the inline triangular solves are within 4.2e-7 relative of
``jax.lax.linalg.triangular_solve`` over all 16 flag combinations. Asserted at 1e-6 and 2e-6.
The env-level parity against MuJoCo C (x64, and float32 where the GPU check runs it) is in
tests/test_mujoco_c.py; a port with contacts here.
"""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.envs import InvertedDoublePendulum, make_env
from ppo_jax.envs.linalg import MAX_SIZE, cholesky, inline_linalg, triangular_solve, with_linalg

# a LAPACK, cuSOLVER or cuBLAS call, or XLA's own op (which a backend expands as it likes)
LIBRARY_CALL = re.compile(r"custom_call @\w*(potrf|trsm)|stablehlo\.(cholesky|triangular_solve)")


def spd(rng, batch, n, dtype=np.float32):
    x = rng.normal(size=(batch, n, n))
    return (x @ np.swapaxes(x, -1, -2) + n * np.eye(n)).astype(dtype)


def primitives(jaxpr) -> set[str]:
    """Every primitive's name in ``jaxpr``, at any depth (loops, conditionals, jit)."""
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple) else (value,):
                if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
                    names |= primitives(getattr(sub, "jaxpr", sub))
    return names


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 14, MAX_SIZE])
def test_cholesky_as_accurate_as_the_library(n):
    rng = np.random.default_rng(n)
    a = spd(rng, 6, n)
    # the upper triangle is not read: garbage there changes nothing
    garbage = a + np.triu(rng.normal(size=a.shape), 1).astype(np.float32)
    ref = np.linalg.cholesky(a.astype(np.float64))
    ours = np.asarray(jax.jit(cholesky)(garbage), np.float64)
    assert np.all(np.triu(ours, 1) == 0)
    assert np.abs(ours - ref).max() / np.abs(ref).max() < 1e-6


@pytest.mark.parametrize("n", [1, 3, 7])
def test_triangular_solve_matches_the_library_in_every_form(n):
    rng = np.random.default_rng(n)
    factor = np.linalg.cholesky(spd(rng, 4, n).astype(np.float64)).astype(np.float32)
    b = rng.normal(size=(4, n, 3)).astype(np.float32)
    for left, lower, transpose, unit in itertools.product([True, False], repeat=4):
        a = factor if lower else np.swapaxes(factor, -1, -2)
        a = a + (np.triu(rng.normal(size=a.shape), 1) if lower
                 else np.tril(rng.normal(size=a.shape), -1)).astype(np.float32)  # not read
        rhs = b if left else np.swapaxes(b, -1, -2)
        kw = dict(left_side=left, lower=lower, transpose_a=transpose, conjugate_a=False,
                  unit_diagonal=unit)
        want = np.asarray(jax.lax.linalg.triangular_solve(a, rhs, **kw), np.float64)
        got = np.asarray(triangular_solve(jnp.asarray(a), jnp.asarray(rhs), **kw), np.float64)
        assert np.abs(got - want).max() / max(1.0, np.abs(want).max()) < 2e-6, kw


def solve_everywhere(a, b):
    """``cho_solve`` in a data-dependent loop, a conditional, a scan, under vmap and remat,
    and SciPy's positive-definite solve (a ``custom_linear_solve``)."""
    solve = lambda m, v: jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(m), v)

    def body(carry):
        i, x = carry
        return i + 1, jax.lax.cond(i % 2 == 0, lambda y: solve(a, y), lambda y: y + 1.0, x)

    _, looped = jax.lax.while_loop(lambda c: (c[0] < 5) & (jnp.sum(jnp.abs(c[1])) < 1e6),
                                   body, (0, b))
    scanned, _ = jax.lax.scan(lambda x, _: (solve(a, x), None), b, None, length=3)
    mapped = jax.vmap(solve, in_axes=(None, 1), out_axes=1)(a, b[:, None])[:, 0]
    return (looped, scanned, jax.jit(jnp.linalg.cholesky)(a), mapped, jax.checkpoint(solve)(a, b),
            jax.scipy.linalg.solve(a, b, assume_a="pos"))


def test_inline_linalg_reaches_every_nested_call():
    rng = np.random.default_rng(0)
    a = spd(rng, 1, 4)[0] * 0.3
    b = rng.normal(size=(4,)).astype(np.float32)
    want = jax.jit(solve_everywhere)(a, b)
    got = jax.jit(inline_linalg(solve_everywhere))(a, b)
    for w, g in zip(want, got):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5)
    before = primitives(jax.make_jaxpr(solve_everywhere)(a, b).jaxpr)
    after = primitives(jax.make_jaxpr(inline_linalg(solve_everywhere))(a, b).jaxpr)
    assert {"cholesky", "triangular_solve"} <= before
    assert not {"cholesky", "triangular_solve"} & after
    assert {"while", "cond", "scan", "custom_linear_solve"} <= after  # the control flow is kept


def test_what_it_does_not_inline_traces_as_before():
    rng = np.random.default_rng(1)
    big = spd(rng, 1, MAX_SIZE + 1)[0]  # larger than MAX_SIZE: the library's
    fn = lambda m: jnp.linalg.cholesky(m) @ jnp.ones(m.shape[-1])
    assert "cholesky" in primitives(jax.make_jaxpr(inline_linalg(fn))(big).jaxpr)
    plain = lambda x: jnp.sin(x) * 2.0 + jnp.cumsum(x)  # nothing to inline: the same program
    x = jnp.arange(5.0)
    assert str(jax.make_jaxpr(inline_linalg(plain))(x)) == str(jax.make_jaxpr(plain)(x))


@pytest.mark.gpu  # on a GPU: no cuSOLVER or cuBLAS call left (lowering only)
def test_env_step_inline_holds_no_library_call():
    """The pendulum's step lowers with LAPACK's potrf and trsm by default (cuSOLVER's and
    cuBLAS's on a GPU) and with none inline; the given env is left as it was."""
    env = InvertedDoublePendulum()
    inline = with_linalg(env, "inline")
    assert type(inline) is type(env) and inline.spec() == env.spec()
    assert "step" not in vars(env) and with_linalg(env, "library") is env
    state = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
    action = jax.ShapeDtypeStruct((1,), jnp.float32)
    lowered = {name: jax.jit(e.step).lower(state, action).as_text()
               for name, e in (("library", env), ("inline", inline))}
    assert LIBRARY_CALL.search(lowered["library"])
    assert not LIBRARY_CALL.search(lowered["inline"])
    with pytest.raises(ValueError, match="linalg must be"):
        with_linalg(env, "lapack")


def test_the_config_chooses_it_and_keys_its_programs_apart():
    from ppo_jax.config import PPOConfig
    from ppo_jax.core.train import make_train
    from ppo_jax.run.programs import module_name, program_key

    tiny = dict(num_envs=2, frames_per_batch=40, minibatch_size=20, total_frames=80,
                hidden_sizes=(8,))
    trainers = {l: make_train(PPOConfig(linalg=l, **tiny)) for l in ("library", "inline")}
    state = jax.eval_shape(trainers["library"].env.reset, jax.random.PRNGKey(0))
    action = jax.ShapeDtypeStruct((1,), jnp.float32)
    for linalg, trainer in trainers.items():
        text = jax.jit(trainer.env.step).lower(state, action).as_text()
        assert bool(LIBRARY_CALL.search(text)) == (linalg == "library")
    for key in (program_key, module_name):
        assert key(trainers["library"], 1, "update") != key(trainers["inline"], 1, "update")


def test_port_with_contacts_steps_alike_inline(x64):
    """Hopper-v4 (floor contacts: the Newton solver's Hessian factored every iteration), 40
    steps of random actions from 4 resets, x64: the inline env's observations equal the
    library's to 1e-9 (measured 2026-12-05: 1.0e-14)."""
    env = make_env("Hopper-v4")
    inline = with_linalg(env, "inline")

    def roll(e, key):
        acts = jax.random.uniform(key, (40, env.action_size), jnp.float64, -1.0, 1.0)
        def body(state, action):
            state = e.step(state, action)
            return state, state.obs

        return jax.lax.scan(body, e.reset(key), acts)[1]

    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    want = jax.jit(jax.vmap(lambda k: roll(env, k)))(keys)
    got = jax.jit(jax.vmap(lambda k: roll(inline, k)))(keys)
    assert np.abs(np.asarray(got) - np.asarray(want)).max() < 1e-9
