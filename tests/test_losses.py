"""Clipped PPO loss identities and diagnostics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.core.losses import Minibatch, Params, distance, ppo_loss


def make(ratio_shift=0.0, adv=None, B=8):
    loc = jnp.linspace(-0.5, 0.5, B)[:, None]
    scale = jnp.full((B, 1), 0.5)
    u = jnp.linspace(-1, 1, B)[:, None]
    from ppo_jax.core.distributions import log_prob_pre_tanh

    old_lp = log_prob_pre_tanh(loc, scale, u) - ratio_shift
    adv = jnp.linspace(-1, 2, B) if adv is None else adv
    mb = Minibatch(obs=jnp.zeros((B, 3)), pre_tanh=u, log_prob=old_lp, advantage=adv,
                   value_target=jnp.linspace(0, 3, B))
    actor_apply = lambda p, obs: (p["loc"], p["scale"])
    critic_apply = lambda p, obs: p["v"]
    params = Params(actor={"loc": loc, "scale": scale}, critic={"v": jnp.zeros(B)})
    kw = dict(actor_apply=actor_apply, critic_apply=critic_apply, clip_epsilon=0.2,
              entropy_coeff=1e-4, critic_coeff=1.0)
    return params, mb, kw


def test_ratio_one_gives_minus_mean_advantage():
    params, mb, kw = make()
    loss, m = ppo_loss(params, mb, jax.random.PRNGKey(0), **kw)
    np.testing.assert_allclose(m.loss_objective, -mb.advantage.mean(), rtol=1e-6)
    assert float(m.clip_fraction) == 0.0
    np.testing.assert_allclose(m.kl_approx, 0.0, atol=1e-6)
    np.testing.assert_allclose(m.ESS, 1.0, rtol=1e-6)
    np.testing.assert_allclose(loss, m.loss_objective + m.loss_critic + m.loss_entropy, rtol=1e-6)
    np.testing.assert_allclose(m.loss_entropy, -1e-4 * m.entropy, rtol=1e-5)


def test_clipping_pessimistic_bound():
    # ratio = e^0.5 > 1.2 for every sample: positive advantages are clipped, negative are not
    params, mb, kw = make(ratio_shift=0.5)
    _, m = ppo_loss(params, mb, jax.random.PRNGKey(0), **kw)
    adv = np.asarray(mb.advantage)
    r = np.exp(0.5)
    expected = -np.minimum(r * adv, 1.2 * adv).mean()
    np.testing.assert_allclose(m.loss_objective, expected, rtol=1e-5)
    assert float(m.clip_fraction) == 1.0
    np.testing.assert_allclose(m.kl_approx, -0.5, rtol=1e-5)


def test_clipped_samples_have_no_policy_gradient():
    params, mb, kw = make(ratio_shift=0.5, adv=jnp.ones(8))
    kw = dict(kw, entropy_coeff=0.0)
    g = jax.grad(lambda p: ppo_loss(p, mb, jax.random.PRNGKey(0), **kw)[0])(params)
    np.testing.assert_allclose(g.actor["loc"], 0.0, atol=1e-7)


def test_distance_kinds():
    t, p = jnp.array([0.0, 0.0]), jnp.array([0.5, 3.0])
    np.testing.assert_allclose(distance(t, p, "smooth_l1"), [0.125, 2.5])
    np.testing.assert_allclose(distance(t, p, "l2"), [0.25, 9.0])
    np.testing.assert_allclose(distance(t, p, "l1"), [0.5, 3.0])
    with pytest.raises(ValueError):
        distance(t, p, "huber")
