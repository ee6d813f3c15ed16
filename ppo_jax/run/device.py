"""Which kind of device a run trains on: ``--device auto|cpu|gpu`` (and ``fit(device=...)``).

A GPU wins where the work is wide. Where it is narrow, every env step is a chain of small
kernels whose launch latency the GPU cannot hide: the MJX pendulum steps at ~140 env
steps/s at 1 env on an H200 against ~4,100 on 2 CPU cores, and a batch of the tutorial's
config (1 env, 1,000 sequential steps) takes ~7 s there against ~0.25 s on the CPU.
``auto`` therefore trains a job on the CPU when its envs per device are below
:data:`CROSSOVER_ENVS`, even where a GPU is present, and says so in one line.

The choice is made before JAX starts its backends (``jax_platforms``); a process whose JAX
has already started keeps the backend it has, and an explicit choice that differs from it
is refused with one line.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
from typing import Any

from ppo_jax.util import is_whole_number

CHOICES = ("auto", "cpu", "gpu")

# Envs per device below which a job is latency-bound on a GPU. An ESTIMATE from the figures
# above and in docs/devices.md, until a GPU measures the crossover: a training batch on the
# H200 cost ~7 ms per sequential env step plus ~0.15 s of minibatch updates, so 1,000 frames
# from N envs take ~(1000 / N) * 7 ms + 0.15 s there, against ~0.45-0.7 s on 2 CPU cores
# (1,440-2,300 training frames/s measured at 1-256 envs); the two meet near 16 envs, and
# the GPU is ~2x ahead from ~64.
CROSSOVER_ENVS = 32

CUDA_EXTRA = "pip install -e '.[cuda]'"
# The PJRT plugins that give JAX an NVIDIA GPU (jax[cuda12] / jax[cuda13]).
_CUDA_PLUGINS = ("jax_plugins.xla_cuda12", "jax_plugins.xla_cuda13", "jax_cuda12_plugin",
                 "jax_cuda13_plugin")


class DeviceError(ValueError):
    """A device choice that cannot be honoured (one line)."""


@dataclasses.dataclass(frozen=True)
class Choice:
    """What a run trains on: ``platform`` for ``jax_platforms`` (None: JAX's own default)
    and a line for the user (None: nothing worth saying)."""

    platform: str | None
    message: str | None = None
    forced: bool = False  # --device cpu|gpu (auto: False)
    what: str = "--device"  # the choice's name in messages ("device" for fit)


def _cuda_visible_entries() -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES``'s entries up to the first that CUDA stops at (a negative
    index), or None where it is not set."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    entries = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry or entry.startswith("-"):
            break
        entries.append(entry)
    return entries


def nvidia_gpu_present() -> bool:
    """An NVIDIA GPU is visible to this process (its device files, less those
    ``CUDA_VISIBLE_DEVICES`` hides), whatever JAX has."""
    if _cuda_visible_entries() is not None:
        return visible_gpus() > 0
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/nvidiactl")


def visible_gpus() -> int:
    """How many NVIDIA GPUs this process sees: their device files, at most as many as
    ``CUDA_VISIBLE_DEVICES`` lists where it is set."""
    files = len(glob.glob("/dev/nvidia[0-9]*"))
    entries = _cuda_visible_entries()
    return files if entries is None else min(files, len(entries))


def _count(devices: Any) -> int | None:
    """``devices`` as a device count (an int, a numpy integer, "4"), or None
    ('all', None, or a value that :func:`ppo_jax.run.parallel.choose_devices` refuses later)."""
    if isinstance(devices, str):
        return int(devices) if devices.strip().isdigit() else None
    return int(devices) if is_whole_number(devices) else None


def joined_processes() -> int:
    """The processes of the job that ``jax.distributed.initialize`` has joined this process to
    (a caller's own call included), or 1 where it has joined none. Read from JAX's
    distributed state, which does not start a backend (``jax.process_count()`` would)."""
    try:
        from jax._src import distributed

        state = distributed.global_state
        return max(1, int(state.num_processes)) if state.client is not None else 1
    except (ImportError, AttributeError, TypeError, ValueError):
        return 1


def _every_gpu(processes: int) -> int:
    """Every visible GPU of a job's ``processes`` processes (at least 1)."""
    return max(1, visible_gpus()) * max(1, processes)


def envs_per_device(num_runs: int, num_envs: int, devices: int | str | None,
                    processes: int = 1) -> int:
    """A job's vectorized envs (runs x envs) per device on the GPU, laid out as
    :func:`ppo_jax.run.parallel.choose_devices` would lay it out there: ``devices`` as
    ``--devices`` gives it (a count; 'all': every visible GPU of the ``processes``
    processes; None: in one process the most visible GPUs the job splits over, in several
    every GPU)."""
    from ppo_jax.run.parallel import valid_device_counts

    gpus = _every_gpu(processes)
    n = _count(devices)
    if n is None and devices is None and processes <= 1:
        n = max(valid_device_counts(num_runs, num_envs, gpus))
    return max(1, num_runs * num_envs // max(1, n or gpus))


def gpus_asked(devices: int | str | None, processes: int = 1) -> int:
    """The GPUs a job asks for: ``--devices`` N, or 'all' (every visible GPU of the
    ``processes`` processes); without ``--devices`` a job of several processes uses every
    GPU, one of one process asks for none in particular (1)."""
    n = _count(devices)
    if n is not None:
        return n
    if devices == "all" or processes > 1:
        return _every_gpu(processes)
    return 1


def gpus_asked_by(devices: int | str | None, processes: int = 1, flag: str = "--devices",
                  processes_known: bool = True) -> str:
    """:func:`gpus_asked`'s GPUs and who asks for them, for a message: ``flag``
    (``--devices``, or ``devices=`` for ``fit``) where it is given, else the job's processes
    (``processes_known`` False: a cluster that has not said how many yet)."""
    if _count(devices) is not None or devices == "all":
        return f"the {gpus_asked(devices, processes)} devices {flag} asks for"
    if processes_known:
        return f"the {gpus_asked(devices, processes)} devices of the job's {processes} processes"
    return "every GPU of the job's processes"


# The value of ``jax_platforms`` that :func:`apply` set (a choice of ours, not the user's).
_SET_HERE: list[str] = []


def given_platforms() -> str | None:
    """The platforms the user gave JAX (``JAX_PLATFORMS``, or ``jax_platforms`` set before
    the run), or None. ``--device auto`` keeps them; ``cpu``/``gpu`` override them."""
    import jax

    value = jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS") or None
    return None if value is None or value in _SET_HERE else value


def cuda_jax_installed() -> bool:
    """JAX has a CUDA plugin installed (it may still find no GPU)."""
    for name in _CUDA_PLUGINS:
        try:
            if importlib.util.find_spec(name) is not None:
                return True
        except (ImportError, ValueError):
            continue
    return False


def _started_backend() -> str | None:
    """The platform of JAX's default backend when JAX has already started its backends, else
    None (then ``jax_platforms`` can still choose)."""
    from jax._src import xla_bridge

    if not xla_bridge.backends_are_initialized():
        return None
    import jax

    return jax.default_backend()


def choose(device: str, envs_per_device: int, gpus_asked: int = 1,
           what: str = "--device", asked_by: str | None = None, envs_at_most: bool = False
           ) -> Choice:
    """The platform for ``device`` (one of :data:`CHOICES`) and a job of ``envs_per_device``
    vectorized envs per device (runs x envs / devices; ``envs_at_most``: a bound, where the
    devices are not known yet); ``gpus_asked``: the devices the job asks for (a job spread
    over several GPUs stays on them), and ``asked_by`` those devices and who asks for them
    (:func:`gpus_asked_by`; default: ``--devices``); ``what``: the choice's name in
    messages (``--device``, or ``device`` for ``fit``)."""
    asked_by = asked_by or f"the {gpus_asked} devices --devices asks for"
    envs = f"{'at most ' if envs_at_most else ''}{envs_per_device}"
    if device not in CHOICES:
        raise DeviceError(f"{what} must be one of {', '.join(CHOICES)}, got {device!r}")
    gpu_visible, cuda = nvidia_gpu_present(), cuda_jax_installed()
    if device == "cpu":
        return Choice("cpu", forced=True)
    if device == "gpu":
        if not gpu_visible:
            raise DeviceError(f"{what} gpu: no NVIDIA GPU is visible on this machine")
        if not cuda:
            raise DeviceError(f"{what} gpu: this JAX has no CUDA support; install it with "
                              f"{CUDA_EXTRA}")
        return Choice("cuda,cpu", f"training on the GPU ({what} gpu), {envs} env(s) per "
                                  f"device", forced=True, what=what)
    # auto
    if not gpu_visible:
        return Choice(None)
    given = given_platforms()
    if given is not None:
        return Choice(None, f"{what} auto: JAX_PLATFORMS={given} chooses the platform",
                      what=what)
    if not cuda:
        if envs_per_device >= CROSSOVER_ENVS or gpus_asked > 1:
            return Choice("cpu", f"a GPU is present but this JAX has no CUDA support: "
                                 f"training on the CPU; {CUDA_EXTRA} to use the GPU", what=what)
        return Choice("cpu", what=what)
    if envs_per_device < CROSSOVER_ENVS:
        if gpus_asked > 1:
            return Choice("cuda,cpu", f"{what} auto: training on the GPU, over {asked_by} "
                                      f"({envs} env(s) per device: one device "
                                      f"would be latency-bound below ~{CROSSOVER_ENVS}, an "
                                      f"estimate, and train on the CPU)", what=what)
        return Choice("cpu", f"{what} auto: training on the CPU: {envs_per_device} env(s) "
                             f"per device is latency-bound on a GPU (below ~{CROSSOVER_ENVS}, "
                             f"an estimate); {what} gpu forces the GPU", what=what)
    return Choice("cuda,cpu", f"{what} auto: training on the GPU ({envs} envs per "
                              f"device; below ~{CROSSOVER_ENVS} the CPU would be chosen)",
                  what=what)


def apply(choice: Choice) -> str | None:
    """Make ``choice.platform`` JAX's platform and return the line to tell the user. Before
    JAX starts its backends the platform is set; after, ``auto`` keeps the started backend
    (and says so) and a forced choice that differs raises :class:`DeviceError`."""
    if choice.platform is None:
        return choice.message
    started = _started_backend()
    wanted = "gpu" if choice.platform.startswith("cuda") else choice.platform
    if started is None:
        import jax

        jax.config.update("jax_platforms", choice.platform)
        _SET_HERE.append(choice.platform)
    elif started != wanted:
        if choice.forced:
            raise DeviceError(f"JAX already runs on {started}: a run on {wanted} must choose it "
                              f"before JAX starts (e.g. JAX_PLATFORMS={choice.platform} in "
                              f"the environment)")
        return (f"{choice.what} auto: JAX already runs on {started}, so the run trains there "
                f"(auto chooses only before JAX starts)")
    return choice.message
