"""Gymnasium ``InvertedDoublePendulum-v4`` on MJX.

The model is Gymnasium's own MJCF (shipped in ``assets/``), stepped by MuJoCo's JAX
implementation (MJX) with v4's semantics:

* ``frame_skip = 5`` physics steps of 0.01 s (RK4) per env step, ``ctrl = action``
  (MuJoCo clamps it to the actuator's ``ctrlrange`` of [-1, 1]);
* observation (11) = ``qpos[0], sin(qpos[1:]), cos(qpos[1:]), clip(qvel, -10, 10),
  clip(qfrc_constraint, -10, 10)``;
* reward = ``10 - (0.01 x_tip**2 + (y_tip - 2)**2) - (1e-3 v1**2 + 5e-3 v2**2)`` with
  ``(x_tip, _, y_tip) = site_xpos[0]`` and ``v1, v2 = qvel[1:3]`` *after* the step;
* ``terminated = y_tip <= 1``; ``truncated`` when the step counter reaches the time limit
  (Gymnasium's ``TimeLimit``, 1000 steps);
* reset: ``qpos = qpos0 + U(-0.1, 0.1)``, ``qvel = 0.1 N(0, 1)``.

What makes the step cheap without changing its result: the only constraint of this model is
the slider's joint limit (one row; no geom collides, ``contype=0``). Newton's method with an
exact line search solves a one-row problem in at most two iterations, but MJX's solver loops
until a 1e-8 tolerance that float32 never reaches, i.e. 100 iterations (x 50 line-search
iterations) per physics step. We cap the solver at ``solver_iterations=4`` /
``ls_iterations=8`` and skip the warm start. ``tests/test_parity_gymnasium_pendulum.py``
shows the result equals MuJoCo C's (Gymnasium's env) to ~1e-12 under x64, including steps where the cart hits
the rail and ``qfrc_constraint`` is nonzero.

What makes the program small (compile time follows the number of ``mjx.forward`` copies):

* :func:`~ppo_jax.envs.base.rk4_step` is ``mjx.step`` for this RK4 model with the four
  Runge-Kutta stages rolled into a ``lax.scan`` over ONE ``mjx.forward`` (MJX unrolls them: four copies per physics
  step). Same arithmetic in the same order: ``tests/test_env_api.py`` checks it equals
  ``mjx.step`` bit for bit in float32 and within 1e-12 under x64.
* :meth:`InvertedDoublePendulum.reset` builds the observation without a forward pass: v4's
  reset states keep the cart within 0.1 of the centre, far from the rail limits (+-1, margin
  0.01), so the constraint force is exactly zero. The reset state's ``data`` therefore holds
  only ``qpos``/``qvel`` (its derived quantities are unset); every step starts with
  ``mjx.forward``, so stepping from it is unaffected. :meth:`~InvertedDoublePendulum.reset_to`
  (any state, e.g. on the rail) still runs the forward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ppo_jax.envs.base import EnvState, MujocoEnv, float_dtype, rk4_step  # noqa: F401 (re-exported)

ENV_ID = "InvertedDoublePendulum-v4"
OBSERVATION_SIZE = 11
ACTION_SIZE = 1


class InvertedDoublePendulum(MujocoEnv):
    """MJX port of Gymnasium's ``InvertedDoublePendulum-v4``; pure, jit- and vmap-able.

    Args (besides :class:`~ppo_jax.envs.base.MujocoEnv`'s):
      reset_noise_scale: half-width of the uniform qpos noise and std of the qvel noise.
      solver_iterations / ls_iterations / warmstart: MJX constraint-solver settings, see the
        module docstring (defaults give MuJoCo C's result at a fraction of the cost).
    """

    env_id = ENV_ID
    xml = "inverted_double_pendulum.xml"
    frame_skip = 5
    max_episode_steps = 1000
    # A fixed camera along the hinge axis (+y) at the middle of the scene (Gymnasium's tracks
    # the cart: the rail leaves the frame). At 320x240 (MuJoCo's default 45 degree vertical
    # field of view) it frames the whole rail (x in [-1, 1]) with the cart and both poles,
    # upright (tip at height 1.2) or hanging.
    camera = {"lookat": (0.0, 0.0, 0.05), "distance": 3.3, "azimuth": 90.0, "elevation": 0.0}
    params = {"reset_noise_scale": 0.1}

    def __init__(self, max_episode_steps: int | None = None, frame_skip: int | None = None,
                 solver_iterations: int = 4, ls_iterations: int = 8, warmstart: bool = False,
                 integrator: str = "rolled", **params):
        self.solver = (("iterations", int(solver_iterations)),
                       ("ls_iterations", int(ls_iterations)), ("warmstart", bool(warmstart)))
        super().__init__(max_episode_steps, frame_skip, integrator, **params)
        self.reset_noise_scale = float(self.p["reset_noise_scale"])
        # The slider limit engages within its margin of the range ends: a reset state that
        # cannot reach it has zero constraint force.
        lo, hi = self.mj_model.jnt_range[0]
        margin = self.mj_model.jnt_margin[0]
        reach = np.abs(self.mj_model.qpos0[0]) + self.reset_noise_scale
        self._reset_is_unconstrained = bool(reach < min(-lo, hi) - margin)

    # -- observation / reward --------------------------------------------------------------
    def observation(self, data, xp):
        return _observation(data.qpos, data.qvel, data.qfrc_constraint, xp)

    def reward_terminated(self, before, after, action, xp):
        x, _, y = after.site_xpos[0]
        dist_penalty = 0.01 * x**2 + (y - 2.0) ** 2
        v1, v2 = after.qvel[1], after.qvel[2]
        vel_penalty = 1e-3 * v1**2 + 5e-3 * v2**2
        return 10.0 - dist_penalty - vel_penalty, y <= 1.0

    def reset_noise(self, key, qpos0, qvel0):
        """v4's reset distribution: qpos0 + U(-s, s), 0 + s N(0, 1) with s = reset_noise_scale."""
        k_pos, k_vel = jax.random.split(key)
        s = self.reset_noise_scale
        qpos = qpos0 + jax.random.uniform(k_pos, qpos0.shape, qpos0.dtype, -s, s)
        return qpos, qvel0 + s * jax.random.normal(k_vel, qvel0.shape, qvel0.dtype)

    def reset(self, key: jax.Array) -> EnvState:
        dtype = float_dtype()
        qpos, qvel = self.reset_noise(
            key, jnp.asarray(self.mj_model.qpos0, dtype), jnp.zeros(self.mj_model.nv, dtype))
        if not self._reset_is_unconstrained:
            return self.reset_to(qpos, qvel)
        # No forward pass: the cart starts within reset_noise_scale of the centre, away from
        # the rail limits, so the constraint force is zero (see the module docstring).
        data = self._data(qpos, qvel)
        return self._initial_state(
            data, _observation(data.qpos, data.qvel, jnp.zeros_like(data.qvel), jnp)
        )


def _observation(qpos, qvel, qfrc_constraint, xp):
    """v4's observation ``[11]`` from the state and the constraint force."""
    return xp.concatenate(
        [
            qpos[:1],
            xp.sin(qpos[1:]),
            xp.cos(qpos[1:]),
            xp.clip(qvel, -10.0, 10.0),
            xp.clip(qfrc_constraint, -10.0, 10.0),
        ]
    )
