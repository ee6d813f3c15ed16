"""``InvertedDoublePendulum-v4`` in MuJoCo C (the simulator the TorchRL tutorial trains on),
and a restored ppo_jax policy run in it.

:class:`MujocoEnv` steps the same MJCF as the MJX env through ``mujoco``'s C API with
Gymnasium v4's semantics: ``ctrl = action``, ``mj_step`` x ``frame_skip`` (5), then
``mj_rnePostConstraint``; observation, reward and ``terminated = y_tip <= 1`` as in
:mod:`ppo_jax.envs.inverted_double_pendulum`; ``truncated`` at 1000 steps; reset
``qpos0 + U(-0.1, 0.1)``, ``0.1 N(0, 1)``. Unlike the MJX env it keeps MuJoCo's default
solver settings (100 iterations, 50 line-search iterations, warm start), as Gymnasium does.
Everything is float64.

The policy (:func:`make_host_policy`) is the evaluation policy of
:func:`ppo_jax.evaluate.make_policy` with TorchRL's order of precision: ``ObservationNorm``
applied to the float64 observation, then cast to float32 (``DoubleToFloat``), then the
float32 actor and action (``"mean"``, ``"tanh_loc"`` or ``"sample"``) in one jitted call per
step.

Episodes start from given states; :func:`mjx_start_states` gives the reset state
:func:`ppo_jax.evaluate.run_episode` uses for a key, so both simulators can run the same
episode (:func:`compare_sims`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from ppo_jax.envs.inverted_double_pendulum import load_mj_model


def default_solver_model() -> mujoco.MjModel:
    """The v4 MJCF with MuJoCo's default solver options (cached; read-only)."""
    opt = mujoco.MjOption()
    return load_mj_model(opt.iterations, opt.ls_iterations, warmstart=True)


@dataclasses.dataclass(frozen=True)
class Step:
    """One env step: ``obs`` ``[11]`` float64, ``reward``, ``terminated``, ``truncated``."""

    obs: np.ndarray
    reward: float
    terminated: bool
    truncated: bool

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


