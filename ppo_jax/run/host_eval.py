"""Training's evaluations on the host, off the device's critical path (``eval_sim``).

With ``eval_sim = 'mujoco'`` (see :attr:`ppo_jax.config.PPOConfig.eval_sim`) the host loop
(:func:`ppo_jax.run.runner.train_batches`) does not call the ``evaluate`` program after an
evaluation batch ``i``. Instead :meth:`HostEvaluations.submit`:

1. copies the actor parameters, normalization statistics and eval keys of batch ``i``'s
   state on the device (one tiny program, queued behind batch ``i``'s update and ahead of
   the next update, which donates the state): the policy after batch ``i``, exactly as
   the ``evaluate`` program reads it;
2. hands the copy to one worker thread, which fetches it to host memory and runs the
   evaluator (an object made by the ``host_evaluator`` factory the caller passes, e.g.
   :class:`ppo_jax.eval.host.MujocoEvaluator`: the run layer never imports the evaluation
   layer) while the device trains the next batches.

Evaluations land in order (one worker), at most ``MAX_IN_FLIGHT`` of them unfinished (a host
slower than the device holds the host loop back at the next evaluation batch); the host loop
records each at its batch index once
that batch's metrics are recorded (:meth:`ppo_jax.run.runner.RunLog.add_eval`), waits for
the outstanding ones before a checkpoint and at the end of the run, and re-raises a worker's
exception.

``eval_sim = 'mjx-cpu'`` runs the same way with :class:`MjxCpuEvaluator`: the ``evaluate``
program's own MJX episode, compiled for the host's CPU; any env has it.

``'auto'`` evaluates on the host where the runs' arrays live on an accelerator (where an MJX
episode of up to 1,000 sequential steps is latency-bound: ~7 s on an H200) and the job is
one process: ``'mujoco'`` where the env has a MuJoCo C twin (a Gymnasium port) and a host
evaluator is given, else ``'mjx-cpu'``. Elsewhere ``'mjx'``: on a CPU the MJX evaluation,
whose numbers the reference runs hold, stays. A job that evaluates on the host has no
``evaluate`` program on its device (:func:`on_device`).
"""

from __future__ import annotations

import collections
import concurrent.futures
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ppo_jax.config import PPOConfig
from ppo_jax.envs.base import MujocoEnv
from ppo_jax.envs.registry import PORTS
from ppo_jax.run import programs

# host_evaluator(trainer, num_runs) -> evaluator(actor_params, obs_stats, eval_key, i) ->
# EvalMetrics [R] as numpy: every argument a host (numpy) tree with the leading run axis
HostEvaluatorFactory = Callable[[Any, int], Callable[..., Any]]

HOST_SIMS = ("mujoco", "mjx-cpu")  # the eval_sim values that evaluate in the worker thread
# Evaluations submitted and not finished, at most: where the host evaluates more slowly than
# the device trains, the host loop waits at the next evaluation batch (the device's queue
# still holds the batch just launched) instead of queueing the policy copies without bound
# and leaving the whole backlog to the end of the run.
MAX_IN_FLIGHT = 2


def check_eval_sim(config: PPOConfig, env: Any = None,
                   factory: HostEvaluatorFactory | None = None,
                   factory_later: bool = False) -> None:
    """Refuse an ``eval_sim`` on the host where it cannot run, before anything is built:
    ``ValueError``, one line. ``env``: an env object of the user's own (None: the registry's
    ``config.env``); ``factory``: the host evaluator's (``'mujoco'`` needs one, unless
    ``factory_later``: it comes with the training loop's call)."""
    sim = config.eval_sim
    if sim not in HOST_SIMS or not config.evaluates:
        return
    if sim == "mujoco":
        twin = isinstance(env, MujocoEnv) if env is not None else config.env in PORTS
        if not twin:
            name = getattr(env, "env_id", config.env) if env is not None else config.env
            raise ValueError(
                f"eval_sim 'mujoco' evaluates in MuJoCo C, which only the Gymnasium MuJoCo "
                f"ports have ({', '.join(PORTS)}); {name!r} has none: evaluate it with "
                f"eval_sim 'mjx-cpu', 'mjx' or 'auto'")
    if jax.process_count() > 1:
        raise ValueError(f"eval_sim {sim!r} runs in one process: a multi-process job "
                         f"evaluates with eval_sim 'mjx' (or 'auto')")
    if sim == "mjx-cpu" and programs.host_cpu() is None:
        raise ValueError("eval_sim 'mjx-cpu' runs on the host's CPU, which JAX was started "
                         "without here (JAX_PLATFORMS lacks 'cpu'): evaluate with eval_sim "
                         "'mjx' (or 'auto'), or add 'cpu' to JAX_PLATFORMS")
    if sim == "mujoco" and factory is None and not factory_later:
        raise ValueError("eval_sim 'mujoco' needs a host evaluator: pass "
                         "host_evaluator=ppo_jax.eval.host.MujocoEvaluator")


