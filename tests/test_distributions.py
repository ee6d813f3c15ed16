"""Tanh-Normal: log-prob against distrax's transformed distribution and the closed form,
the pre-tanh vs atanh paths, sampling, the evaluation action."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.core import distributions as D


@pytest.fixture
def params():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    loc = jax.random.normal(k1, (64, 1))
    scale = jax.nn.softplus(jax.random.normal(k2, (64, 1))) + 0.05
    return loc, scale


def test_log_prob_matches_distrax_tanh_bijector(params):
    loc, scale = params
    u = loc + scale * jax.random.normal(jax.random.PRNGKey(1), loc.shape)
    ref = distrax.Independent(
        distrax.Transformed(distrax.Normal(loc, scale), distrax.Tanh()), 1
    ).log_prob(jnp.tanh(u))
    np.testing.assert_allclose(D.log_prob_pre_tanh(loc, scale, u), ref, rtol=1e-4, atol=1e-4)


def test_log_prob_closed_form(params):
    loc, scale = params
    u = jnp.linspace(-2, 2, 64)[:, None]
    normal = -0.5 * ((u - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi)
    closed = (normal - jnp.log(1 - jnp.tanh(u) ** 2)).sum(-1)
    np.testing.assert_allclose(D.log_prob_pre_tanh(loc, scale, u), closed, rtol=1e-5, atol=1e-5)


def test_atanh_path_equals_pre_tanh_path_where_well_conditioned(params):
    loc, scale = params
    u = jnp.linspace(-3, 3, 64)[:, None]  # |tanh(u)| <= 0.995
    a = jnp.tanh(u)
    np.testing.assert_allclose(
        D.log_prob_from_action(loc, scale, a), D.log_prob_pre_tanh(loc, scale, u), rtol=1e-3, atol=1e-3
    )


def test_saturated_sample_keeps_finite_log_prob():
    loc, scale = jnp.array([[12.0]]), jnp.array([[0.1]])
    action, u, lp = D.sample(jax.random.PRNGKey(0), loc, scale)
    assert float(action[0, 0]) < 1.0  # clamped to 1 - resolution, as TorchRL's SafeTanh
    assert np.isfinite(float(lp[0]))
    # the atanh path cannot recover u here: it sees the clamped action
    assert abs(float(D.safe_atanh(action)[0, 0]) - float(u[0, 0])) > 1.0


def test_sample_shapes_and_reparameterized_gradient(params):
    loc, scale = params
    a, u, lp = D.sample(jax.random.PRNGKey(2), loc, scale)
    assert a.shape == u.shape == loc.shape and lp.shape == (64,)
    g = jax.grad(lambda l: D.sample(jax.random.PRNGKey(2), l, scale)[0].sum())(loc)
    np.testing.assert_allclose(g, 1 - jnp.tanh(u) ** 2, rtol=1e-5, atol=1e-6)


def test_entropy_estimate_is_unbiased_for_the_normal_part():
    # tanh with a tiny scale around 0 is ~linear: entropy ~ Normal entropy
    loc, scale = jnp.zeros((20000, 1)), jnp.full((20000, 1), 1e-3)
    ent = D.entropy_estimate(jax.random.PRNGKey(3), loc, scale).mean()
    np.testing.assert_allclose(ent, 0.5 * np.log(2 * np.pi * np.e * 1e-6), atol=0.02)


def test_mean_action_matches_monte_carlo(params):
    loc, scale = params
    mc = jnp.tanh(loc + scale * jax.random.normal(jax.random.PRNGKey(4), (20000, *loc.shape))).mean(0)
    np.testing.assert_allclose(D.mean_action(loc, scale), mc, atol=0.02)
    np.testing.assert_allclose(D.mean_action(loc, jnp.full_like(scale, 1e-6)), jnp.tanh(loc), atol=1e-5)
    np.testing.assert_allclose(D.deterministic_action(loc, scale, "tanh_loc"), jnp.tanh(loc), atol=1e-6)
    with pytest.raises(ValueError):
        D.deterministic_action(loc, scale, "mode")


def test_saturated_is_where_the_stored_action_loses_u():
    """``saturated``: an action entry at tanh's clamp, where TorchRL's log-prob of the
    stored action (the atanh path) sees the clamp's pre-tanh value instead of ``u``."""
    u = jnp.array([[0.0, 7.0], [7.3, 0.0], [-9.0, 1.0], [0.5, -0.5], [-7.2, 30.0]], jnp.float32)
    np.testing.assert_array_equal(D.saturated(u), [False, True, True, False, True])
    recovered = np.abs(np.asarray(D.safe_atanh(D.squash(u))))
    at_clamp = float(D.safe_atanh(jnp.float32(1.0)))  # ~7.25 in float32
    entry = np.abs(np.tanh(np.asarray(u, np.float64))) >= np.float32(1 - 1e-6)
    np.testing.assert_array_equal(recovered == at_clamp, np.asarray(entry))
    np.testing.assert_array_equal(entry.any(-1), D.saturated(u))
    # other bounds: the clamp is on the unit action, the same entries
    b = D.Bounds.of([-3.0, -3.0], [3.0, 3.0])
    np.testing.assert_array_equal(
        np.abs(np.asarray(D.safe_atanh(b.unsquash(D.squash(u, b))))) >= at_clamp - 1e-3,
        np.asarray(entry))
