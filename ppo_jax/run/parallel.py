"""Where a run's arrays live: a device mesh of runs x envs, and the shardings of the programs.

A training job is R runs (seeds, times the points of a sweep) of ``num_envs`` envs each. With
D devices the mesh is ``runs x envs = r x e`` with ``r = gcd(R, D)`` and ``e = D / r``:

* the runs axis of every state leaf (``[R, ...]``) is split over ``r`` device rows:
  runs are embarrassingly parallel, they never talk to each other;
* the env axis of the env state and of the collected batch (``[R, N, ...]``,
  ``[R, T, N, ...]``) is split over the ``e`` devices of a row, and so is each minibatch when
  its size divides: the gradient of a minibatch is then a sum over devices (XLA inserts the
  all-reduce), as is the advantage standardization over the whole batch;
* parameters, optimizer state and statistics are replicated within a row.

The math is the one-device program's, unchanged: the shardings are annotations
(``jit``'s in/out shardings and ``with_sharding_constraint``) and XLA's SPMD partitioner
writes the collectives, so a sharded run equals the one-device run up to the order of
floating-point reductions. Metrics come back replicated, so every process can read them.

The same holds across processes (``jax.distributed``): the mesh spans every process's
devices, each process feeds and reads only its own shards, and the program is one SPMD
program.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

RUNS, ENVS = "runs", "envs"


class LayoutError(ValueError):
    """A job that cannot be laid out over the devices: a device count it does not split
    over (the message names the valid ones), or more memory than they have."""


class MemoryNeedError(LayoutError):
    """A job whose runs need more memory than the devices it would run on have."""


def _size(n: float) -> str:
    """``n`` bytes to three significant digits, in decimal units."""
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 999.5 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError  # unreachable


def device_memory() -> tuple[int, str] | None:
    """The memory of one of this process's devices, in bytes, and what it is: the host's
    physical memory for the CPU (its "devices" share it), an accelerator's own limit (the
    largest of the local ones) otherwise; None where the platform does not say."""
    if jax.default_backend() == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "the host"
        except (ValueError, OSError, AttributeError):
            return None
    limits = []
    for d in jax.local_devices():
        try:
            stats = d.memory_stats() or {}
        except Exception:  # a backend without memory statistics
            stats = {}
        if stats.get("bytes_limit"):
            limits.append(int(stats["bytes_limit"]))
    return (max(limits), f"each {jax.default_backend().upper()}") if limits else None


def check_fits(num_runs: int, bytes_per_run: int, devices: int, *,
               memory: tuple[int, str] | None = None, platform: str | None = None) -> None:
    """Raise :class:`MemoryNeedError` where the job cannot fit, whatever its layout.
    ``bytes_per_run`` is a lower bound of what a run holds; a layout splits the runs' arrays
    evenly over the ``devices`` and only adds replicas, so each device holds at least
    ``num_runs * bytes_per_run / devices``. That is checked against an accelerator's memory;
    on the CPU, whose "devices" share the host's memory, this process's devices together
    against the host's. Called before the programs are compiled, so a job far too large is
    one line, not a process killed for memory. ``memory``, ``platform``:
    :func:`device_memory` and JAX's default backend unless given."""
    memory = memory or device_memory()
    if memory is None:
        return
    limit, what = memory
    per_device = bytes_per_run * num_runs / devices
    run = f"{_size(bytes_per_run)} a run: its networks, Adam's moments and one batch"
    advice = "train fewer runs (seeds, sweep points), or a smaller batch or networks"
    if (platform or jax.default_backend()) == "cpu":
        local = min(jax.local_device_count(), devices)
        need = per_device * local
        whose = "" if local == devices else f" (this process's share of {devices} devices)"
        if need > limit:
            raise MemoryNeedError(
                f"{num_runs:,} run(s) need at least {_size(need)} of memory{whose} ({run}), "
                f"more than {what} has ({_size(limit)}): {advice}")
    elif per_device > limit:
        more = ", or more devices" if devices < jax.device_count() else ""
        raise MemoryNeedError(
            f"{num_runs:,} run(s) over {devices} device(s) need at least {_size(per_device)} "
            f"on each ({run}), more than {what} has ({_size(limit)}): {advice}{more}")


def split(num_runs: int, num_envs: int, devices: int) -> tuple[int, int] | None:
    """``(r, e)`` rows of runs x devices per row for ``devices`` devices, or None if the env
    count does not divide over the ``e`` devices of a row."""
    r = math.gcd(num_runs, devices)
    e = devices // r
    return (r, e) if num_envs % e == 0 else None


def valid_device_counts(num_runs: int, num_envs: int, available: int) -> list[int]:
    return [d for d in range(1, available + 1) if split(num_runs, num_envs, d)]


