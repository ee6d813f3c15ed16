"""Benchmark worker: ppo_jax's run exactly as ``scripts/train.py`` drives it (the programs of
:mod:`ppo_jax.run.programs`, called batch by batch by :func:`ppo_jax.run.runner.train_batches`),
timed at the end of each batch (runs in a fresh subprocess, see :mod:`ppo_jax.bench.worker`)."""

from __future__ import annotations

import time
from typing import Any

from ppo_jax.bench import probes
from ppo_jax.config import PPOConfig
from ppo_jax.util import first_line


def worker_ppo_jax(spec: dict[str, Any]) -> dict[str, Any]:
    """ppo_jax's run of ``spec["config"]``; optional: ``stop`` (run only that many batches),
    ``launched_unix`` (when the driver launched this process: ``launch_to_t0_s``), ``trace``
    (``{"batches": k, "dir": path}``: then run the next k batches under JAX's profiler, its
    trace written under path, and return its summary as ``trace``,
    :func:`ppo_jax.bench.trace.trace_batches`; they are not among the timed batches)."""
    t_import = time.perf_counter()
    launched = spec.get("launched_unix")
    if spec.get("force_host_devices"):  # CPU "devices" for --scaling (before jax starts)
        import os

        flag = f"--xla_force_host_platform_device_count={int(spec['force_host_devices'])}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    import jax

    probes.enable_cache(spec.get("compile_cache"))
    from ppo_jax.run import runner

    compiles = probes.CompileLog()
    phases = probes.Phases()
    t0 = compiles.t0 = time.perf_counter()
    launch_to_t0 = (time.time() - launched) if launched else None
    cfg = PPOConfig.from_dict(spec["config"])
    evals: list[tuple[int, float, float]] = []
    fpb = cfg.frames_per_batch

    from ppo_jax.eval.host import MujocoEvaluator
    from ppo_jax.run.runs import Runs

    with phases("backend_init"):  # what prepare's first JAX call would start
        jax.devices()
    init_from = None
    if spec.get("init_from_torchrl"):  # a matched start: a TorchRL run's networks and stats
        from ppo_jax.interop.torchrl.export import load_torchrl_export

        init_from = load_torchrl_export(spec["init_from_torchrl"], cfg)
    with phases("prepare"):
        job = runner.prepare(Runs(cfg), devices=spec.get("devices"), init_from=init_from,
                             host_evaluator=MujocoEvaluator)
    compile_s = time.perf_counter() - t0
    stats = jax.device_get(job.states.obs_stats)  # the run's initial statistics, [R, obs]
    start_stats = {"loc": stats.loc[0].tolist(), "scale": stats.scale[0].tolist()}
    prepared_s = compile_s
    init_run_s = job.log.run_seconds  # prepare's init program run (train_batches adds to it)

    def on_eval(i, ev):
        evals.append(((i + 1) * fpb, time.perf_counter() - t0, float(ev.eval_return[0])))

    per_batch: dict[str, list] = {"saturation": [], "reward": []}

    def on_batch(i, m, ev):
        for name in per_batch:
            per_batch[name].append(float(getattr(m, name)[0]))
        if ev is not None:  # an MJX evaluation, read with its batch
            on_eval(i, ev)

    t_call = time.perf_counter()
    # evaluations where scripts/train.py runs them (--eval-sim auto: beside a GPU on the
    # host, in MuJoCo C for a Gymnasium port, else MJX on the CPU; a host evaluation lands
    # through on_eval)
    runner.train_batches(job, on_batch=on_batch, on_eval=on_eval,
                         host_evaluator=MujocoEvaluator, stop=spec.get("stop"))
    call_s = time.perf_counter() - t_call
    offset = t_call - t0  # train_batches' marks count from its own start
    profile = None
    if spec.get("profile"):
        from ppo_jax.bench.profile import profile_batch

        profile = profile_batch(job.trainer, jax.tree_util.tree_map(lambda x: x[0], job.states))
    marks = [(f, t + offset) for f, t in job.log.marks]
    failed, done = job.log.failed[0], job.start
    peak_rss, device_peak = probes.rss_mib(), probes.jax_device_peak_mib()  # before a trace
    traced = None
    if spec.get("trace"):  # after the timed batches: a failure here keeps their figures
        from ppo_jax.bench.trace import trace_batches

        try:
            traced = trace_batches(job, int(spec["trace"]["batches"]), spec["trace"]["dir"],
                                   host_evaluator=MujocoEvaluator)
        except Exception as e:  # noqa: BLE001  (recorded with the run)
            traced = {"error": f"{type(e).__name__}: {first_line(e)}"}
    return dict(
        marks=marks, evals=evals, per_batch=per_batch, start_stats=start_stats,
        import_s=t0 - t_import, launch_to_t0_s=launch_to_t0,
        compile_s=compile_s,
        compiled_from_cache=job.programs.from_cache, compile=job.programs.report(),
        call_s=call_s, call_fps=done * fpb / call_s, compiles=compiles.events,
        failed_batch=failed,
        peak_rss_mib=peak_rss, device_peak_mib=device_peak,
        device=probes.jax_device_info(), profile=profile, trace=traced, layout=job.log.layout,
        startup=_startup(phases, prepared_s, init_run_s, job, compiles),
    )


def _startup(phases: probes.Phases, prepared_s: float, init_run_s: float, job,
             compiles: probes.CompileLog) -> dict[str, Any]:
    """Where the seconds before the first batch went: backend init, then what ``prepare``
    records in ``job.log.startup``: the env build, the programs (each loaded or compiled,
    ``job.programs.report()``), the ``init`` program's run (network init and the
    normalization statistics' env steps, and the wait for them; ``host_stats_s``: of which
    the statistics on the host's CPU, for a job on a GPU); the rest of prepare
    (devices, layout, keys), and every XLA compilation with its name (``program``: which of
    the job's programs it is, None for any other)."""
    p = {**phases.seconds, **{k[:-2]: v for k, v in job.log.startup.items()}}
    names = {m: n for n, m in job.programs.modules.items()}
    xla = compiles.report()
    for c in xla["named"]:
        c["program"] = next((n for m, n in names.items() if m in c["name"]), None)
    return {"backend_init_s": p.get("backend_init"), "env_build_s": p.get("env_build"),
            "programs_s": p.get("programs"), "programs": job.programs.report(),
            "init_run_s": init_run_s, "host_stats_s": p.get("host_stats"),
            "prepare_other_s": (p.get("prepare", 0.0) - p.get("env_build", 0.0)
                                - p.get("programs", 0.0) - init_run_s),
            "prepared_s": prepared_s, "xla_compiles": xla}
