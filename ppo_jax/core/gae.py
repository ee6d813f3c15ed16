"""Generalized advantage estimation, as TorchRL's ``GAE`` (``vectorized`` or not).

For each step ``t`` (time on axis 0)::

    delta_t = r_t + gamma * V(s'_t) * (1 - terminated_t) - V(s_t)
    A_t     = delta_t + gamma * lmbda * (1 - done_t) * A_{t+1}       (A_T = 0)
    target_t = A_t + V(s_t)

``s'_t`` is the TRUE next observation of step ``t`` (the final one when the episode ended),
so a time-limit truncation (``done`` but not ``terminated``) bootstraps from ``V(s'_t)``
while cutting the lambda-trace; a termination neither bootstraps nor continues the trace.
The trace is also cut at the end of the batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ppo_jax.core.inplace import in_place

ADV_STD_FLOOR = 1e-4


def gae(
    *,
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    done: jax.Array,
    gamma: float,
    lmbda: float,
) -> tuple[jax.Array, jax.Array]:
    """Advantages and value targets.

    Args:
      rewards, values, next_values: ``[T, ...]`` (any trailing batch shape).
      terminated, done: ``[T, ...]`` bool; ``done = terminated | truncated``.
    Returns:
      ``(advantages, value_targets)``, both ``[T, ...]``, not standardized.
    """
    not_term = 1.0 - terminated.astype(values.dtype)
    not_done = 1.0 - done.astype(values.dtype)
    deltas = rewards + gamma * next_values * not_term - values

    def step(next_adv, xs):
        delta, nd = xs
        adv = delta + gamma * lmbda * nd * next_adv
        # the carry is also the output row: written where it is computed, not copied
        return adv, in_place(adv)

    _, adv = jax.lax.scan(
        step, jnp.zeros_like(deltas[0]), (deltas, not_done), reverse=True
    )
    return adv, adv + values


def standardize(advantages: jax.Array) -> jax.Array:
    """``(a - mean) / max(std, 1e-4)`` over ALL elements (unbiased std, as ``torch.std``)."""
    n = advantages.size
    mean = advantages.mean()
    std = jnp.sqrt(((advantages - mean) ** 2).sum() / max(n - 1, 1))
    return (advantages - mean) / jnp.maximum(std, ADV_STD_FLOOR)
