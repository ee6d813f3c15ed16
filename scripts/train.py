#!/usr/bin/env python
"""Train PPO on an MJX env (InvertedDoublePendulum-v4 unless --env): ``scripts/train.py --help``.

The command lives in :mod:`ppo_jax.cli.train` (also installed as ``ppo-jax-train``).
"""

from ppo_jax.cli.train import run

if __name__ == "__main__":
    run()
