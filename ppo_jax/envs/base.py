"""What the trainer needs from an environment, and the MJX base of the Gymnasium MuJoCo ports.

**The protocol** (:class:`Env`) is everything the trainer, normalization, evaluation, the vector
wrapper, checkpoints and export see of an env::

    env_id               str: goes into the config, the program key, metrics.json, checkpoints
    observation_size     int
    action_size          int
    action_low/high      [action_size] float arrays: the policy's tanh-Normal is mapped onto them
    max_episode_steps    int: the time limit (``truncated`` on the step that reaches it)
    reset(key)           -> state, one env (vmap for many)
    step(state, action)  -> state; never resets
    spec()               dict of what, besides the id, makes two envs compute differently
                         (it enters the program key)

A state is any pytree with ``obs`` ``[observation_size]`` (float), ``reward`` ``[]`` (float),
``terminated`` and ``truncated`` ``[]`` (bool, kept apart: a truncation bootstraps) and
``steps`` ``[]`` (int32, env steps since reset); ``step`` returns ``reset``'s structure,
shapes and dtypes. :class:`EnvState` is the one the MJX envs use.
:func:`check_env` checks an env against the protocol once, abstractly (no compile), so a broken
env gets one line at construction instead of a trace-time stack.

**The MJX base** (:class:`MujocoEnv`) holds what every Gymnasium v4 MuJoCo env shares: the
model from Gymnasium's own MJCF (``assets/``), ``ctrl = action`` then ``frame_skip`` physics
steps (RK4 rolled into one ``mjx.forward``, MJX's own step otherwise; where MuJoCo C and MJX
differ, MuJoCo C's rule: :mod:`ppo_jax.envs.physics`), the time limit, and the reset from
``qpos0``/``0`` plus the env's noise.
A subclass (one file per env) holds only its own semantics: observation, reward terms,
termination rule and reset noise, written once against ``xp`` (``numpy`` or ``jax.numpy``) so
that the MuJoCo C simulator (:mod:`ppo_jax.envs.mujoco_c`) computes them from the same code.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import warnings
from importlib import resources
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct

from ppo_jax.envs.physics import mjx  # imported there, quietly and keeping a Ctrl-C
from ppo_jax.envs.physics import mujoco_c_contacts, rk4_step, rolls_rk4  # noqa: F401 (re-exported)


class EnvError(ValueError):
    """An env that does not meet the protocol (one line, raised at construction)."""


@struct.dataclass
class EnvState:
    """State of one (or, with a leading batch axis, many) environments.

    Attributes:
      data: the simulator's state after the last step (``mjx.Data`` for the MJX envs).
      obs: ``[observation_size]`` observation of ``data``.
      reward: ``[]`` reward of the step that produced this state (0 after reset).
      terminated: ``[]`` bool, the env's termination rule after the step.
      truncated: ``[]`` bool, the step counter reached the time limit (may coincide with
        ``terminated``, as in Gymnasium's ``TimeLimit``).
      steps: ``[]`` int32, env steps since the last reset (TorchRL's ``step_count``).
    """

    data: Any
    obs: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    steps: jax.Array

    @property
    def done(self) -> jax.Array:
        return self.terminated | self.truncated


@runtime_checkable
class Env(Protocol):
    """The env protocol (see the module docstring)."""

    env_id: str
    observation_size: int
    action_size: int
    action_low: np.ndarray
    action_high: np.ndarray
    max_episode_steps: int

    def reset(self, key: jax.Array) -> Any: ...

    def step(self, state: Any, action: jax.Array) -> Any: ...

    def spec(self) -> dict: ...


_ATTRS = ("env_id", "observation_size", "action_size", "action_low", "action_high",
          "max_episode_steps")
_STATE_FIELDS = {"obs": "floating", "reward": "floating", "terminated": "bool",
                 "truncated": "bool", "steps": "integer"}


def check_env(env: Any) -> Any:
    """``env`` if it meets the protocol, else :class:`EnvError` (one line). Traces ``reset``
    and ``step`` abstractly (``jax.eval_shape``): nothing compiles."""
    name = check_env_attributes(env)
    try:
        state = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
        action = jax.ShapeDtypeStruct((env.action_size,), jnp.float32)
        stepped = jax.eval_shape(env.step, state, action)
    except Exception as e:  # noqa: BLE001 - a user's env may raise anything while tracing
        raise EnvError(f"env {name!r}: reset/step do not trace: {type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}") from None
    for what, s in (("reset", state), ("step", stepped)):
        for field, kind in _STATE_FIELDS.items():
            if not hasattr(s, field):
                raise EnvError(f"env {name!r}: the state {what} returns has no {field!r} field")
            value = getattr(s, field)
            want = (env.observation_size,) if field == "obs" else ()
            ok_kind = (value.dtype == np.bool_ if kind == "bool"
                       else np.issubdtype(value.dtype, getattr(np, kind)))
            if tuple(value.shape) != want or not ok_kind:
                raise EnvError(
                    f"env {name!r}: {what}'s {field} is {value.dtype}{list(value.shape)}, "
                    f"expected {kind}{list(want)}")
    _check_same_state(name, state, stepped)
    return env


def check_env_attributes(env: Any) -> str:
    """``env``'s id if its attributes and methods meet the protocol (nothing traced), else
    :class:`EnvError` (one line)."""
    if isinstance(env, (str, bytes)):
        raise EnvError(f"env takes an env object, got the id {env!r}: a registered env is "
                       "named by the config's env field")
    name = getattr(env, "env_id", type(env).__name__)
    missing = [a for a in _ATTRS if not hasattr(env, a)]
    missing += [m for m in ("reset", "step", "spec") if not callable(getattr(env, m, None))]
    if missing:
        raise EnvError(f"env {name!r} does not meet the env protocol: missing {', '.join(missing)}")
    if not isinstance(env.env_id, str) or not env.env_id:
        raise EnvError(f"env {name!r}: env_id must be a non-empty str")
    for attr in ("observation_size", "action_size", "max_episode_steps"):
        value = getattr(env, attr)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise EnvError(f"env {name!r}: {attr} must be a positive int, got {value!r}")
    low, high = np.asarray(env.action_low), np.asarray(env.action_high)
    if low.shape != (env.action_size,) or high.shape != (env.action_size,):
        raise EnvError(
            f"env {name!r}: action_low/action_high must have shape ({env.action_size},), "
            f"got {low.shape} and {high.shape}")
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(high > low)):
        raise EnvError(f"env {name!r}: action bounds must be finite with high > low")
    with np.errstate(over="ignore"):  # the policy maps its actions onto them in float32
        low32, high32 = low.astype(np.float32), high.astype(np.float32)
        if not (np.all(np.isfinite(high32 - low32)) and np.all(high32 > low32)):
            raise EnvError(f"env {name!r}: action bounds must be apart and their range "
                           "finite in float32 (high - low < 3.4e38), got a range of "
                           f"{float(np.max(high - low)):.3g}")
    try:
        spec = env.spec()
    except Exception as e:  # noqa: BLE001 - the env's own code: said in one line
        text = str(e).strip().splitlines()
        raise EnvError(f"env {name!r}: spec() raised {type(e).__name__}"
                       + (f": {text[0]}" if text else "")) from None
    try:  # as the program key and the checkpoint write it (a value JSON has not: its repr)
        json.dumps(spec, sort_keys=True, default=repr)
    except (TypeError, ValueError) as e:  # a tuple key, keys of mixed types, a cycle
        raise EnvError(f"env {name!r}: spec() must return what JSON holds with its keys "
                       f"sorted (it keys the compiled programs and is saved with "
                       f"checkpoints): {str(e).strip()}") from None
    return name


def _check_same_state(name: str, reset: Any, stepped: Any) -> None:
    """EnvError (one line) unless ``step`` returns a state of ``reset``'s structure, shapes
    and dtypes (the rollout carries it through a loop, which needs them equal)."""
    flat = {what: {jax.tree_util.keystr(path): leaf for path, leaf in
                   jax.tree_util.tree_flatten_with_path(s)[0]}
            for what, s in (("reset", reset), ("step", stepped))}
    if jax.tree_util.tree_structure(reset) != jax.tree_util.tree_structure(stepped):
        only = {what: sorted(set(flat[what]) - set(flat[other]))
                for what, other in (("reset", "step"), ("step", "reset"))}
        where = "; ".join(f"only {what}'s has {', '.join(paths[:3])}"
                          for what, paths in only.items() if paths)
        raise EnvError(f"env {name!r}: step returns a state of another structure than reset's"
                       f" ({where or 'the same leaves, other containers'})")
    for path, a in flat["reset"].items():
        b = flat["step"][path]
        if a.shape != b.shape or a.dtype != b.dtype:
            raise EnvError(f"env {name!r}: the state's {path.lstrip('.')} is "
                           f"{a.dtype}{list(a.shape)} after reset but {b.dtype}{list(b.shape)} "
                           "after step (they must match)")


def unit_bounds(action_size: int) -> tuple[np.ndarray, np.ndarray]:
    return -np.ones(action_size, np.float32), np.ones(action_size, np.float32)


# -- the MJX base of the Gymnasium ports -------------------------------------------------------

def compile_mjcf(text: str) -> mujoco.MjModel:
    """``MjModel.from_xml_string(text)``, with a ``<compiler settotalmass="M">`` applied after
    compiling, as MuJoCo asks (it deprecates the attribute, warns on stderr and writes
    ``MUJOCO_LOG.TXT`` into the working directory): MuJoCo's own parser reads the value
    (however it is written), the model compiles without it, then the masses and inertias are
    scaled by ``mj_setTotalmass``, the constants recomputed by ``mj_setConst``, and the two
    statistics the compiler derives from them (``meanmass``, ``meaninertia``: the solver's
    tolerance scales with it) recomputed as the compiler does. The model is the one the
    attribute compiles to, bit for bit (tests/test_env_api.py checks every asset with
    several values)."""
    spec = mujoco.MjSpec.from_string(text)
    total = float(spec.compiler.settotalmass)
    if not total > 0:  # MuJoCo's rule: a non-positive value leaves the masses as they are
        return mujoco.MjModel.from_xml_string(text)
    spec.compiler.settotalmass = -1.0
    model = spec.compile()
    mujoco.mj_setTotalmass(model, total)
    mujoco.mj_setConst(model, mujoco.MjData(model))
    model.stat.meanmass = _ordered_sum(model.body_mass[1:]) / max(model.nbody - 1, 1)
    model.stat.meaninertia = _ordered_sum(model.dof_M0) / max(model.nv, 1)
    return model


# MuJoCo's warnings that a model of another library (brax's, Playground's) raises at every load
# and its user cannot act on: the model MuJoCo compiles is the one the library meant
_LIBRARY_MODEL_NOTICES = ("compiler attribute 'settotalmass' is deprecated",)
_MUJOCO_HANDLER = threading.RLock()


@contextlib.contextmanager
def mujoco_warnings_as_python():
    """MuJoCo's warnings while another library loads its model, as Python warnings
    (``warnings.warn``, "MuJoCo: ..."), the notices of :data:`_LIBRARY_MODEL_NOTICES` left
    out. MuJoCo's own handler prints each on stderr and appends it to ``MUJOCO_LOG.TXT`` in
    the working directory; the previous handler is back on exit. MuJoCo's handler is the
    process's: one load at a time holds it (a lock), so none puts back another's."""
    said: list[str] = []
    with _MUJOCO_HANDLER:
        previous = mujoco.get_mju_user_warning()
        mujoco.set_mju_user_warning(said.append)
        try:
            yield
        finally:
            mujoco.set_mju_user_warning(previous)
    for message in said:
        if not message.startswith(_LIBRARY_MODEL_NOTICES):
            warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=3)


def _ordered_sum(values) -> float:
    total = 0.0
    for value in values:  # left to right, in float64, as the compiler sums
        total += float(value)
    return total


@functools.lru_cache(maxsize=None)
def load_asset_model(xml: str, options: tuple = ()) -> mujoco.MjModel:
    """The MJCF ``assets/<xml>`` as an ``MjModel`` with ``model.opt`` overrides ``options``
    (``(name, value)`` pairs; ``("warmstart", False)`` disables the warm start). Cached: treat
    as read-only."""
    text = resources.files("ppo_jax.envs").joinpath(f"assets/{xml}").read_text()
    model = compile_mjcf(text)
    for name, value in options:
        if name == "warmstart":
            if not value:
                model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_WARMSTART
        else:
            setattr(model.opt, name, value)
    return model


# Newton capped at 16 iterations / 8 line-search iterations for MJX. The MJCFs keep MuJoCo's
# 100 / 50 and a 1e-8 tolerance, which float32 never meets: MJX then ran every iteration of
# every physics step for nothing. Under x64, on 3,000 states Gymnasium's envs visit under
# random actions, Newton converges in at most 8 iterations (Walker2d; HalfCheetah and Hopper 4,
# the limit-only ports 2) and the capped solve's qacc is the uncapped one exactly;
# tests/test_parity_gymnasium_ports.py checks that on each capped port.
NEWTON_CAP = (("iterations", 16), ("ls_iterations", 8))


def float_dtype() -> Any:
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


OBS_READS = ("nothing", "positions", "anything")  # see MujocoEnv.obs_reads


class MujocoEnv:
    """The MJX base of a Gymnasium v4 MuJoCo env; pure, jit- and vmap-able.

    ``reset``/``reset_to``/``step`` act on ONE environment (``jax.vmap`` or
    :class:`ppo_jax.envs.vector.VectorEnv` for many); ``step`` never resets.

    A subclass sets ``env_id``, ``xml`` (the asset), ``frame_skip``, ``max_episode_steps``
    (Gymnasium's registered time limit), ``camera`` (Gymnasium's ``DEFAULT_CAMERA_CONFIG``)
    and implements :meth:`observation`, :meth:`reward_terminated` and :meth:`reset_noise`;
    ``solver`` overrides ``model.opt`` for MJX where a test shows the result unchanged
    (the ports: :data:`NEWTON_CAP`).

    Args:
      max_episode_steps: time limit (None: Gymnasium's registered one).
      frame_skip: physics steps per env step (None: the env's).
      integrator: ``"rolled"`` (:func:`rk4_step` for RK4 models it covers, MJX's step
        otherwise) or ``"mjx"`` (``mjx.step`` always): for hinge and slide joints the same
        numbers, different compile times; ball and free joints step as MuJoCo 3 did under
        ``"mjx"`` (see :mod:`ppo_jax.envs.physics`).
      **params: the env's own keyword arguments (Gymnasium's ``*_v4`` kwargs).
    """

    env_id: str = ""
    xml: str = ""
    frame_skip: int = 1
    max_episode_steps: int = 1000
    camera: dict = {}
    solver: tuple = ()  # ((model.opt field, value), ...) for MJX only
    # what reset's observation reads besides qpos/qvel: "nothing" (no pass), "positions"
    # (body, geom and site poses: MJX's kinematics alone) or "anything" (the forward pass)
    obs_reads: str = "nothing"
    params: dict = {}  # the env's kwargs and their Gymnasium v4 defaults

    def __init__(self, max_episode_steps: int | None = None, frame_skip: int | None = None,
                 integrator: str = "rolled", **params):
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise ValueError(f"{self.env_id} has no parameter {unknown[0]!r} "
                             f"(it takes: {', '.join(sorted(self.params)) or 'none'})")
        if integrator not in ("rolled", "mjx"):
            raise ValueError(f"integrator must be 'rolled' or 'mjx', got {integrator!r}")
        if self.obs_reads not in OBS_READS or hasattr(self, "obs_from_state"):
            got = ("obs_from_state, which it replaces" if hasattr(self, "obs_from_state")
                   else repr(self.obs_reads))
            raise ValueError(f"{type(self).__name__}.obs_reads must be one of "
                             f"{', '.join(map(repr, OBS_READS))}, got {got}")
        self.max_episode_steps = int(max_episode_steps or type(self).max_episode_steps)
        self.frame_skip = int(frame_skip or type(self).frame_skip)
        if self.max_episode_steps < 1 or self.frame_skip < 1:
            raise ValueError("max_episode_steps and frame_skip must be >= 1")
        self.p = {**self.params, **params}
        self.mj_model = load_asset_model(self.xml, tuple(self.solver))
        self.integrator = "rolled" if integrator == "rolled" and rolls_rk4(self.mj_model) else (
            "mjx" if integrator == "mjx" else "mjx-step")
        self.observation_size = int(self.observation(
            _HostData(self.mj_model), np).shape[0])
        self.action_size = int(self.mj_model.nu)
        low, high = self.mj_model.actuator_ctrlrange.T.astype(np.float32)
        limited = self.mj_model.actuator_ctrllimited.astype(bool)
        # an unlimited actuator takes any ctrl: Gymnasium's action space is then [-inf, inf];
        # the policy needs finite bounds, so it keeps [-1, 1] there
        self.action_low = np.where(limited, low, -1.0).astype(np.float32)
        self.action_high = np.where(limited, high, 1.0).astype(np.float32)
        # on this process's device: a constant of every program (jax.devices()[0], MJX's
        # default, belongs to process 0 of a multi-process job)
        self.mjx_model = mjx.put_model(self.mj_model, device=jax.local_devices()[0])
        self.dt = self.mj_model.opt.timestep * self.frame_skip

    def spec(self) -> dict:
        """What, besides the id, changes this env's numbers (it enters the program key)."""
        return {"id": self.env_id, "integrator": self.integrator,
                "max_episode_steps": self.max_episode_steps, "frame_skip": self.frame_skip,
                "solver": [list(o) for o in self.solver],
                **{k: list(v) if isinstance(v, tuple) else v for k, v in sorted(self.p.items())}}

    # -- the env's own semantics (a subclass) --------------------------------------------------
    def observation(self, data, xp) -> Any:
        raise NotImplementedError

    def reward_terminated(self, before, after, action, xp) -> tuple[Any, Any]:
        """``(reward, terminated)`` of the step from ``before`` to ``after`` under ``action``."""
        raise NotImplementedError

    def reset_noise(self, key: jax.Array, qpos0: jax.Array, qvel0: jax.Array):
        """The env's reset distribution around ``qpos0``/``qvel0`` -> ``(qpos, qvel)``."""
        raise NotImplementedError

    # -- shared machinery ------------------------------------------------------------------------
    def reset_to(self, qpos: jax.Array, qvel: jax.Array) -> EnvState:
        """Start from any physical state (Gymnasium's ``set_state``): runs the forward pass."""
        data = self._data(qpos, qvel)
        with mujoco_c_contacts():  # (MJX's forward writes its quaternions back normalized)
            data = mjx.forward(self.mjx_model, data).replace(qpos=data.qpos)
        return self._initial_state(data, self.observation(data, jnp))

    def _data(self, qpos: jax.Array, qvel: jax.Array) -> mjx.Data:
        dtype = float_dtype()
        data = mjx.make_data(self.mjx_model)
        return data.replace(qpos=jnp.asarray(qpos, dtype), qvel=jnp.asarray(qvel, dtype))

    def _initial_state(self, data: mjx.Data, obs: jax.Array) -> EnvState:
        return EnvState(
            data=data,
            obs=obs,
            reward=jnp.zeros((), data.qpos.dtype),
            terminated=jnp.zeros((), bool),
            truncated=jnp.zeros((), bool),
            steps=jnp.zeros((), jnp.int32),
        )

    def state_at(self, qpos: jax.Array, qvel: jax.Array) -> EnvState:
        """The state at ``(qpos, qvel)`` as :meth:`reset` builds it, with only the part of
        the forward pass that its observation reads (:attr:`obs_reads`): none where it reads
        qpos/qvel alone, the kinematics where it reads poses, else :meth:`reset_to`. Every
        step starts with ``mjx.forward``, and the reward terms read qpos (or poses) of the
        state before, so stepping from it is unaffected: the env suite's parity tests step
        from it."""
        if self.obs_reads == "anything":
            return self.reset_to(qpos, qvel)
        data = self._data(qpos, qvel)
        if self.obs_reads == "positions":
            # MJX's kinematics writes its quaternions back normalized; MuJoCo C's does not
            data = mjx.kinematics(self.mjx_model, data).replace(qpos=data.qpos)
        return self._initial_state(data, self.observation(data, jnp))

    def reset(self, key: jax.Array) -> EnvState:
        """Gymnasium's ``reset_model``: ``qpos0``/``0`` plus the env's noise."""
        dtype = float_dtype()
        qpos, qvel = self.reset_noise(
            key, jnp.asarray(self.mj_model.qpos0, dtype), jnp.zeros(self.mj_model.nv, dtype))
        return self.state_at(qpos, qvel)

    def physics_step(self, d: mjx.Data) -> mjx.Data:
        return rk4_step(self.mjx_model, d) if self.integrator == "rolled" else mjx.step(
            self.mjx_model, d)

    def advance(self, data: mjx.Data, action: jax.Array) -> mjx.Data:
        """The physics of one env step: ``ctrl = action``, then ``frame_skip`` MJX steps."""
        data = data.replace(ctrl=jnp.asarray(action, data.ctrl.dtype).reshape(-1))
        with mujoco_c_contacts():
            data, _ = jax.lax.scan(lambda d, _: (self.physics_step(d), None), data, None,
                                   length=self.frame_skip)
        return data

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        """One env step (``frame_skip`` physics steps). No auto-reset."""
        action = jnp.asarray(action).reshape(-1)
        data = self.advance(state.data, action)
        reward, terminated = self.reward_terminated(state.data, data, action, jnp)
        steps = state.steps + 1
        return EnvState(
            data=data,
            obs=self.observation(data, jnp),
            reward=jnp.asarray(reward, data.qpos.dtype),
            terminated=jnp.asarray(terminated, bool),
            truncated=steps >= self.max_episode_steps,
            steps=steps,
        )


class _HostData:
    """The fields of a fresh ``MjData`` (numpy) for shape queries at construction."""

    def __init__(self, model: mujoco.MjModel):
        d = mujoco.MjData(model)
        mujoco.mj_forward(model, d)
        self._d = d

    def __getattr__(self, name):
        return getattr(self._d, name)
