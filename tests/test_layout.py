"""The package's import graph, checked in fresh interpreters: the training package never
imports the benchmark (``ppo_jax.bench``) and never imports torch at import time; a TorchRL
benchmark run loads no jax (its peak memory is TorchRL's own)."""

from __future__ import annotations

import json
import subprocess
import sys

PRINT_MODULES = "import json, sys; print(json.dumps(sorted(sys.modules)))"


def modules_after(code: str, root: str) -> set[str]:
    """Names in ``sys.modules`` after running ``code`` in a fresh interpreter at ``root``."""
    proc = subprocess.run([sys.executable, "-c", f"{code}\n{PRINT_MODULES}"], cwd=root,
                          capture_output=True, text=True, timeout=300,
                          env={"JAX_PLATFORMS": "cpu", "PYTHONPATH": root, "PATH": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(json.loads(proc.stdout.splitlines()[-1]))


def test_core_package_imports_neither_the_benchmark_nor_torch(root_dir):
    code = (
        "import importlib, pkgutil, ppo_jax\n"
        "def walk(pkg):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if m.name != 'ppo_jax.bench':\n"
        "            module = importlib.import_module(m.name)\n"
        "            if m.ispkg:\n"
        "                walk(module)\n"
        "walk(ppo_jax)\n"
    )
    mods = modules_after(code, root_dir)
    assert {"ppo_jax.train", "ppo_jax.runner", "ppo_jax.torchrl_reference"} <= mods
    assert not [m for m in mods if m.startswith("ppo_jax.bench")]
    assert not [m for m in mods if m.split(".")[0] in ("torch", "torchrl", "tensordict")]


def test_torchrl_worker_loads_no_jax(root_dir):
    mods = modules_after("from ppo_jax.bench import worker; worker.load_worker('torchrl')",
                         root_dir)
    assert "ppo_jax.bench.worker_torchrl" in mods
    assert not [m for m in mods if m.split(".")[0] in ("jax", "jaxlib", "brax", "torch")]
