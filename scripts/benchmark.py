#!/usr/bin/env python
"""Benchmark the whole PPO training loop: TorchRL tutorial vs ppo_jax vs Brax's PPO trainer.

    python scripts/benchmark.py --quick --json bench.json          # CI smoke scale (minutes)
    python scripts/benchmark.py --envs 1,16,256 --total-frames 20000 --repeats 3 --json bench.json
    python scripts/benchmark.py --envs 16,256,4096 --to-threshold 9000 --total-frames 512000

Rows: the TorchRL tutorial (CPU; and CUDA when torch sees a GPU), ppo_jax at the tutorial
configuration and at each --envs count, Brax's ppo.train on ppo_jax's MJX env at the same
configurations. Every run trains the same total frames in a fresh subprocess; runs of the
systems are interleaved and repeated. Prints markdown tables (frames/s with ratios against
TorchRL, start-up, peak memory, and with --to-threshold the time to a return) and writes every
figure, the exact configs, versions and the device with --json. The logic lives in
``ppo_jax/bench/`` (its README says how the figures are measured).
"""

from __future__ import annotations

from ppo_jax.bench.cli import run


if __name__ == "__main__":
    run()
