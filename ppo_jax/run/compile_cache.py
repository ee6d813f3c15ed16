"""JAX's persistent compilation cache, and the program store beside it: compiled executables
kept by everything that determines them, so a second process skips tracing too.

Two caches, both in the compile-cache directory (``--compile-cache-dir``):

* JAX's persistent compilation cache: XLA executables keyed by the lowered program. Whether
  it answered is read from JAX's own monitoring events (``/jax/compilation_cache/cache_hits``
  and ``cache_misses``). It spares the XLA compile, not the tracing and lowering before it
  (~2.6 s for the tutorial config's three programs on 2 CPU cores: MJX is a lot of Python).
* ``ppo_programs/``: the compiled executables themselves (``jax.experimental.
  serialize_executable``), keyed by :func:`store_key`. A hit skips tracing, lowering and
  compiling: a second run starts in seconds. Any change of key misses, and the program is
  traced again (and then usually found in JAX's cache).

:func:`obtain` serves a set of programs from them: each missing program's XLA compile runs
on a thread as soon as it is traced, while the next is traced (XLA releases the GIL).
Processes sharing one cache directory (a sweep's runs started together, parallel test
workers) compile a set of programs once: the first takes a lock on it
(``ppo_programs/<set>.lock``, released when it is done or dies), the others wait for it
and then load what it stored. ``ppo_jax_compile_times.json`` beside the caches records how
long each set of programs took to compile cold, so the line printed before compiling can
say roughly how long it takes on this device. Nothing here knows what the programs
compute (:mod:`ppo_jax.run.programs` builds the training programs). The entries are pickles:
only point ``--compile-cache-dir`` at a directory you trust.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import gc
import hashlib
import json
import os
import pickle
import re
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import jax

from ppo_jax.util import write_atomic
from ppo_jax.util import version

TIMES_FILE = "ppo_jax_compile_times.json"
STORE_DIR = "ppo_programs"
TRACED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "distrax", "chex", "mujoco", "mujoco-mjx",
                   "numpy", "tfp-nightly", "tensorflow-probability")
_HIT = "/jax/compilation_cache/cache_hits"
_MISS = "/jax/compilation_cache/cache_misses"


def enable_compile_cache(path: str | None) -> str | None:
    """Turn on JAX's persistent compilation cache at ``path`` for every program, however
    quick to compile (None or "": leave it off). Returns the absolute path or None."""
    if not path:
        return None
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _gather_cache_warnings()
    return path


# JAX's warnings that its persistent cache could not write or read an entry, for the
# programs an :func:`obtain` is compiling (their XLA modules: ``module -> [(kind, why)]``);
# that obtain says them in one line (JAX's own are two lines a program, with a path into
# JAX). Every other program's warnings show as JAX gives them.
_JAX_CACHE_WARNINGS = {"unwritten": "Error writing persistent compilation cache entry for '",
                       "unreadable": "Error reading persistent compilation cache entry for '"}
_WATCHED: dict[str, list[tuple[str, str]]] = {}
_WATCH_LOCK = threading.Lock()


def _parse_cache_warning(text: str) -> tuple[str, str, str] | None:
    """``(kind, module, why)`` of JAX's warning ``text`` about an entry of its cache ("Error
    writing persistent compilation cache entry for 'jit_x': OSError: [Errno 28] No space left
    on device"), else None."""
    for kind, prefix in _JAX_CACHE_WARNINGS.items():
        if text.startswith(prefix) and "': " in text[len(prefix):]:
            module, _, why = text[len(prefix):].partition("': ")
            why = why.split("] ", 1)[1] if why.count("[Errno") == 1 else why
            return kind, module, re.sub(r"^[\w.]*(?:Error|error|Exception): ", "", why)
    return None


