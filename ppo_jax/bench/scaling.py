"""``scripts/benchmark.py --scaling 1,2,4``: ppo_jax's training loop on 1, 2, 4, ... devices.

Each device count runs in a fresh subprocess (:mod:`ppo_jax.bench.worker`) with the same
config, its envs split over the devices (``scripts/train.py --devices N``). On a CPU the
"devices" are forced host devices (``--xla_force_host_platform_device_count``): they share
the same cores, so the table shows that the sharded program runs and what the splitting costs,
not a speed-up. On a machine with several GPUs the same command measures the real thing.
"""

from __future__ import annotations

from typing import Any, Callable

from ppo_jax.config import PPOConfig


def scaling_config(num_envs: int, total_frames: int, seed: int) -> PPOConfig:
    """``num_envs`` envs x 64 steps per batch, 15 minibatches (as the benchmark's other rows),
    no evaluation: a config whose envs split over every device count up to ``num_envs``."""
    fpb = num_envs * 64
    mb = max(fpb // 15, 1)
    batches = max(total_frames // fpb, 2)
    return PPOConfig(num_envs=num_envs, frames_per_batch=fpb, minibatch_size=mb,
                     total_frames=batches * fpb, eval_every=0, seed=seed)


def measure_scaling(devices: list[int], config: PPOConfig, compile_cache: str | None,
                    timeout: float, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """One run per device count; frames/s after the first batch, start-up, layout."""
    from ppo_jax.bench.driver import run_worker

    rows = []
    for d in devices:
        spec = {"kind": "ppo_jax", "config": config.to_dict(), "devices": d,
                "force_host_devices": max(devices), "compile_cache": compile_cache}
        log(f"scaling: {d} device(s), {config.num_envs} envs")
        try:
            res = run_worker(spec, timeout)
        except RuntimeError as e:
            rows.append({"devices": d, "error": str(e)})
            continue
        (f0, t0), (f1, t1) = res["marks"][0], res["marks"][-1]
        rows.append({
            "devices": d, "layout": res.get("layout") or "1 device",
            "frames_per_second": (f1 - f0) / (t1 - t0) if t1 > t0 else None,
            "startup_s": t0, "compile_s": res["compile_s"],
            "device": res["device"],
        })
    return rows


def markdown(rows: list[dict[str, Any]], config: PPOConfig) -> str:
    """The scaling table."""
    base = next((r["frames_per_second"] for r in rows if r.get("frames_per_second")), None)
    precision = ("" if config.matmul_precision == "highest"
                 else f", matmul precision {config.matmul_precision}")
    lines = [f"ppo_jax on {config.env}, {config.num_envs} envs x {config.steps_per_env} "
             f"steps per batch, {config.total_frames:,} frames{precision}",
             "",
             "| devices | layout | frames/s (after batch 1) | vs first row | "
             "s to the end of batch 1 |",
             "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['devices']} | failed: {r['error'][:80]} | | | |")
            continue
        fps = r["frames_per_second"]
        rel = f"{fps / base:.2f}x" if fps and base else "-"
        lines.append(f"| {r['devices']} | {r['layout']} | {fps:,.0f} | {rel} | "
                     f"{r['startup_s']:.1f} |")
    return "\n".join(lines)
