"""What a benchmark worker measures about its own process: peak memory, the accelerator,
XLA compilations. jax is imported inside the functions that need it, so a TorchRL worker
never loads it."""

from __future__ import annotations

import resource
import sys
import time
from typing import Any


def rss_mib() -> float:
    """Peak resident memory of this process (``ru_maxrss``), MiB."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def jax_device_peak_mib() -> float | None:
    """Peak memory of JAX's first local device, MiB (None where the backend does not say)."""
    import jax

    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001
        return None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return stats["peak_bytes_in_use"] / 2**20


def jax_device_info() -> dict[str, Any]:
    """JAX's backend and device kinds."""
    import jax

    return {"backend": jax.default_backend(), "devices": [d.device_kind for d in jax.devices()]}


class CompileLog:
    """XLA compilations of at least ``min_s`` s: (seconds since ``t0`` at the end, duration)."""

    def __init__(self, min_s: float = 1.0):
        import jax

        self.t0 = time.perf_counter()
        self.min_s = min_s
        self.events: list[tuple[float, float]] = []
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **_: Any) -> None:
        if event == "/jax/core/compile/backend_compile_duration" and duration >= self.min_s:
            self.events.append((time.perf_counter() - self.t0, float(duration)))


def enable_cache(path: str | None) -> None:
    """JAX's persistent compilation cache at ``path`` (None: off)."""
    if path:
        from ppo_jax.run.compile_cache import enable_compile_cache

        enable_compile_cache(path)


class CacheCounter:
    """JAX's persistent compilation cache hits and misses in this process (all threads)."""

    def __init__(self):
        import jax

        from ppo_jax.run.compile_cache import _HIT, _MISS

        self._names = {_HIT: "hits", _MISS: "misses"}
        self._counts = {"hits": 0, "misses": 0}
        jax.monitoring.register_event_listener(self._listen)

    def _listen(self, event: str, **_: Any) -> None:
        if event in self._names:
            self._counts[self._names[event]] += 1

    def counts(self) -> dict[str, int]:
        """``{"hits": n, "misses": m}`` so far."""
        return dict(self._counts)
