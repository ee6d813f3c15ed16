"""Gymnasium ``Reacher-v4`` on MJX (``gymnasium/envs/mujoco/reacher_v4.py``).

* ``frame_skip = 2`` RK4 steps of 0.01 s (rolled into one ``mjx.forward``);
* observation (11) = ``cos(qpos[:2]), sin(qpos[:2]), qpos[2:]`` (the target), ``qvel[:2]``,
  ``fingertip - target`` (body positions);
* reward = ``-|fingertip - target| - |a|^2`` computed BEFORE the step (v4 does so); never
  terminates; time limit 50;
* reset: ``qpos0 + U(-0.1, 0.1)`` with the target ``qpos[-2:]`` drawn uniformly from the disc of
  radius 0.2 (v4's rejection sampling in the square [-0.2, 0.2]^2), ``qvel = U(-0.005, 0.005)``
  with the target's velocity 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ppo_jax.envs.base import NEWTON_CAP, MujocoEnv


class Reacher(MujocoEnv):
    env_id = "Reacher-v4"
    xml = "reacher.xml"
    frame_skip = 2
    max_episode_steps = 50
    camera = {"trackbodyid": 0}
    solver = NEWTON_CAP
    obs_reads = "positions"  # body positions: reset runs MJX's kinematics (not all of forward)

    def _to_target(self, data):
        body = self.mj_model.body
        return data.xpos[body("fingertip").id] - data.xpos[body("target").id]

    def observation(self, data, xp):
        theta = data.qpos[:2]
        return xp.concatenate([xp.cos(theta), xp.sin(theta), data.qpos[2:], data.qvel[:2],
                               self._to_target(data)])

    def reward_terminated(self, before, after, action, xp):
        reward = -xp.linalg.norm(self._to_target(before)) - xp.sum(xp.square(action))
        return reward, xp.zeros_like(reward, dtype=bool)

    def reset_noise(self, key, qpos0, qvel0):
        k_pos, k_goal, k_vel = jax.random.split(key, 3)
        qpos = qpos0 + jax.random.uniform(k_pos, qpos0.shape, qpos0.dtype, -0.1, 0.1)

        def draw(carry):
            k, _ = carry
            k, sub = jax.random.split(k)
            return k, jax.random.uniform(sub, (2,), qpos0.dtype, -0.2, 0.2)

        _, goal = jax.lax.while_loop(lambda c: jnp.linalg.norm(c[1]) >= 0.2, draw,
                                     draw((k_goal, jnp.zeros(2, qpos0.dtype))))
        qpos = qpos.at[-2:].set(goal)
        qvel = qvel0 + jax.random.uniform(k_vel, qvel0.shape, qvel0.dtype, -0.005, 0.005)
        return qpos, qvel.at[-2:].set(0.0)
