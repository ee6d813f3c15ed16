"""Gymnasium ``Walker2d-v4`` on MJX (``gymnasium/envs/mujoco/walker2d_v4.py``, default kwargs).

* ``frame_skip = 4`` RK4 steps of 0.002 s (rolled into one ``mjx.forward``);
* observation (17) = ``qpos[1:]``, ``clip(qvel, -10, 10)``;
* reward = forward velocity + ``healthy_reward`` (every step, as Hopper's) - ``1e-3 |a|^2``;
* healthy: ``z = qpos[1]`` in (0.8, 2.0) and the angle ``qpos[2]`` in (-1, 1), strictly;
* reset: ``qpos0 + U(-s, s)``, ``0 + U(-s, s)``, ``s = 5e-3``; time limit 1000.
"""

from ppo_jax.envs.locomotion import HealthyRunner, inside


class Walker2d(HealthyRunner):
    env_id = "Walker2d-v4"
    xml = "walker2d.xml"
    frame_skip = 4
    max_episode_steps = 1000
    camera = {"trackbodyid": 2, "distance": 4.0, "lookat": (0.0, 0.0, 1.15), "elevation": -20.0}
    params = {"forward_reward_weight": 1.0, "ctrl_cost_weight": 1e-3, "healthy_reward": 1.0,
              "terminate_when_unhealthy": True, "healthy_z_range": (0.8, 2.0),
              "healthy_angle_range": (-1.0, 1.0), "reset_noise_scale": 5e-3}

    def is_healthy(self, data, xp):
        p = self.p
        return (inside(data.qpos[1], *p["healthy_z_range"])
                & inside(data.qpos[2], *p["healthy_angle_range"]))
