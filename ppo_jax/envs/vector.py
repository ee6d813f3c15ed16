"""Vectorized stepping of N environments with auto-reset.

An episode that ends (terminated or truncated) is reset inside the same step, so the returned
state is always ready to act on; the step's *true* next observation (the one the episode
ended on) is returned separately in :class:`StepOutput`, because a time-limit truncation
bootstraps from the critic's value of that observation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from ppo_jax.envs.base import Env, EnvState


@struct.dataclass
class StepOutput:
    """What one vectorized step produced, before the auto-reset. Shapes ``[N, ...]``.

    Attributes:
      next_obs: ``[N, obs]`` observation after the step (the final one if the episode ended).
      reward: ``[N]``.
      terminated: ``[N]`` bool: stop bootstrapping here.
      truncated: ``[N]`` bool: time limit; bootstrap from ``next_obs``.
      steps: ``[N]`` int32, env steps of the episode including this one.
    """

    next_obs: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    steps: jax.Array

    @property
    def done(self) -> jax.Array:
        return self.terminated | self.truncated


class VectorEnv:
    """``num_envs`` copies of ``env`` stepped in lock-step with ``jax.vmap``."""

    def __init__(self, env: Env, num_envs: int):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.env = env
        self.num_envs = int(num_envs)

    def reset(self, key: jax.Array) -> EnvState:
        return jax.vmap(self.env.reset)(jax.random.split(key, self.num_envs))

    def step(
        self, state: EnvState, action: jax.Array, key: jax.Array
    ) -> tuple[EnvState, StepOutput]:
        """Step every env with ``action`` ``[N, action_size]``; reset those that ended (with ``key``)."""
        nxt = jax.vmap(self.env.step)(state, action)
        out = StepOutput(
            next_obs=nxt.obs,
            reward=nxt.reward,
            terminated=nxt.terminated,
            truncated=nxt.truncated,
            steps=nxt.steps,
        )
        fresh = self.reset(key)
        done = nxt.terminated | nxt.truncated

        def pick(new, old):
            mask = done.reshape(done.shape + (1,) * (old.ndim - done.ndim))
            return jnp.where(mask, new, old)

        return jax.tree_util.tree_map(pick, fresh, nxt), out
