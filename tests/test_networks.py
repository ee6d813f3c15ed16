"""Networks: PyTorch's default Linear init, 3x256 Tanh layout, NormalParamExtractor mapping."""

import jax
import jax.numpy as jnp
import numpy as np

from ppo_jax.core.networks import Actor, Critic, biased_softplus, normal_params


def test_shapes_and_torch_default_init_bounds():
    actor, critic = Actor((256, 256, 256), 1), Critic((256, 256, 256))
    obs = jnp.zeros((5, 11))
    pa = actor.init(jax.random.PRNGKey(0), obs)
    pc = critic.init(jax.random.PRNGKey(1), obs)
    loc, scale = actor.apply(pa, obs)
    assert loc.shape == scale.shape == (5, 1)
    assert critic.apply(pc, obs).shape == (5,)
    layers = pa["params"]["net"]
    fan_ins = [11, 256, 256, 256]
    outs = [256, 256, 256, 2]
    for i, (fi, fo) in enumerate(zip(fan_ins, outs)):
        k, b = layers[f"layers_{i}"]["kernel"], layers[f"layers_{i}"]["bias"]
        assert k.shape == (fi, fo) and b.shape == (fo,)
        bound = 1 / np.sqrt(fi)
        assert float(jnp.abs(k).max()) <= bound and float(jnp.abs(b).max()) <= bound
        # uniform on [-bound, bound]: std = bound / sqrt(3)
        np.testing.assert_allclose(float(k.std()), bound / np.sqrt(3), rtol=0.1)


def test_biased_softplus_is_one_at_zero_and_floored():
    np.testing.assert_allclose(biased_softplus(jnp.zeros(())), 1.0, rtol=1e-6)
    loc, scale = normal_params(jnp.array([[0.3, -1e4], [-0.2, 0.0]]))
    np.testing.assert_allclose(loc[:, 0], [0.3, -0.2])
    np.testing.assert_allclose(scale[:, 0], [0.01, 1.0], rtol=1e-6)  # softplus floor 0.01 > 1e-4
