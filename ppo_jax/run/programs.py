"""The training programs of a job: R runs of one :class:`~ppo_jax.core.train.Trainer` at once.

A job is R runs (seeds, times the points of a sweep) and three programs (more on a GPU):

* ``init``: ``(keys [R], hypers [R]) -> PPOState [R, ...]`` (statistics rollouts, networks,
  Adam, envs): :func:`init_runs`;
* ``update``: ``(states, i, rate) -> (states, BatchMetrics [R])``, batch ``i`` without its
  evaluation, ``rate`` the lr schedule's phase step
  (:func:`ppo_jax.core.optim.cosine_phase_step`); the
  state argument is donated, so the state is updated in place on the device:
  :func:`update_runs`;
* ``evaluate``: ``(states, i) -> EvalMetrics [R]``, the evaluation logged after batch ``i``:
  :func:`evaluate_runs`;
* ``evaluate_cpu``, for a job that evaluates with ``eval_sim='mjx-cpu'``: ``evaluate``'s
  episode from the parts of the states it reads, compiled for the host's CPU
  (:func:`host_evaluate_runs`, run by :class:`ppo_jax.run.host_eval.MjxCpuEvaluator`);
* ``stats``, for a job on an accelerator only: ``keys [R] -> ObsMoments [R]``, the
  normalization statistics' random rollouts, compiled for and run on the host's CPU (one
  env's sequential steps are latency-bound on a GPU), then handed to ``init``:
  :func:`stats_runs`, :func:`host_statistics`.

The sweepable hyperparameters (:mod:`ppo_jax.core.hyper`) and the run's length are inputs, not
constants: a program serves every value of them. With a device mesh
(:mod:`ppo_jax.run.parallel`) the programs are compiled with its shardings.

None holds a host callback (JAX never writes such a program to its persistent cache): the
host calls ``update`` once per batch and reads that batch's metrics between calls. The same
:func:`build_programs` serves ``scripts/train.py``, the benchmark's worker and the tests; the
programs come from, and go to, the caches of :mod:`ppo_jax.run.compile_cache`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os
import time
import uuid
import weakref
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ppo_jax.run import compile_cache
from ppo_jax.run.compile_cache import CompileInfo
from ppo_jax.core.hyper import Hyper, hyper_of, program_config
from ppo_jax.run.parallel import RUNS
from ppo_jax.core.normalization import ObsMoments, ObsNormStats, moments_of
from ppo_jax.core.train import BatchMetrics, EvalMetrics, PPOState, Trainer, precision

PROGRAM_NAMES = ("init", "update", "evaluate")


# --- R runs at once ----------------------------------------------------------------------------
def over_runs(trainer: Trainer, fn: Callable, *trees, on_mesh: bool = True):
    """``fn`` applied to every slice of the leading run axis (vmap, splitting that axis over
    the layout's rows of runs unless ``on_mesh`` is False, for a program off the mesh; R = 1:
    squeezed away rather than vmapped)."""
    k = jax.tree_util.tree_leaves(trees)[0].shape[0]
    if k == 1:
        out = fn(*jax.tree_util.tree_map(lambda x: x[0], trees))
        return jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], out)
    spmd = RUNS if trainer.layout is not None and on_mesh else None
    return jax.vmap(fn, spmd_axis_name=spmd)(*trees)


def init_runs(trainer: Trainer, keys: jax.Array, hypers: Hyper,
              moments: ObsMoments | None = None) -> PPOState:
    """``keys [R]``, ``hypers [R]`` -> ``PPOState [R, ...]`` (:meth:`Trainer.init`), with the
    statistics rollouts' ``moments [R]`` from :func:`stats_runs` (None: computed here)."""
    extra = () if moments is None else (moments,)
    with precision(trainer.config):
        return over_runs(trainer, trainer.init, keys, hypers, *extra)


def stats_runs(trainer: Trainer, keys: jax.Array) -> ObsMoments:
    """``keys [R]`` -> the moments ``[R]`` of every run's statistics rollouts
    (:meth:`Trainer.init_moments`)."""
    with precision(trainer.config):
        return over_runs(trainer, trainer.init_moments, keys, on_mesh=False)


