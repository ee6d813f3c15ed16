"""``InvertedDoublePendulum-v4`` in MuJoCo C: the simulator the TorchRL tutorial trains on.

:class:`MujocoEnv` steps the same MJCF as the MJX env through ``mujoco``'s C API with
Gymnasium v4's semantics: ``ctrl = action``, ``mj_step`` x ``frame_skip`` (5), then
``mj_rnePostConstraint``; observation, reward and ``terminated = y_tip <= 1`` as in
:mod:`ppo_jax.envs.inverted_double_pendulum`; ``truncated`` at 1000 steps; reset
``qpos0 + U(-0.1, 0.1)``, ``0.1 N(0, 1)``. Unlike the MJX env it keeps MuJoCo's default
solver settings (100 iterations, 50 line-search iterations, warm start), as Gymnasium does.
Everything is float64.

A restored policy runs in it through :mod:`ppo_jax.evaluate` (:func:`~ppo_jax.evaluate.
mujoco_episodes`, from the start states of MJX's episodes).
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np

from ppo_jax.envs.inverted_double_pendulum import load_mj_model


def default_solver_model() -> mujoco.MjModel:
    """The v4 MJCF with MuJoCo's default solver options (cached; read-only)."""
    opt = mujoco.MjOption()
    return load_mj_model(opt.iterations, opt.ls_iterations, warmstart=True)


@dataclasses.dataclass(frozen=True)
class Step:
    """One env step: ``obs`` ``[11]`` float64, ``reward``, ``terminated``, ``truncated``."""

    obs: np.ndarray
    reward: float
    terminated: bool
    truncated: bool

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


class MujocoEnv:
    """Gymnasium ``InvertedDoublePendulum-v4`` on MuJoCo C (one env, stateful, host side).

    Args:
      max_episode_steps: time limit (``truncated`` on the step that reaches it).
      frame_skip: physics steps of 0.01 s per env step.
      reset_noise_scale: half-width of the uniform qpos noise and std of the qvel noise.
    """

    def __init__(
        self, max_episode_steps: int = 1000, frame_skip: int = 5, reset_noise_scale: float = 0.1
    ):
        self.model = default_solver_model()
        self.data = mujoco.MjData(self.model)
        self.max_episode_steps = int(max_episode_steps)
        self.frame_skip = int(frame_skip)
        self.reset_noise_scale = float(reset_noise_scale)
        self.dt = self.model.opt.timestep * self.frame_skip
        self.steps = 0

    def observation(self) -> np.ndarray:
        """``[11]``: qpos[0], sin/cos(qpos[1:]), clip(qvel), clip(qfrc_constraint)."""
        d = self.data
        return np.concatenate([
            d.qpos[:1],
            np.sin(d.qpos[1:]),
            np.cos(d.qpos[1:]),
            np.clip(d.qvel, -10.0, 10.0),
            np.clip(d.qfrc_constraint, -10.0, 10.0),
        ])

    def reset_to(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Start from ``qpos`` ``[3]``, ``qvel`` ``[3]`` (Gymnasium's ``set_state``); obs."""
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = np.asarray(qpos, np.float64)
        self.data.qvel[:] = np.asarray(qvel, np.float64)
        mujoco.mj_forward(self.model, self.data)
        self.steps = 0
        return self.observation()

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        """v4's reset: ``qpos0 + U(-s, s)``, ``s N(0, 1)``; obs."""
        s = self.reset_noise_scale
        qpos = self.model.qpos0 + rng.uniform(-s, s, self.model.nq)
        qvel = s * rng.standard_normal(self.model.nv)
        return self.reset_to(qpos, qvel)

    def step(self, action: np.ndarray) -> Step:
        """``ctrl = action`` (``[1]``; MuJoCo clamps it to [-1, 1]), ``frame_skip`` steps."""
        self.data.ctrl[:] = np.asarray(action, np.float64).reshape(-1)
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        mujoco.mj_rnePostConstraint(self.model, self.data)
        self.steps += 1
        x, _, y = self.data.site_xpos[0]
        v1, v2 = self.data.qvel[1:3]
        reward = 10.0 - (0.01 * x**2 + (y - 2.0) ** 2) - (1e-3 * v1**2 + 5e-3 * v2**2)
        return Step(
            obs=self.observation(),
            reward=float(reward),
            terminated=bool(y <= 1.0),
            truncated=self.steps >= self.max_episode_steps,
        )

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of ``(qpos [3], qvel [3])``."""
        return self.data.qpos.copy(), self.data.qvel.copy()


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """``T`` steps of fixed actions. ``obs`` ``[T + 1, 11]``, ``qpos``/``qvel`` ``[T + 1, 3]``
    (row 0: the start), ``reward``/``terminated`` ``[T]``."""

    obs: np.ndarray
    qpos: np.ndarray
    qvel: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray


def run_actions(env: MujocoEnv, qpos, qvel, actions: np.ndarray) -> Trajectory:
    """Step ``env`` from ``(qpos, qvel)`` through ``actions`` ``[T, 1]``, past terminations."""
    obs = [env.reset_to(qpos, qvel)]
    states = [env.state]
    rewards, terms = [], []
    for a in np.asarray(actions):
        s = env.step(a)
        obs.append(s.obs)
        states.append(env.state)
        rewards.append(s.reward)
        terms.append(s.terminated)
    return Trajectory(
        obs=np.array(obs),
        qpos=np.array([q for q, _ in states]),
        qvel=np.array([v for _, v in states]),
        reward=np.array(rewards),
        terminated=np.array(terms),
    )
