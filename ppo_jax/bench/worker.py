"""Entry point of one benchmark run: ``python -m ppo_jax.bench.worker SPEC.json RESULT.json``.

``SPEC["kind"]`` names the system; only that system's worker module is imported, so a
TorchRL run loads neither jax nor Brax (its peak memory is its own).
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any, Callable

WORKERS = {
    "ppo_jax": "ppo_jax.bench.worker_ppo_jax:worker_ppo_jax",
    "brax": "ppo_jax.bench.worker_brax:worker_brax",
    "torchrl": "ppo_jax.bench.worker_torchrl:worker_torchrl",
    "brax_playground": "ppo_jax.bench.worker_playground:worker_brax_playground",
}


def load_worker(kind: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The worker function of system ``kind`` (imports its module)."""
    module, name = WORKERS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str]) -> int:
    """Run the spec at ``argv[0]`` and write its result to ``argv[1]`` (JSON)."""
    spec_path, out_path = argv
    with open(spec_path) as f:
        spec = json.load(f)
    result = load_worker(spec["kind"])(spec)
    with open(out_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