def host_statistics(trainer: Trainer) -> bool:
    """Whether the job's statistics rollouts run as a program of their own on the host's CPU
    (``stats``) rather than inside ``init``: where the job trains on an accelerator, in one
    process. The rollouts are one env's ``init_stats_frames`` sequential steps, each a chain
    of small kernels on a GPU (~7 ms a pendulum step on an H200, so ~7 s of every start-up
    at the tutorial's 1,000 frames), and ~0.2 ms on 2 CPU cores. On a CPU ``init`` keeps them:
    the same program as ever. (A multi-process job keeps them on its devices: the processes'
    CPUs could round differently, and every process must hold the same statistics; so does
    a process whose JAX runs without its CPU backend, :func:`host_cpu`.)"""
    return (jax.default_backend() != "cpu" and jax.process_count() == 1
            and host_cpu() is not None)


def host_evaluate_runs(trainer: Trainer, actor_params, stats: ObsNormStats,
                       eval_keys: jax.Array, i: jax.Array) -> EvalMetrics:
    """The evaluation after batch ``i`` of every run from the parts of its state that it
    reads (``[R]`` each; :meth:`Trainer.evaluate_policy`): the ``evaluate`` program's
    episode, for the host's CPU (``eval_sim='mjx-cpu'``), off the job's mesh."""
    with precision(trainer.config):
        return over_runs(trainer, lambda a, s, k: trainer.evaluate_policy(a, s, k, i),
                         actor_params, stats, eval_keys, on_mesh=False)


def host_evaluate_inputs(states: PPOState) -> tuple:
    """Abstract ``(actor_params, stats, eval_keys, i)`` of the ``evaluate_cpu`` program: the
    parts of ``states [R]`` (abstract) that it reads, and the batch index, on the host's CPU."""
    on_host = jax.sharding.SingleDeviceSharding(host_cpu())
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=on_host),
        (states.params.actor, states.obs_stats, states.eval_key,
         jax.ShapeDtypeStruct((), jnp.int32)))


def host_cpu() -> jax.Device | None:
    """The host's CPU device, where the ``stats`` program and the ``mjx-cpu`` evaluation run;
    None where this process's JAX runs without its CPU backend (e.g. ``JAX_PLATFORMS=cuda``)."""
    try:
        return jax.local_devices(backend="cpu")[0]
    except RuntimeError:
        return None


def update_runs(trainer: Trainer, states: PPOState, i: jax.Array, rate: jax.Array
                ) -> tuple[PPOState, BatchMetrics]:
    """:meth:`Trainer.update_step` of batch ``i`` for every run, with the lr schedule's
    phase step ``rate`` (:func:`~ppo_jax.core.optim.cosine_phase_step`); metrics ``[R]``."""
    with precision(trainer.config):
        return over_runs(trainer, lambda s: trainer.update_step(s, i, rate), states)


def evaluate_runs(trainer: Trainer, states: PPOState, i: jax.Array) -> EvalMetrics:
    """:meth:`Trainer.evaluate_after` batch ``i`` for every run; ``[R]``."""
    with precision(trainer.config):
        return over_runs(trainer, lambda s: trainer.evaluate_after(s, i), states)


def config_hypers(trainer: Trainer, num_runs: int) -> Hyper:
    """The config's hyperparameters for each of ``num_runs`` runs (``[R]``)."""
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (num_runs,)),
                                  hyper_of(trainer.config))


def state_shapes(trainer: Trainer, num_runs: int) -> PPOState:
    """Abstract ``PPOState [R, ...]`` of ``num_runs`` runs (shapes and dtypes), as
    :func:`init_runs` makes it. The statistics' rollouts are not traced (their moments have
    the shapes of one reset observation's): a restore or a program's inputs then trace one
    env reset, not the env step's thousand-step loop (seconds on every restore)."""
    keys = jax.ShapeDtypeStruct((num_runs, 2), jnp.uint32)

    def init(k):
        moments = moments_shapes(trainer, k)
        return init_runs(trainer, k, config_hypers(trainer, num_runs), moments)

    return jax.eval_shape(init, keys)


