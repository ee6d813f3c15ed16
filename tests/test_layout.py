"""The package's layering, read from its import statements (lazy ones inside functions
included), and its import graph in fresh interpreters: the core imports nothing from the run
layer, interop, evaluation or the commands; the run layer imports no interop and no command;
envs import none of the layers above them; nothing outside the benchmark imports it; torch
never loads at import time; a TorchRL benchmark run loads no jax; the installed package holds
no path into the repository's tests or scripts."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import pytest

PRINT_MODULES = "import json, sys; print(json.dumps(sorted(sys.modules)))"
LAYERS = ("config", "util", "core", "envs", "run", "eval", "interop", "cli", "bench")
# For each layer, the layers it must never import (module-level or lazily).
FORBIDDEN = {
    "config": set(LAYERS) - {"config"},
    "util": set(LAYERS) - {"util"},
    "envs": {"core", "run", "eval", "interop", "cli", "bench"},
    "core": {"run", "eval", "interop", "cli", "bench"},
    "run": {"eval", "interop", "cli", "bench"},
    "eval": {"interop", "cli", "bench"},
    "interop": {"cli", "bench"},
    "cli": {"bench"},
    "bench": set(),
}


def layer_of(module: str) -> str:
    return module.split(".")[1] if "." in module else "<top>"


def package_imports(package_dir: pathlib.Path):
    """``(module, imported ppo_jax module)`` for every import statement in the package,
    ``TYPE_CHECKING`` blocks left out (they never run)."""
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        tree = ast.parse(path.read_text())
        skip = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "ppo_jax":
                    names = [f"ppo_jax.{a.name}" for a in node.names]
                elif node.module.startswith("ppo_jax."):
                    names = [node.module]
                else:
                    names = []
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("ppo_jax.")]
            else:
                continue
            for name in names:
                yield module, name


def test_every_layer_imports_only_the_layers_below_it(root_dir):
    package = pathlib.Path(root_dir) / "ppo_jax"
    seen, wrong = set(), []
    for module, name in package_imports(package):
        src, dst = layer_of(module), layer_of(name)
        seen.add(src)
        if dst in FORBIDDEN.get(src, set()):
            wrong.append(f"{module} imports {name}")
    assert not wrong, wrong
    assert set(LAYERS) - {"config", "util"} <= seen  # every layer was read


def test_the_layer_check_catches_an_upward_import(tmp_path):
    pkg = tmp_path / "ppo_jax"
    (pkg / "core").mkdir(parents=True)
    (pkg / "core" / "bad.py").write_text("def f():\n    from ppo_jax.run import runner\n")
    (pkg / "core" / "ok.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ppo_jax.run import x\n")
    assert list(package_imports(pkg)) == [("ppo_jax.core.bad", "ppo_jax.run")]


def test_the_package_names_no_repository_path(root_dir):
    """An installed package cannot reach the repository's tests/ or scripts/."""
    package = pathlib.Path(root_dir) / "ppo_jax"
    offenders = [str(p.relative_to(root_dir)) for p in package.rglob("*.py")
                 if any(s in p.read_text() for s in ('"tests/', "'tests/", "::test_"))]
    assert not offenders, offenders


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
    assert {"ppo_jax.core.train", "ppo_jax.run.runner",
            "ppo_jax.interop.torchrl.reference"} <= mods
    assert not [m for m in mods if m.startswith("ppo_jax.bench")]
    assert not [m for m in mods if m.split(".")[0] in ("torch", "torchrl", "tensordict")]


@pytest.mark.parametrize("old,new", [
    ("ppo_jax.train", "ppo_jax.core.train"), ("ppo_jax.evaluate", "ppo_jax.eval.evaluate"),
    ("ppo_jax.runner", "ppo_jax.run.runner"), ("ppo_jax.mujoco_sim", "ppo_jax.envs.mujoco_c"),
    ("ppo_jax.commands.train", "ppo_jax.cli.train")])
def test_old_flat_paths_import_the_moved_module(old, new):
    import importlib

    assert importlib.import_module(old) is importlib.import_module(new)
    assert importlib.import_module(new).__spec__.name == new  # the module keeps its own spec


def test_a_split_module_names_its_new_places():
    with pytest.raises(ImportError, match="ppo_jax.run.runs"):
        import ppo_jax.hyper  # noqa: F401


def test_torchrl_worker_loads_no_jax(root_dir):
    mods = modules_after("from ppo_jax.bench import worker; worker.load_worker('torchrl')",
                         root_dir)
    assert "ppo_jax.bench.worker_torchrl" in mods
    assert not [m for m in mods if m.split(".")[0] in ("jax", "jaxlib", "brax", "torch")]
