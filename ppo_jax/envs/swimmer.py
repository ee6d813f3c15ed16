"""Gymnasium ``Swimmer-v4`` on MJX (``gymnasium/envs/mujoco/swimmer_v4.py``, default kwargs).

* ``frame_skip = 4`` RK4 steps of 0.01 s in a viscous medium (rolled into one ``mjx.forward``);
* observation (8) = ``qpos[2:]``, ``qvel`` (x and y excluded);
* reward = ``(x_after - x_before) / dt - 1e-4 |a|^2``; never terminates; time limit 1000;
* reset: ``qpos0 + U(-0.1, 0.1)``, ``0 + U(-0.1, 0.1)``.
"""

from ppo_jax.envs.locomotion import Runner


class Swimmer(Runner):
    env_id = "Swimmer-v4"
    xml = "swimmer.xml"
    frame_skip = 4
    max_episode_steps = 1000
    camera = {}
    params = {"forward_reward_weight": 1.0, "ctrl_cost_weight": 1e-4, "reset_noise_scale": 0.1}
    exclude = 2
