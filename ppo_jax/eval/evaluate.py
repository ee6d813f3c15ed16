"""Evaluation: episodes of a trained policy in MJX and in MuJoCo C, the two compared, and a
checkpoint evaluated.

Episodes are :mod:`ppo_jax.core.acting`'s (the policy, one MJX episode, its trace: what training's
evaluation runs); this module evaluates trained policies with them:

* In MJX (the training env): :func:`mjx_episodes` (E episodes of a restored policy, one
  program from the program store) and :func:`trace_policy` (an episode's states, for video).
* In MuJoCo C (:mod:`ppo_jax.envs.mujoco_c`, the simulator the TorchRL tutorial trains on):
  :func:`mujoco_episodes`, episode ``i`` from exactly the start state of MJX's episode ``i``
  (:func:`mjx_start_states`) with its policy keys, so :func:`compare_sims` compares the two
  simulators and nothing else. The host policy (:func:`make_host_policy`) keeps TorchRL's
  order of precision: ``ObservationNorm`` on the float64 observation, then float32
  (``DoubleToFloat``), then the float32 actor.
* :func:`episode_keys` are the keys of the evaluations training logged, and
  :func:`evaluate_checkpoint` runs them from a run directory in both simulators.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ppo_jax.config import EVAL_ACTIONS
from ppo_jax.run import checkpoint, compile_cache
from ppo_jax.core.acting import (  # noqa: F401 (evaluation's vocabulary, re-exported)
    EpisodeResult,
    EpisodeTrace,
    episode_trace,
    eval_episode_key,
    make_policy,
    policy_action,
    run_episode,
)
from ppo_jax.envs.mujoco_c import MujocoCEnv
from ppo_jax.core.normalization import normalize
from ppo_jax.core.train import one_run
from ppo_jax.run.programs import module_name, program_key, storable


def episode_keys(eval_key: jax.Array, batches_done: int, episodes: int) -> jax.Array:
    """``[E, 2]`` keys of the evaluation episodes after the last of ``batches_done`` batches
    of the run whose ``eval_key`` is given: episode 0 is the evaluation training logged
    then."""
    batch = max(int(batches_done) - 1, 0)
    return _jitted_keys(int(episodes))(eval_key, np.int32(batch))


@functools.lru_cache(maxsize=8)
def _jitted_keys(episodes: int):
    """``keys(eval_key, batch) -> [E, 2]``: every episode's key in one program (one call,
    not one dispatch a key)."""
    def keys(eval_key, batch):
        return jax.vmap(lambda j: eval_episode_key(eval_key, batch, j))(
            jnp.arange(episodes, dtype=jnp.int32))

    return jax.jit(keys)


# --- a restored policy in MJX ------------------------------------------------------------------
# Episodes run as vmapped chunks of at most this many env states' bytes (and at most
# ``WIDTH_CAP`` episodes): memory stays bounded whatever ``--episodes`` asks, and every chunk
# is the same compiled program.
CHUNK_STATE_BYTES = 64 << 20
WIDTH_CAP = {"cpu": 1024}  # the CPU gains nothing from wider vmaps; accelerators: 16,384
ACCELERATOR_WIDTH_CAP = 16384


def episode_width(env, episodes: int, key=None, platform: str | None = None) -> int:
    """How many of ``episodes`` run side by side in one vmapped chunk: all of them up to the
    platform's cap (1,024 on the CPU, 16,384 on an accelerator) and ``CHUNK_STATE_BYTES`` of
    ``env``'s states (its reset state's bytes, read from shapes: nothing runs). ``key``: one
    episode's key, or its shape and dtype (default: a raw ``uint32[2]`` key)."""
    key = jax.ShapeDtypeStruct((2,), jnp.uint32) if key is None else key
    state = jax.eval_shape(env.reset, jax.ShapeDtypeStruct(key.shape, key.dtype))
    per_episode = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
                      for x in jax.tree_util.tree_leaves(state))
    cap = WIDTH_CAP.get(platform or jax.default_backend(), ACCELERATOR_WIDTH_CAP)
    return max(1, min(int(episodes), cap, CHUNK_STATE_BYTES // max(per_episode, 1)))


def chunks(episodes: int, width: int):
    """``(start, stop)`` of each chunk of ``width`` episodes (the last may be shorter)."""
    return [(i, min(i + width, episodes)) for i in range(0, episodes, width)]


def padded(rows: np.ndarray, width: int) -> np.ndarray:
    """``rows`` ``[n, ...]`` with its last row repeated up to ``width`` rows (a short last chunk
    runs through the same program; its extra episodes are dropped)."""
    extra = width - len(rows)
    return rows if extra <= 0 else np.concatenate([rows, np.repeat(rows[-1:], extra, 0)])


def mjx_episodes(trainer, state, keys: jax.Array, max_steps: int, mode: str,
                 width: int | None = None, progress: Callable[[int], None] | None = None):
    """``(returns [E], lengths [E])`` of ``run_episode(keys[i])`` with ``state``'s policy (ONE
    run) in MJX.

    The episodes run as vmapped chunks of ``width`` (default :func:`episode_width`; all E
    when they fit, as one vmap): one jitted program, compiled once per (config, width, mode,
    max_steps) and kept in the program store (where :func:`~ppo_jax.run.programs.storable`).
    An episode's length does not depend on its chunk; its return may, in float32 rounding
    (a chunk's width changes how XLA vectorizes the step). ``progress(n)`` is called as each
    chunk's ``n`` episodes land."""
    state = one_run(state)
    total = int(keys.shape[0])
    width = int(width or episode_width(trainer.env, total,
                                       jax.ShapeDtypeStruct(keys.shape[1:], keys.dtype)))
    impl = None  # typed keys (jax.random.key) travel as their data and are wrapped again
    if jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key):
        impl, keys = jax.random.key_impl(keys), jax.random.key_data(keys)

    def episodes(actor_params, stats, keys):
        policy = trainer.policy(actor_params, stats, mode)
        if impl is not None:
            keys = jax.random.wrap_key_data(keys, impl=impl)
        return jax.vmap(lambda k: run_episode(trainer.env, policy, k, max_steps))(keys)

    what = dict(episodes=width, mode=mode, max_steps=max_steps)
    if impl is not None or keys.shape[1:] != (2,) or keys.dtype != jnp.uint32:
        what["keys"] = f"{keys.shape[1:]}{keys.dtype}{impl}"  # another program than raw keys'
    abstract_keys = jax.ShapeDtypeStruct((width, *keys.shape[1:]), keys.dtype)
    args = (state.params.actor, state.obs_stats)
    module = module_name(trainer, 1, "episodes", **what)
    compiled, _ = compile_cache.obtain(
        {"episodes": program_key(trainer, 1, "episodes", **what)},
        lambda names: [("episodes", compile_cache.lower(episodes, *args, abstract_keys,
                                                        name=module))],
        "the evaluation program", persist=storable(trainer),
        family=f"{trainer.env.env_id} evaluation")
    run = compiled["episodes"]
    host_keys = np.asarray(keys)
    returns, lengths = np.zeros(total, np.float64), np.zeros(total, np.int32)
    landed = None  # the chunk in flight: the next is dispatched before it is read

    def land():
        (start, stop), res = landed
        returns[start:stop] = np.asarray(res.episode_return, np.float64)[:stop - start]
        lengths[start:stop] = np.asarray(res.length)[:stop - start]
        if progress is not None:
            progress(stop - start)

    for span in chunks(total, width):
        res = run(*args, padded(host_keys[span[0]:span[1]], width))
        if landed is not None:
            land()
        landed = (span, res)
    if landed is not None:  # (no keys: no episodes)
        land()
    return returns, lengths


def trace_policy(trainer, state, key, max_steps: int, mode: str | None = None) -> EpisodeTrace:
    """:class:`EpisodeTrace` of ``state``'s policy (ONE run) from ``key``, one jitted
    ``lax.scan``, as host arrays. ``mode``: ``"mean"``/``"tanh_loc"``/``"sample"`` (default:
    the config's ``eval_action``)."""
    state = one_run(state)
    fn = _jitted_trace(trainer, int(max_steps), mode or trainer.config.eval_action)
    return jax.device_get(fn(state.params.actor, state.obs_stats, key))


@functools.lru_cache(maxsize=8)
def _jitted_trace(trainer, max_steps: int, mode: str):
    """``trace(actor_params, obs_stats, key) -> EpisodeTrace``, compiled once per setting."""

    def trace(actor_params, stats, key):
        policy = trainer.policy(actor_params, stats, mode)
        return episode_trace(trainer.env, policy, key, max_steps)

    return jax.jit(trace)


# --- a restored policy in MuJoCo C -------------------------------------------------------------
HostPolicy = Callable[[np.ndarray, int], np.ndarray]


def make_host_policy(
    actor_apply: Callable, actor_params, obs_stats, mode: str, key: jax.Array | None = None,
    bounds=None,
) -> HostPolicy:
    """``policy(obs float64, t) -> action float64`` for MuJoCo C.

    ``obs * scale + loc`` in float64, cast to float32, then :func:`policy_action` (one
    jitted call). ``t`` (the step index) and ``key`` give ``"sample"`` the noise
    :func:`run_episode` uses: ``fold_in(split(key)[1], t)``. ``bounds``: the env's action
    bounds (:attr:`ppo_jax.core.train.Trainer.bounds`; None: [-1, 1]).
    """
    loc = np.asarray(obs_stats.loc, np.float64)
    scale = np.asarray(obs_stats.scale, np.float64)
    k_policy = jax.random.split(jax.random.PRNGKey(0) if key is None else key)[1]
    act = _jitted_action(actor_apply, mode, bounds)

    def policy(obs: np.ndarray, t: int) -> np.ndarray:
        norm = (np.asarray(obs, np.float64) * scale + loc).astype(np.float32)
        # a numpy step index: no device array per step (a quarter of the call's cost)
        return np.asarray(act(actor_params, norm, k_policy, np.int32(t)), np.float64)

    return policy


@functools.lru_cache(maxsize=16)
def _jitted_action(actor_apply: Callable, mode: str, bounds=None):
    """``act(params, norm_obs, k_policy, t) -> action``, compiled once per actor and mode."""

    def act(params, norm_obs, k, t):
        return policy_action(actor_apply, params, norm_obs, jax.random.fold_in(k, t), mode,
                             bounds)

    return jax.jit(act)


@dataclasses.dataclass(frozen=True)
class Episode:
    """One episode in MuJoCo C: ``episode_return``, ``length`` (steps), the states
    ``qpos``/``qvel`` ``[length + 1, n]`` (for rendering) and ``reward`` ``[length]``."""

    episode_return: float
    length: int
    qpos: np.ndarray
    qvel: np.ndarray
    reward: np.ndarray


def mujoco_episode(env, policy: HostPolicy, qpos, qvel, max_steps: int,
                   keep_states: bool = True) -> Episode:
    """One episode of ``policy`` in the MuJoCo C env ``env`` (:class:`ppo_jax.envs.mujoco_c.
    MujocoCEnv`) from ``(qpos, qvel)`` until the first done or ``max_steps`` steps.
    ``keep_states=False``: only the return and length are kept (``qpos``, ``qvel`` and
    ``reward`` empty)."""
    obs = env.reset_to(qpos, qvel)
    states, rewards = [env.state], []
    for t in range(max_steps):
        s = env.step(policy(obs, t))
        obs = s.obs
        if keep_states:
            states.append(env.state)
        rewards.append(s.reward)
        if s.done:
            break
    rewards = np.array(rewards)
    ret, length = float(rewards.sum()), len(rewards)
    if not keep_states:
        states, rewards = [], rewards[:0]
    return Episode(
        episode_return=ret,
        length=length,
        qpos=np.array([q for q, _ in states]),
        qvel=np.array([v for _, v in states]),
        reward=rewards,
    )


def mjx_start_states(mjx_env, keys: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(qpos [E, nq], qvel [E, nv])`` float64: the reset states that :func:`run_episode`
    starts from for ``keys`` ``[E, 2]`` (one jitted vmap, compiled once per env and E)."""
    s = _jitted_reset(mjx_env)(keys)
    return np.asarray(s.data.qpos, np.float64), np.asarray(s.data.qvel, np.float64)


@functools.lru_cache(maxsize=8)
def _jitted_reset(mjx_env):
    """``reset(keys [E, 2]) -> env states [E]``: :func:`run_episode`'s reset of each key."""
    return jax.jit(jax.vmap(lambda k: mjx_env.reset(jax.random.split(k)[0])))


def mujoco_episodes(
    trainer, state, keys: jax.Array, max_steps: int, mode: str, env=None,
    keep_states: int | None = None, progress: Callable[[int], None] | None = None,
) -> list[Episode]:
    """Episodes of ``state``'s policy (ONE run) in MuJoCo C, episode ``i`` from the start
    state of ``run_episode(keys[i])`` in MJX and with its policy keys.

    The start states are made in chunks (:func:`episode_width`), so memory does not grow with
    the episodes beyond their results. ``keep_states``: how many of the first episodes keep
    their states and rewards (for rendering; None: all); the others' ``qpos``, ``qvel`` and
    ``reward`` are empty. ``progress(1)`` is called after each episode."""
    state = one_run(state)
    env = env or MujocoCEnv(trainer.env, max_episode_steps=trainer.env.max_episode_steps)
    total = int(keys.shape[0])
    width = episode_width(trainer.env, total, jax.ShapeDtypeStruct(keys.shape[1:], keys.dtype))
    typed = jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)
    host_keys = keys if typed else np.asarray(keys)
    out = []
    for start, stop in chunks(total, width):
        chunk = host_keys[start:stop]
        qpos, qvel = mjx_start_states(trainer.env, chunk if typed else padded(chunk, width))
        for i in range(stop - start):
            policy = make_host_policy(
                trainer.actor_apply, state.params.actor, state.obs_stats, mode, chunk[i],
                trainer.bounds)
            keep = keep_states is None or start + i < keep_states
            out.append(mujoco_episode(env, policy, qpos[i], qvel[i], max_steps, keep))
            if progress is not None:
                progress(1)
    return out


# --- both, and a checkpoint --------------------------------------------------------------------
def compare_sims(
    trainer, state, keys: jax.Array, max_steps: int | None = None, mode: str | None = None
) -> dict[str, Any]:
    """The same episodes (start states, policy keys) in MJX and MuJoCo C.

    Returns ``{"mjx": {"returns": [E], "steps": [E]}, "mujoco": {...}}`` (lists).
    """
    max_steps = max_steps or trainer.config.eval_max_steps
    mode = mode or trainer.config.eval_action
    r, n = mjx_episodes(trainer, state, keys, max_steps, mode)
    eps = mujoco_episodes(trainer, state, keys, max_steps, mode)
    return {
        "mjx": {"returns": r.tolist(), "steps": n.tolist()},
        "mujoco": {"returns": [e.episode_return for e in eps], "steps": [e.length for e in eps]},
    }


def evaluate_checkpoint(
    run_dir: str,
    step: int | None = None,
    episodes: int = 1,
    max_steps: int | None = None,
    run_index: int = 0,
    mode: str | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint in both simulators: episode ``j`` is the evaluation episode
    ``j`` that ``scripts/evaluate.py`` replays (episode 0: the one training logged after the
    checkpoint's last batch). ``run_dir``: a run or its ``checkpoints/``. Returns
    :func:`compare_sims`' dict plus ``"checkpoint_step"``."""
    trainer, state, meta = checkpoint.restore_run(run_dir, step, run_index)
    keys = episode_keys(state.eval_key, checkpoint.run_progress(meta, run_index)[0], episodes)
    out = compare_sims(trainer, state, keys, max_steps, mode)
    out["checkpoint_step"] = int(meta["batches_done"])
    return out


def load_policy(run_dir: str, *, step: int | None = None, run_index: int = 0,
                mode: str | None = None, env: Any = None) -> Callable[[np.ndarray], np.ndarray]:
    """The trained policy of a run directory as a plain function ``obs -> action``.

    Args:
      run_dir: a run directory (or its ``checkpoints/``).
      step: which checkpoint (None: the latest).
      run_index: which run of the job (0: the first).
      mode: ``"mean"`` or ``"tanh_loc"`` (None: the run's ``eval_action``).
      env: the env object a run of an env of your own was trained on (as
        :func:`ppo_jax.run.checkpoint.restore` takes it); None: the checkpoint's env id.

    Returns:
      ``policy(obs)``: raw observations ``[..., obs_dim]`` (``[obs_dim]`` or ``[B,
      obs_dim]``; numpy, JAX or a list, any real dtype) to deterministic actions ``[...,
      action_dim]``, float32 numpy, normalized and acted on exactly as training's evaluation
      does; one jitted call per batch shape. Observations of another size, or NaN or
      infinite in float32: ValueError.

    Raises:
      CheckpointError: no checkpoint that fits (:class:`ppo_jax.run.checkpoint.CheckpointError`).
      ValueError: a ``mode`` that is not deterministic.
      TypeError: a ``step`` or ``run_index`` that is not a whole number.

    A run that stopped at NaN/Inf gives its last good policy, from before that batch, and a
    ``UserWarning`` that says so (as ``scripts/evaluate.py`` notes it).
    """
    if mode is not None and mode not in EVAL_ACTIONS:
        raise ValueError(f"load_policy returns a deterministic policy: mode must be one of "
                         f"{', '.join(map(repr, EVAL_ACTIONS))}, got {mode!r} (the stochastic "
                         "one needs keys: make_policy)")
    trainer, state, meta = checkpoint.restore_run(run_dir, step, run_index, env=env)
    stopped = checkpoint.describe_stop(run_index, checkpoint.run_progress(meta, run_index)[2])
    if stopped is not None:
        warnings.warn(f"{run_dir}: {stopped.removeprefix('note: ')}", stacklevel=2)
    mode = mode or trainer.config.eval_action
    params, stats = state.params.actor, state.obs_stats
    key = jax.random.PRNGKey(0)  # unused by the deterministic modes
    size = int(trainer.env.observation_size)

    @jax.jit
    def act(obs):
        return policy_action(trainer.actor_apply, params, normalize(stats, obs), key, mode,
                             trainer.bounds)

    def policy(obs) -> np.ndarray:
        if np.iscomplexobj(obs):  # (float32 would drop the imaginary parts silently)
            raise ValueError(f"the policy takes real observations ({trainer.env.env_id}), got "
                             "complex ones")
        with np.errstate(over="ignore"):  # (a float64 past float32's range: refused below)
            obs = np.asarray(obs, np.float32)
        if obs.ndim == 0 or obs.shape[-1] != size:
            raise ValueError(f"the policy takes observations of shape [{size}], or a batch of "
                             f"them [..., {size}] ({trainer.env.env_id}), got shape "
                             f"{list(obs.shape)}")
        bad = np.size(obs) - int(np.isfinite(obs).sum())
        if bad:  # (its actions would be NaN, silently)
            raise ValueError(f"the policy takes finite observations ({trainer.env.env_id}), "
                             f"got {bad} NaN or infinite value(s) (in float32)")
        return np.asarray(act(obs))

    return policy