def _nearest_env_counts(num_envs: int, e: int) -> str:
    lo = (num_envs // e) * e
    options = [n for n in (lo, lo + e) if n >= e]
    return " or ".join(str(n) for n in options)


def choose_devices(requested: int | str | None, num_runs: int, num_envs: int) -> int:
    """How many devices the job uses. ``requested``: a count, ``"all"`` (every device), or
    None (auto: every device when they are accelerators and the job splits over them, else
    the most that it splits over; 1 on a CPU, whose forced "devices" share the same cores).
    Raises :class:`LayoutError` naming the valid counts."""
    available = jax.device_count()
    multi = jax.process_count() > 1
    if requested is None:
        if multi:
            requested = "all"
        else:
            if jax.default_backend() == "cpu":
                return 1
            return max(valid_device_counts(num_runs, num_envs, available))
    d = available if requested == "all" else int(requested)
    if not 1 <= d <= available:
        raise LayoutError(f"--devices {requested}: this job sees {available} device(s)")
    if multi and d != available:
        raise LayoutError(f"--devices {requested}: a multi-process run uses all {available} "
                          f"devices of its {jax.process_count()} processes")
    if split(num_runs, num_envs, d) is None:
        r = math.gcd(num_runs, d)
        e = d // r
        valid = valid_device_counts(num_runs, num_envs, available)
        raise LayoutError(
            f"{num_envs} env(s) per run do not divide over {e} device(s) "
            f"({num_runs} run(s) on {d} devices: {r} row(s) of runs x {e} devices for the "
            f"envs); nearest valid --num-envs: {_nearest_env_counts(num_envs, e)}; "
            f"valid --devices here: {', '.join(map(str, valid))}")
    return d


@dataclasses.dataclass(frozen=True)
class Layout:
    """The mesh of a job and the shardings of its arrays."""

    mesh: Mesh

    @property
    def run_shards(self) -> int:
        return self.mesh.shape[RUNS]

    @property
    def env_shards(self) -> int:
        return self.mesh.shape[ENVS]

    def describe(self) -> str:
        return (f"{self.mesh.size} devices: {self.run_shards} row(s) of runs x "
                f"{self.env_shards} device(s) for the envs")

    def key(self) -> list[Any]:
        """What identifies the layout in a program's cache key."""
        return [self.run_shards, self.env_shards,
                [d.id for d in self.mesh.devices.flat]]

    # --- shardings ------------------------------------------------------------------------
    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    def runs(self) -> NamedSharding:
        return NamedSharding(self.mesh, P(RUNS))

    def state_shardings(self, states) -> Any:
        """Shardings of a ``PPOState [R, ...]`` tree: ``env_state`` leaves split over runs and
        envs, every other leaf over runs."""
        envs = NamedSharding(self.mesh, P(RUNS, ENVS))
        runs = self.runs()
        return states.replace(
            **{f.name: jax.tree_util.tree_map(lambda _: envs if f.name == "env_state" else runs,
                                              getattr(states, f.name))
               for f in dataclasses.fields(states)})

    # --- inside the programs (per run, under vmap with spmd_axis_name=RUNS) ------------------
    def constrain_envs(self, tree, axis: int = 0):
        """Split axis ``axis`` (the env or minibatch axis) of every leaf over the row's
        devices; leaves whose size there does not divide stay as XLA places them."""
        def one(x):
            if x.ndim <= axis or x.shape[axis] % self.env_shards:
                return x
            spec = P(*([None] * axis), ENVS)
            return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))

        return jax.tree_util.tree_map(one, tree)

    # --- host <-> device --------------------------------------------------------------------
    def put(self, tree, shardings) -> Any:
        """Host arrays (the same full values in every process) -> global arrays with
        ``shardings`` (each process builds only its own shards)."""
        def one(x, s):
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])

        return jax.tree_util.tree_map(one, tree, shardings)


def make_layout(num_runs: int, num_envs: int, devices: int) -> Layout | None:
    """The :class:`Layout` over the first ``devices`` devices (None for one device: the
    programs are then the unsharded ones)."""
    if devices <= 1:
        return None
    r, e = split(num_runs, num_envs, devices)  # type: ignore[misc]
    grid = np.asarray(jax.devices()[:devices], dtype=object).reshape(r, e)
    return Layout(Mesh(grid, (RUNS, ENVS)))


def gather(x) -> np.ndarray:
    """A (possibly sharded, multi-process) array's full value on this host."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


_BARRIERS = [0]


def from_lead(what: str, value: str, timeout_s: float = 1800.0) -> str:
    """Process 0's ``value`` in every process of a multi-process job (``value`` itself in
    one process), e.g. what it found that the others must act on too: each process calls it
    at the same point. Through the coordination service's key-value store, as
    :func:`barrier`."""
    if jax.process_count() == 1:
        return value
    from jax._src import distributed

    _BARRIERS[0] += 1
    key = f"ppo_jax_{_BARRIERS[0]}_{what}"
    client = distributed.global_state.client
    if jax.process_index() == 0:
        client.key_value_set(key, value)
        return value
    return client.blocking_key_value_get(key, int(timeout_s * 1000))


def barrier(what: str, timeout_s: float = 1800.0) -> None:
    """Wait until every process of a multi-process job gets here (no-op in one process).

    Through the coordination service's barrier, not a device collective: CPU collectives
    (gloo) give up after 30 s, and one process may finish compiling long before another."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed

    _BARRIERS[0] += 1
    distributed.global_state.client.wait_at_barrier(
        f"ppo_jax_{_BARRIERS[0]}_{what}", int(timeout_s * 1000))
