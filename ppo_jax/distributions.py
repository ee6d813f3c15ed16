"""Tanh-Normal policy distribution (TorchRL's ``TanhNormal(low=-1, high=1)``) on distrax.

The port keeps the PRE-tanh sample ``u``: the action is ``tanh(u)`` and its log-prob is
``Normal(loc, scale).log_prob(u) - log|d tanh(u)/du|`` in the stable form
``2 (log 2 - u - softplus(-2u))``; atanh is never applied to a sampled action.

TorchRL stores the post-tanh action and recomputes ``u = atanh(clamp(a, +-(1 - 1e-6)))``
(``SafeTanhTransform``; 1e-6 is float32's resolution). :func:`log_prob_from_action` is that
path, kept for parity tests and for actions that come from outside; both agree wherever
``|a| < 1 - 1e-6``. Sampled actions are clamped to ``+-(1 - resolution)`` like TorchRL's.

All functions act on ``loc``, ``scale``: ``[..., action_dim]``; log-probs sum over the last
axis (``event_dims=1``) and have shape ``[...]``.
"""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
import numpy as np


def _resolution(dtype) -> float:
    return float(np.finfo(dtype).resolution)


def safe_tanh(u: jax.Array) -> jax.Array:
    """``tanh`` clamped to ``+-(1 - resolution)`` (TorchRL's ``safetanh_noeps``)."""
    lim = 1.0 - _resolution(u.dtype)
    return jnp.clip(jnp.tanh(u), -lim, lim)


def safe_atanh(a: jax.Array) -> jax.Array:
    """``atanh`` of ``a`` clamped to ``+-(1 - resolution)`` (TorchRL's ``safeatanh_noeps``)."""
    lim = 1.0 - _resolution(a.dtype)
    return jnp.arctanh(jnp.clip(a, -lim, lim))


def tanh_log_det_jacobian(u: jax.Array) -> jax.Array:
    """``log(1 - tanh(u)^2)`` in the stable form, elementwise."""
    return 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))


def base_distribution(loc: jax.Array, scale: jax.Array) -> distrax.Distribution:
    """``Independent(Normal(loc, scale), 1)``: the pre-tanh distribution."""
    return distrax.Independent(distrax.Normal(loc, scale), reinterpreted_batch_ndims=1)


def log_prob_pre_tanh(loc: jax.Array, scale: jax.Array, u: jax.Array) -> jax.Array:
    """Log-density of the action ``tanh(u)`` given its pre-tanh value ``u``."""
    return base_distribution(loc, scale).log_prob(u) - tanh_log_det_jacobian(u).sum(-1)


def log_prob_from_action(loc: jax.Array, scale: jax.Array, action: jax.Array) -> jax.Array:
    """TorchRL's ``TanhNormal.log_prob(action)``: through ``safe_atanh`` of the action."""
    return log_prob_pre_tanh(loc, scale, safe_atanh(action))


def sample(
    key: jax.Array, loc: jax.Array, scale: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Draw ``(action, pre_tanh, log_prob)``; differentiable w.r.t. loc/scale (rsample)."""
    u = loc + scale * jax.random.normal(key, loc.shape, loc.dtype)
    return safe_tanh(u), u, log_prob_pre_tanh(loc, scale, u)


def entropy_estimate(key: jax.Array, loc: jax.Array, scale: jax.Array) -> jax.Array:
    """1-sample Monte-Carlo entropy ``-log_prob(fresh reparameterized sample)``, ``[...]``.

    TanhNormal has no closed-form entropy; TorchRL's ``ClipPPOLoss`` uses exactly this
    (``samples_mc_entropy=1``, pathwise gradients).
    """
    _, _, log_prob = sample(key, loc, scale)
    return -log_prob


# Gauss-Hermite nodes/weights (probabilists' form, normalized) for E[f(X)], X ~ N(0, 1).
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(64)
_GH_W = _GH_W / _GH_W.sum()


def mean_action(loc: jax.Array, scale: jax.Array) -> jax.Array:
    """``E[tanh(X)]``, ``X ~ N(loc, scale)``: the action distribution's mean.

    TorchRL's ``ExplorationType.MEAN`` estimates this with the average of 1000 samples (the
    TanhNormal has no closed-form mean); 64-node Gauss-Hermite quadrature computes it
    deterministically.
    """
    x = jnp.asarray(_GH_X, loc.dtype)
    w = jnp.asarray(_GH_W, loc.dtype)
    vals = safe_tanh(loc[..., None] + scale[..., None] * x)
    return (vals * w).sum(-1)


def deterministic_action(loc: jax.Array, scale: jax.Array, mode: str = "mean") -> jax.Array:
    """Evaluation action: ``"mean"`` (:func:`mean_action`) or ``"tanh_loc"`` (``tanh(loc)``)."""
    if mode == "mean":
        return mean_action(loc, scale)
    if mode == "tanh_loc":
        return safe_tanh(loc)
    raise ValueError(f"unknown eval action mode {mode!r}")
