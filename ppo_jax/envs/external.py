"""MJX envs of other registries behind the env protocol: ``brax:NAME`` (``brax.envs`` on its
MJX backend) and ``playground:NAME`` (MuJoCo Playground, the optional ``playground`` extra).

Both registries' states carry ``done`` as a float: termination only (their time limits live
in training wrappers, Brax's ``EpisodeWrapper``, that are not used here). This adapter keeps
it as ``terminated`` and adds the time limit itself as ``truncated``, so the vector wrapper
bootstraps a truncation from the true next observation, as for every env here.

* Brax: the env's own ``dt``; the time limit is ``max_episode_steps`` (default 1000, Brax's
  ``episode_length``); actions in [-1, 1] (Brax's envs take them so).
* Playground: the env is loaded with its default config (``registry.get_default_config``)
  on the JAX implementation (``impl="jax"``: MuJoCo Warp needs an NVIDIA GPU). The config's
  ``action_repeat`` (the same action applied that many times, rewards summed, as Brax's
  ``ActionRepeat`` wrapper that Playground's trainer uses) and ``episode_length`` (in control
  steps: the time limit is ``episode_length // action_repeat`` env steps) are named in
  :meth:`spec` and so in the program key and the checkpoint's config.
"""

from __future__ import annotations

import importlib.metadata
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ppo_jax.envs.base import EnvError, EnvState, mujoco_warnings_as_python, unit_bounds


def _missing(package: str, extra: str, env_id: str) -> ValueError:
    return ValueError(f"the env {env_id} needs the optional package {package!r}: "
                      f"pip install -e '.[{extra}]'")


# the keys of these envs' spec() that hold a library's version: part of the program key,
# but not of what a checkpoint was trained on (a run restores after the library's upgrade)
VERSION_KEYS = ("brax", "playground", "mujoco_mjx")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class _Adapter:
    """The shared part: obs/reward/done of the wrapped state as an :class:`EnvState`."""

    env_id: str
    camera: dict = {}

    def _wrap(self, inner, steps) -> EnvState:
        obs = inner.obs
        if isinstance(obs, dict):  # Playground's dict observations: the policy's "state"
            obs = obs["state"]
        return EnvState(
            data=inner,
            obs=jnp.asarray(obs, jnp.float32),
            reward=jnp.asarray(inner.reward, jnp.float32),
            terminated=jnp.asarray(inner.done) > 0.5,
            truncated=steps >= self.max_episode_steps,
            steps=steps,
        )

    def reset(self, key: jax.Array) -> EnvState:
        return self._wrap(self._env.reset(key), jnp.zeros((), jnp.int32))

    def _inner_step(self, inner, action):
        return self._env.step(inner, action)

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        action = jnp.asarray(action, jnp.float32).reshape(self.action_size)
        return self._wrap(self._inner_step(state.data, action), state.steps + 1)


def brax_names() -> list[str]:
    from brax import envs as brax_envs

    return sorted(brax_envs._envs)  # noqa: SLF001 - brax keeps its registry there


def playground_names(env_id: str = "playground:NAME") -> list[str]:
    try:
        from mujoco_playground import registry
    except ImportError:
        raise _missing("playground", "playground", env_id) from None
    return sorted(registry.ALL_ENVS)


def check_name(env_id: str) -> str:
    """``env_id`` (``brax:NAME`` / ``playground:NAME``) if its registry has NAME, else one
    ``ValueError`` line (an unknown name lists the registry's; a missing extra names it)."""
    prefix, name = env_id.split(":", 1)
    names = brax_names() if prefix == "brax" else playground_names(env_id)
    if name not in names:
        raise ValueError(f"unknown env {env_id!r}; {prefix}'s envs: {', '.join(names)}")
    return env_id


def _line(e: BaseException) -> str:
    """An exception of a registry's env builder in one line: its type and first line."""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


