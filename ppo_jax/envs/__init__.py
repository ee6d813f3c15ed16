"""Environments: the env protocol (:mod:`~ppo_jax.envs.base`), the Gymnasium MuJoCo ports on
MJX (one file per env), the registry of env ids (:mod:`~ppo_jax.envs.registry`), the
vectorized auto-reset wrapper, and adapters for Brax and MuJoCo Playground envs
(:mod:`~ppo_jax.envs.external`, imported on demand).

The Brax adapter of the pendulum (for the Brax benchmark) lives in :mod:`ppo_jax.bench.brax_env`.
"""

from ppo_jax.envs.base import Env, EnvError, EnvState, MujocoEnv, check_env
from ppo_jax.envs.inverted_double_pendulum import (
    ACTION_SIZE,
    ENV_ID,
    OBSERVATION_SIZE,
    InvertedDoublePendulum,
)
from ppo_jax.envs.registry import DEFAULT_ENV, PORTS, make_env, valid_ids
from ppo_jax.envs.vector import StepOutput, VectorEnv

__all__ = [
    "ACTION_SIZE",
    "DEFAULT_ENV",
    "ENV_ID",
    "Env",
    "EnvError",
    "EnvState",
    "InvertedDoublePendulum",
    "MujocoEnv",
    "OBSERVATION_SIZE",
    "PORTS",
    "StepOutput",
    "VectorEnv",
    "check_env",
    "make_env",
    "valid_ids",
]
