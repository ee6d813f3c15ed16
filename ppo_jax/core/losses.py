"""TorchRL's ``ClipPPOLoss`` (tutorial settings) as one pure function.

For a minibatch of ``B`` samples with stored pre-tanh actions ``u``, old log-probs, (already
standardized) advantages ``A`` and value targets::

    log_w          = log pi(u | s) - log pi_old(u | s)
    loss_objective = -mean(min(exp(log_w) A, exp(clip(log_w, log(1-eps), log(1+eps))) A))
    loss_entropy   = -entropy_coeff * mean(-log pi(u~ | s)),  u~ a fresh rsample (MC, 1 sample)
    loss_critic    = critic_coeff * mean(distance(target, V(s)))      (smooth-L1, beta = 1)

Diagnostics as TorchRL names them: ``clip_fraction`` (share of clipped log-weights),
``kl_approx`` = mean(log pi_old - log pi), ``ESS`` = exp(2 lse(log_w) - lse(2 log_w)) / B,
``entropy`` (the MC estimate).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from ppo_jax.core import distributions


@struct.dataclass
class Params:
    """Separate actor and critic parameter trees (flax ``{"params": ...}`` collections)."""

    actor: dict
    critic: dict


@struct.dataclass
class Minibatch:
    """Inputs of the loss, each ``[B, ...]``.

    Attributes:
      obs: ``[B, obs_dim]`` normalized observations.
      pre_tanh: ``[B, action_dim]`` pre-tanh sample the action came from.
      log_prob: ``[B]`` its log-prob under the policy that collected it.
      advantage: ``[B]`` (standardized when the config says so).
      value_target: ``[B]``.
      weight: ``[B]`` float32 1 or 0 (None: every row counts): the loss's means are over
        the rows of weight 1 (a short minibatch padded to ``B`` rows,
        :func:`ppo_jax.core.sampling.stream_rows`).
    """

    obs: jax.Array
    pre_tanh: jax.Array
    log_prob: jax.Array
    advantage: jax.Array
    value_target: jax.Array
    weight: jax.Array | None = None


@struct.dataclass
class LossMetrics:
    """Scalars of one loss evaluation (names as in TorchRL's loss output)."""

    loss: jax.Array
    loss_objective: jax.Array
    loss_critic: jax.Array
    loss_entropy: jax.Array
    entropy: jax.Array
    clip_fraction: jax.Array
    kl_approx: jax.Array
    ESS: jax.Array


def distance(target: jax.Array, pred: jax.Array, kind: str) -> jax.Array:
    """Elementwise critic distance: ``smooth_l1`` (beta 1), ``l2`` (squared) or ``l1``."""
    d = pred - target
    if kind == "smooth_l1":
        ad = jnp.abs(d)
        return jnp.where(ad < 1.0, 0.5 * d * d, ad - 0.5)
    if kind == "l2":
        return d * d
    if kind == "l1":
        return jnp.abs(d)
    raise ValueError(f"unknown critic loss {kind!r}")


def ppo_loss(
    params: Params,
    batch: Minibatch,
    key: jax.Array,
    *,
    actor_apply,
    critic_apply,
    clip_epsilon: float,
    entropy_coeff: float,
    critic_coeff: float,
    critic_loss: str = "smooth_l1",
    bounds: distributions.Bounds | None = None,
) -> tuple[jax.Array, LossMetrics]:
    """Total loss (objective + critic + entropy terms) and its metrics.

    ``actor_apply(actor_params, obs) -> (loc, scale)``; ``critic_apply(critic_params, obs) ->
    value``. ``key`` draws the entropy sample; ``bounds``: the env's action bounds (None: [-1, 1]).
    """
    w = batch.weight
    if w is None:
        mean, lse, count = jnp.mean, jax.nn.logsumexp, batch.advantage.shape[0]
    else:  # over the rows of weight 1 only
        count = w.sum()

        def mean(x):
            return (x * w).sum() / count

        def lse(x):
            return jax.nn.logsumexp(x, b=w)

    loc, scale = actor_apply(params.actor, batch.obs)
    log_prob = distributions.log_prob_pre_tanh(loc, scale, batch.pre_tanh, bounds)
    log_w = log_prob - batch.log_prob
    lo, hi = jnp.log1p(-clip_epsilon), jnp.log1p(clip_epsilon)
    log_w_clip = jnp.clip(log_w, lo, hi)
    gain = jnp.minimum(jnp.exp(log_w) * batch.advantage, jnp.exp(log_w_clip) * batch.advantage)
    loss_objective = -mean(gain)

    entropy = distributions.entropy_estimate(key, loc, scale, bounds)
    loss_entropy = -entropy_coeff * mean(entropy)

    value = critic_apply(params.critic, batch.obs)
    loss_critic = critic_coeff * mean(distance(batch.value_target, value, critic_loss))

    sg_log_w = jax.lax.stop_gradient(log_w)
    ess = jnp.exp(2.0 * lse(sg_log_w) - lse(2.0 * sg_log_w)) / count
    loss = loss_objective + loss_critic + loss_entropy
    metrics = LossMetrics(
        loss=loss,
        loss_objective=loss_objective,
        loss_critic=loss_critic,
        loss_entropy=loss_entropy,
        entropy=jax.lax.stop_gradient(mean(entropy)),
        clip_fraction=mean((log_w_clip != log_w).astype(log_w.dtype)),
        kl_approx=jax.lax.stop_gradient(-mean(log_w)),
        ESS=ess,
    )
    return loss, metrics
