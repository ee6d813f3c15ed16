"""GAE: a plain Python loop, hand-worked termination vs truncation cases, shapes, standardization."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from ppo_jax.core.gae import gae, standardize


def loop_gae(r, v, nv, term, done, gamma, lmbda):
    T = len(r)
    adv = np.zeros(T)
    last = 0.0
    for t in reversed(range(T)):
        delta = r[t] + gamma * nv[t] * (1 - term[t]) - v[t]
        last = delta + gamma * lmbda * (1 - done[t]) * last
        adv[t] = last
    return adv, adv + np.asarray(v)


def test_matches_python_loop_with_trailing_batch_dims():
    rng = np.random.default_rng(0)
    T, B = 37, (3, 2)
    r, v, nv = (rng.normal(size=(T, *B)) for _ in range(3))
    term = rng.random((T, *B)) < 0.1
    trunc = rng.random((T, *B)) < 0.1
    done = term | trunc
    adv, tgt = jax.jit(gae, static_argnames=("gamma", "lmbda"))(
        rewards=r, values=v, next_values=nv, terminated=term, done=done, gamma=0.99, lmbda=0.95
    )
    chex.assert_shape((adv, tgt), (T, *B))
    for i in range(B[0]):
        for j in range(B[1]):
            a, g = loop_gae(r[:, i, j], v[:, i, j], nv[:, i, j], term[:, i, j], done[:, i, j], 0.99, 0.95)
            np.testing.assert_allclose(adv[:, i, j], a, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(tgt[:, i, j], g, rtol=1e-5, atol=1e-5)


def run(r, v, nv, term, trunc, gamma=0.5, lmbda=0.5):
    term, trunc = np.array(term, bool), np.array(trunc, bool)
    adv, tgt = gae(rewards=jnp.array(r, float), values=jnp.array(v, float),
                   next_values=jnp.array(nv, float), terminated=term, done=term | trunc,
                   gamma=gamma, lmbda=lmbda)
    return np.asarray(adv), np.asarray(tgt)


def test_hand_worked_termination():
    # step 0 continues, step 1 terminates: no bootstrap at 1, trace cut between 1 and 2
    adv, tgt = run(r=[1, 1, 1], v=[2, 2, 2], nv=[4, 8, 4], term=[0, 1, 0], trunc=[0, 0, 0])
    d = [1 + 0.5 * 4 - 2, 1 + 0 - 2, 1 + 0.5 * 4 - 2]  # 1, -1, 1
    a2 = d[2]
    a1 = d[1]  # the trace stops at the termination
    a0 = d[0] + 0.25 * a1
    np.testing.assert_allclose(adv, [a0, a1, a2])
    np.testing.assert_allclose(tgt, np.array([a0, a1, a2]) + 2)


def test_hand_worked_truncation_bootstraps_but_cuts_trace():
    # step 1 is a time-limit truncation: bootstrap from V(true next obs) = 8, cut the trace
    adv, _ = run(r=[1, 1, 1], v=[2, 2, 2], nv=[4, 8, 4], term=[0, 0, 0], trunc=[0, 1, 0])
    d = [1 + 0.5 * 4 - 2, 1 + 0.5 * 8 - 2, 1 + 0.5 * 4 - 2]  # 1, 3, 1
    np.testing.assert_allclose(adv, [d[0] + 0.25 * d[1], d[1], d[2]])


def test_terminated_and_truncated_together_does_not_bootstrap():
    adv, _ = run(r=[1], v=[2], nv=[100], term=[1], trunc=[1])
    np.testing.assert_allclose(adv, [-1.0])


def test_lambda_one_gamma_one_is_monte_carlo_return_minus_value():
    r = [1.0, 2.0, 3.0]
    adv, tgt = run(r=r, v=[0.5, 0.5, 0.5], nv=[0.5, 0.5, 7.0], term=[0, 0, 1], trunc=[0, 0, 0],
                   gamma=1.0, lmbda=1.0)
    np.testing.assert_allclose(tgt, [6.0, 5.0, 3.0])


def test_standardize_unbiased_std_and_floor():
    x = jnp.array([1.0, 2.0, 3.0, 6.0])
    y = np.asarray(standardize(x))
    np.testing.assert_allclose(y, (x - x.mean()) / np.std(np.asarray(x), ddof=1), rtol=1e-6)
    const = standardize(jnp.full((5,), 3.0))  # std 0 -> divided by the 1e-4 floor, not NaN
    np.testing.assert_array_equal(const, 0.0)


def test_standardize_a_single_advantage_where_torchrl_gives_nan():
    """The one deliberate difference from TorchRL's ``GAE._normalize_advantage`` (``(a -
    mean) / std.clamp_min(1e-4)``): ``torch.std`` of one element is NaN, which the clamp
    keeps; ppo_jax's is 0, so a batch of one frame gets advantage 0. From two on, as torch."""
    import warnings

    import pytest

    torch = pytest.importorskip("torch")

    def torchrl_standardized(a):
        t = torch.tensor(np.asarray(a, np.float32))
        return ((t - t.mean()) / t.std().clamp_min(1e-4)).numpy()

    with warnings.catch_warnings():  # torch: "degrees of freedom is <= 0"
        warnings.simplefilter("ignore", UserWarning)
        assert np.isnan(torchrl_standardized([2.5])).all()
    assert np.asarray(standardize(jnp.array([2.5]))).tolist() == [0.0]
    rng = np.random.default_rng(0)
    for n in (2, 3, 64):
        a = rng.normal(size=n).astype(np.float32)
        np.testing.assert_allclose(standardize(jnp.asarray(a)), torchrl_standardized(a),
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(torchrl_standardized([3.0, 3.0]), [0.0, 0.0])
