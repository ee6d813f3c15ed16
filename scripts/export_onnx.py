#!/usr/bin/env python
"""Export a checkpoint's policy as an ONNX graph: ``python scripts/export_onnx.py --help``.
The command lives in :mod:`ppo_jax.cli.export_onnx`."""

from ppo_jax.cli.export_onnx import run

if __name__ == "__main__":
    run()
