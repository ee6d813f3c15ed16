#!/usr/bin/env python
"""ppo_jax runs against TorchRL runs on the tutorial's four panels: ``python scripts/compare.py
--help``. The command lives in :mod:`ppo_jax.cli.compare` (also ``ppo-jax-compare``)."""

from ppo_jax.cli.compare import run

if __name__ == "__main__":
    run()
