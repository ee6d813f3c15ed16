"""Rollouts of a trained policy: deterministic (evaluation) or stochastic.

An episode runs until its first ``done`` (termination, or the env's time limit) or
``max_steps``, as TorchRL's ``env.rollout(max_steps, policy)``. ``return`` is the sum of its
rewards; ``length`` the number of steps taken. (TorchRL's tutorial logs
``step_count.max()``, the counter BEFORE the last step, i.e. ``length - 1``.)
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct

from ppo_jax import distributions
from ppo_jax.envs import InvertedDoublePendulum
from ppo_jax.normalization import ObsNormStats, normalize


@struct.dataclass
class EpisodeResult:
    """``episode_return``, ``length`` (int32): ``[]`` per episode (``[E]`` when vmapped)."""

    episode_return: jax.Array
    length: jax.Array


def make_policy(
    actor_apply: Callable, actor_params, obs_stats: ObsNormStats, mode: str
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``policy(obs, key) -> action`` from raw observations.

    ``mode``: ``"mean"`` / ``"tanh_loc"`` (deterministic, see
    :func:`ppo_jax.distributions.deterministic_action`) or ``"sample"`` (the training policy).
    """

    def policy(obs, key):
        loc, scale = actor_apply(actor_params, normalize(obs_stats, obs))
        if mode == "sample":
            action, _, _ = distributions.sample(key, loc, scale)
            return action
        return distributions.deterministic_action(loc, scale, mode)

    return policy


def run_episode(
    env: InvertedDoublePendulum, policy: Callable, key: jax.Array, max_steps: int
) -> EpisodeResult:
    """One episode from ``env.reset(key)``, at most ``max_steps`` steps (jit/vmap-able)."""
    k_reset, k_policy = jax.random.split(key)

    def cond(carry):
        _, _, length, alive = carry
        return alive & (length < max_steps)

    def body(carry):
        state, ret, length, _ = carry
        action = policy(state.obs, jax.random.fold_in(k_policy, length))
        nxt = env.step(state, action)
        return nxt, ret + nxt.reward, length + 1, ~nxt.done

    state = env.reset(k_reset)
    init = (state, jnp.zeros((), state.reward.dtype), jnp.int32(0), jnp.bool_(True))
    # A while_loop stops at the first done (under vmap: when every episode is done).
    _, ret, length, _ = jax.lax.while_loop(cond, body, init)
    return EpisodeResult(episode_return=ret, length=length)
