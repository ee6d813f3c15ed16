"""Environments: the MJX ``InvertedDoublePendulum-v4`` and its vectorized auto-reset wrapper.

The Brax adapter lives in :mod:`ppo_jax.envs.brax_env` (imported on demand, it registers the
env with ``brax.envs``).
"""

from ppo_jax.envs.inverted_double_pendulum import (
    ACTION_SIZE,
    ENV_ID,
    OBSERVATION_SIZE,
    EnvState,
    InvertedDoublePendulum,
)
from ppo_jax.envs.vector import StepOutput, VectorEnv

__all__ = [
    "ACTION_SIZE",
    "ENV_ID",
    "OBSERVATION_SIZE",
    "EnvState",
    "InvertedDoublePendulum",
    "StepOutput",
    "VectorEnv",
]
