"""The GPU check's own measurements, each in a fresh subprocess (as the benchmark's workers):
``python -m scripts.gpu_check.worker SPEC.json RESULT.json``.

``SPEC["kind"]``:

* ``probe``: what JAX sees (backend, devices, versions), without the check's parent process
  ever starting a GPU backend (JAX would take 75% of the GPU's memory for it);
* ``env_speed``: env steps per second of the MJX env alone, a plain jitted, vmapped rollout
  with auto-reset and random actions (as ``scripts/env_speed.py``), each env count sized by
  time (a warm-up call, then calls for a few seconds);
* ``threshold``: the benchmark's own ppo_jax worker (:mod:`ppo_jax.bench.worker_ppo_jax`,
  the programs ``scripts/train.py`` runs), stopped at the first evaluation >= the threshold
  or at a deadline.

The training rows of the table call the benchmark's worker directly
(:func:`ppo_jax.bench.driver.run_worker`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

PROCESS_START = time.perf_counter()  # "from process start": imports, GPU init, compile included


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with this checkout first on ``PYTHONPATH`` (and ``extra``)."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def call(spec: dict[str, Any], timeout: float, env: dict[str, str] | None = None
         ) -> dict[str, Any]:
    """Run ``spec`` in a fresh ``python -m scripts.gpu_check.worker`` (``env``: variables
    set for it, over this process's); raises RuntimeError
    (one line: the exit status and the last line of its stderr) on failure, and on timeout
    unless the worker had saved a partial result (then that, with ``timed_out`` true)."""
    with tempfile.TemporaryDirectory(prefix="ppo_jax_gpu_worker_") as tmp:
        spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "result.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        cmd = [sys.executable, "-m", "scripts.gpu_check.worker", spec_path, out_path]
        try:
            proc = subprocess.run(cmd, env=child_env(env), capture_output=True, text=True,
                                  timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            if os.path.exists(out_path + ".partial"):
                with open(out_path + ".partial") as f:
                    return dict(json.load(f), timed_out=True)
            raise RuntimeError(f"timed out after {timeout:.0f} s") from None
        if proc.returncode != 0 or not os.path.exists(out_path):
            lines = (proc.stderr or proc.stdout or "").strip().splitlines()
            raise RuntimeError(f"exit {proc.returncode}: {lines[-1] if lines else 'no output'}")
        with open(out_path) as f:
            return json.load(f)


# ----------------------------------------------------------------------------------------------
# probe
# ----------------------------------------------------------------------------------------------
def probe(spec: dict[str, Any]) -> dict[str, Any]:
    """JAX's backend, devices and memory, and the versions of the traced libraries."""
    import jax

    from ppo_jax.util import versions

    devices = jax.devices()
    try:
        stats = devices[0].memory_stats() or {}
    except Exception:  # noqa: BLE001  (a backend without memory stats)
        stats = {}
    limit = stats.get("bytes_limit")
    return {"backend": jax.default_backend(), "devices": [d.device_kind for d in devices],
            "device_count": len(devices),
            "device_memory_gib": round(limit / 2**30, 1) if limit else None,
            "versions": versions(), "seconds": time.perf_counter() - PROCESS_START}


# ----------------------------------------------------------------------------------------------
# env steps per second
# ----------------------------------------------------------------------------------------------
def rollout_program(num_envs: int, steps: int, linalg: str = "library"):
    """``steps`` vectorized steps of ``num_envs`` envs from a reset, random actions in [-1, 1],
    auto-reset: one jitted scan, compiled for a PRNG key (returns the summed reward).
    ``linalg``: the env's small linear algebra (``PPOConfig.linalg``)."""
    import jax

    from ppo_jax.envs import InvertedDoublePendulum, VectorEnv
    from ppo_jax.envs.linalg import with_linalg

    venv = VectorEnv(with_linalg(InvertedDoublePendulum(), linalg), num_envs)

    def run(key):
        def body(state, k):
            a = jax.random.uniform(k, (num_envs, 1), minval=-1.0, maxval=1.0)
            state, out = venv.step(state, a, k)
            return state, out.reward.sum()

        _, rewards = jax.lax.scan(body, venv.reset(key), jax.random.split(key, steps))
        return rewards.sum()

    return jax.jit(run).lower(jax.random.PRNGKey(0)).compile()


def env_speed(spec: dict[str, Any]) -> dict[str, Any]:
    """Env steps/s at each env count of ``spec["envs"]`` (in that order), sized by time: the
    rollout of ``spec["chunk"]`` steps is compiled and called once (the warm-up), then
    called until ``spec["row_s"]`` seconds have passed (at least once); steps/s over those
    calls. A row whose warm-up and seconds (judged from the previous row's) would end past
    ``spec["deadline_s"]`` (seconds from this process's start) is skipped."""
    import jax

    rows, last_warmup = [], 0.0
    chunk, row_s = int(spec["chunk"]), float(spec["row_s"])
    for num_envs in spec["envs"]:
        elapsed = time.perf_counter() - PROCESS_START
        need = last_warmup + row_s
        if elapsed + need > spec["deadline_s"]:
            rows.append({"envs": num_envs,
                         "skipped": f"~{need:.0f} s needed, "
                                    f"{spec['deadline_s'] - elapsed:.0f} s left"})
            continue
        t0 = time.perf_counter()
        fn = rollout_program(num_envs, chunk, spec.get("linalg", "library"))
        compile_s = time.perf_counter() - t0
        jax.block_until_ready(fn(jax.random.PRNGKey(0)))
        last_warmup = time.perf_counter() - t0
        calls, best, t_start = 0, float("inf"), time.perf_counter()
        while True:
            t = time.perf_counter()
            jax.block_until_ready(fn(jax.random.PRNGKey(calls + 1)))
            now = time.perf_counter()
            best, calls = min(best, now - t), calls + 1
            if now - t_start >= row_s:
                break
        timed = time.perf_counter() - t_start
        rows.append({"envs": num_envs, "steps_per_call": chunk, "calls": calls,
                     "compile_s": compile_s, "warmup_s": last_warmup, "timed_s": timed,
                     "best_call_s": best, "steps_per_s": num_envs * chunk * calls / timed})
        save_partial(spec, {"rows": rows})
    from ppo_jax.bench import probes

    return {"rows": rows, "device_peak_mib": probes.jax_device_peak_mib()}


def save_partial(spec: dict[str, Any], result: dict[str, Any]) -> None:
    """What a worker has measured so far, for :func:`call` to return if it is cut off."""
    path = spec["_result_path"] + ".partial"
    with open(path + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(path + ".tmp", path)


# ----------------------------------------------------------------------------------------------
# wall time to a threshold
# ----------------------------------------------------------------------------------------------
class _Stop(Exception):
    """Ends :func:`ppo_jax.run.runner.train_batches` from its ``on_batch`` (reason in args)."""


def threshold(spec: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's ppo_jax worker (:func:`~ppo_jax.bench.worker_ppo_jax.worker_ppo_jax`,
    so every figure is measured as ``scripts/benchmark.py --to-threshold`` measures it) on
    ``spec``, its batches stopped after the first evaluation >= ``spec["threshold"]`` or
    once ``spec["deadline_s"]`` seconds from this process's start have passed (in both cases
    not before the second batch: frames/s is measured after the first).

    The stop wraps :func:`ppo_jax.run.runner.train_batches` in this process only: the batches
    run exactly as the worker (and ``scripts/train.py``) drives them until then."""
    from ppo_jax.run import runner
    from ppo_jax.bench.worker_ppo_jax import worker_ppo_jax

    goal, deadline = float(spec["threshold"]), float(spec["deadline_s"])
    train_batches = runner.train_batches
    state = {"reached": False, "stopped": "run ended"}

    def until_threshold(job, *, on_batch=None, on_eval=None, **kwargs):
        def landed(i, ev):  # a host evaluation (MuJoCo C beside a GPU), after its batch
            if on_eval is not None:
                on_eval(i, ev)
            state["reached"] |= float(ev.eval_return[0]) >= goal

        def check(i, m, ev):
            if on_batch is not None:
                on_batch(i, m, ev)
            state["reached"] |= ev is not None and float(ev.eval_return[0]) >= goal
            if len(job.log.marks) < 2:  # frames/s needs two batch marks
                return
            if state["reached"]:
                raise _Stop("reached")
            if time.perf_counter() - PROCESS_START > deadline:
                raise _Stop("deadline")

        try:
            return train_batches(job, on_batch=check, on_eval=landed, **kwargs)
        except _Stop as e:
            state["stopped"] = str(e)
            return job

    runner.train_batches = until_threshold
    before = time.perf_counter() - PROCESS_START  # this process's imports, before the worker's
    try:
        result = worker_ppo_jax(dict(spec, kind="ppo_jax"))
    finally:
        runner.train_batches = train_batches
    # the benchmark counts the time to the threshold from the start of the worker's imports
    result["import_s"] = (result.get("import_s") or 0.0) + before
    result.update(stopped=state["stopped"], process_s=time.perf_counter() - PROCESS_START)
    return result


KINDS = {"probe": probe, "env_speed": env_speed, "threshold": threshold}


def main(argv: list[str]) -> int:
    """Run the spec at ``argv[0]`` and write its result to ``argv[1]`` (JSON)."""
    spec_path, out_path = argv
    with open(spec_path) as f:
        spec = json.load(f)
    spec["_result_path"] = out_path
    result = KINDS[spec["kind"]](spec)
    with open(out_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
