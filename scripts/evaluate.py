#!/usr/bin/env python
"""Evaluate a checkpoint (MJX and/or MuJoCo C, optional video): ``python scripts/evaluate.py
--help``. The command lives in :mod:`ppo_jax.cli.evaluate` (also ``ppo-jax-evaluate``).
"""

from ppo_jax.cli.evaluate import run

if __name__ == "__main__":
    run()
