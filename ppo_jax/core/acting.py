"""Acting: the policy of a set of actor parameters and normalization statistics, and one
episode of it in an MJX env, as pure functions (jit/vmap-able). Training's evaluation
(:mod:`ppo_jax.core.train`) and the evaluation of restored policies (:mod:`ppo_jax.eval.evaluate`) run
the same functions.

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

from ppo_jax.core import distributions
from ppo_jax.core.normalization import ObsNormStats, normalize


@struct.dataclass
class EpisodeResult:
    """``episode_return``, ``length`` (int32): ``[]`` per episode (``[E]`` when vmapped)."""

    episode_return: jax.Array
    length: jax.Array


def make_policy(
    actor_apply: Callable, actor_params, obs_stats: ObsNormStats, mode: str,
    bounds: distributions.Bounds | None = None,
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``policy(obs, key) -> action`` from raw observations.

    ``mode``: ``"mean"`` / ``"tanh_loc"`` (deterministic, see
    :func:`ppo_jax.core.distributions.deterministic_action`) or ``"sample"`` (the training policy);
    ``bounds``: the env's action bounds (None: [-1, 1]).
    """

    def policy(obs, key):
        return policy_action(actor_apply, actor_params, normalize(obs_stats, obs), key, mode,
                             bounds)

    return policy


def policy_action(
    actor_apply: Callable, actor_params, norm_obs: jax.Array, key: jax.Array, mode: str,
    bounds: distributions.Bounds | None = None,
) -> jax.Array:
    """Action ``[..., action_dim]`` from NORMALIZED observations ``[..., obs_dim]``.

    ``mode`` as in :func:`make_policy` (``key`` is used only by ``"sample"``).
    """
    loc, scale = actor_apply(actor_params, norm_obs)
    if mode == "sample":
        action, _, _ = distributions.sample(key, loc, scale, bounds)
        return action
    return distributions.deterministic_action(loc, scale, mode, bounds)


def run_episode(env, policy: Callable, key: jax.Array, max_steps: int) -> EpisodeResult:
    """One episode from ``env.reset(key)``, at most ``max_steps`` steps (jit/vmap-able)."""
    k_reset, k_policy = jax.random.split(key)

    def cond(carry):
        _, _, length, alive = carry
        return alive & (length < max_steps)

    def body(carry):
        state, ret, length, _ = carry
        action = policy(state.obs, jax.random.fold_in(k_policy, length))
        nxt = env.step(state, action)
        return nxt, ret + nxt.reward, length + 1, ~(nxt.terminated | nxt.truncated)

    state = env.reset(k_reset)
    init = (state, jnp.zeros((), jnp.result_type(state.reward)), jnp.int32(0), jnp.bool_(True))
    # A while_loop stops at the first done (under vmap: when every episode is done).
    _, ret, length, _ = jax.lax.while_loop(cond, body, init)
    return EpisodeResult(episode_return=ret, length=length)


@struct.dataclass
class EpisodeTrace:
    """The physical states of one episode (for rendering), ``T = min(max_steps, the env's
    max_episode_steps)``.

    Attributes:
      qpos: ``[T + 1, nq]``; row 0 is the reset state, row ``t`` the state after step ``t``.
        Rows past ``length`` repeat the final state.
      qvel: ``[T + 1, nv]``, likewise.
      reward: ``[T]``, 0 past ``length``.
      episode_return: ``[]``, sum of ``reward`` (equals :func:`run_episode`'s).
      length: ``[]`` int32, steps taken; the episode's states are ``qpos[:length + 1]``.
    """

    qpos: jax.Array
    qvel: jax.Array
    reward: jax.Array
    episode_return: jax.Array
    length: jax.Array


def episode_trace(env, policy: Callable, key: jax.Array, max_steps: int) -> EpisodeTrace:
    """The episode of :func:`run_episode` (same ``key`` -> same actions and states), with
    ``qpos``/``qvel`` after every step (jit-able).

    A ``while_loop`` that stops at the first ``done``, as :func:`run_episode`'s does: an
    episode of 8 steps costs 8 env steps, not ``max_steps``. Its rows are at most the env's
    time limit (``max_episode_steps``, where the protocol's env is truncated) + 1, whatever
    ``max_steps`` asks; rows past ``length`` repeat the final state."""
    k_reset, k_policy = jax.random.split(key)
    # the simulator state inside an env state (an adapter's env names it; MJX ports: data)
    physics = getattr(env, "physics", lambda data: data)
    rows = int(min(max_steps, env.max_episode_steps))
    start = env.reset(k_reset)
    p0 = physics(start.data)

    def cond(carry):
        t, _, alive, *_ = carry
        return alive & (t < rows)

    def body(carry):
        t, state, _, qpos, qvel, reward = carry
        action = policy(state.obs, jax.random.fold_in(k_policy, t))
        nxt = env.step(state, action)
        phys = physics(nxt.data)
        return (t + 1, nxt, ~(nxt.terminated | nxt.truncated), qpos.at[t + 1].set(phys.qpos),
                qvel.at[t + 1].set(phys.qvel), reward.at[t].set(nxt.reward))

    init = (jnp.int32(0), start, jnp.bool_(True),
            jnp.zeros((rows + 1, *p0.qpos.shape), p0.qpos.dtype).at[0].set(p0.qpos),
            jnp.zeros((rows + 1, *p0.qvel.shape), p0.qvel.dtype).at[0].set(p0.qvel),
            jnp.zeros((rows,), start.reward.dtype))
    length, _, _, qpos, qvel, reward = jax.lax.while_loop(cond, body, init)
    past = (jnp.arange(rows + 1) > length)[:, None]
    return EpisodeTrace(
        qpos=jnp.where(past, qpos[length], qpos),
        qvel=jnp.where(past, qvel[length], qvel),
        reward=reward,
        episode_return=reward.sum(),
        length=length,
    )


def eval_episode_key(eval_key: jax.Array, batch: jax.Array | int, episode: int = 0) -> jax.Array:
    """Key of evaluation episode ``episode`` after batch ``batch`` (training logs episode 0)."""
    return jax.random.fold_in(jax.random.fold_in(eval_key, batch), episode)
