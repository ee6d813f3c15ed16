"""Optimizer: global-norm gradient clipping, then Adam with a per-batch cosine schedule.

TorchRL's tutorial clips the global norm over actor AND critic parameters together
(``clip_grad_norm_(loss_module.parameters(), 1.0)``), steps Adam, and steps
``CosineAnnealingLR(T_max=num_batches, eta_min=0)`` once per batch, so the learning rate is
constant across a batch's minibatch updates::

    lr(batch i) = lr0 * (1 + cos(pi * i / num_batches)) / 2

The optimizer's own update count drives the schedule (``i = count // updates_per_batch``), so
a restored optimizer state resumes the schedule where it stopped.

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


def make_optimizer(config: PPOConfig, hyper=None) -> optax.GradientTransformation:
    """The optimizer of ``config``; with ``hyper`` (a :class:`~ppo_jax.hyper.Hyper`, possibly
    traced) its ``lr`` and ``max_grad_norm`` replace the config's. Its state's structure does
    not depend on either, so one ``init`` serves every value."""
    per_batch = updates_per_batch(config)
    lr = None if hyper is None else hyper.lr
    max_norm = config.max_grad_norm if hyper is None else hyper.max_grad_norm

    def schedule(count):
        return lr_at_batch(config, count // per_batch, lr)

    return optax.chain(
        optax.clip_by_global_norm(max_norm),
        optax.adam(learning_rate=schedule, b1=0.9, b2=0.999, eps=1e-8),
    )
