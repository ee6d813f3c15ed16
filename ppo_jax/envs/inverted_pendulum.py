"""Gymnasium ``InvertedPendulum-v4`` on MJX (``gymnasium/envs/mujoco/inverted_pendulum_v4.py``).

* ``frame_skip = 2`` RK4 steps of 0.02 s; the actuator's ctrlrange is [-3, 3] (the policy's
  tanh-Normal is mapped onto it, as TorchRL's ``TanhNormal(low, high)``);
* observation (4) = ``qpos, qvel``;
* reward = 1 every step (v4; v5 pays ``not terminated``);
* ``terminated`` = a non-finite observation or ``|qpos[1]| > 0.2`` (the pole's angle);
* reset: ``qpos0 + U(-0.01, 0.01)``, ``0 + U(-0.01, 0.01)``; time limit 1000.
"""

from __future__ import annotations

import jax

from ppo_jax.envs.base import NEWTON_CAP, MujocoEnv


class InvertedPendulum(MujocoEnv):
    env_id = "InvertedPendulum-v4"
    xml = "inverted_pendulum.xml"
    frame_skip = 2
    max_episode_steps = 1000
    camera = {"trackbodyid": 0, "distance": 2.04}
    solver = NEWTON_CAP

    def observation(self, data, xp):
        return xp.concatenate([data.qpos, data.qvel])

    def reward_terminated(self, before, after, action, xp):
        obs = self.observation(after, xp)
        terminated = ~xp.all(xp.isfinite(obs)) | (xp.abs(obs[1]) > 0.2)
        return xp.ones_like(obs[0]), terminated

    def reset_noise(self, key, qpos0, qvel0):
        k_pos, k_vel = jax.random.split(key)
        return (qpos0 + jax.random.uniform(k_pos, qpos0.shape, qpos0.dtype, -0.01, 0.01),
                qvel0 + jax.random.uniform(k_vel, qvel0.shape, qvel0.dtype, -0.01, 0.01))
