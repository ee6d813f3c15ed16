"""Joining a multi-process job: ``jax.distributed.initialize`` from flags or from the cluster.

Every process of a job runs the same command; JAX's distributed runtime connects them, and
the training programs then span every process's devices as one SPMD program
(:mod:`ppo_jax.run.parallel`). Either give the three flags (``--coordinator HOST:PORT
--num-processes N --process-id I``) or ``--distributed auto``, which leaves it to JAX's
cluster detection (SLURM, Open MPI, Kubernetes, TPU pods, ...).

JAX's runtime ends a process with a C++ fatal error (a stack trace, SIGABRT) when it cannot
form the job: an unreachable coordinator, a process that never comes, a process id the
coordinator does not expect. Here those become one line and exit status 1: the coordinator
is probed before connecting, a watchdog ends the wait a little before JAX's own deadline,
and the runtime's fatal message is read from stderr and reported as that line.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import socket
import sys
import threading
import time
from typing import Callable

DEFAULT_TIMEOUT = 300


class DistributedError(Exception):
    """The job could not be formed (one line)."""


def add_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "many processes / hosts (jax.distributed; every process runs the same command)")
    g.add_argument("--coordinator", metavar="HOST:PORT",
                   help="address of process 0, which hosts JAX's coordination service")
    g.add_argument("--num-processes", type=int, metavar="N", help="processes in the job")
    g.add_argument("--process-id", type=int, metavar="I", help="this process, 0 .. N-1")
    g.add_argument("--distributed", choices=("auto",),
                   help="'auto': let JAX detect the cluster (SLURM, Open MPI, ...) and its "
                        "coordinator, process count and id")
    g.add_argument("--distributed-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                   help="seconds to wait for the coordinator and every process")


def requested(args: argparse.Namespace) -> bool:
    return bool(args.distributed or args.coordinator or args.num_processes is not None
                or args.process_id is not None)


def _parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedError(f"--coordinator {address!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def _reachable(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds (retried:
    process 0 may still be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, timeout)):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.25)


class _FatalWatch:
    """While active: fd 2 goes to a pipe read by a thread, which passes lines on but turns
    the runtime's fatal error into ``on_fatal(message)``; after ``timeout`` seconds
    ``on_fatal`` is called with the timeout's message."""

    def __init__(self, timeout: float, on_fatal: Callable[[str], None], timeout_message: str):
        self.timeout, self.on_fatal, self.timeout_message = timeout, on_fatal, timeout_message
        self.done = threading.Event()

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
        self.reader = threading.Thread(target=self._read, args=(r,), daemon=True)
        self.reader.start()
        self.dog = threading.Thread(target=self._watch, daemon=True)
        self.dog.start()
        return self

    def _read(self, fd: int) -> None:
        buf = b""
        with os.fdopen(fd, "rb", buffering=0) as f:
            while True:
                chunk = f.read(4096)
                if not chunk:
                    break
                buf += chunk
                text = buf.decode(errors="replace")
                if "Terminating process" in text or "Check failure" in text:
                    status = re.search(r"absl::Status: ([^\n]+)", text)
                    rpc = re.search(r"RPC: (\S+)", text)
                    reason = status.group(1).strip() if status else "fatal error"
                    self._fatal(f"JAX's distributed runtime failed: {reason}"
                                + (f" ({rpc.group(1)})" if rpc else ""))
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    os.write(self.saved, line + b"\n")

    def _watch(self) -> None:
        if not self.done.wait(self.timeout):
            self._fatal(self.timeout_message)

    def _fatal(self, message: str) -> None:
        os.dup2(self.saved, 2)  # the line goes to the real stderr, not to this pipe
        self.on_fatal(message)

    def __exit__(self, *exc):
        self.done.set()
        sys.stderr.flush()
        os.dup2(self.saved, 2)  # closes the pipe's write end: the reader drains and ends
        self.reader.join(timeout=1.0)
        os.close(self.saved)
        return False


def _die(message: str) -> None:
    """Report ``message`` (one line) and end the process now: the runtime is about to abort."""
    from ppo_jax.util import exit_with_one_line

    prog = os.path.basename(sys.argv[0]) or "ppo_jax"
    exit_with_one_line(f"{prog}: error: {message}", 1)


def initialize(args: argparse.Namespace, die: Callable[[str], None] = _die) -> str | None:
    """Join the job the flags describe (nothing without them). Returns a description of the
    job; raises :class:`DistributedError` for flags that cannot work; a job that cannot be
    formed in time ends the process through ``die(message)``."""
    if not requested(args):
        return None
    import jax

    timeout = float(args.distributed_timeout)
    if not (math.isfinite(timeout) and timeout > 0):
        raise DistributedError(f"--distributed-timeout must be a number of seconds > 0, got "
                               f"{timeout:g}")
    # collectives between CPU devices of different processes (no effect on GPUs/TPUs)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if args.distributed == "auto":
        if args.coordinator or args.num_processes is not None or args.process_id is not None:
            raise DistributedError("--distributed auto takes the coordinator, process count "
                                   "and id from the cluster: do not give them too")
        kwargs = {}
        n, pid = None, None
        what = "the cluster's processes"
    else:
        missing = [f for f, v in (("--coordinator", args.coordinator),
                                  ("--num-processes", args.num_processes),
                                  ("--process-id", args.process_id)) if v is None]
        if missing:
            raise DistributedError(
                f"a multi-process job needs --coordinator, --num-processes and --process-id "
                f"(missing: {', '.join(missing)}), or --distributed auto")
        n, pid = args.num_processes, args.process_id
        if n < 1:
            raise DistributedError(f"--num-processes must be >= 1, got {n}")
        if not 0 <= pid < n:
            raise DistributedError(f"--process-id must be in [0, {n - 1}] for --num-processes "
                                   f"{n}, got {pid}")
        host, port = _parse_address(args.coordinator)
        if pid != 0 and not _reachable(host, port, timeout):
            raise DistributedError(
                f"coordinator {args.coordinator} unreachable within {timeout:g} s: is process 0 "
                f"running with --coordinator {args.coordinator}?")
        kwargs = dict(coordinator_address=args.coordinator, num_processes=n, process_id=pid)
        what = f"all {n} processes"
    message = (f"could not reach {what} within {timeout:g} s (--distributed-timeout): was every "
               f"process started, with the same --coordinator and --num-processes?")
    try:
        with _FatalWatch(timeout, die, message):
            jax.distributed.initialize(
                **kwargs, initialization_timeout=int(timeout) + 60)
    except (ValueError, RuntimeError) as e:  # e.g. auto-detection found no cluster
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistributedError(f"cannot start the multi-process job: {text}") from None
    if n is not None and jax.process_count() != n:
        raise DistributedError(f"the job has {jax.process_count()} processes, "
                               f"--num-processes says {n}")
    return (f"process {jax.process_index()} of {jax.process_count()}: "
            f"{jax.local_device_count()} local of {jax.device_count()} devices")