def choose(config: PPOConfig, env: Any, platform: str,
           factory: HostEvaluatorFactory | None) -> str:
    """``'mjx'``, ``'mujoco'`` or ``'mjx-cpu'``: where the evaluations of a job training on
    ``platform`` (``'cpu'``, ``'gpu'``, ...) run (see the module's docstring); ``ValueError``
    (one line, :func:`check_eval_sim`) where a host evaluation was asked and cannot be.
    Whether it is ``'mjx'`` (the ``evaluate`` program on the training device) does not
    depend on ``factory``: :func:`on_device`."""
    sim = decide(config, env, platform, factory)
    if sim != "mjx":
        check_eval_sim(config, env, factory)
    return sim


def decide(config: PPOConfig, env: Any, platform: str,
           factory: HostEvaluatorFactory | None) -> str:
    """:func:`choose` without its checks."""
    if on_device(config, platform):
        return "mjx"
    if config.eval_sim in HOST_SIMS:
        return config.eval_sim
    return "mujoco" if isinstance(env, MujocoEnv) and factory is not None else "mjx-cpu"


def on_device(config: PPOConfig, platform: str) -> bool:
    """Whether a job training on ``platform`` evaluates with its ``evaluate`` program on the
    training device (:func:`choose` gives ``'mjx'``), so that it needs one: ``'auto'`` does
    on a CPU, over several processes, and where JAX runs without its CPU backend."""
    sim = config.eval_sim
    if sim == "mjx" or not config.evaluates:
        return True
    if sim in HOST_SIMS:
        return False
    return platform == "cpu" or jax.process_count() > 1 or programs.host_cpu() is None


class MjxCpuEvaluator:
    """``evaluator(actor_params [R], obs_stats [R], eval_key [R], i) -> EvalMetrics [R]``
    (host arrays in, numpy out): the ``evaluate`` program's MJX episode
    (:meth:`~ppo_jax.core.train.Trainer.evaluate_policy`) compiled for and run on the host's
    CPU, for any env (``eval_sim='mjx-cpu'``). Its program is the job's ``evaluate_cpu``
    (obtained with the others; ``program``), else obtained at the first evaluation, in the
    worker thread, from the program store (or compiled there, while the device trains)."""

    def __init__(self, trainer, num_runs: int, program: Any = None):
        self.trainer, self.num_runs = trainer, int(num_runs)
        self._program = program  # the job's evaluate_cpu program, if it has one

    def __call__(self, actor_params, obs_stats, eval_key, i: int):
        if self._program is None:
            self._program = programs.build_programs(
                self.trainer, self.num_runs, need=("evaluate_cpu",)).evaluate_cpu
        on_host = jax.device_put((actor_params, obs_stats, eval_key, np.int32(i)),
                                 programs.host_cpu())
        return jax.device_get(self._program(*on_host))


@jax.jit
def _copy(tree):
    """New device buffers holding ``tree`` (not the donated ones)."""
    return jax.tree_util.tree_map(jnp.copy, tree)


class HostEvaluations:
    """The evaluations of a job in flight on one worker thread (see the module's
    docstring)."""

    def __init__(self, evaluator: Callable[..., Any]):
        self.evaluator = evaluator
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ppo_jax-eval")
        self._queue: collections.deque = collections.deque()

    def submit(self, states, i: int) -> None:
        """Evaluate the policy of ``states`` (batch ``i``'s) in the worker; call it before
        ``states`` is donated to the next update. Waits first while ``MAX_IN_FLIGHT``
        evaluations have not finished."""
        running = [f for _, f in self._queue if not f.done()]
        while len(running) >= MAX_IN_FLIGHT:
            concurrent.futures.wait(running[:1])
            running = [f for f in running if not f.done()]
        snap = _copy((states.params.actor, states.obs_stats, states.eval_key))
        self._queue.append((int(i), self._pool.submit(self._evaluate, snap, int(i))))

    def _evaluate(self, snap, i: int):
        actor, stats, eval_key = jax.device_get(snap)
        return self.evaluator(actor, stats, eval_key, i)

    @property
    def outstanding(self) -> int:
        return len(self._queue)

    def landed(self, upto: int | None, wait: bool = False) -> list[tuple[int, Any]]:
        """``[(i, EvalMetrics [R] as numpy)]`` of the evaluations of batches ``i <= upto``
        that have finished (with ``wait``: all of them, waiting), in batch order; a worker's
        exception is raised here."""
        out = []
        while self._queue and upto is not None and self._queue[0][0] <= upto:
            i, future = self._queue[0]
            if not (wait or future.done()):
                break
            self._queue.popleft()
            out.append((i, future.result()))
        return out

    def discard(self) -> None:
        """Drop what has not landed (its batch was never recorded)."""
        for _, future in self._queue:
            future.cancel()
        self._queue.clear()

    def close(self) -> None:
        """Stop the worker: cancel what has not started, wait for the one running."""
        self.discard()
        self._pool.shutdown(wait=True)
