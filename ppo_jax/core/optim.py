"""Optimizer: global-norm gradient clipping, then Adam with a per-batch cosine schedule.

TorchRL's tutorial clips the global norm over actor AND critic parameters together
(``clip_grad_norm_(loss_module.parameters(), 1.0)``), steps Adam, and steps
``CosineAnnealingLR(T_max=num_batches, eta_min=0)`` once per batch, so the learning rate is
constant across a batch's minibatch updates::

    lr(batch i) = lr0 * (1 + cos(pi * i / num_batches)) / 2

The schedule's one length-dependent number, the phase step ``pi / num_batches``
(:func:`cosine_phase_step`), is an input of the update program, not a constant baked into it: runs
that differ only in ``total_frames`` share one compiled program (a longer run starts warm).
It is computed in float32 as XLA folds the constant expression ``pi * (i / num_batches)``
(``i * fl(fl(pi) * fl(1 / num_batches))``), so the learning rates are bit for bit those of a
program with the length baked in (``tests/test_train.py`` checks it).

The optimizer is built once per config (:func:`make_optimizer`). Its learning rate and clip
norm are hyperparameters held in its state (``optax.inject_hyperparams``), so a run's traced
values (:class:`~ppo_jax.core.hyper.Hyper`: a sweep's, or a rerun's) enter through
:func:`with_hyper` before each update, with the same compiled program serving every value.
The optimizer's own update count drives the schedule (``i = count // updates_per_batch``),
so a restored optimizer state resumes the schedule where it stopped.

``optax.clip_by_global_norm`` scales by ``max/norm`` when ``norm > max``; torch's
``clip_grad_norm_`` by ``max/(norm + 1e-6)``: a relative difference below ``1e-6/norm``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from ppo_jax.config import PPOConfig


def cosine_phase_step(config: PPOConfig) -> np.float32:
    """The cosine schedule's phase step per batch, ``pi / num_batches``, in float32 exactly
    as XLA folds it from ``pi * (i / num_batches)``: ``fl(fl(pi) * fl(1 / num_batches))``."""
    inverse = np.float32(1.0) / np.float32(config.num_batches)
    return np.float32(np.float32(np.pi) * inverse)


def lr_at_batch(config: PPOConfig, batch, lr=None, rate=None):
    """Learning rate used for the updates of batch ``batch`` (int or int array); ``lr`` (a
    traced value of a sweep) replaces ``config.lr``, ``rate`` (traced: a program input)
    replaces :func:`cosine_phase_step` of the config."""
    lr = config.lr if lr is None else lr
    if not config.anneal_lr:
        return jnp.full(jnp.shape(batch), lr, jnp.float32)
    rate = cosine_phase_step(config) if rate is None else rate
    return lr * 0.5 * (1.0 + jnp.cos(jnp.asarray(batch, jnp.float32) * rate))


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


def with_hyper(opt_state, config: PPOConfig, hyper, rate=None) -> optax.OptState:
    """``opt_state`` set for its next update: the learning rate of the batch its update
    count is in (from ``hyper.lr``, the run's base rate, and ``rate``, see
    :func:`lr_at_batch`) and the run's ``max_grad_norm``."""
    batch = opt_state.count // updates_per_batch(config)
    old = opt_state.hyperparams
    hyperparams = dict(
        old,
        learning_rate=jnp.asarray(lr_at_batch(config, batch, hyper.lr, rate),
                                  old["learning_rate"].dtype),
        max_norm=jnp.asarray(hyper.max_grad_norm, old["max_norm"].dtype))
    return opt_state._replace(hyperparams=hyperparams)
