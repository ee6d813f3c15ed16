"""A kernel-by-kernel trace of a few training batches: the batches run under JAX's profiler
(:func:`trace_batches`), and its trace is summarized (:func:`summarize_trace`). (The phase
timing of :mod:`ppo_jax.bench.profile` times each phase alone; this traces the shipped
programs as a run calls them.)

On a GPU the trace holds the device's kernels (one lane per stream) beside the host's threads
(the launches, XLA's loops, Python): the share of the traced time the device was busy says
whether a batch is bound by the device's arithmetic or by the host's launches and waits, and
the kernels that take the time say what to fuse next. On a CPU the lanes are XLA's threads.
The summary is plain JSON (:mod:`json` of the profiler's Perfetto file; no profiler plugin is
needed to read it)."""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
import time
from typing import Any

TRACE_FILE = "perfetto_trace.json.gz"  # what ``jax.profiler.trace(create_perfetto_trace=True)``
TOP = 10  # event groups listed per lane
LANES = 8  # lanes listed (the busiest first; every kernel lane is kept)
DEVICE_PREFIX = "/device:"  # a device's process ("/device:GPU:0"); a host's is "/host:CPU"


# lanes a profiler derives from a device's kernels (spans over whole programs or steps,
# gaps included): in the device's process, but not kernels
DERIVED_LANES = ("XLA Modules", "XLA Ops", "XLA TraceMe", "Steps", "Framework", "TensorFlow",
                 "Source", "Launch Stats")


def is_device(process: str) -> bool:
    """Whether a trace process is a device's (a GPU's kernels), not the host's threads."""
    return process.startswith(DEVICE_PREFIX) or process.upper().startswith("GPU")


def is_kernel_lane(process: str, thread: str) -> bool:
    """Whether a lane holds a device's kernels (a GPU stream), not the host's threads nor
    the spans a profiler derives from them (:data:`DERIVED_LANES`)."""
    return is_device(process) and not thread.startswith(DERIVED_LANES)

# a trailing instance number ("loop_add_fusion_12", "copy.861", "Stream #3", "thread/1234"),
# so the instances of one XLA fusion or one thread pool fall into one group
_INSTANCE = re.compile(r"([._#/ -]+\d+|\(\d+\))+$")


def group_name(name: str) -> str:
    """``name`` without its trailing instance numbers (``"loop_add_fusion_12"`` and
    ``"loop_add_fusion.3"`` -> ``"loop_add_fusion"``); a name that is only a number stays."""
    base = _INSTANCE.sub("", name.strip())
    return base or name.strip()


