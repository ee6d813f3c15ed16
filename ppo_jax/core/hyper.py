"""Hyperparameters that are data, not program: what a sweep may vary within one compiled program.

The fields of :class:`Hyper` (:data:`SWEEPABLE`) change no shape and no control flow, so the
training program takes them as traced values (a :class:`Hyper` in each run's state) instead of
baking them in as constants. One compiled program then serves every value: a run, a sweep over a grid of
values (vmapped, one row per run), and a rerun with another learning rate all share it.

Every other :class:`~ppo_jax.config.PPOConfig` field (sizes, counts, choices, flags) shapes
the program; sweeping one is refused with a line that names it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ppo_jax.config import PPOConfig

@struct.dataclass
class Hyper:
    """The sweepable values of one run, as scalars of the default float dtype (``[R]`` for R
    runs). Each field is the :class:`~ppo_jax.config.PPOConfig` field of the same name."""

    lr: jax.Array
    clip_epsilon: jax.Array
    gamma: jax.Array
    lmbda: jax.Array
    entropy_coeff: jax.Array
    critic_coeff: jax.Array
    max_grad_norm: jax.Array


SWEEPABLE: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Hyper))


def hyper_dtype() -> np.dtype:
    """The precision the programs take the sweepable values in: float32, or float64 under
    x64 (parity tests)."""
    return np.dtype(jnp.result_type(float))


def hyper_of(config: PPOConfig) -> Hyper:
    """``config``'s sweepable values as a :class:`Hyper` of numpy scalars (made on the host:
    no device op, nothing to compile; a trace takes them as constants)."""
    dtype = hyper_dtype()
    return Hyper(**{name: np.asarray(getattr(config, name), dtype) for name in SWEEPABLE})


def program_config(config: PPOConfig) -> PPOConfig:
    """``config`` with what its compiled programs take as inputs or never read at their
    defaults: what a program depends on (its cache key). Seeds, like hyperparameters, are
    program inputs; so is the lr schedule's phase step, the one number the run's length
    enters (:func:`ppo_jax.core.optim.cosine_phase_step`); when to evaluate is the host
    loop's choice.
    ``total_frames`` becomes one batch (any length gives the same programs)."""
    names = (*SWEEPABLE, "seed", "eval_every", "eval_sim")
    return config.replace(total_frames=config.frames_per_batch,
                          **{name: getattr(PPOConfig(), name) for name in names})
