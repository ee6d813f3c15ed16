"""Gymnasium ``Ant-v4`` on MJX (``gymnasium/envs/mujoco/ant_v4.py``, default kwargs).

* ``frame_skip = 5`` RK4 steps of 0.01 s; the torso's free joint turns on the rotation group
  where the installed MuJoCo does so (MuJoCo 4: :func:`~ppo_jax.envs.base.rk4_step`), with
  MJX's own step otherwise (MuJoCo 3's rule);
* observation (27) = ``qpos[2:]``, ``qvel`` (x, y excluded; v4's default
  ``use_contact_forces=False`` leaves the 84 contact-force entries out);
* reward = x velocity of the torso's frame (``(x_after - x_before) / dt`` of its ``xpos``, the
  pose MuJoCo's step leaves, as Gymnasium's ``get_body_com``) + ``healthy_reward`` (paid on
  every step, the terminating one included, since ``terminate_when_unhealthy``) -
  ``0.5 |a|^2``;
* healthy: every entry of ``(qpos, qvel)`` finite and the torso height ``qpos[2]`` in
  ``[0.2, 1.0]`` (inclusive); ``terminated = not healthy``;
* reset: ``qpos0 + U(-s, s)``, ``0 + s N(0, 1)``, ``s = 0.1``; time limit 1000.
"""

from __future__ import annotations

from ppo_jax.envs.locomotion import Runner


class Ant(Runner):
    env_id = "Ant-v4"
    xml = "ant.xml"
    frame_skip = 5
    max_episode_steps = 1000
    camera = {"distance": 4.0}
    # the reward reads the torso's pose of the state before the step: a reset state needs it
    obs_reads = "positions"
    exclude = 2
    normal_velocity_noise = True
    params = {"ctrl_cost_weight": 0.5, "use_contact_forces": False, "contact_cost_weight": 5e-4,
              "healthy_reward": 1.0, "terminate_when_unhealthy": True,
              "healthy_z_range": (0.2, 1.0), "contact_force_range": (-1.0, 1.0),
              "reset_noise_scale": 0.1}

    def __init__(self, *args, **kwargs):
        if kwargs.get("use_contact_forces"):
            raise ValueError("Ant-v4 here is v4's default use_contact_forces=False: the "
                             "contact forces are neither observed nor costed")
        super().__init__(*args, **kwargs)

    def _torso_x(self, data):
        return data.xpos[self.mj_model.body("torso").id, 0]

    def reward_terminated(self, before, after, action, xp):
        p = self.p
        x_velocity = (self._torso_x(after) - self._torso_x(before)) / self.dt
        state = xp.concatenate([after.qpos, after.qvel])
        lo, hi = p["healthy_z_range"]
        healthy = xp.all(xp.isfinite(state)) & (lo <= after.qpos[2]) & (after.qpos[2] <= hi)
        paid = healthy | p["terminate_when_unhealthy"]
        ctrl_cost = p["ctrl_cost_weight"] * xp.sum(xp.square(action))
        reward = x_velocity + xp.where(paid, p["healthy_reward"], 0.0) - ctrl_cost
        return reward, ~healthy & p["terminate_when_unhealthy"]