def _union_us(spans: list[tuple[float, float]]) -> float:
    """Length of the union of ``[start, end)`` spans (microseconds)."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(spans):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def _self_us(evs: list[dict[str, Any]]) -> list[float]:
    """Each event's own time on its thread (microseconds): the time it was the innermost
    open event (the latest started), so nested events (a host thread's nest like calls)
    take their time out of their parents', and the own times add up to the time covered."""
    start = [float(e["ts"]) for e in evs]
    end = [s + float(e.get("dur") or 0.0) for s, e in zip(start, evs)]
    own = [0.0] * len(evs)
    stack: list[int] = []  # the open events, innermost last
    now: float | None = None

    def advance(to: float) -> None:  # charge [now, to) to the innermost open events
        nonlocal now
        now = to if now is None else now
        while stack:
            top = stack[-1]
            stop = min(end[top], to)
            if stop > now:
                own[top] += stop - now
                now = stop
            if end[top] > to:
                break
            stack.pop()  # ended (one that ended while not innermost is charged nothing)
        now = max(now, to)

    for i in sorted(range(len(evs)), key=lambda i: (start[i], -end[i])):
        advance(start[i])
        stack.append(i)
    advance(float("inf"))
    return own


def _coverage(evs: list[dict[str, Any]], window_us: float, batches: int | None
              ) -> tuple[float, dict[str, Any]]:
    """The busy time of ``evs`` (microseconds) and their counts: events (a batch), busy ms
    and share of the window, mean length."""
    spans = [(float(e["ts"]), float(e["ts"]) + float(e.get("dur") or 0.0)) for e in evs]
    busy = _union_us(spans)
    return busy, {"events": len(evs),
                  "events_per_batch": round(len(evs) / batches, 1) if batches else None,
                  "busy_ms": round(busy / 1e3, 3),
                  "busy_share": round(busy / window_us, 4) if window_us else None,
                  "mean_event_us": round(sum(b - a for a, b in spans) / len(evs), 2)}


def _events(trace: Any) -> list[dict[str, Any]]:
    return trace.get("traceEvents", []) if isinstance(trace, dict) else list(trace)


def summarize_trace(trace: Any, *, batches: int | None = None, top: int = TOP,
                    lanes: int = LANES) -> dict[str, Any]:
    """Summary of a Chrome/Perfetto JSON trace (the loaded JSON, or a path to a ``.json`` or
    ``.json.gz`` file): its window, and per lane (a process's threads of one name, e.g. a GPU
    stream or a pool of XLA's threads) the number of complete events, the time covered by at
    least one of them (``busy_ms``, overlaps counted once), its share of the window, and the
    event groups (:func:`group_name`) that take the most time. The device's kernel lanes
    (:func:`is_kernel_lane`) come first, then the busiest others. A group's
    ``ms`` is its events' own time: less that of the events nested in them (a host thread's
    events nest like calls). ``device`` sums the kernel lanes (``None`` where the trace has
    none, as on a CPU). ``batches``: the batches traced, to give per-batch counts."""
    if isinstance(trace, (str, os.PathLike)):
        opener = gzip.open if str(trace).endswith(".gz") else open
        with opener(trace, "rt") as f:
            trace = json.load(f)
    events = _events(trace)
    procs = {e.get("pid"): str(e.get("args", {}).get("name", e.get("pid")))
             for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    threads = {(e.get("pid"), e.get("tid")): str(e.get("args", {}).get("name", e.get("tid")))
               for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"}
    by_lane: dict[tuple[str, str], list[dict[str, Any]]] = {}
    by_thread: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    first, last = float("inf"), float("-inf")
    for e in events:
        if e.get("ph") != "X" or "ts" not in e:
            continue
        ts, dur = float(e["ts"]), float(e.get("dur") or 0.0)
        first, last = min(first, ts), max(last, ts + dur)
        proc = procs.get(e.get("pid"), str(e.get("pid")))
        thread = group_name(threads.get((e.get("pid"), e.get("tid")), str(e.get("tid"))))
        by_lane.setdefault((proc, thread), []).append(e)
        by_thread.setdefault((e.get("pid"), e.get("tid")), []).append(e)
    own: dict[int, float] = {}  # id(event) -> its own time
    for evs in by_thread.values():
        own.update(zip(map(id, evs), _self_us(evs)))
    window_us = max(0.0, last - first) if by_lane else 0.0

    def lane_summary(proc: str, thread: str, evs: list[dict[str, Any]]) -> dict[str, Any]:
        busy, counts = _coverage(evs, window_us, batches)
        groups: dict[str, list[float]] = {}
        for e in evs:
            g = groups.setdefault(group_name(str(e.get("name", ""))), [0, 0.0])
            g[0] += 1
            g[1] += own[id(e)]
        ranked = sorted(groups.items(), key=lambda kv: -kv[1][1])[:top]
        return {"process": proc, "thread": thread, "device": is_kernel_lane(proc, thread),
                **counts,
                "top": [{"name": n, "count": int(c), "ms": round(t / 1e3, 3),
                         "share_of_busy": round(t / busy, 4) if busy else None}
                        for n, (c, t) in ranked]}

    summaries = [lane_summary(p, t, evs) for (p, t), evs in by_lane.items()]
    summaries.sort(key=lambda s: (not s["device"], -s["busy_ms"]))
    kept = [s for s in summaries if s["device"]]
    kept += [s for s in summaries if not s["device"]][:max(0, lanes - len(kept))]
    device = None
    dev = [(p, t) for (p, t) in by_lane if is_kernel_lane(p, t)]
    if dev:  # every kernel lane together: a kernel overlapping another counted once
        _, counts = _coverage([e for k in dev for e in by_lane[k]], window_us, batches)
        device = {"lanes": len(dev), **counts}
    return {"window_ms": round(window_us / 1e3, 3), "batches": batches,
            "events": sum(len(v) for v in by_lane.values()), "device": device,
            "lanes": kept, "lanes_left_out": len(summaries) - len(kept)}


def find_trace(log_dir: str) -> str | None:
    """The newest Perfetto trace JAX's profiler wrote under ``log_dir`` (None: none)."""
    found = glob.glob(os.path.join(log_dir, "**", TRACE_FILE), recursive=True)
    return max(found, key=os.path.getmtime) if found else None


def trace_batches(job, batches: int, log_dir: str, **train_kwargs) -> dict[str, Any]:
    """Run the next ``batches`` batches of ``job`` (:func:`ppo_jax.run.runner.train_batches`,
    with ``train_kwargs``) under JAX's profiler, writing its trace under ``log_dir``, and
    summarize it (:func:`summarize_trace`, plus the traced batches' wall seconds, the
    profiler's own start and stop, and the trace file)."""
    import jax

    from ppo_jax.run import runner

    start = job.start
    stop = min(job.trainer.config.num_batches, start + batches)
    if stop <= start:
        raise ValueError(f"no batch left to trace: the run ends at batch {start}")
    t = time.perf_counter()
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level = 0  # Python's own calls: slow to record, not what is asked
    options.enable_hlo_proto = False
    options.host_tracer_level = 1  # the host's own annotations; a GPU's kernels come regardless
    with jax.profiler.trace(log_dir, create_perfetto_trace=True, profiler_options=options):
        t_in = time.perf_counter()
        runner.train_batches(job, stop=stop, **train_kwargs)
        jax.block_until_ready(job.states)
        run_s = time.perf_counter() - t_in
    path = find_trace(log_dir)
    out: dict[str, Any] = {"first_batch": start, "batches": stop - start,
                           "batches_s": round(run_s, 4),
                           "profiler_s": round(time.perf_counter() - t - run_s, 3),
                           "file": path}
    if path is None:
        out["summary"] = None
        out["error"] = f"the profiler wrote no {TRACE_FILE} under {log_dir}"
        return out
    out["summary"] = summarize_trace(path, batches=stop - start)
    if out["summary"]["device"] is None and jax.default_backend() != "cpu":
        out["error"] = (f"the trace holds no kernel of the {jax.default_backend()}: the "
                        "profiler could not trace the device (on an NVIDIA GPU it needs CUPTI)")
    return out


def trace_lines(traced: dict[str, Any] | None) -> list[str]:
    """A traced run (:func:`trace_batches`) as a few Markdown lines: the device's busy share
    and kernels per batch, and the groups that take the most of its time (on a CPU, of the
    busiest lane's)."""
    if not traced:
        return []
    s = traced.get("summary")
    if not s:
        return [f"- trace: {traced.get('error', 'no summary')}"]
    n = traced.get("batches") or 1
    head = (f"- trace of {n} batch{'es' if n != 1 else ''} ({traced.get('batches_s', 0):.3f} s, "
            f"window {s['window_ms']:.1f} ms)")
    dev = s.get("device")
    if dev:
        share = dev["busy_share"]
        head += (f": the device busy {100 * share:.0f}% of the window" if share is not None
                 else ": the device")
        head += (f", {dev['events_per_batch']:,} kernels a batch, "
                 f"{dev['mean_event_us']:.1f} us each on average")
    lines = [head]
    lane = next((x for x in s["lanes"] if x["device"]), None) or (
        s["lanes"][0] if s["lanes"] else None)
    if lane:
        tops = ", ".join(f"{t['name']} {t['ms']:.1f} ms ({t['count']:,})" for t in lane["top"][:5])
        lines.append(f"  - most time ({lane['process']} {lane['thread']}): {tops}")
    if traced.get("error"):
        lines.append(f"  - {traced['error']}")
    return lines
