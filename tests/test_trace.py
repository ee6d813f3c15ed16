"""Where a batch's time goes (ppo_jax.bench.trace): the summary of a profiler trace (lanes,
busy time with overlaps counted once, each event's own time under nesting, groups of one
fusion's instances), on a hand-made trace with a GPU's shape and on a real trace of this
machine's JAX. The GPU check's ``trace`` step runs it end to end (tests/test_gpu_check.py)."""

from __future__ import annotations

import gzip
import json
import types

import jax
import jax.numpy as jnp
import pytest

from ppo_jax.bench import trace


def _meta(pid, name, tid=None):
    if tid is None:
        return {"ph": "M", "name": "process_name", "pid": pid, "args": {"name": name}}
    return {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}}


def _x(pid, tid, name, ts, dur):
    return {"ph": "X", "pid": pid, "tid": tid, "name": name, "ts": ts, "dur": dur}


def gpu_like_trace():
    """A GPU's shape: two streams of one device (their kernels overlap across streams), a
    host thread whose events nest like calls, and a second host pool of two threads."""
    return {"traceEvents": [
        _meta(1, "/device:GPU:0"), _meta(1, "Stream #7(Compute)", 7),
        _meta(1, "Stream #9(MemcpyD2D)", 9),
        _meta(2, "/host:CPU"), _meta(2, "python", 100),
        _meta(2, "XlaWorker/11", 11), _meta(2, "XlaWorker/12", 12),
        # stream 7: three kernels, two instances of one fusion
        _x(1, 7, "loop_add_fusion_12", 0, 10), _x(1, 7, "loop_add_fusion.3", 20, 10),
        _x(1, 7, "gemm_fusion_dot_63", 40, 40),
        # stream 9: a copy overlapping the gemm by 10 us, and one alone
        _x(1, 9, "memcpy", 70, 20), _x(1, 9, "memcpy", 100, 5),
        # host: run (0-200) holds launch (0-30) and wait (40-190), wait holds sync (50-60)
        _x(2, 100, "run", 0, 200), _x(2, 100, "cuLaunchKernel", 0, 30),
        _x(2, 100, "wait", 40, 150), _x(2, 100, "cuStreamSynchronize", 50, 10),
        # a pool of two threads: one lane, their overlap counted once
        _x(2, 11, "op", 0, 50), _x(2, 12, "op", 25, 50),
        {"ph": "i", "pid": 2, "tid": 100, "name": "instant", "ts": 5},  # not a span
    ]}


def test_group_name_drops_instance_numbers():
    assert trace.group_name("loop_add_fusion_12") == "loop_add_fusion"
    assert trace.group_name("loop_add_fusion.3") == "loop_add_fusion"
    assert trace.group_name("Stream #7") == "Stream"
    assert trace.group_name("XlaWorker/11") == "XlaWorker"
    assert trace.group_name("gemm_fusion_dot") == "gemm_fusion_dot"
    assert trace.group_name("  42 ") == "42"  # only a number: kept


def test_summary_of_a_gpu_like_trace():
    s = trace.summarize_trace(gpu_like_trace(), batches=2)
    assert s["window_ms"] == pytest.approx(0.2)  # 0 .. 200 us
    assert s["events"] == 11 and s["batches"] == 2
    lanes = {(x["process"], x["thread"]): x for x in s["lanes"]}
    # device lanes first, each stream its own lane
    assert [x["device"] for x in s["lanes"]][:2] == [True, True]
    compute = lanes[("/device:GPU:0", "Stream #7(Compute)")]
    assert compute["events"] == 3 and compute["events_per_batch"] == 1.5
    assert compute["busy_ms"] == pytest.approx(0.06)
    assert compute["top"][0] == {"name": "gemm_fusion_dot", "count": 1, "ms": 0.04,
                                 "share_of_busy": pytest.approx(2 / 3, abs=1e-4)}
    assert compute["top"][1]["name"] == "loop_add_fusion" and compute["top"][1]["count"] == 2
    # the device: kernels of both streams, the overlap of gemm and copy counted once
    dev = s["device"]
    assert dev["lanes"] == 2 and dev["events"] == 5 and dev["events_per_batch"] == 2.5
    assert dev["busy_ms"] == pytest.approx((10 + 10 + 50 + 5) / 1e3)
    assert dev["busy_share"] == pytest.approx(75 / 200)
    assert dev["mean_event_us"] == pytest.approx(85 / 5)
    # a host thread: each event's own time, less the events nested in it
    host = lanes[("/host:CPU", "python")]
    own = {t["name"]: t["ms"] for t in host["top"]}
    assert own == {"wait": pytest.approx(0.14), "cuLaunchKernel": pytest.approx(0.03),
                   "run": pytest.approx(0.02), "cuStreamSynchronize": pytest.approx(0.01)}
    assert host["busy_ms"] == pytest.approx(0.2)
    pool = lanes[("/host:CPU", "XlaWorker")]
    assert pool["events"] == 2 and pool["busy_ms"] == pytest.approx(0.075)
    lines = trace.trace_lines({"batches": 2, "batches_s": 0.5, "summary": s})
    assert "the device busy 38% of the window, 2.5 kernels a batch" in lines[0]
    assert lines[1].startswith("  - most time (/device:GPU:0 Stream #7(Compute)): "
                               "gemm_fusion_dot 0.0 ms (1)")


def test_device_processes():
    assert trace.is_device("/device:GPU:0") and trace.is_device("GPU 0")
    assert not trace.is_device("/host:CPU") and not trace.is_device("python")


