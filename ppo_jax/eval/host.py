"""Training's evaluation in MuJoCo C on the host: :class:`MujocoEvaluator`.

The evaluation logged after batch ``i`` (:meth:`ppo_jax.core.train.Trainer.evaluate_after`:
one deterministic episode of ``config.eval_action``, up to ``config.eval_max_steps`` steps,
from ``eval_episode_key(eval_key, i)``) run in the Gymnasium port's MuJoCo C twin
(:class:`ppo_jax.envs.mujoco_c.MujocoCEnv`, the simulator the TorchRL tutorial trains on)
instead of MJX: the same start state (the MJX reset of that key, :func:`~ppo_jax.eval.evaluate.
mjx_start_states`) and the same policy (:func:`~ppo_jax.eval.evaluate.make_host_policy`: the
float32 actor on the float64 observation normalized in float64, as TorchRL). Everything runs
on the host's CPU device, whatever device trains, so that the evaluation of batch ``i`` runs
in a worker thread while the device trains the next batches (:mod:`ppo_jax.run.host_eval`
is the thread, ``--eval-sim`` / :attr:`~ppo_jax.config.PPOConfig.eval_sim` the choice).

Same returns as MJX's evaluation within float32 noise: over the horizon where float32 MJX
and MuJoCo C agree (``tests/test_mujoco_c.py``), the episode lengths are equal and the
returns agree within 1e-4 relative (``tests/test_host_eval.py``; 1.2e-7 measured there).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from ppo_jax.core.acting import eval_episode_key
from ppo_jax.core.train import EvalMetrics
from ppo_jax.envs.mujoco_c import MujocoCEnv
from ppo_jax.eval.evaluate import make_host_policy, mjx_start_states, mujoco_episode


class MujocoEvaluator:
    """``evaluator(actor_params [R], obs_stats [R], eval_key [R], i) -> EvalMetrics [R]``
    (host arrays in, numpy out): the evaluation after batch ``i`` of each of the R runs of
    ``trainer``, in MuJoCo C, on the CPU device. ``ValueError`` (one line) for an env without
    a MuJoCo C twin (``brax:``, ``playground:``, an env of your own). The factory that
    :func:`ppo_jax.run.runner.fit` / ``run_training`` take as ``host_evaluator``."""

    def __init__(self, trainer, num_runs: int):
        self.trainer = trainer
        self.num_runs = int(num_runs)
        self.env = MujocoCEnv(trainer.env, max_episode_steps=trainer.env.max_episode_steps)
        self.cpu = _cpu_device()
        cfg = trainer.config
        self.max_steps, self.mode = int(cfg.eval_max_steps), cfg.eval_action

    def __call__(self, actor_params, obs_stats, eval_key, i: int) -> EvalMetrics:
        returns = np.zeros(self.num_runs, np.float32)
        steps = np.zeros(self.num_runs, np.int32)
        for r in range(self.num_runs):
            row = functools.partial(_row, r=r)
            ret, n = self.episode(jax.tree_util.tree_map(row, actor_params),
                                  jax.tree_util.tree_map(row, obs_stats),
                                  np.asarray(eval_key)[r], i)
            returns[r], steps[r] = ret, n - 1  # TorchRL's step_count.max(): length - 1
        return EvalMetrics(eval_return=returns, eval_steps=steps)

    def episode(self, actor_params, obs_stats, eval_key, i: int) -> tuple[np.float32, int]:
        """``(return as float32, length)`` of the evaluation episode after batch ``i`` of ONE
        run (its actor parameters, normalization statistics and ``eval_key``)."""
        with jax.default_device(self.cpu):
            key = jax.device_put(eval_episode_key(jax.device_put(eval_key, self.cpu), i),
                                 self.cpu)
            qpos, qvel = mjx_start_states(self.trainer.env, key[None])
            params = jax.device_put(actor_params, self.cpu)
            policy = make_host_policy(self.trainer.actor_apply, params, obs_stats, self.mode,
                                      key, self.trainer.bounds)
            ep = mujoco_episode(self.env, policy, qpos[0], qvel[0], self.max_steps)
        return np.float32(ep.episode_return), ep.length


def _cpu_device():
    """The host's CPU device; where JAX runs without its CPU backend (``JAX_PLATFORMS=cuda``)
    JAX's default device (the policy's per-step calls then go to the accelerator)."""
    try:
        return jax.devices("cpu")[0]
    except RuntimeError:
        return jax.devices()[0]


def _row(x, r: int):
    return np.asarray(x)[r]