def moments_shapes(trainer: Trainer, keys: jax.Array) -> ObsMoments:
    """Under tracing only: ``ObsMoments [R]`` with the shapes and dtypes of
    :meth:`Trainer.init_moments`' for ``keys [R]``, not their values (one reset
    observation's moments)."""
    return jax.vmap(lambda k: moments_of(trainer.env.reset(k).obs[None]))(keys)


# --- the compiled programs ---------------------------------------------------------------------
def program_key(trainer: Trainer, num_runs: int, name: str, **extra: Any) -> str:
    """The program store's key of ``trainer``'s program ``name`` for R = ``num_runs`` runs
    (and ``extra``, what else its caller varies). The sweepable hyperparameters and the seed
    are not in it: they are the programs' inputs. For an env whose class has no source file
    it is this process's own (see :func:`env_identity`)."""
    return _key(trainer, num_runs, name, True, extra)


def module_name(trainer: Trainer, num_runs: int, name: str, **extra: Any) -> str:
    """The name of the program's XLA module, part of JAX's cache key: :func:`program_key`,
    but never a process's own (JAX's cache keys a program by its content too, so a second
    process may take it from there)."""
    return _key(trainer, num_runs, name, False, extra)


def storable(trainer: Trainer) -> bool:
    """Whether the program store may keep ``trainer``'s programs for other processes (not
    for an env whose code has no file: the store could not tell two versions of it apart)."""
    return "process" not in env_identity(trainer.env)


def _key(trainer: Trainer, num_runs: int, name: str, own: bool, extra: dict) -> str:
    identity = {
        "num_runs": num_runs,
        "config": program_config(trainer.config).to_dict(),
        "layout": None if trainer.layout is None else trainer.layout.key(),
        "env": env_identity(trainer.env, own),
    }
    return compile_cache.store_key(name, identity, **extra)


def class_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def spec_json(env) -> dict[str, Any]:
    """``env.spec()`` as the JSON a checkpoint's metadata holds (what JSON cannot hold, as
    the program key writes it: an array by its dtype, shape and hash)."""
    return json.loads(json.dumps(env.spec(), sort_keys=True, default=compile_cache.exact))


def env_identity(env, own: bool = True) -> dict[str, Any]:
    """What determines an env's part of a program: its id and :meth:`spec`, its sizes and
    bounds, and for an env defined outside ppo_jax (whose code the package's source hash does
    not cover) a hash of the file that defines its class. A class without a file (a notebook
    cell) is told apart by this process and the class object (``own``: a token each class
    object gets once, so redefining the class is a new program), and its programs stay in
    this process. (Nothing sees a change in code the class calls but does not hold, such as a
    helper in another cell: redefine the class, or restart, after editing one.)"""
    cls = type(env)
    identity = {"id": env.env_id, "spec": env.spec(), "class": class_name(env),
                "sizes": [int(env.observation_size), int(env.action_size)],
                "bounds": [np.asarray(env.action_low, np.float64).tolist(),
                           np.asarray(env.action_high, np.float64).tolist()],
                "max_episode_steps": int(env.max_episode_steps)}
    if not cls.__module__.startswith("ppo_jax."):
        try:
            source = inspect.getsourcefile(cls)
            with open(source, "rb") as f:
                identity["code"] = hashlib.sha256(f.read()).hexdigest()
        except (TypeError, OSError):  # no file: see the docstring
            identity["code"] = None
            if own:
                identity["process"] = f"{os.getpid()}-{_class_token(cls)}"
    return identity


_CLASS_TOKENS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # class -> token


def _class_token(cls: type) -> str:
    """A token of the class object for this process's lifetime (``id`` may be reused once the
    class is collected; a token never is)."""
    if cls not in _CLASS_TOKENS:
        _CLASS_TOKENS[cls] = uuid.uuid4().hex
    return _CLASS_TOKENS[cls]


