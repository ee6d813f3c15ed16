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


BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # jax._src.dispatch
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"  # jax._src.compiler


class CompileLog:
    """XLA compilations of this process, from JAX's monitoring events.

    ``events``: those of at least ``min_s`` s as ``(seconds since t0 at the end, duration)``.
    ``named``: every one of at least ``named_min_s`` s as ``{"name", "seconds", "end_s",
    "cache_hit"}`` (``name``: the XLA module's function name that JAX passes with the event;
    ``cache_hit``: JAX's persistent cache answered, so ``seconds`` was a load; ``end_s``
    since ``t0``); the shorter ones counted in ``small`` (``{"count", "seconds"}``). JAX
    records each compilation (or cache load) on the thread that asked for it, so a cache hit
    is matched to its compilation by thread."""

    def __init__(self, min_s: float = 1.0, named_min_s: float = 0.05):
        import threading

        import jax

        self.t0 = time.perf_counter()
        self.min_s, self.named_min_s = min_s, named_min_s
        self.events: list[tuple[float, float]] = []
        self.named: list[dict[str, Any]] = []
        self.small = {"count": 0, "seconds": 0.0}
        self._hit: dict[int, bool] = {}
        self._thread = threading.get_ident
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        jax.monitoring.register_event_listener(self._listen_event)

    def _listen_event(self, event: str, **_: Any) -> None:
        if event == CACHE_HIT_EVENT:
            self._hit[self._thread()] = True

    def _listen(self, event: str, duration: float, **kwargs: Any) -> None:
        if event != BACKEND_COMPILE_EVENT:
            return
        end = time.perf_counter() - self.t0
        hit = self._hit.pop(self._thread(), False)
        if duration >= self.min_s:
            self.events.append((end, float(duration)))
        if duration >= self.named_min_s:
            self.named.append({"name": str(kwargs.get("fun_name") or "?"),
                               "seconds": round(float(duration), 3), "end_s": round(end, 3),
                               "cache_hit": hit})
        else:
            self.small["count"] += 1
            self.small["seconds"] += float(duration)

    def report(self) -> dict[str, Any]:
        """The named compilations and the count and seconds of the short ones."""
        return {"named": list(self.named),
                "small": {"count": self.small["count"],
                          "seconds": round(self.small["seconds"], 3)},
                "min_named_s": self.named_min_s}


class Phases:
    """Wall seconds of named phases of a start-up (``with phases("env_build"): ...``; a
    phase entered twice adds up)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        import contextlib

        @contextlib.contextmanager
        def timed():
            t = time.perf_counter()
            try:
                yield
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t

        return timed()


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