class MujocoEnv:
    """Gymnasium ``InvertedDoublePendulum-v4`` on MuJoCo C (one env, stateful, host side).

    Args:
      max_episode_steps: time limit (``truncated`` on the step that reaches it).
      frame_skip: physics steps of 0.01 s per env step.
      reset_noise_scale: half-width of the uniform qpos noise and std of the qvel noise.
    """

    def __init__(
        self, max_episode_steps: int = 1000, frame_skip: int = 5, reset_noise_scale: float = 0.1
    ):
        self.model = default_solver_model()
        self.data = mujoco.MjData(self.model)
        self.max_episode_steps = int(max_episode_steps)
        self.frame_skip = int(frame_skip)
        self.reset_noise_scale = float(reset_noise_scale)
        self.dt = self.model.opt.timestep * self.frame_skip
        self.steps = 0

    def observation(self) -> np.ndarray:
        """``[11]``: qpos[0], sin/cos(qpos[1:]), clip(qvel), clip(qfrc_constraint)."""
        d = self.data
        return np.concatenate([
            d.qpos[:1],
            np.sin(d.qpos[1:]),
            np.cos(d.qpos[1:]),
            np.clip(d.qvel, -10.0, 10.0),
            np.clip(d.qfrc_constraint, -10.0, 10.0),
        ])

    def reset_to(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Start from ``qpos`` ``[3]``, ``qvel`` ``[3]`` (Gymnasium's ``set_state``); obs."""
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = np.asarray(qpos, np.float64)
        self.data.qvel[:] = np.asarray(qvel, np.float64)
        mujoco.mj_forward(self.model, self.data)
        self.steps = 0
        return self.observation()

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        """v4's reset: ``qpos0 + U(-s, s)``, ``s N(0, 1)``; obs."""
        s = self.reset_noise_scale
        qpos = self.model.qpos0 + rng.uniform(-s, s, self.model.nq)
        qvel = s * rng.standard_normal(self.model.nv)
        return self.reset_to(qpos, qvel)

    def step(self, action: np.ndarray) -> Step:
        """``ctrl = action`` (``[1]``; MuJoCo clamps it to [-1, 1]), ``frame_skip`` steps."""
        self.data.ctrl[:] = np.asarray(action, np.float64).reshape(-1)
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        mujoco.mj_rnePostConstraint(self.model, self.data)
        self.steps += 1
        x, _, y = self.data.site_xpos[0]
        v1, v2 = self.data.qvel[1:3]
        reward = 10.0 - (0.01 * x**2 + (y - 2.0) ** 2) - (1e-3 * v1**2 + 5e-3 * v2**2)
        return Step(
            obs=self.observation(),
            reward=float(reward),
            terminated=bool(y <= 1.0),
            truncated=self.steps >= self.max_episode_steps,
        )

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of ``(qpos [3], qvel [3])``."""
        return self.data.qpos.copy(), self.data.qvel.copy()


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """``T`` steps of fixed actions. ``obs`` ``[T + 1, 11]``, ``qpos``/``qvel`` ``[T + 1, 3]``
    (row 0: the start), ``reward``/``terminated`` ``[T]``."""

    obs: np.ndarray
    qpos: np.ndarray
    qvel: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray


def run_actions(env: MujocoEnv, qpos, qvel, actions: np.ndarray) -> Trajectory:
    """Step ``env`` from ``(qpos, qvel)`` through ``actions`` ``[T, 1]``, past terminations."""
    obs = [env.reset_to(qpos, qvel)]
    states = [env.state]
    rewards, terms = [], []
    for a in np.asarray(actions):
        s = env.step(a)
        obs.append(s.obs)
        states.append(env.state)
        rewards.append(s.reward)
        terms.append(s.terminated)
    return Trajectory(
        obs=np.array(obs),
        qpos=np.array([q for q, _ in states]),
        qvel=np.array([v for _, v in states]),
        reward=np.array(rewards),
        terminated=np.array(terms),
    )


HostPolicy = Callable[[np.ndarray, int], np.ndarray]


def make_host_policy(
    actor_apply: Callable, actor_params, obs_stats, mode: str, key: jax.Array | None = None
) -> HostPolicy:
    """``policy(obs [11] float64, t) -> action [1] float64`` for MuJoCo C.

    ``obs * scale + loc`` in float64, cast to float32, then
    :func:`ppo_jax.evaluate.policy_action` (one jitted call). ``t`` (the step index) and
    ``key`` give ``"sample"`` the noise ``run_episode`` uses: ``fold_in(split(key)[1], t)``.
    """
    loc = np.asarray(obs_stats.loc, np.float64)
    scale = np.asarray(obs_stats.scale, np.float64)
    k_policy = jax.random.split(jax.random.PRNGKey(0) if key is None else key)[1]
    act = _jitted_action(actor_apply, mode)

    def policy(obs: np.ndarray, t: int) -> np.ndarray:
        norm = (np.asarray(obs, np.float64) * scale + loc).astype(np.float32)
        return np.asarray(act(actor_params, norm, k_policy, jnp.int32(t)), np.float64)

    return policy


@functools.lru_cache(maxsize=16)
def _jitted_action(actor_apply: Callable, mode: str):
    """``act(params, norm_obs, k_policy, t) -> action``, compiled once per actor and mode."""
    from ppo_jax.evaluate import policy_action

    def act(params, norm_obs, k, t):
        return policy_action(actor_apply, params, norm_obs, jax.random.fold_in(k, t), mode)

    return jax.jit(act)


@dataclasses.dataclass(frozen=True)
class Episode:
    """One episode in MuJoCo C: ``episode_return``, ``length`` (steps), the states
    ``qpos``/``qvel`` ``[length + 1, 3]`` (for rendering) and ``reward`` ``[length]``."""

    episode_return: float
    length: int
    qpos: np.ndarray
    qvel: np.ndarray
    reward: np.ndarray


def run_episode(env: MujocoEnv, policy: HostPolicy, qpos, qvel, max_steps: int) -> Episode:
    """From ``(qpos, qvel)`` until the first done or ``max_steps`` steps."""
    obs = env.reset_to(qpos, qvel)
    states, rewards = [env.state], []
    for t in range(max_steps):
        s = env.step(policy(obs, t))
        obs = s.obs
        states.append(env.state)
        rewards.append(s.reward)
        if s.done:
            break
    rewards = np.array(rewards)
    return Episode(
        episode_return=float(rewards.sum()),
        length=len(rewards),
        qpos=np.array([q for q, _ in states]),
        qvel=np.array([v for _, v in states]),
        reward=rewards,
    )


def mjx_start_states(mjx_env, keys: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(qpos [E, 3], qvel [E, 3])`` float64: the reset states that
    :func:`ppo_jax.evaluate.run_episode` starts from for ``keys`` ``[E, 2]``."""
    reset = jax.jit(jax.vmap(lambda k: mjx_env.reset(jax.random.split(k)[0])))
    s = reset(keys)
    return np.asarray(s.data.qpos, np.float64), np.asarray(s.data.qvel, np.float64)


def run_episodes(
    trainer, state, keys: jax.Array, max_steps: int, mode: str, env: MujocoEnv | None = None
) -> list[Episode]:
    """Episodes of ``state``'s policy (ONE seed) in MuJoCo C, episode ``i`` from the start
    state of ``run_episode(keys[i])`` in MJX and with its policy keys."""
    env = env or MujocoEnv(max_episode_steps=trainer.env.max_episode_steps)
    qpos, qvel = mjx_start_states(trainer.env, keys)
    out = []
    for i in range(len(qpos)):
        policy = make_host_policy(
            trainer.actor_apply, state.params.actor, state.obs_stats, mode, keys[i]
        )
        out.append(run_episode(env, policy, qpos[i], qvel[i], max_steps))
    return out


def run_mjx_episodes(trainer, state, keys: jax.Array, max_steps: int, mode: str):
    """``(returns [E], lengths [E])`` of ``run_episode(keys[i])`` in MJX (one jitted vmap)."""
    from ppo_jax.evaluate import make_policy, run_episode as mjx_run_episode

    from ppo_jax import programs

    def episodes(actor_params, stats, keys):
        policy = make_policy(trainer.actor_apply, actor_params, stats, mode)
        return jax.vmap(lambda k: mjx_run_episode(trainer.env, policy, k, max_steps))(keys)

    # compiled once per (config, episodes, mode, max_steps), kept in the program store
    key = programs.program_key(trainer, 1, "episodes", episodes=int(keys.shape[0]), mode=mode,
                               max_steps=max_steps)
    args = (state.params.actor, state.obs_stats, keys)
    compiled, _ = programs.obtain(
        {"episodes": key},
        lambda names: [("episodes", programs.lower(episodes, *args, name=key))],
        "the evaluation program")
    res = compiled["episodes"](*args)
    return np.asarray(res.episode_return, np.float64), np.asarray(res.length)


def compare_sims(
    trainer, state, keys: jax.Array, max_steps: int | None = None, mode: str | None = None
) -> dict[str, Any]:
    """The same episodes (start states, policy keys) in MJX and MuJoCo C.

    Returns ``{"mjx": {"returns": [E], "steps": [E]}, "mujoco": {...}}`` (lists).
    """
    max_steps = max_steps or trainer.config.eval_max_steps
    mode = mode or trainer.config.eval_action
    r, n = run_mjx_episodes(trainer, state, keys, max_steps, mode)
    eps = run_episodes(trainer, state, keys, max_steps, mode)
    return {
        "mjx": {"returns": r.tolist(), "steps": n.tolist()},
        "mujoco": {"returns": [e.episode_return for e in eps], "steps": [e.length for e in eps]},
    }


def evaluate_checkpoint(
    directory: str,
    step: int | None = None,
    episodes: int = 1,
    max_steps: int | None = None,
    seed_index: int = 0,
    mode: str | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint in both simulators: episode ``j`` is the evaluation episode
    ``j`` that ``scripts/evaluate.py`` replays (episode 0: the one training logged after the
    checkpoint's last batch). ``directory``: a run or its ``checkpoints/``. Returns
    :func:`compare_sims`' dict plus ``"checkpoint_step"``."""
    import os

    from ppo_jax import checkpoint
    from ppo_jax.train import eval_episode_key

    sub = os.path.join(directory, "checkpoints")
    trainer, states, meta = checkpoint.restore(sub if os.path.isdir(sub) else directory, step)
    state = jax.tree_util.tree_map(lambda x: x[seed_index], states)
    batch = max(int(meta["batches_done"]) - 1, 0)
    keys = jnp.stack([eval_episode_key(state.eval_key, batch, j) for j in range(episodes)])
    out = compare_sims(trainer, state, keys, max_steps, mode)
    out["checkpoint_step"] = int(meta["batches_done"])
    return out