def _gather_cache_warnings() -> None:
    """Route JAX's warnings about the entries of the programs an :func:`obtain` is compiling
    to that obtain (:func:`_watching`), instead of printing them."""
    shown = warnings.showwarning
    if getattr(shown, "gathers_cache_warnings", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        parsed = _parse_cache_warning(str(message))
        if parsed is not None:
            kind, module, why = parsed
            with _WATCH_LOCK:
                if module in _WATCHED:
                    _WATCHED[module].append((kind, why))
                    return
        shown(message, category, filename, lineno, file, line)

    show.gathers_cache_warnings = True
    warnings.showwarning = show


@contextlib.contextmanager
def _watching(modules: list[str]):
    """Gather JAX's cache warnings about the XLA modules ``modules`` (being compiled) into
    the dict yielded (module -> [(kind, why)]) while in the block."""
    with _WATCH_LOCK:
        mine = {m: _WATCHED.setdefault(m, []) for m in modules}
    try:
        yield mine
    finally:
        with _WATCH_LOCK:
            for m in modules:
                _WATCHED.pop(m, None)


def _module_of(lowered: jax.stages.Lowered) -> str | None:
    """The XLA module's name of ``lowered`` (what JAX's cache warnings name), or None."""
    try:
        return str(lowered.compiler_ir("stablehlo").operation.attributes["sym_name"].value)
    except Exception:  # noqa: BLE001 - another JAX's IR: its warnings show as JAX gives them
        return None


def _say_cache_trouble(what: str, gathered: dict[str, list[tuple[str, str]]],
                       unstored: list[str], announce: Callable[[str], None] | None) -> None:
    """One line for what went wrong with the caches while ``what`` was compiled: JAX's
    warnings ``gathered`` for its modules, and why the program store could not keep some
    (``unstored``). An entry of JAX's that could not be read, or was written only in part
    (JAX writes in place), is removed: JAX never replaces an entry, so it would fail every
    later process."""
    unwritten = [why for records in gathered.values() for kind, why in records
                 if kind == "unwritten"]
    unreadable = [why for records in gathered.values() for kind, why in records
                  if kind == "unreadable"]
    if not (unwritten or unreadable or unstored):
        return
    d = cache_dir()
    names = os.listdir(d) if d and os.path.isdir(d) else []
    for module, records in gathered.items():
        if records:  # (a module named by its program's key: no other program's entries)
            for name in names:
                if name.startswith(f"{module}-") and name.endswith("-cache"):
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(d, name))
    if unstored or unwritten:
        line = (f"the compile cache in {d} could not keep {what} ({(unstored or unwritten)[0]})"
                + (": the next run compiles them again" if unstored else ""))
    else:
        line = (f"the compile cache in {d} held {len(unreadable)} unreadable entr"
                f"{'y' if len(unreadable) == 1 else 'ies'} for {what} ({unreadable[0]}): "
                "compiled again, and the entries removed")
    if announce is not None:
        announce(line)
    else:
        warnings.warn(line, stacklevel=5)


def cache_dir() -> str | None:
    """The persistent cache directory in use, or None."""
    return jax.config.jax_compilation_cache_dir or None


@dataclasses.dataclass(frozen=True)
class CompileInfo:
    """How one program was obtained: ``source`` is ``"in_process"`` (obtained before by this
    process), ``"ppo_programs"`` (loaded compiled from
    the program store), ``"jax_cache"`` (traced, then JAX's persistent cache answered) or
    ``"compiled"``; ``seconds`` from asking to having it (its own tracing and compiling;
    concurrent compiles overlap); ``cache_hit`` None when no cache is
    in use."""

    name: str
    seconds: float
    source: str
    cache_hit: bool | None

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "source": self.source,
                "cache_hit": self.cache_hit}


class _CacheEvents:
    """Counts JAX's persistent-cache hit/miss events of this thread while active (programs
    compile on several threads at once, see :func:`obtain`)."""

    def __init__(self):
        self.hits = 0
        self.misses = 0
        self.thread = threading.get_ident()

    def __call__(self, event: str, **_: Any) -> None:
        if threading.get_ident() != self.thread:
            return
        if event == _HIT:
            self.hits += 1
        elif event == _MISS:
            self.misses += 1

    def __enter__(self):
        jax.monitoring.register_event_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_listener(self)
        return False


def lower(fn: Callable, *args, donate_argnums=(), name: str | None = None,
          out_shardings=None) -> jax.stages.Lowered:
    """``jax.jit(fn).lower(*args)``; ``args`` may be ``jax.ShapeDtypeStruct`` trees (with
    their shardings). ``name`` names the XLA module (``jit_<name>``), which is part of JAX's
    cache key."""
    if name is not None:
        inner = fn

        def fn(*a):
            return inner(*a)

        fn.__name__ = fn.__qualname__ = name
    kwargs = {} if out_shardings is None else {"out_shardings": out_shardings}
    return jax.jit(fn, donate_argnums=donate_argnums, **kwargs).lower(*args)


