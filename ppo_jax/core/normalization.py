"""Observation normalization as TorchRL's ``ObservationNorm`` (``standard_normal=False``).

Statistics come from ``ObservationNorm.init_stats(num_iter=N, reduce_dim=0, cat_dim=0)``'s
procedure, reproduced inside ``jit``: random-action rollouts from fresh resets, each stopped
at its first ``done`` (or after N steps), repeated until at least N observations are
gathered; the observations recorded are those the actions were taken from (the reset
observation included, the final one excluded). Then::

    scale' = max(1 / max(std, eps), eps)     (std: unbiased, eps = 1e-6)
    loc'   = -mean * (1 / max(std, eps))
    normalized = obs * scale' + loc'

Zero-variance entries (the three ``qfrc_constraint`` entries under random play) get
``scale' = 1e6`` in ``"reference"`` mode, as in the tutorial. ``"safe"`` mode centres them
(``scale' = 1``) instead, so a nonzero constraint force is not a 1e6-sized input; there, an
entry whose float32 std is only rounding (``|mean| >= 2**16 * std``) counts as zero-variance
too (see :func:`residue_entries`).

``"running"`` mode (not TorchRL's: CleanRL's and Brax's kind) starts from the same random
rollouts and keeps their :class:`ObsMoments` (count, mean, sum of squared deviations); after
each batch's update the batch's observations are merged in (:func:`merge`, Chan et al.'s
parallel update, exact up to rounding for any split of the data) and the statistics the next
batch acts with are ``"safe"``'s formula on the moments so far.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


EPS = 1e-6
# |loc'| at which normalizing an entry cancels float32 numbers whose ulp is 1/128 or more (no
# Gymnasium port's statistics come near: their largest |loc'| is ~68, Hopper-v4's)
RESIDUE_LOC = 2.0**16


@struct.dataclass
class ObsNormStats:
    """``loc``, ``scale``: ``[obs_dim]``; applied as ``obs * scale + loc``."""

    loc: jax.Array
    scale: jax.Array


def normalize(stats: ObsNormStats, obs: jax.Array) -> jax.Array:
    """``obs``: ``[..., obs_dim]`` -> same shape."""
    return obs * stats.scale + stats.loc


@struct.dataclass
class ObsMoments:
    """Every observation seen so far, summarized: ``count`` (scalar), ``mean`` and ``m2``
    (the sum of squared deviations from the mean), ``[obs_dim]``."""

    count: jax.Array
    mean: jax.Array
    m2: jax.Array


def moments_of(obs: jax.Array, mask: jax.Array | None = None) -> ObsMoments:
    """The moments of the rows of ``obs`` ``[..., obs_dim]`` where ``mask`` ``[...]`` is True
    (every leading axis reduced in place: a batch split over devices is not gathered)."""
    if mask is None:
        mask = jnp.ones(obs.shape[:-1], bool)
    axes = tuple(range(obs.ndim - 1))
    w = mask.astype(obs.dtype)[..., None]
    n = w.sum()
    mean = (w * obs).sum(axes) / n
    return ObsMoments(count=n, mean=mean, m2=(w * (obs - mean) ** 2).sum(axes))


def merge(a: ObsMoments, b: ObsMoments) -> ObsMoments:
    """The moments of the union of ``a``'s and ``b``'s observations (Chan et al.)."""
    n = a.count + b.count
    delta = b.mean - a.mean
    return ObsMoments(count=n, mean=a.mean + delta * (b.count / n),
                      m2=a.m2 + b.m2 + delta**2 * (a.count * b.count / n))


def stats_from_moments(m: ObsMoments, mode: str = "reference") -> ObsNormStats:
    """The statistics (unbiased std) of the observations ``m`` summarizes, by ``mode``'s rule
    for zero-variance entries (``"running"``: ``"safe"``'s)."""
    mean = m.mean
    var = m.m2 / (m.count - 1.0)
    std = jnp.sqrt(var)
    inv = 1.0 / jnp.maximum(std, EPS)
    if mode == "reference":
        scale = jnp.maximum(inv, EPS)
        loc = -mean * inv
    elif mode in ("safe", "running"):
        # zero variance, up to float32 rounding: a constant whose mean and deviations are
        # computed in float32 has a std of a few of its ulps (see residue_entries)
        degenerate = (std < EPS) | (jnp.abs(mean) >= RESIDUE_LOC * std)
        scale = jnp.where(degenerate, 1.0, jnp.maximum(inv, EPS))
        loc = -mean * jnp.where(degenerate, 1.0, inv)
    else:
        raise ValueError(f"unknown obs_norm mode {mode!r}")
    return ObsNormStats(loc=loc, scale=scale)


def residue_entries(stats: ObsNormStats) -> list[int]:
    """The observation entries whose normalized value is float32 rounding residue: an entry
    that hardly varied, far from zero (``|mean| / std >= 2**16``: under ``"reference"``
    statistics, a constant at a nonzero value, whose ``scale'`` is up to 1e6: 1/std, where
    the std is 1e-6 or float32 rounding). ``obs * scale' + loc'`` then cancels two numbers
    of ``|loc'|`` or more, whose float32 ulp is 1/128 or more, and another runtime or device
    may round them otherwise. A constant zero entry normalizes
    to exactly 0, and a centred one (``"safe"``, ``"running"``: ``scale' = 1``) to ``obs -
    mean``, exact in float32 that close: neither is one. ``stats``: ``[..., obs_dim]`` (any
    run's entry counts); indices in order."""
    loc = np.asarray(stats.loc, np.float64).reshape(-1, np.shape(stats.loc)[-1])
    scale = np.asarray(stats.scale, np.float64).reshape(loc.shape)
    # scale' 1 (a centred entry) rounds nothing: obs - mean is exact that close
    hit = (np.abs(loc) >= RESIDUE_LOC) & (scale != 1.0)
    return [int(i) for i in np.flatnonzero(np.any(hit, axis=0))]


def describe_residue(entries: list[int]) -> str:
    """One clause naming :func:`residue_entries`' entries, their cause and the cure."""
    shown = ", ".join(map(str, entries[:8])) + (", ..." if len(entries) > 8 else "")
    return (f"{len(entries)} observation entr{'y' if len(entries) == 1 else 'ies'} ({shown}) "
            "hardly varied, far from zero, in the random rollouts that set the normalization "
            "statistics: normalizing them cancels float32 numbers of 2^16 or more, so their "
            "normalized values are rounding residue, which another runtime or device rounds "
            "otherwise (--obs-norm safe only centres such an entry; 'reference', TorchRL's, "
            "scales it by up to 1e6)")


def stats_from_observations(
    obs: jax.Array, mask: jax.Array | None = None, mode: str = "reference"
) -> ObsNormStats:
    """Statistics of the rows of ``obs`` ``[T, obs_dim]`` where ``mask`` ``[T]`` is True."""
    return stats_from_moments(moments_of(obs, mask), mode)


def _action_range(env):
    """The env's action bounds for ``jax.random.uniform`` (TorchRL's ``rand_step`` samples the
    bounded action spec uniformly): floats where every dimension shares them, else arrays."""
    low, high = np.asarray(env.action_low, np.float64), np.asarray(env.action_high, np.float64)
    if np.all(low == low[0]) and np.all(high == high[0]):
        return float(low[0]), float(high[0])
    return low, high


def random_rollout_observations(
    env, key: jax.Array, num_frames: int
) -> tuple[jax.Array, jax.Array]:
    """Observations of TorchRL-style random rollouts, as ``(obs [L, obs_dim], mask [L])``.

    ``L = num_frames + min(num_frames, env.max_episode_steps) - 1`` bounds the count; the
    rows where ``mask`` is True are exactly the observations TorchRL would concatenate (the
    others are zeros). The loop stops at the rollout that completes ``num_frames``: every step
    is sequential (one env), so on a GPU, where each costs a few ms of kernel latency, the
    steps after it (up to ``L - num_frames``) would be most of the start-up.
    """
    rollout_cap = min(num_frames, env.max_episode_steps)
    low, high = _action_range(env)
    length = num_frames + rollout_cap - 1
    k_reset, k_loop = jax.random.split(key)

    keys = jax.random.split(k_loop, length)

    def body(carry):
        i, state, rollout_len, count, active, obs_rows, mask_rows = carry
        k_act, k_reset = jax.random.split(keys[i])
        obs = state.obs
        action = jax.random.uniform(
            k_act, (env.action_size,), obs.dtype, minval=low, maxval=high
        )
        nxt = env.step(state, action)
        rollout_len = rollout_len + 1
        count = count + active.astype(jnp.int32)
        ended = nxt.terminated | nxt.truncated | (rollout_len >= rollout_cap)
        still = active & ~(ended & (count >= num_frames))
        fresh = env.reset(k_reset)
        state = jax.tree_util.tree_map(lambda a, b: jnp.where(ended, a, b), fresh, nxt)
        rollout_len = jnp.where(ended, 0, rollout_len)
        return (i + 1, state, rollout_len, count, still, obs_rows.at[i].set(obs),
                mask_rows.at[i].set(active))

    state = env.reset(k_reset)
    init = (jnp.int32(0), state, jnp.int32(0), jnp.int32(0), jnp.bool_(True),
            jnp.zeros((length, *state.obs.shape), state.obs.dtype), jnp.zeros(length, bool))
    *_, obs, mask = jax.lax.while_loop(lambda c: (c[0] < length) & c[4], body, init)
    return obs, mask


def init_moments(env, key: jax.Array, num_frames: int = 1000) -> ObsMoments:
    """The moments of TorchRL's ``init_stats(num_iter=num_frames)`` observations (jit-able)."""
    return moments_of(*random_rollout_observations(env, key, num_frames))


def init_stats(
    env, key: jax.Array, num_frames: int = 1000, mode: str = "reference"
) -> ObsNormStats:
    """TorchRL's ``init_stats(num_iter=num_frames)`` on ``env`` (jit-able)."""
    return stats_from_moments(init_moments(env, key, num_frames), mode)