class BraxEnv(_Adapter):
    """``brax.envs.get_environment(name, backend="mjx")`` behind the env protocol."""

    def __init__(self, name: str, max_episode_steps: int | None = None):
        self.env_id = check_name(f"brax:{name}")
        from brax import envs as brax_envs

        with mujoco_warnings_as_python(), warnings.catch_warnings():
            # brax's notice that it points users to MJX, on every env it loads (this adapter
            # runs brax's envs on MJX)
            warnings.filterwarnings("ignore", message="Brax System, piplines and environments")
            try:
                try:
                    self._env = brax_envs.get_environment(name, backend="mjx")
                except TypeError:  # an env without a backend argument (its own physics)
                    self._env = brax_envs.get_environment(name)
            except Exception as e:  # noqa: BLE001 - e.g. an env brax has no MJX version of
                raise EnvError(f"brax cannot build {self.env_id} on MJX: {_line(e)}") from None
        if getattr(self._env, "sys", None) is None:  # e.g. brax's test env "fast"
            raise EnvError(f"{self.env_id} has no MuJoCo model (a brax env without "
                           "physics): ppo_jax trains brax's envs on MJX")
        self.observation_size = int(self._env.observation_size)
        self.action_size = int(self._env.action_size)
        self.action_low, self.action_high = unit_bounds(self.action_size)
        self.max_episode_steps = int(max_episode_steps or 1000)
        self.mj_model = getattr(self._env.sys, "mj_model", None)
        self.dt = float(self._env.dt)

    def physics(self, data):
        return data.pipeline_state

    def spec(self) -> dict:
        return {"id": self.env_id, "max_episode_steps": self.max_episode_steps,
                "brax": _version("brax")}


class PlaygroundEnv(_Adapter):
    """``mujoco_playground.registry.load(name)`` (default config, ``impl="jax"``) with its
    action repeat and episode length, behind the env protocol."""

    def __init__(self, name: str, max_episode_steps: int | None = None):
        self.env_id = check_name(f"playground:{name}")
        from mujoco_playground import registry

        config = registry.get_default_config(name)
        if "impl" in config:
            config.impl = "jax"
        try:
            with mujoco_warnings_as_python():
                self._env = registry.load(name, config=config)
        except Exception as e:  # noqa: BLE001 - assets fetched from the network, etc.
            raise EnvError(f"cannot load {self.env_id}: {_line(e)}") from None
        self.action_repeat = int(config.get("action_repeat", 1))
        self.episode_length = int(config.get("episode_length", 1000))
        size = self._env.observation_size
        if isinstance(size, dict):
            if "state" not in size:
                raise EnvError(f"{self.env_id}: dict observations without a 'state' entry "
                               "are not supported")
            size = size["state"]
        self.observation_size = int(np.prod(size))
        self.action_size = int(self._env.action_size)
        model = self._env.mj_model
        limited = model.actuator_ctrllimited.astype(bool)
        low, high = model.actuator_ctrlrange.T
        self.action_low = np.where(limited, low, -1.0).astype(np.float32)
        self.action_high = np.where(limited, high, 1.0).astype(np.float32)
        self.max_episode_steps = int(max_episode_steps
                                     or max(self.episode_length // self.action_repeat, 1))
        self.mj_model = model
        self.dt = float(self._env.dt) * self.action_repeat

    def _inner_step(self, inner, action):
        if self.action_repeat == 1:
            return self._env.step(inner, action)

        def repeat(s, _):
            s = self._env.step(s, action)
            return s, s.reward

        inner, rewards = jax.lax.scan(repeat, inner, None, length=self.action_repeat)
        return inner.replace(reward=jnp.sum(rewards, axis=0))

    def physics(self, data):
        return data.data

    def spec(self) -> dict:
        return {"id": self.env_id, "max_episode_steps": self.max_episode_steps,
                "action_repeat": self.action_repeat, "episode_length": self.episode_length,
                "impl": "jax", "playground": _version("playground"),
                "mujoco_mjx": _version("mujoco-mjx")}
