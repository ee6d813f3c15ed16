"""Leaf helpers every layer may use: atomic file writes, installed versions and the machine,
and one-line errors.

Files are written atomically: a reader (or a run killed mid-write) sees the old file or the new
one, never half of one."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import numbers
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from typing import Any


def write_atomic(path: str, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a
    rename (``os.replace`` is atomic on POSIX). A write that fails (a full disk) leaves
    ``path`` as it was and no temporary file behind."""
    with written_in_place(path, keep_suffix=False) as tmp:
        with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)


@contextlib.contextmanager
def written_in_place(path: str, keep_suffix: bool = True):
    """A temporary path beside ``path``, renamed onto it when the block ends; removed where
    it raises (a Ctrl-C mid-write, a full disk), ``path`` then as it was. ``keep_suffix``:
    for a writer that opens the file itself and picks its format by the suffix (imageio's
    video, matplotlib's figure), the temporary name ends in it too."""
    if keep_suffix:
        root, suffix = os.path.splitext(path)
        tmp = os.path.join(os.path.dirname(path),
                           f".{os.path.basename(root)}.{os.getpid()}.tmp{suffix}")
    else:
        tmp = f"{path}.{os.getpid()}.tmp"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _finite_or_none(x):
    if isinstance(x, list):
        return [_finite_or_none(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(path: str, payload: dict[str, Any]) -> None:
    """``payload`` as JSON (non-finite floats of lists as ``null``), atomically."""
    write_atomic(path, json.dumps(_finite_or_none(payload)))


@contextlib.contextmanager
def interrupts_kept():
    """Raise at its end a Ctrl-C that the code inside swallowed. Some libraries wrap their
    optional imports in ``except BaseException`` (trimesh, which MJX imports, does): a Ctrl-C
    that lands there is dropped, and the program runs on. Here a ``KeyboardInterrupt`` that
    the SIGINT handler raised inside, and that did not come out, is raised again where the
    block ends. Only in the main thread, under a handler that can be called (not where
    SIGINT is ignored)."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    raised: list[int] = []

    def handler(signum, frame):
        try:
            previous(signum, frame)
        except BaseException:
            raised.append(signum)
            raise

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is handler:  # the code inside set none of its own
            signal.signal(signal.SIGINT, previous)
    if raised:
        raise KeyboardInterrupt


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


# the real stderr's descriptors while :func:`held_stderr` holds file descriptor 2 (innermost
# last): a process that ends in the meantime still writes its last line there
_REAL_STDERR: list[int] = []


@contextlib.contextmanager
def held_stderr():
    """Hold what is written to file descriptor 2 in the block (orbax reading or writing a
    checkpoint); pass it on only if the block succeeds. Orbax's threads, cut off by a corrupt
    file or a full disk, print tracebacks ("Event loop is closed") of their own beside, and
    just after, the error that is raised, which the caller reports in one line."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to protect
        yield
        return
    try:
        held = tempfile.TemporaryFile()
    except OSError:  # nowhere to hold it: it goes on as it is
        os.close(saved)
        yield
        return
    with held:
        _REAL_STDERR.append(saved)  # before fd 2 moves: a signal's exit line finds stderr
        os.dup2(held.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            if not ok:  # orbax's cut-off threads print shortly after the failure
                time.sleep(1.0)
            sys.stderr.flush()
            os.dup2(saved, 2)
            _REAL_STDERR.remove(saved)
            os.close(saved)
            if ok:
                held.seek(0)
                text = held.read()
                if text:
                    os.write(2, text)


def exit_with_one_line(message: str | None, code: int) -> None:
    """Print ``message`` as the process's last words on stderr and leave at once.

    Everything else is silenced first: orbax's background threads, cut off mid-read by a
    corrupt checkpoint, can still print tracebacks ("Event loop is closed", ...) while the
    process ends, and the interpreter's teardown would wait on them. Everything the run wrote
    is already on disk (atomic writes)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a pipe whose reader is gone, a closed stream
            pass
    try:  # a signal handler's exit may come while a checkpoint holds stderr
        real = os.dup(_REAL_STDERR[0] if _REAL_STDERR else 2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    except OSError:
        real = 2
    if message:
        os.write(real, _encoded(message + "\n"))
    os._exit(code)


def _encoded(text: str) -> bytes:
    """``text`` as bytes for the terminal: UTF-8, a path's undecodable bytes given back as
    they came (Python holds them as lone surrogates), anything else unencodable escaped."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace")


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
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
        raise JsonFileError(f"{path} is not JSON") from None