@dataclasses.dataclass
class Programs:
    """The compiled ``init``/``update``/``evaluate`` programs of a job and how each was
    obtained (see the module docstring)."""

    init: Any
    update: Any
    evaluate: Any
    infos: tuple[CompileInfo, ...]
    compile_seconds: float  # wall time to have them all (the compiles overlap)
    stats: Any = None  # the statistics rollouts on the host (host_statistics), else None
    evaluate_cpu: Any = None  # the evaluation on the host's CPU (eval_sim 'mjx-cpu'), if asked
    modules: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> XLA module

    @property
    def from_cache(self) -> bool | None:
        hits = [i.cache_hit for i in self.infos]
        return None if None in hits else all(hits)

    def report(self) -> dict[str, Any]:
        return {i.name: i.to_dict() for i in self.infos}


def program_inputs(trainer: Trainer, num_runs: int):
    """Abstract ``(keys, hypers, states)`` of the programs, with the layout's shardings."""
    keys = jax.ShapeDtypeStruct((num_runs, 2), jnp.uint32)
    hypers = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((num_runs,), x.dtype),
                                    hyper_of(trainer.config))
    states = state_shapes(trainer, num_runs)
    layout = trainer.layout
    if layout is None:
        return keys, hypers, states
    runs = layout.runs()

    def with_sharding(x, s):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)

    keys = with_sharding(keys, runs)
    hypers = jax.tree_util.tree_map(lambda x: with_sharding(x, runs), hypers)
    states = jax.tree_util.tree_map(with_sharding, states, layout.state_shardings(states))
    return keys, hypers, states


def stats_inputs(trainer: Trainer, num_runs: int):
    """Abstract ``(keys, moments)`` of the ``stats`` program: its keys on the host's CPU, and
    the moments it returns as ``init`` takes them (over the layout's rows of runs)."""
    keys = jax.ShapeDtypeStruct((num_runs, 2), jnp.uint32,
                                sharding=jax.sharding.SingleDeviceSharding(host_cpu()))
    moments = jax.eval_shape(lambda k: moments_shapes(trainer, k), keys)
    runs = None if trainer.layout is None else trainer.layout.runs()
    moments = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=runs), moments)
    return keys, moments


def iter_lowered(trainer: Trainer, num_runs: int, names: tuple[str, ...],
                 split: bool = False):
    """``(name, lowered)`` of the programs in ``names``, one at a time (each can compile
    while the next is traced). Each XLA module is named by its :func:`module_name`, so JAX's
    persistent cache holds each program under the program store's identity (less a
    process's own part). ``split``: ``init`` takes the ``stats`` program's moments."""
    keys, hypers, states = program_inputs(trainer, num_runs)
    layout = trainer.layout
    i = jax.ShapeDtypeStruct((), jnp.int32)
    rate = jax.ShapeDtypeStruct((), jnp.float32)
    state_out = rep_out = None
    if layout is not None:
        state_out = jax.tree_util.tree_map(lambda x: x.sharding, states)
        rep_out = layout.replicated
        i = jax.ShapeDtypeStruct((), jnp.int32, sharding=rep_out)
        rate = jax.ShapeDtypeStruct((), jnp.float32, sharding=rep_out)
    lower = compile_cache.lower
    if split:
        host_keys, moments = stats_inputs(trainer, num_runs)
    if "stats" in names:
        yield "stats", lower(functools.partial(stats_runs, trainer), host_keys,
                             name=module_name(trainer, num_runs, "stats"))
    if "init" in names:
        yield "init", lower(functools.partial(init_runs, trainer), keys, hypers,
                            *((moments,) if split else ()), out_shardings=state_out,
                            name=module_name(trainer, num_runs, "init", **_init_extra(split)))
    if "update" in names:
        yield "update", lower(functools.partial(update_runs, trainer), states, i, rate,
                              donate_argnums=0,
                              out_shardings=None if layout is None else (state_out, rep_out),
                              name=module_name(trainer, num_runs, "update"))
    if "evaluate" in names:
        yield "evaluate", lower(functools.partial(evaluate_runs, trainer), states, i,
                                out_shardings=rep_out,
                                name=module_name(trainer, num_runs, "evaluate"))
    if "evaluate_cpu" in names:
        yield "evaluate_cpu", lower(functools.partial(host_evaluate_runs, trainer),
                                    *host_evaluate_inputs(states),
                                    name=module_name(trainer, num_runs, "evaluate_cpu"))


