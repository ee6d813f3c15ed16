"""Tanh-Normal policy distribution (TorchRL's ``TanhNormal(low, high)``) on distrax.

The port keeps the PRE-tanh sample ``u``: the action is ``tanh(u)`` and its log-prob is
``Normal(loc, scale).log_prob(u) - log|d tanh(u)/du|`` in the stable form
``2 (log 2 - u - softplus(-2u))``; atanh is never applied to a sampled action.

TorchRL stores the post-tanh action and recomputes ``u = atanh(clamp(a, +-(1 - 1e-6)))``
(``SafeTanhTransform``; 1e-6 is float32's resolution). :func:`log_prob_from_action` is that
path, kept for parity tests and for actions that come from outside; both agree wherever
``|a| < 1 - 1e-6``, up to the rounding of ``a``, which atanh magnifies by ``1 / (1 - a**2)``
near the clamp. Sampled actions are clamped to ``+-(1 - resolution)`` like TorchRL's.

Action bounds other than [-1, 1] (:class:`Bounds`, the env's) follow TorchRL: the action is
``mid + half * tanh(u)`` with ``mid = (high + low) / 2``, ``half = (high - low) / 2`` (its
``AffineTransform`` after the ``SafeTanhTransform``), and the log-prob subtracts the affine
map's log-Jacobian ``sum(log half)``. Unit bounds take the plain path (TorchRL skips the affine
map there too), so a [-1, 1] env computes exactly what it did without bounds.

All functions act on ``loc``, ``scale``: ``[..., action_dim]``; log-probs sum over the last
axis (``event_dims=1``) and have shape ``[...]``.
"""

from __future__ import annotations

import dataclasses

import distrax
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Bounds:
    """Action bounds ``[low, high]`` per action dimension (static: constants of the program)."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    @classmethod
    def of(cls, low, high) -> "Bounds | None":
        """The bounds, or None where they are [-1, 1] in every dimension (the plain path)."""
        low = tuple(float(x) for x in np.asarray(low, np.float64).reshape(-1))
        high = tuple(float(x) for x in np.asarray(high, np.float64).reshape(-1))
        if all(lo == -1.0 for lo in low) and all(hi == 1.0 for hi in high):
            return None
        if len(low) != len(high) or not all(hi > lo for lo, hi in zip(low, high)):
            raise ValueError(f"action bounds need high > low, got {low} and {high}")
        return cls(low, high)

    def mid_half(self, dtype) -> tuple[jax.Array, jax.Array]:
        low, high = np.asarray(self.low), np.asarray(self.high)
        return jnp.asarray((high + low) / 2, dtype), jnp.asarray((high - low) / 2, dtype)

    def squash(self, unit: jax.Array) -> jax.Array:
        """``[-1, 1]`` -> ``[low, high]``."""
        mid, half = self.mid_half(unit.dtype)
        return mid + half * unit

    def unsquash(self, action: jax.Array) -> jax.Array:
        mid, half = self.mid_half(action.dtype)
        return (action - mid) / half

    def log_det(self, dtype) -> jax.Array:
        """``sum(log half)``: the affine map's log-Jacobian over the action's dimensions."""
        return jnp.log(self.mid_half(dtype)[1]).sum()


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


def saturated(u: jax.Array) -> jax.Array:
    """Whether the action of ``u`` sits at tanh's clamp in some dimension: ``|tanh(u_j)| >= 1 -
    resolution`` (float32: ``|u_j| >= ~7.25``), where TorchRL's ``log_prob`` of the stored
    action (:func:`log_prob_from_action`) no longer sees ``u``. Boolean ``[...]``."""
    lim = 1.0 - _resolution(u.dtype)
    return jnp.any(jnp.abs(jnp.tanh(u)) >= lim, axis=-1)


def tanh_log_det_jacobian(u: jax.Array) -> jax.Array:
    """``log(1 - tanh(u)^2)`` in the stable form, elementwise."""
    return 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))


def base_distribution(loc: jax.Array, scale: jax.Array) -> distrax.Distribution:
    """``Independent(Normal(loc, scale), 1)``: the pre-tanh distribution."""
    return distrax.Independent(distrax.Normal(loc, scale), reinterpreted_batch_ndims=1)


def log_prob_pre_tanh(
    loc: jax.Array, scale: jax.Array, u: jax.Array, bounds: Bounds | None = None
) -> jax.Array:
    """Log-density of the action ``squash(tanh(u))`` given its pre-tanh value ``u``."""
    log_prob = base_distribution(loc, scale).log_prob(u) - tanh_log_det_jacobian(u).sum(-1)
    return log_prob if bounds is None else log_prob - bounds.log_det(log_prob.dtype)


def log_prob_from_action(
    loc: jax.Array, scale: jax.Array, action: jax.Array, bounds: Bounds | None = None
) -> jax.Array:
    """TorchRL's ``TanhNormal.log_prob(action)``: through ``safe_atanh`` of the action (mapped
    back from ``[low, high]`` first)."""
    unit = action if bounds is None else bounds.unsquash(action)
    return log_prob_pre_tanh(loc, scale, safe_atanh(unit), bounds)


def squash(u: jax.Array, bounds: Bounds | None = None) -> jax.Array:
    """The action of the pre-tanh value ``u``: ``safe_tanh(u)`` mapped onto the bounds."""
    return safe_tanh(u) if bounds is None else bounds.squash(safe_tanh(u))


def sample(
    key: jax.Array, loc: jax.Array, scale: jax.Array, bounds: Bounds | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Draw ``(action, pre_tanh, log_prob)``; differentiable w.r.t. loc/scale (rsample)."""
    u = loc + scale * jax.random.normal(key, loc.shape, loc.dtype)
    return squash(u, bounds), u, log_prob_pre_tanh(loc, scale, u, bounds)


