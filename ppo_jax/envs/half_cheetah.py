"""Gymnasium ``HalfCheetah-v4`` on MJX (``gymnasium/envs/mujoco/half_cheetah_v4.py``, default kwargs).

* ``frame_skip = 5`` Euler steps of 0.01 s (MJX's own step);
* observation (17) = ``qpos[1:]``, ``qvel`` (x excluded, velocities unclipped);
* reward = ``forward_reward_weight * (x_after - x_before) / dt - ctrl_cost_weight * |a|^2``;
* never terminates; time limit 1000;
* reset: ``qpos0 + U(-s, s)``, ``0 + s N(0, 1)``, ``s = reset_noise_scale``.
"""

from ppo_jax.envs.locomotion import Runner


class HalfCheetah(Runner):
    env_id = "HalfCheetah-v4"
    xml = "half_cheetah.xml"
    frame_skip = 5
    max_episode_steps = 1000
    camera = {"distance": 4.0}
    params = {"forward_reward_weight": 1.0, "ctrl_cost_weight": 0.1, "reset_noise_scale": 0.1}
    normal_velocity_noise = True
