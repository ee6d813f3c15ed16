"""Gymnasium ``Hopper-v4`` on MJX (``gymnasium/envs/mujoco/hopper_v4.py``, default kwargs).

* ``frame_skip = 4`` RK4 steps of 0.002 s (rolled into one ``mjx.forward``);
* observation (11) = ``qpos[1:]``, ``clip(qvel, -10, 10)``;
* reward = forward velocity ``(x_after - x_before) / dt`` + ``healthy_reward`` (paid on every
  step, the terminating one included, since ``terminate_when_unhealthy``) - ``1e-3 |a|^2``;
* healthy: every entry of ``(qpos[2:], qvel)`` strictly inside (-100, 100), ``z = qpos[1]``
  in (0.7, inf) and the angle ``qpos[2]`` in (-0.2, 0.2); ``terminated = not healthy``;
* reset: ``qpos0 + U(-s, s)``, ``0 + U(-s, s)``, ``s = 5e-3``; time limit 1000.
"""

from ppo_jax.envs.locomotion import HealthyRunner, inside


class Hopper(HealthyRunner):
    env_id = "Hopper-v4"
    xml = "hopper.xml"
    frame_skip = 4
    max_episode_steps = 1000
    camera = {"trackbodyid": 2, "distance": 3.0, "lookat": (0.0, 0.0, 1.15), "elevation": -20.0}
    params = {"forward_reward_weight": 1.0, "ctrl_cost_weight": 1e-3, "healthy_reward": 1.0,
              "terminate_when_unhealthy": True, "healthy_state_range": (-100.0, 100.0),
              "healthy_z_range": (0.7, float("inf")), "healthy_angle_range": (-0.2, 0.2),
              "reset_noise_scale": 5e-3}

    def is_healthy(self, data, xp):
        p = self.p
        state = xp.concatenate([data.qpos[2:], data.qvel])
        return (xp.all(inside(state, *p["healthy_state_range"]))
                & inside(data.qpos[1], *p["healthy_z_range"])
                & inside(data.qpos[2], *p["healthy_angle_range"]))
