"""Files a run writes, written atomically: a reader (or a run killed mid-write) sees the old
file or the new one, never half of one."""

from __future__ import annotations

import json
import math
import os
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
