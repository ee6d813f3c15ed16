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
``ls_iterations=8`` and skip the warm start. ``tests/test_env_parity.py`` shows the result
equals MuJoCo C's (Gymnasium's env) to ~1e-12 under x64, including steps where the cart hits
the rail and ``qfrc_constraint`` is nonzero.

What makes the program small (compile time follows the number of ``mjx.forward`` copies):

* :func:`rk4_step` is ``mjx.step`` for this RK4 model with the four Runge-Kutta stages rolled
  into a ``lax.scan`` over ONE ``mjx.forward`` (MJX unrolls them: four copies per physics
  step). Same arithmetic in the same order: ``tests/test_env.py`` checks it equals
  ``mjx.step`` bit for bit in float32 and within 1e-12 under x64.
* :meth:`InvertedDoublePendulum.reset` builds the observation without a forward pass: v4's
  reset states keep the cart within 0.1 of the centre, far from the rail limits (+-1, margin
  0.01), so the constraint force is exactly zero. The reset state's ``data`` therefore holds
  only ``qpos``/``qvel`` (its derived quantities are unset); every step starts with
  ``mjx.forward``, so stepping from it is unaffected. :meth:`~InvertedDoublePendulum.reset_to`
  (any state, e.g. on the rail) still runs the forward pass.
