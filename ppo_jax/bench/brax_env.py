"""Brax ``Env`` adapter for the MJX ``InvertedDoublePendulum-v4``, registered with Brax.

Importing this module registers the env as ``"ppo_jax_inverted_double_pendulum_v4"``::

    import brax.envs
    import ppo_jax.bench.brax_env  # noqa: F401  (registers)
    env = brax.envs.get_environment("ppo_jax_inverted_double_pendulum_v4")

Brax's training wrappers (``EpisodeWrapper``/``AutoResetWrapper``) own the time limit, so
this adapter reports ``done = terminated`` only; pass ``episode_length=1000`` to Brax's
trainers to get v4's 1000-step limit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.envs import base as brax_base
from brax.envs import register_environment

from ppo_jax.envs.inverted_double_pendulum import InvertedDoublePendulum

BRAX_ENV_NAME = "ppo_jax_inverted_double_pendulum_v4"


class BraxInvertedDoublePendulum(brax_base.Env):
    """The same physics, observation, reward and termination, behind Brax's interface."""

    def __init__(self, **kwargs):
        self._env = InvertedDoublePendulum(**kwargs)

    def reset(self, rng: jax.Array) -> brax_base.State:
        s = self._env.reset(rng)
        zero = jnp.zeros((), s.obs.dtype)
        return brax_base.State(
            pipeline_state=s.data, obs=s.obs, reward=zero, done=zero, metrics={}, info={}
        )

    def step(self, state: brax_base.State, action: jax.Array) -> brax_base.State:
        env = self._env
        action = jnp.asarray(action).reshape(-1)
        data = env.advance(state.pipeline_state, action)
        reward, terminated = env.reward_terminated(state.pipeline_state, data, action, jnp)
        return state.replace(
            pipeline_state=data,
            obs=env.observation(data, jnp),
            reward=reward.astype(state.obs.dtype),
            done=terminated.astype(state.obs.dtype),
        )

    @property
    def observation_size(self) -> int:
        return self._env.observation_size

    @property
    def action_size(self) -> int:
        return self._env.action_size

    @property
    def backend(self) -> str:
        return "mjx"


register_environment(BRAX_ENV_NAME, BraxInvertedDoublePendulum)
