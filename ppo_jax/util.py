"""Leaf helpers every layer may use: atomic file writes, installed versions and the machine,
and one-line errors.

Files are written atomically: a reader (or a run killed mid-write) sees the old file or the new
one, never half of one."""

from __future__ import annotations

import importlib.metadata
import json
import math
import numbers
import os
import platform
import sys
from typing import Any


def write_atomic(path: str, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a
    rename (``os.replace`` is atomic on POSIX)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    os.replace(tmp, path)


def _finite_or_none(x):
    if isinstance(x, list):
        return [_finite_or_none(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(path: str, payload: dict[str, Any]) -> None:
    """``payload`` as JSON (non-finite floats of lists as ``null``), atomically."""
    write_atomic(path, json.dumps(_finite_or_none(payload)))


PACKAGES = (
    "ppo_jax jax jaxlib flax optax chex distrax brax mujoco mujoco-mjx orbax-checkpoint "
    "numpy torch torchrl tensordict gymnasium"
).split()


def version(package: str) -> str | None:
    """The installed version of ``package`` (a distribution name), or None."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(packages=PACKAGES) -> dict[str, str | None]:
    return {"python": platform.python_version(), **{name: version(name) for name in packages}}


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, at most 160 characters (for one-line
    errors)."""
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else ""


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info() -> dict[str, Any]:
    import jax

    devs = jax.devices()
    return {
        "backend": jax.default_backend(),
        "devices": [d.device_kind for d in devs],
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
    }


def exit_with_one_line(message: str | None, code: int) -> None:
    """Print ``message`` as the process's last words on stderr and leave at once.

    Everything else is silenced first: orbax's background threads, cut off mid-read by a
    corrupt checkpoint, can still print tracebacks ("Event loop is closed", ...) while the
    process ends, and the interpreter's teardown would wait on them. Everything the run wrote
    is already on disk (atomic writes)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        real = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    except OSError:
        real = 2
    if message:
        os.write(real, (message + "\n").encode())
    os._exit(code)


class JsonFileError(ValueError):
    """A JSON file that cannot be read or parsed (one line)."""


def is_whole_number(value: Any) -> bool:
    """An integer, Python's or numpy's, and not a bool (a count, an index, a step)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def read_json_file(path: str) -> Any:
    """The JSON value in the file at ``path``; :class:`JsonFileError` (one line) where it cannot
    be read or is not JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise JsonFileError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError:
        raise JsonFileError(f"{path} is not JSON") from None
