"""Where a batch's time goes: each phase of ppo_jax's batch compiled alone and timed on the
state a benchmark run ended with (``scripts/benchmark.py --profile``)."""

from __future__ import annotations

import time
from typing import Any, Callable

import jax

PHASES = ("collect", "gae", "update", "evaluate")


def _best_seconds(fn: Callable, *args, repeats: int = 3) -> float:
    """Best wall time of ``fn(*args)`` over ``repeats`` calls, after one untimed call."""
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best


def profile_batch(trainer, state, repeats: int = 3) -> dict[str, Any]:
    """Milliseconds per batch of each phase, for ONE seed's ``state``.

    ``collect``: ``steps_per_env`` vector env steps with the sampling policy; ``gae``: one GAE
    pass with the critic over the batch (the update repeats it once per epoch, inside
    ``update``); ``update``: all epochs of GAE + shuffle + minibatch steps; ``evaluate``: one
    deterministic episode, per batch (divided by ``eval_every``; ``evaluate_ms_per_episode``
    is the undivided figure). Each phase is a program of its own here, so the phases add up
    to slightly more or less than a batch of the fused program.
    """
    cfg = trainer.config
    key = jax.random.PRNGKey(0)
    collect = jax.jit(trainer.collect)
    _, batch = collect(state.params, state.obs_stats, state.env_state, key)
    out: dict[str, Any] = {
        "collect": _best_seconds(collect, state.params, state.obs_stats, state.env_state, key,
                                 repeats=repeats),
        "gae": _best_seconds(jax.jit(trainer.advantages), state.params.critic, batch,
                             state.hyper, repeats=repeats),
        "update": _best_seconds(jax.jit(trainer.update), state.params, state.opt_state, batch,
                                key, state.hyper, repeats=repeats),
    }
    ms = {name: 1e3 * s for name, s in out.items()}
    if cfg.eval_every:
        episode = _best_seconds(jax.jit(trainer.evaluate), state.params, state.obs_stats, key,
                                repeats=repeats)
        ms["evaluate"] = 1e3 * episode / cfg.eval_every
        ms["evaluate_ms_per_episode"] = 1e3 * episode
    return ms