def compile_lowered(name: str, lowered: jax.stages.Lowered,
                    trace_seconds: float = 0.0) -> tuple[Any, CompileInfo]:
    """Compile (JAX's persistent cache may answer) and say which happened; the info's
    seconds add ``trace_seconds`` (the lowering before)."""
    t = time.perf_counter()
    with _CacheEvents() as ev:
        compiled = lowered.compile()
    seconds = trace_seconds + time.perf_counter() - t
    hit = (ev.hits > 0 and ev.misses == 0) if cache_dir() else None
    source = "jax_cache" if hit else "compiled"
    return compiled, CompileInfo(name=name, seconds=seconds, source=source, cache_hit=hit)


# --- the program store: compiled executables by what determines them ---------------------------
@functools.lru_cache(maxsize=1)
def _source_hash() -> str:
    """Hash of ppo_jax's own source and assets (a code change is a new program)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the ppo_jax package
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith((".py", ".xml")):
                path = os.path.join(dirpath, name)
                h.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


def store_key(name: str, identity: dict[str, Any], **extra: Any) -> str:
    """Everything that determines the compiled program ``name``, hashed: ``identity`` (what
    its builder varies: config, number of runs, layout, env, ...; see
    :func:`ppo_jax.run.programs.program_key`), ``extra``, and what every program depends on (the
    hash of ppo_jax's source, the versions of the traced libraries, the backend and devices,
    JAX's numeric flags)."""
    parts = {
        "program": name,
        "extra": extra,
        **identity,
        "processes": jax.process_count(),
        "source": _source_hash(),
        "versions": {p: version(p) for p in TRACED_PACKAGES},
        "backend": jax.default_backend(),
        "devices": [d.device_kind for d in jax.devices()],
        "x64": bool(jax.config.jax_enable_x64),
        "matmul": str(jax.config.jax_default_matmul_precision),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    blob = json.dumps(parts, sort_keys=True, default=exact).encode()
    return f"{name}_{hashlib.sha256(blob).hexdigest()[:24]}"


def exact(value: Any) -> Any:
    """A key's JSON form of what JSON cannot hold, losing nothing that could change a
    program: an array (an env's ``spec()`` may hold one) by its dtype, shape and the hash of
    its bytes, not by its printout (numpy elides long arrays and rounds floats there); a
    numpy scalar by its dtype and exact value; anything else by its ``repr``."""
    import numpy as np

    if isinstance(value, np.generic):
        return {"dtype": str(value.dtype), "value": value.item()}
    if isinstance(value, (np.ndarray, jax.Array)) or hasattr(value, "__array__"):
        a = np.ascontiguousarray(np.asarray(value))
        data = a.tobytes() if a.dtype != object else repr(a.tolist()).encode()
        return {"dtype": str(a.dtype), "shape": list(a.shape),
                "sha256": hashlib.sha256(data).hexdigest()}
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": hashlib.sha256(bytes(value)).hexdigest()}
    if isinstance(value, (set, frozenset)):
        return {"set": sorted(repr(v) for v in value)}
    return repr(value)


def _store_path(key: str) -> str | None:
    d = cache_dir()
    if not d or jax.process_count() > 1:
        # A multi-process job's executables span other processes' devices, which this
        # process cannot name when it loads one: JAX's cache alone serves such jobs.
        return None
    return os.path.join(d, STORE_DIR, key + ".pkl")


def load_stored(name: str, key: str) -> tuple[Any, CompileInfo] | None:
    """The compiled program stored under ``key``, or None (absent, or unusable: then it is
    traced and compiled again)."""
    path = _store_path(key)
    if not path or not os.path.exists(path):
        return None
    from jax.experimental import serialize_executable

    t = time.perf_counter()
    try:
        with open(path, "rb") as f:
            payload, in_tree, out_tree, device_ids = pickle.load(f)
        # The devices it was compiled for, in their order (by default JAX would load it
        # onto every device of the process, and a one-device program would then expect
        # one shard of each argument per device), each named by its platform and id (a
        # job on a GPU runs a program on the host's CPU too, whose device 0 is not the
        # GPU's).
        devices = [_local_device(i) for i in device_ids]
        if devices[0].platform == "cpu":
            _prepare_cpu_runtime()
        compiled = serialize_executable.deserialize_and_load(
            payload, in_tree, out_tree, backend=devices[0].client, execution_devices=devices)
    except Exception:  # truncated, from another jaxlib build, ...: compile instead
        return None
    info = CompileInfo(name=name, seconds=time.perf_counter() - t, source=STORE_DIR,
                       cache_hit=True)
    return compiled, info


def _local_device(name: tuple[str, int]) -> jax.Device:
    """The local device named ``(platform, id)``, as :func:`store` names it; an exception
    where this process has none such (the stored program is then compiled again)."""
    platform, i = name
    return {d.id: d for d in jax.local_devices(backend=platform)}[i]


def _prepare_cpu_runtime() -> None:
    """Load what a CPU executable's LAPACK calls need. Lowering a linear-algebra op does this
    as a side effect; a program loaded without lowering anything would crash in its first
    LAPACK call (MJX's solver factorizes with one) without it."""
    from jax._src.lib import lapack

    lapack._lapack.initialize()


def store(key: str, compiled: Any, unstored: list[str] | None = None) -> bool:
    """Keep ``compiled`` under ``key`` (atomically); False if it cannot be serialized/written
    (why, where the disk refused it, appended to ``unstored``)."""
    path = _store_path(key)
    if not path:
        return False
    from jax.experimental import serialize_executable

    try:
        device_ids = [(d.platform, d.id) for d in compiled.runtime_executable().local_devices()]
        blob = pickle.dumps((*serialize_executable.serialize(compiled), device_ids))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(path, blob)
        return True
    except OSError as e:  # a full disk: the run goes on, and is told
        if unstored is not None:
            unstored.append(e.strerror or str(e))
        return False
    except Exception:  # a backend without serialization: the run goes on
        return False


# --- the compile-time record beside the cache ------------------------------------------------
def _times_path() -> str | None:
    d = cache_dir()
    return os.path.join(d, TIMES_FILE) if d else None


def _read_times() -> dict[str, Any]:
    path = _times_path()
    if not path or not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            d = json.load(f)
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _group(keys: Any) -> str:
    """One name for a set of programs compiled together (the record's key)."""
    return hashlib.sha256("|".join(sorted(keys)).encode()).hexdigest()[:24]


def _record_time(keys: Any, what: str, seconds: float, family: str | None = None) -> None:
    """Record that compiling the programs ``keys`` (of ``family``: their env and kind) from
    nothing took ``seconds`` (wall)."""
    path = _times_path()
    if not path:
        return
    times = _read_times()
    times[_group(keys)] = {"what": what, "seconds": round(seconds, 2),
                           "backend": jax.default_backend(),
                           "device": jax.devices()[0].device_kind, "family": family}
    try:
        write_atomic(path, json.dumps(times))
    except OSError:
        pass  # the record is a courtesy; the cache itself is JAX's


def expectation(keys: Any, family: str | None = None) -> str:
    """What the user should expect from compiling the programs ``keys`` (one phrase): from
    earlier compiles of the same ``family`` (env and kind of program) on this device where
    there are some, else of any."""
    d = cache_dir()
    where = (f"cached afterwards in {d}" if d
             else "the compile cache is off (--no-compile-cache)")
    times = _read_times()
    device = jax.devices()[0].device_kind
    known = times.get(_group(keys))
    if d and known:
        return (f"compiled here before, so JAX's cache in {d} should spare most of its "
                f"{known['seconds']:.0f} s")
    same = [v for v in times.values() if v.get("device") == device and "seconds" in v]
    mine = sorted(v["seconds"] for v in same if family and v.get("family") == family)
    others = sorted(v["seconds"] for v in same)
    if mine:
        estimate = (f"about {mine[len(mine) // 2]:.0f} s on this {device} (earlier {family} "
                    "compiles)")
    elif others:
        estimate = (f"about {others[len(others) // 2]:.0f} s on this {device} (earlier "
                    "compiles of other programs: these may differ)")
    else:
        estimate = ("about 30-50 s on a 2-core CPU" if jax.default_backend() == "cpu"
                    else "typically under a minute")
    return f"takes {estimate}; {where}"


# program key -> executable, the most recently obtained last (:func:`make_room` drops the
# oldest first)
_IN_PROCESS: collections.OrderedDict[str, Any] = collections.OrderedDict()

# Each XLA:CPU program a process holds keeps memory mappings (its kernels' code and data: about
# 3,400 for the tiny preset's training program), and Linux caps a process's mappings
# (vm.max_map_count, 65,530 by default): past it, the next program's load or compile crashes
# the process in XLA (a segmentation fault). :func:`make_room` keeps them under this share of
# the cap, which leaves room for a set of programs.
MAPS_SHARE = 0.5
CLEAR_AGAIN_SHARE = 0.05
_maps_warned: list[bool] = []
_jax_cleared_at = [0]  # the mappings just after make_room last cleared JAX's caches


def memory_maps() -> tuple[int, int] | None:
    """``(mappings, cap)``: this process's memory mappings and the most Linux allows it
    (``vm.max_map_count``); None where ``/proc`` does not say (not Linux)."""
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            cap = int(f.read())
        with open("/proc/self/maps", "rb") as f:
            return sum(1 for _ in f), cap
    except (OSError, ValueError):
        return None


def make_room(keep: Any = ()) -> None:
    """Before this process obtains more programs: where its memory mappings are past
    :data:`MAPS_SHARE` of the cap, let go of the programs it obtained longest ago that no one
    else holds (not those of ``keep``: keys; one held elsewhere would stay loaded, and load
    twice when obtained again), then of JAX's own in-memory caches of compiled programs
    (``jax.clear_caches()``: a jitted function called again is then compiled again, or read
    from the compile cache; not again until the mappings have grown by
    :data:`CLEAR_AGAIN_SHARE` of the cap since). Where programs in use keep the process past
    the share, one warning says so (instead of a crash later)."""
    maps = memory_maps()
    if maps is None or maps[0] <= maps[1] * MAPS_SHARE:
        return
    gc.collect()  # programs that only a reference cycle still held
    keep = set(keep)
    for key in [k for k in list(_IN_PROCESS) if k not in keep]:  # (list: one step)
        held = _IN_PROCESS.get(key)
        # the table's reference, this name's and getrefcount's own: no one else holds it
        if held is None or sys.getrefcount(held) > 3:
            continue
        del held
        _IN_PROCESS.pop(key, None)  # unloaded here
        maps = memory_maps() or maps
        if maps[0] <= maps[1] * MAPS_SHARE:
            return
    if maps[0] > _jax_cleared_at[0] + maps[1] * CLEAR_AGAIN_SHARE:
        jax.clear_caches()
        gc.collect()
        maps = memory_maps() or maps
        _jax_cleared_at[0] = maps[0]
    if maps[0] > maps[1] * MAPS_SHARE and not _maps_warned:
        _maps_warned.append(True)
        warnings.warn(
            f"this process holds {maps[0]:,} memory mappings of the {maps[1]:,} Linux allows "
            "it (vm.max_map_count), most of them loaded XLA programs still in use: loading "
            "many more may crash it. Let go of trainers and compiled functions no longer "
            "needed, run in fresh processes, or raise vm.max_map_count (sysctl)",
            RuntimeWarning, stacklevel=3)


@contextlib.contextmanager
def _compiling(keys: Any, announce: Callable[[str], None] | None):
    """Hold the cache directory's lock on the program set ``keys`` while compiling it
    (nothing where there is no store, or no ``fcntl``). Yields whether another process held
    it first: it may have stored the programs meanwhile."""
    path = _store_path(_group(keys))
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): processes may compile alike
        fcntl = None
    if path is None or fcntl is None:
        yield False
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        f = open(path[: -len(".pkl")] + ".lock", "a")
    except OSError:  # a read-only cache: compile without the lock
        yield False
        return
    with f:
        waited = False
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if announce is not None:
                announce("another process is compiling the same programs: waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
            waited = True
        try:
            yield waited
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def obtain(
    keys: dict[str, str],
    lower_missing: Callable[[tuple[str, ...]], Any],
    what: str,
    announce: Callable[[str], None] | None = None,
    persist: bool = True,
    family: str | None = None,
) -> tuple[dict[str, Any], dict[str, CompileInfo]]:
    """Compiled programs ``{name: executable}`` for ``keys`` (``{name: store_key}``): from
    the program store when it has them, else lowered by ``lower_missing(names)`` (an
    iterable of ``(name, lowered)``, each module named by its key, or by its key less a
    process's own part), compiled (JAX's cache may answer) and stored. ``announce`` gets one
    line first: what is compiled, roughly how long it takes (or that it is loaded from the
    cache), and where it is cached.
    ``persist=False``: keys that only this process may use; the program store is then
    neither read nor written (JAX's cache still answers by the modules' content).
    ``family``: what the programs are (their env id and kind, e.g. ``"Hopper-v4 training"``),
    for the time a compile is expected to take.

    Each program's XLA compile runs on its own thread as soon as it is lowered, while the
    next one is traced: XLA releases the GIL, so the compiles overlap each other and the
    tracing."""
    compiled: dict[str, Any] = {}
    infos: dict[str, CompileInfo] = {}
    if not all(key in _IN_PROCESS for key in keys.values()):
        make_room(keep=keys.values())
    for name, key in keys.items():
        held = _IN_PROCESS.get(key)
        if held is not None:  # obtained before by this process
            with contextlib.suppress(KeyError):  # (let go of by another thread meanwhile)
                _IN_PROCESS.move_to_end(key)
            compiled[name] = held
            infos[name] = CompileInfo(name=name, seconds=0.0, source="in_process",
                                      cache_hit=True)
            continue
        hit = load_stored(name, key) if persist else None
        if hit is not None:
            compiled[name], infos[name] = hit
    missing = tuple(n for n in keys if n not in compiled)
    lock = (_compiling([keys[n] for n in missing], announce) if missing and persist
            else contextlib.nullcontext(False))
    with lock as waited:
        if waited:
            for name in missing:  # what the other process stored while this one waited
                hit = load_stored(name, keys[name])
                if hit is not None:
                    compiled[name], infos[name] = hit
            missing = tuple(n for n in keys if n not in compiled)
        _obtain_missing(keys, missing, lower_missing, what, announce, compiled, infos, persist,
                        family)
    _IN_PROCESS.update({keys[name]: compiled[name] for name in keys})
    return compiled, infos


def _obtain_missing(keys, missing, lower_missing, what, announce, compiled, infos,
                    persist, family) -> None:
    """Compile (and store) the programs ``missing`` of :func:`obtain`, filling ``compiled``
    and ``infos``; with none missing, announce the load."""
    if announce is not None and not missing:
        if all(i.source == "in_process" for i in infos.values()):
            announce(f"reusing {what}, compiled earlier in this process")
        else:
            announce(f"loaded {what} from the compile cache in {cache_dir()} "
                     f"({sum(i.seconds for i in infos.values()):.1f} s)")
    if missing:
        if announce is not None:
            announce(f"compiling {what}: {expectation([keys[n] for n in missing], family)}")
        start = t = time.perf_counter()
        gathered: dict[str, list[tuple[str, str]]] = {}
        unstored: list[str] = []
        with contextlib.ExitStack() as watches, ThreadPoolExecutor(len(missing)) as pool:
            futures = {}
            for name, lowered in lower_missing(missing):
                traced = time.perf_counter()  # each info counts its own tracing + compile
                module = _module_of(lowered)
                if module is not None:  # its cache warnings come to this obtain
                    gathered[module] = watches.enter_context(_watching([module]))[module]
                futures[name] = pool.submit(compile_lowered, name, lowered, traced - t)
                t = time.perf_counter()
            results = {name: f.result() for name, f in futures.items()}
        if persist and all(info.source == "compiled" for _, info in results.values()):
            _record_time([keys[n] for n in missing], what, time.perf_counter() - start,
                         family)
        for name in missing:
            compiled[name], infos[name] = results[name]
            # An executable that JAX's cache loaded cannot be serialized again (its XLA
            # functions are missing from the copy: "Function ... not found" when run), so
            # only fresh compiles are stored. Both caches key a program alike (the module
            # is named by its key), so JAX's cache answers alone only if the store lost it
            # (or, with persist=False, in every process after the first).
            if infos[name].source == "compiled" and persist:
                store(keys[name], compiled[name], unstored)
        _say_cache_trouble(what, gathered, unstored, announce)
