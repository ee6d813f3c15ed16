#!/usr/bin/env python
"""Export a checkpoint for the TorchRL tutorial's modules: ``python scripts/export_torchrl.py
--help``. The command lives in :mod:`ppo_jax.cli.export_torchrl`."""

from ppo_jax.cli.export_torchrl import run

if __name__ == "__main__":
    run()
