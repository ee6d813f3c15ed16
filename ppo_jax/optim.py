"""Optimizer: global-norm gradient clipping, then Adam with a per-batch cosine schedule.

TorchRL's tutorial clips the global norm over actor AND critic parameters together
(``clip_grad_norm_(loss_module.parameters(), 1.0)``), steps Adam, and steps
``CosineAnnealingLR(T_max=num_batches, eta_min=0)`` once per batch, so the learning rate is
constant across a batch's minibatch updates::

    lr(batch i) = lr0 * (1 + cos(pi * i / num_batches)) / 2

The optimizer is built once per config (:func:`make_optimizer`). Its learning rate and clip
norm are hyperparameters held in its state (``optax.inject_hyperparams``), so a run's traced
values (:class:`~ppo_jax.hyper.Hyper`: a sweep's, or a rerun's) enter through
:func:`with_hyper` before each update, with the same compiled program serving every value.
The optimizer's own update count drives the schedule (``i = count // updates_per_batch``),
so a restored optimizer state resumes the schedule where it stopped.

``optax.clip_by_global_norm`` scales by ``max/norm`` when ``norm > max``; torch's
``clip_grad_norm_`` by ``max/(norm + 1e-6)``: a relative difference below ``1e-6/norm``.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from ppo_jax.config import PPOConfig


def lr_at_batch(config: PPOConfig, batch, lr=None):
    """Learning rate used for the updates of batch ``batch`` (int or int array); ``lr`` (a
    traced value of a sweep) replaces ``config.lr``."""
    lr = config.lr if lr is None else lr
    if not config.anneal_lr:
        return jnp.full(jnp.shape(batch), lr, jnp.float32)
    frac = jnp.asarray(batch, jnp.float32) / config.num_batches
    return lr * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))


def updates_per_batch(config: PPOConfig) -> int:
    return config.num_epochs * config.num_minibatches


def _clip_then_adam(learning_rate, max_norm) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(max_norm),
        optax.adam(learning_rate=learning_rate, b1=0.9, b2=0.999, eps=1e-8),
    )


def make_optimizer(config: PPOConfig) -> optax.GradientTransformation:
    """Clip by global norm, then Adam; ``learning_rate`` and ``max_norm`` live in the state
    (see :func:`with_hyper`). Its state's structure does not depend on their values, so one
    ``init`` and one program serve every run."""
    return optax.inject_hyperparams(_clip_then_adam)(
        learning_rate=config.lr, max_norm=config.max_grad_norm)


def with_hyper(opt_state, config: PPOConfig, hyper) -> optax.OptState:
    """``opt_state`` set for its next update: the learning rate of the batch its update
    count is in (from ``hyper.lr``, the run's base rate) and the run's ``max_grad_norm``."""
    batch = opt_state.count // updates_per_batch(config)
    old = opt_state.hyperparams
    hyperparams = dict(
        old,
        learning_rate=jnp.asarray(lr_at_batch(config, batch, hyper.lr),
                                  old["learning_rate"].dtype),
        max_norm=jnp.asarray(hyper.max_grad_norm, old["max_norm"].dtype))
    return opt_state._replace(hyperparams=hyperparams)