"""

from __future__ import annotations

import contextlib
import functools
import io
from importlib import resources
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct

with contextlib.redirect_stdout(io.StringIO()):  # mjx prints when its optional Warp backend is absent
    from mujoco import mjx

ENV_ID = "InvertedDoublePendulum-v4"
OBSERVATION_SIZE = 11
ACTION_SIZE = 1


@struct.dataclass
class EnvState:
    """State of one (or, with a leading batch axis, many) environments.

    Attributes:
      data: the ``mjx.Data`` after the last step.
      obs: ``[11]`` observation of ``data``.
      reward: ``[]`` reward of the step that produced this state (0 after reset).
      terminated: ``[]`` bool, tip height <= 1 after the step.
      truncated: ``[]`` bool, the step counter reached the time limit (may coincide with
        ``terminated``, as in Gymnasium's ``TimeLimit``).
      steps: ``[]`` int32, env steps since the last reset (TorchRL's ``step_count``).
    """

    data: mjx.Data
    obs: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    steps: jax.Array

    @property
    def done(self) -> jax.Array:
        return self.terminated | self.truncated


@functools.lru_cache(maxsize=None)
def load_mj_model(
    solver_iterations: int = 4, ls_iterations: int = 8, warmstart: bool = False
) -> mujoco.MjModel:
    """The v4 MJCF as an ``MjModel`` (cached; treat as read-only)."""
    xml = resources.files("ppo_jax.envs").joinpath("assets/inverted_double_pendulum.xml")
    model = mujoco.MjModel.from_xml_string(xml.read_text())
    model.opt.iterations = solver_iterations
    model.opt.ls_iterations = ls_iterations
    if not warmstart:
        model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_WARMSTART
    return model


# Runge-Kutta 4 tableau (MuJoCo's): stage i starts from qpos0 + A_i dt k_{i-1}, ...
_RK4_A = np.array([0.0, 0.5, 0.5, 1.0])  # stage 0 starts from the state itself
_RK4_B = np.array([1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0])


def rk4_step(m: mjx.Model, d: mjx.Data) -> mjx.Data:
    """``mjx.step(m, d)`` for an RK4 model of hinge/slide joints without activations, with
    the four stages in a ``lax.scan`` over one ``mjx.forward`` (MJX's first forward pass
    and its three unrolled stages become the scan's four iterations).

    Stage ``i`` evaluates the dynamics at ``qpos0 + dt a_i k_{i-1}``, ``qvel0 + dt a_i
    qacc_{i-1}`` (stage 0 at the state itself), and accumulates ``b_i`` times its velocity
    and acceleration; the step then advances ``qvel0 + dt sum(b qacc)`` and ``qpos0 + dt
    sum(b k)``, exactly as MJX's ``rungekutta4`` + ``_advance``.
    """
    dt = m.opt.timestep
    a = jnp.asarray(_RK4_A, dt.dtype)
    b = jnp.asarray(_RK4_B, dt.dtype)
    t = d.time + a * dt
    first = jnp.arange(4) == 0
    qpos0, qvel0, act0 = d.qpos, d.qvel, d.act

    def stage(carry, x):
        d, kqvel, sums = carry
        is_first, a_i, b_i, t_i = x
        qpos = jnp.where(is_first, qpos0, qpos0 + dt * (a_i * kqvel))
        qvel = jnp.where(is_first, qvel0, qvel0 + (a_i * d.qacc) * dt)
        act = jnp.where(is_first, act0, act0 + (a_i * d.act_dot) * dt)
        time = jnp.where(is_first, d.time, t_i)
        d = mjx.forward(m, d.replace(qpos=qpos, qvel=qvel, act=act, time=time))
        terms = (qvel, d.qacc, d.act_dot)
        sums = jax.tree_util.tree_map(
            lambda s, k: jnp.where(is_first, b_i * k, s + b_i * k), sums, terms
        )
        return (d, qvel, sums), None

    zeros = (jnp.zeros_like(qvel0), jnp.zeros_like(d.qacc), jnp.zeros_like(d.act_dot))
    (d1, _, (qvel_sum, qacc_sum, _)), _ = jax.lax.scan(
        stage, (d, qvel0, zeros), (first, a, b, t)
    )
    # MJX's _advance with the RK4 sums (na = 0: act unchanged).
    return d1.replace(
        qpos=qpos0 + dt * qvel_sum,
        qvel=qvel0 + qacc_sum * dt,
        act=act0,
        time=d.time + dt,
        qacc_warmstart=d1.qacc,
    )


def _check_rk4_model(model: mujoco.MjModel) -> None:
    """:func:`rk4_step` covers RK4 models of hinge/slide joints without activations."""
    hinge_slide = {int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)}
    if model.opt.integrator != mujoco.mjtIntegrator.mjINT_RK4 or model.na or not set(
        int(j) for j in model.jnt_type
    ) <= hinge_slide:
        raise ValueError("rk4_step needs an RK4 model of hinge/slide joints without activations")


class InvertedDoublePendulum:
    """MJX port of Gymnasium's ``InvertedDoublePendulum-v4``; pure, jit- and vmap-able.

    ``reset``/``reset_to``/``step`` act on ONE environment; use ``jax.vmap`` (or
    :func:`ppo_jax.envs.vector.VectorEnv`) for many. ``step`` never resets.

    Args:
      max_episode_steps: time limit (Gymnasium's ``TimeLimit``); ``truncated`` is set on the
        step that reaches it.
      frame_skip: physics steps per env step.
      reset_noise_scale: half-width of the uniform qpos noise and std of the qvel noise.
      solver_iterations / ls_iterations / warmstart: MJX constraint-solver settings, see the
        module docstring (defaults give MuJoCo C's result at a fraction of the cost).
      integrator: ``"rolled"`` (:func:`rk4_step`, one ``mjx.forward`` in the program) or
        ``"mjx"`` (``mjx.step``, four): the same numbers, different compile times.
    """

    observation_size = OBSERVATION_SIZE
    action_size = ACTION_SIZE
    env_id = ENV_ID

    def __init__(
        self,
        max_episode_steps: int = 1000,
        frame_skip: int = 5,
        reset_noise_scale: float = 0.1,
        solver_iterations: int = 4,
        ls_iterations: int = 8,
        warmstart: bool = False,
        integrator: str = "rolled",
    ):
        if max_episode_steps < 1 or frame_skip < 1:
            raise ValueError("max_episode_steps and frame_skip must be >= 1")
        if integrator not in ("rolled", "mjx"):
            raise ValueError(f"integrator must be 'rolled' or 'mjx', got {integrator!r}")
        self.max_episode_steps = int(max_episode_steps)
        self.frame_skip = int(frame_skip)
        self.reset_noise_scale = float(reset_noise_scale)
        self.mj_model = load_mj_model(solver_iterations, ls_iterations, warmstart)
        if integrator == "rolled":
            _check_rk4_model(self.mj_model)
        self.integrator = integrator
        # The slider limit engages within its margin of the range ends: a reset state that
        # cannot reach it has zero constraint force.
        lo, hi = self.mj_model.jnt_range[0]
        margin = self.mj_model.jnt_margin[0]
        reach = np.abs(self.mj_model.qpos0[0]) + self.reset_noise_scale
        self._reset_is_unconstrained = bool(reach < min(-lo, hi) - margin)
        # on this process's device: a constant of every program (jax.devices()[0], MJX's
        # default, belongs to process 0 of a multi-process job)
        self.mjx_model = mjx.put_model(self.mj_model, device=jax.local_devices()[0])
        self.dt = self.mj_model.opt.timestep * self.frame_skip

    # -- observation / reward --------------------------------------------------------------
    @staticmethod
    def observation(data: mjx.Data) -> jax.Array:
        return _observation(data.qpos, data.qvel, data.qfrc_constraint)

    @staticmethod
    def reward_and_terminated(data: mjx.Data) -> tuple[jax.Array, jax.Array]:
        x, _, y = data.site_xpos[0]
        dist_penalty = 0.01 * x**2 + (y - 2.0) ** 2
        v1, v2 = data.qvel[1], data.qvel[2]
        vel_penalty = 1e-3 * v1**2 + 5e-3 * v2**2
        return 10.0 - dist_penalty - vel_penalty, y <= 1.0

    # -- API --------------------------------------------------------------------------------
    def reset_to(self, qpos: jax.Array, qvel: jax.Array) -> EnvState:
        """Start from any physical state (``qpos``, ``qvel``: ``[3]`` each); runs the forward
        pass, so the constraint force of a cart on the rail limit is observed."""
        data = mjx.forward(self.mjx_model, self._data(qpos, qvel))
        return self._initial_state(data, self.observation(data))

    def _data(self, qpos: jax.Array, qvel: jax.Array) -> mjx.Data:
        dtype = self._float()
        data = mjx.make_data(self.mjx_model)
        return data.replace(qpos=jnp.asarray(qpos, dtype), qvel=jnp.asarray(qvel, dtype))

    def _initial_state(self, data: mjx.Data, obs: jax.Array) -> EnvState:
        zero = jnp.zeros((), data.qpos.dtype)
        return EnvState(
            data=data,
            obs=obs,
            reward=zero,
            terminated=jnp.zeros((), bool),
            truncated=jnp.zeros((), bool),
            steps=jnp.zeros((), jnp.int32),
        )

    def reset(self, key: jax.Array) -> EnvState:
        """v4's reset distribution: qpos0 + U(-s, s), 0 + s N(0, 1) with s = reset_noise_scale."""
        k_pos, k_vel = jax.random.split(key)
        dtype = self._float()
        s = self.reset_noise_scale
        nq, nv = self.mj_model.nq, self.mj_model.nv
        qpos = jnp.asarray(self.mj_model.qpos0, dtype) + jax.random.uniform(
            k_pos, (nq,), dtype, -s, s
        )
        qvel = s * jax.random.normal(k_vel, (nv,), dtype)
        if not self._reset_is_unconstrained:
            return self.reset_to(qpos, qvel)
        # No forward pass: the cart starts within reset_noise_scale of the centre, away from
        # the rail limits, so the constraint force is zero (see the module docstring).
        data = self._data(qpos, qvel)
        return self._initial_state(
            data, _observation(data.qpos, data.qvel, jnp.zeros_like(data.qvel))
        )

    def advance(self, data: mjx.Data, action: jax.Array) -> mjx.Data:
        """The physics of one env step: ``ctrl = action``, then ``frame_skip`` MJX steps."""
        data = data.replace(ctrl=jnp.asarray(action, data.ctrl.dtype).reshape(-1))

        step = rk4_step if self.integrator == "rolled" else mjx.step

        def physics_step(d, _):
            return step(self.mjx_model, d), None

        data, _ = jax.lax.scan(physics_step, data, None, length=self.frame_skip)
        return data

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        """One env step (``frame_skip`` physics steps). ``action``: ``[1]``. No auto-reset."""
        data = self.advance(state.data, action)
        reward, terminated = self.reward_and_terminated(data)
        steps = state.steps + 1
        return EnvState(
            data=data,
            obs=self.observation(data),
            reward=reward,
            terminated=terminated,
            truncated=steps >= self.max_episode_steps,
            steps=steps,
        )

    @staticmethod
    def _float() -> Any:
        return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def _observation(qpos: jax.Array, qvel: jax.Array, qfrc_constraint: jax.Array) -> jax.Array:
    """v4's observation ``[11]`` from the state and the constraint force."""
    return jnp.concatenate(
        [
            qpos[:1],
            jnp.sin(qpos[1:]),
            jnp.cos(qpos[1:]),
            jnp.clip(qvel, -10.0, 10.0),
            jnp.clip(qfrc_constraint, -10.0, 10.0),
        ]
    )