def entropy_estimate(
    key: jax.Array, loc: jax.Array, scale: jax.Array, bounds: Bounds | None = None
) -> jax.Array:
    """1-sample Monte-Carlo entropy ``-log_prob(fresh reparameterized sample)``, ``[...]``.

    TanhNormal has no closed-form entropy; TorchRL's ``ClipPPOLoss`` uses exactly this
    (``samples_mc_entropy=1``, pathwise gradients).
    """
    _, _, log_prob = sample(key, loc, scale, bounds)
    return -log_prob


# Gauss-Hermite nodes/weights (probabilists' form, normalized) for E[f(X)], X ~ N(0, 1).
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(64)
_GH_W = _GH_W / _GH_W.sum()


def mean_action(loc: jax.Array, scale: jax.Array, bounds: Bounds | None = None) -> jax.Array:
    """``E[tanh(X)]``, ``X ~ N(loc, scale)``: the action distribution's mean.

    TorchRL's ``ExplorationType.MEAN`` estimates this with the average of 1000 samples (the
    TanhNormal has no closed-form mean); 64-node Gauss-Hermite quadrature computes it
    deterministically.
    """
    x = jnp.asarray(_GH_X, loc.dtype)
    w = jnp.asarray(_GH_W, loc.dtype)
    vals = safe_tanh(loc[..., None] + scale[..., None] * x)
    mean = (vals * w).sum(-1)
    return mean if bounds is None else bounds.squash(mean)


def deterministic_action(
    loc: jax.Array, scale: jax.Array, mode: str = "mean", bounds: Bounds | None = None
) -> jax.Array:
    """Evaluation action: ``"mean"`` (:func:`mean_action`) or ``"tanh_loc"`` (``tanh(loc)``),
    on the bounds."""
    if mode == "mean":
        return mean_action(loc, scale, bounds)
    if mode == "tanh_loc":
        return squash(loc, bounds)
    raise ValueError(f"unknown eval action mode {mode!r}")