def _init_extra(split: bool) -> dict[str, Any]:
    """What tells ``init`` that takes the ``stats`` program's moments from the one that
    computes them (the keys of the programs that ever ran are kept)."""
    return {"moments": "input"} if split else {}


def build_programs(
    trainer: Trainer, num_runs: int, announce: Callable[[str], None] | None = None,
    need: tuple[str, ...] = PROGRAM_NAMES, host_stats: bool | None = None,
) -> Programs:
    """The job's compiled programs for R = ``num_runs`` runs (those in ``need``; the others
    are None), see :func:`ppo_jax.run.compile_cache.obtain`. ``host_stats``: whether ``init``
    takes its statistics from a ``stats`` program on the host's CPU (None:
    :func:`host_statistics`); only where ``init`` is needed."""
    if not trainer.config.evaluates:
        need = tuple(n for n in need if n not in ("evaluate", "evaluate_cpu"))
    if host_stats is None:
        host_stats = host_statistics(trainer)
    split = host_stats and "init" in need
    if split:
        need = ("stats", *need)
    extra = {name: _init_extra(split) if name == "init" else {} for name in need}
    keys = {name: program_key(trainer, num_runs, name, **extra[name]) for name in need}
    where = (jax.default_backend() if trainer.layout is None
             else f"{jax.default_backend()} ({trainer.layout.describe()})")
    what = (f"the training programs ({', '.join(need)}) for {num_runs} run(s) x "
            f"{trainer.config.num_envs} env(s) on {where}")
    t = time.perf_counter()
    compiled, infos = compile_cache.obtain(
        keys, lambda names: iter_lowered(trainer, num_runs, names, split), what, announce,
        persist=storable(trainer), family=f"{trainer.env.env_id} training")
    return Programs(init=compiled.get("init"), update=compiled.get("update"),
                    evaluate=compiled.get("evaluate"), stats=compiled.get("stats"),
                    evaluate_cpu=compiled.get("evaluate_cpu"),
                    infos=tuple(infos[n] for n in need),
                    compile_seconds=time.perf_counter() - t,
                    modules={n: module_name(trainer, num_runs, n, **extra[n]) for n in need})


def run_init(programs: Programs, trainer: Trainer, runs: Any) -> tuple[PPOState, float | None]:
    """The first states of ``runs`` (:class:`~ppo_jax.run.runs.Runs`: their keys and
    hyperparameters, laid out over the trainer's mesh) from the ``init`` program; with a
    ``stats`` program, its moments first, on the host's CPU, then moved to where ``init``
    takes them. Returns the states and the seconds the statistics took on the host (None:
    they were drawn inside ``init``)."""
    keys, hypers, layout = runs.keys(), runs.hypers(), trainer.layout
    stats_s = moments = None
    if programs.stats is not None:
        t = time.perf_counter()
        moments = jax.block_until_ready(programs.stats(jax.device_put(keys, host_cpu())))
        stats_s = time.perf_counter() - t
        moments = (jax.device_put(moments, jax.devices()[0]) if layout is None else
                   layout.put(jax.device_get(moments),
                              jax.tree_util.tree_map(lambda _: layout.runs(), moments)))
    if layout is not None:
        keys = layout.put(keys, layout.runs())
        hypers = layout.put(hypers, jax.tree_util.tree_map(lambda _: layout.runs(), hypers))
    args = (keys, hypers) if moments is None else (keys, hypers, moments)
    return programs.init(*args), stats_s
