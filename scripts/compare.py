#!/usr/bin/env python
"""ppo_jax runs against TorchRL runs on the tutorial's four panels: ``python scripts/compare.py
--help``. The command lives in :mod:`ppo_jax.commands.compare` (also ``ppo-jax-compare``)."""

from ppo_jax.commands.compare import run

if __name__ == "__main__":
    run()