def test_own_time_with_overlapping_siblings():
    """Events that overlap without nesting: each instant goes to the innermost (the latest
    started) open event, so the own times add up to the time covered."""
    evs = [_x(2, 1, "P", 0, 100), _x(2, 1, "A", 10, 20), _x(2, 1, "B", 20, 20),
           _x(2, 1, "Z", 50, 0), _x(2, 1, "C", 60, 10), _x(2, 1, "D", 60, 10)]
    s = trace.summarize_trace(evs)
    own = {t["name"]: t["ms"] for t in s["lanes"][0]["top"]}
    # P: 0-10, 40-60, 70-100; A: 10-20 (B starts inside it and outlasts it); B: 20-40;
    # C and D start together and end together: the one sorted innermost takes it all
    assert own["P"] == pytest.approx(0.06) and own["A"] == pytest.approx(0.01)
    assert own["B"] == pytest.approx(0.02) and own["Z"] == 0.0
    assert own["C"] + own["D"] == pytest.approx(0.01)
    assert sum(own.values()) == pytest.approx(s["lanes"][0]["busy_ms"]) == pytest.approx(0.1)


def test_derived_device_lanes_are_not_kernels():
    """A profiler's spans over whole programs in the device's process (gaps included) are
    not counted as the device's kernels: they would read as a device always busy."""
    t = gpu_like_trace()
    t["traceEvents"] += [_meta(1, "XLA Modules", 3), _x(1, 3, "jit_update", 0, 200),
                         _meta(1, "XLA Ops", 4), _x(1, 4, "fusion", 0, 150)]
    s = trace.summarize_trace(t, batches=2)
    assert s["device"]["events"] == 5 and s["device"]["busy_share"] == pytest.approx(0.375)
    lanes = {x["thread"]: x for x in s["lanes"]}
    assert not lanes["XLA Modules"]["device"] and not lanes["XLA Ops"]["device"]
    assert trace.is_kernel_lane("/device:GPU:0", "Stream #7(Compute)")
    assert not trace.is_kernel_lane("/device:GPU:0", "XLA Modules")
    assert not trace.is_kernel_lane("/host:CPU", "Stream")
    lines = trace.trace_lines({"batches": 2, "summary": s, "error": "a note"})
    assert lines[-1] == "  - a note"


def test_lanes_are_capped_but_device_lanes_kept():
    s = trace.summarize_trace(gpu_like_trace(), lanes=1)
    assert [x["device"] for x in s["lanes"]] == [True, True]
    assert s["lanes_left_out"] == 2
    cpu_only = {"traceEvents": [e for e in gpu_like_trace()["traceEvents"] if e["pid"] == 2]}
    s = trace.summarize_trace(cpu_only)
    assert s["device"] is None and s["lanes"][0]["thread"] == "python"  # the busiest
    assert s["lanes"][0]["events_per_batch"] is None  # no batch count given
    assert trace.trace_lines({"batches": 1, "summary": s})[0].startswith(
        "- trace of 1 batch (0.000 s, window 0.2 ms)")


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_summary_reads_files(tmp_path, suffix):
    path = tmp_path / f"t{suffix}"
    text = json.dumps(gpu_like_trace()["traceEvents"])  # a bare list of events is a trace too
    if suffix.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    assert trace.summarize_trace(str(path)) == trace.summarize_trace(gpu_like_trace())


def test_a_real_trace_of_this_machine(tmp_path):
    """JAX's own profiler, its Perfetto file found and read: this JAX's format."""
    f = jax.jit(lambda x: jax.lax.fori_loop(0, 50, lambda i, y: jnp.tanh(y @ y) + 1.0, x))
    x = jnp.ones((16, 16))
    f(x).block_until_ready()
    with jax.profiler.trace(str(tmp_path), create_perfetto_trace=True):
        f(x).block_until_ready()
    path = trace.find_trace(str(tmp_path))
    assert path and path.endswith(trace.TRACE_FILE)
    s = trace.summarize_trace(path, batches=1)
    assert s["events"] > 0 and s["window_ms"] > 0
    assert any(lane["busy_ms"] > 0 and lane["top"] for lane in s["lanes"])
    if jax.default_backend() == "cpu":
        assert s["device"] is None
    assert trace.find_trace(str(tmp_path / "empty")) is None


def test_tracing_past_the_last_batch_is_refused(tmp_path):
    job = types.SimpleNamespace(start=3, trainer=types.SimpleNamespace(
        config=types.SimpleNamespace(num_batches=3)))
    with pytest.raises(ValueError, match="no batch left to trace: the run ends at batch 3"):
        trace.trace_batches(job, 2, str(tmp_path))


def test_the_benchmark_worker_traces_after_its_timed_batches(tmp_path):
    """The benchmark's worker times its batches, then traces the next ones; a trace that
    cannot run (no batch left) is recorded as an error and the timed figures stay."""
    from ppo_jax.bench.worker_ppo_jax import worker_ppo_jax
    from ppo_jax.config import PPOConfig

    cfg = PPOConfig.from_preset("tiny").replace(eval_sim="mjx")
    out = worker_ppo_jax({"config": cfg.to_dict(), "stop": 2,
                          "trace": {"batches": 1, "dir": str(tmp_path / "t")}})
    assert len(out["marks"]) == 2 and out["call_fps"] > 0  # the timed batches alone
    traced = out["trace"]
    assert traced["first_batch"] == 2 and traced["batches"] == 1 and "error" not in traced
    assert traced["summary"]["events"] > 0 and traced["file"].startswith(str(tmp_path))
    out = worker_ppo_jax({"config": cfg.to_dict(),
                          "trace": {"batches": 1, "dir": str(tmp_path / "u")}})
    assert len(out["marks"]) == cfg.num_batches
    assert out["trace"] == {"error": "ValueError: no batch left to trace: the run ends at "
                                     f"batch {cfg.num_batches}"}
