"""What Gymnasium's v4 planar runners share (``half_cheetah_v4``, ``swimmer_v4``, ``hopper_v4``,
``walker2d_v4``): the forward reward from the x displacement over the whole frame skip divided
by ``dt``, the quadratic control cost ``ctrl_cost_weight * |a|^2`` of the action as given, the
observation without the current position (``exclude_current_positions_from_observation=True``),
the reset noise, and for the hoppers the healthy reward and termination rule.

A subclass names its constants: ``exclude`` (position entries dropped from the observation),
``clip_velocity`` (None: unclipped), ``normal_velocity_noise`` (qvel noise ``s N(0, 1)``
instead of ``U(-s, s)``), and for :class:`HealthyRunner` its :meth:`~HealthyRunner.is_healthy`.
"""

from __future__ import annotations

import jax

from ppo_jax.envs.base import NEWTON_CAP, MujocoEnv


def inside(x, lo, hi):
    """``lo < x < hi``, strictly (Gymnasium's healthy ranges)."""
    return (lo < x) & (x < hi)


class Runner(MujocoEnv):
    """reward = ``forward_reward_weight * x velocity - ctrl_cost``; never terminates."""

    solver = NEWTON_CAP
    exclude = 1
    clip_velocity: float | None = None
    normal_velocity_noise = False

    def observation(self, data, xp):
        qvel = data.qvel
        if self.clip_velocity is not None:
            qvel = xp.clip(qvel, -self.clip_velocity, self.clip_velocity)
        return xp.concatenate([data.qpos[self.exclude:], qvel])

    def forward_reward(self, before, after, action, xp):
        p = self.p
        x_velocity = (after.qpos[0] - before.qpos[0]) / self.dt
        ctrl_cost = p["ctrl_cost_weight"] * xp.sum(xp.square(action))
        return p["forward_reward_weight"] * x_velocity - ctrl_cost

    def reward_terminated(self, before, after, action, xp):
        reward = self.forward_reward(before, after, action, xp)
        return reward, xp.zeros_like(reward, dtype=bool)

    def reset_noise(self, key, qpos0, qvel0):
        s = self.p["reset_noise_scale"]
        k_pos, k_vel = jax.random.split(key)
        qpos = qpos0 + jax.random.uniform(k_pos, qpos0.shape, qpos0.dtype, -s, s)
        if self.normal_velocity_noise:
            return qpos, qvel0 + s * jax.random.normal(k_vel, qvel0.shape, qvel0.dtype)
        return qpos, qvel0 + jax.random.uniform(k_vel, qvel0.shape, qvel0.dtype, -s, s)


class HealthyRunner(Runner):
    """reward = forward velocity + ``healthy_reward`` - ctrl cost. The healthy reward is paid
    on every step while ``terminate_when_unhealthy`` (Gymnasium's ``is_healthy or
    terminate_when_unhealthy``), the terminating step included; ``terminated = not healthy``."""

    clip_velocity = 10.0

    def is_healthy(self, data, xp):
        raise NotImplementedError

    def reward_terminated(self, before, after, action, xp):
        p = self.p
        healthy = self.is_healthy(after, xp)
        paid = healthy | p["terminate_when_unhealthy"]
        reward = (self.forward_reward(before, after, action, xp)
                  + xp.where(paid, p["healthy_reward"], 0.0))
        return reward, ~healthy & p["terminate_when_unhealthy"]
