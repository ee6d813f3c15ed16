"""Shared command-line plumbing for ``scripts/*.py``: flags generated from ``PPOConfig``,
one-line errors, the persistent compilation cache."""

from __future__ import annotations

import _thread
import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
import traceback
import typing
from typing import Any, Callable

from ppo_jax.config import PPOConfig, field_choices, field_types
from ppo_jax.run.run_dir import inside_a_run, not_made_because, utf8_problem
from ppo_jax.util import exit_with_one_line, first_line

CHOICES = field_choices()

CACHE_DIR_ENV = "PPO_JAX_COMPILE_CACHE_DIR"


def default_cache_dir() -> str:
    """``--compile-cache-dir``'s default: ``$PPO_JAX_COMPILE_CACHE_DIR`` (unless empty),
    else ``$XDG_CACHE_HOME/ppo_jax/xla`` (an absolute path only, as the XDG spec says), else
    ``~/.cache/ppo_jax/xla``."""
    if os.environ.get(CACHE_DIR_ENV):
        return os.environ[CACHE_DIR_ENV]
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "ppo_jax", "xla")


class CLIError(Exception):
    """A user-facing error: printed as one line (``prog: error: message``), exits with
    ``code``."""

    kind = "error"

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


class Interrupted(CLIError):
    """A run stopped by a signal, after saving: ``prog: interrupted: message``, exit
    ``128 + signal``."""

    kind = "interrupted"


def require_float32() -> None:
    """CLIError unless JAX runs in its default float32 (``JAX_ENABLE_X64`` unset)."""
    import jax

    if jax.config.jax_enable_x64:
        raise CLIError(X64_REFUSAL)


X64_REFUSAL = ("JAX_ENABLE_X64 is set: ppo_jax's programs are float32, as the TorchRL "
               "tutorial's; unset it (float64 is for the parity tests)")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after a flag's help, unless the help already says its default in
    parentheses (a flag whose default depends on another: ``--keep``'s is 3, or the resumed
    run's) or there is none to say (None, an empty list, an off switch)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or action.default in (None, [], False):
            return text
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line (``prog: error: ...``), exit status 2."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ``PPOConfig`` field, help from its docstring, default shown from the
    dataclass (``default=SUPPRESS`` so only flags given on the command line are set)."""
    group = parser.add_argument_group("PPOConfig (defaults: the TorchRL tutorial)")
    types = field_types()
    for f in dataclasses.fields(PPOConfig):
        tp = types[f.name]
        # argparse formats help with %: a field's doc may hold one (a modulo)
        help_text = f"{f.metadata.get('doc', '')} (default: {f.default})".replace("%", "%%")
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is tuple:
            kwargs.update(type=int, nargs="+", metavar="N")
        else:
            kwargs["type"] = tp
            if f.name in CHOICES:
                kwargs["choices"] = CHOICES[f.name]
        group.add_argument(flag(f.name), dest=f.name, **kwargs)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``PPOConfig`` fields given on the command line."""
    names = {f.name for f in dataclasses.fields(PPOConfig)}
    out = {k: v for k, v in vars(args).items() if k in names}
    if "hidden_sizes" in out:
        out["hidden_sizes"] = tuple(out["hidden_sizes"])
    return out


def make_config(base: PPOConfig, overrides: dict[str, Any]) -> PPOConfig:
    try:
        config = base.replace(**overrides)
        config.check_values()
        return config
    except (ValueError, TypeError) as e:
        raise CLIError(f"invalid configuration: {e}") from None


def add_run_index_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """``--run-index I`` (``--seed-index`` is its old name): which run of a job's
    checkpoint (a ``--num-seeds``/``--sweep`` job) to ``what``."""
    parser.add_argument("--run-index", "--seed-index", dest="run_index", type=int, default=0,
                        help=f"which run of a --num-seeds/--sweep job to {what} (an index "
                             "into metrics.json's runs)")


def restore_for_export(args: argparse.Namespace, suffixes: tuple[str, ...]):
    """An export command's checkpoint (``args.dir``, ``--step``, ``--run-index``) as
    ``(trainer, state, source)``, once ``args.out`` is known to name a file with one of
    ``suffixes`` that can be written (its directory made only then); what cannot be read is
    one line."""
    from ppo_jax.run import checkpoint

    check_output_file(args.out, "OUT", suffixes, create=False)
    with user_errors(checkpoint.CheckpointError):
        trainer, state, source = checkpoint.restore_for_export(args.dir, args.step,
                                                               args.run_index)
    check_output_file(args.out, "OUT", suffixes)
    note = checkpoint.describe_stop(args.run_index, source.get("failed_batch"))
    if note:
        print(note, flush=True)
    return trainer, state, source


def add_compile_cache_flags(parser: argparse.ArgumentParser) -> None:
    """``--compile-cache-dir`` / ``--no-compile-cache`` (JAX's persistent cache, on by default)."""
    group = parser.add_argument_group("compilation")
    group.add_argument("--compile-cache-dir", default=default_cache_dir(), type=nonempty,
                       help=f"JAX persistent compilation cache (default: %(default)s; "
                            f"${CACHE_DIR_ENV} changes the default)")
    group.add_argument("--no-compile-cache", action="store_true",
                       help="do not use the persistent compilation cache")


def apply_compile_cache_flags(args: argparse.Namespace) -> str | None:
    """Turn the cache on as the flags say; returns its directory (None: off)."""
    if args.no_compile_cache:
        return None
    from_env = os.environ.get(CACHE_DIR_ENV, "").strip() and (
        args.compile_cache_dir == os.environ[CACHE_DIR_ENV])
    check_compile_cache_dir(args.compile_cache_dir,
                            f"${CACHE_DIR_ENV}" if from_env else "--compile-cache-dir")
    from ppo_jax.run.compile_cache import enable_compile_cache

    try:
        return enable_compile_cache(args.compile_cache_dir)
    except OSError as e:
        raise CLIError(f"cannot use compile cache directory {args.compile_cache_dir!r}: "
                       f"{not_made_because(args.compile_cache_dir, e)} (pass "
                       "--no-compile-cache to run without it)") from None


@contextlib.contextmanager
def user_errors(*types: type[BaseException], prefix: str = ""):
    """Turn the exceptions ``types`` (whose messages are one line for the user, e.g.
    ``CheckpointError``) into a :class:`CLIError` with ``prefix`` before the message."""
    try:
        yield
    except types as e:
        raise CLIError(f"{prefix}{e}") from None


def check_not_in_a_run(path: str, what: str, file: bool = False) -> None:
    """One line where ``path`` (a directory, or a file with ``file``) is or lies inside a run
    directory's ``checkpoints/`` or ``tensorboard/``, or is one of the files a run directory
    holds (:func:`ppo_jax.run.run_dir.inside_a_run`)."""
    reason = inside_a_run(path, what, file)
    if reason is not None:
        raise CLIError(reason)


def check_utf8_path(path: str, what: str) -> None:
    """One line where ``path`` is not valid UTF-8 (orbax, TensorStore and the video writer
    take only text paths)."""
    problem = utf8_problem(path, what)
    if problem is not None:
        raise CLIError(problem)


def check_compile_cache_dir(path: str, what: str) -> None:
    """One line where the compile cache cannot go to ``path``: not valid UTF-8 (XLA takes
    text paths only), or inside a run directory's ``checkpoints/`` or ``tensorboard/``."""
    check_utf8_path(path, what)
    check_not_in_a_run(path, what)


def nonempty(value: str) -> str:
    """An argparse ``type`` that refuses an empty value (``--resume ""``, as an unset shell
    variable gives, would otherwise read as the flag left out)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def ensure_writable_dir(path: str) -> str:
    """Create ``path`` if needed and check a file can be written there."""
    if not path.strip():
        raise CLIError("the output directory must not be empty")
    check_utf8_path(path, "output directory")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".ppo_jax_write_test.{os.getpid()}")
        with open(probe, "w") as f:
            f.write("")
        os.remove(probe)
    except OSError as e:
        raise CLIError(f"cannot write to output directory {path!r}: "
                       f"{not_made_because(path, e)}") from None
    return os.path.abspath(path)


def check_output_file(path: str, what: str, suffixes: tuple[str, ...] = (),
                      create: bool = True) -> str:
    """One line unless ``path`` names a file that can be written (its directory is created
    if needed; the file itself is not), ending in one of ``suffixes`` where given. With
    ``create=False`` only what needs no directory is checked: a name, not a directory, the
    suffix (call it again with ``create=True`` once nothing else can refuse the command)."""
    if not path or not os.path.basename(path):
        raise CLIError(f"{what} must name a file, got {path!r}")
    check_utf8_path(path, what)
    check_not_in_a_run(path, what, file=True)
    if os.path.isdir(path):
        raise CLIError(f"{what} {path} is a directory: give the path of a file to write")
    if suffixes and os.path.splitext(path)[1].lower() not in suffixes:
        raise CLIError(f"{what} must end in {' or '.join(suffixes)}, got {path!r}"
                       if len(suffixes) < 3 else
                       f"{what} must end in one of {', '.join(suffixes)}, got {path!r}")
    _check_name_length(path, what)
    if create:
        ensure_writable_dir(os.path.dirname(os.path.abspath(path)))
    return os.path.abspath(path)


def _quiet_closed_loop_hook(default):
    """A ``threading.excepthook`` that drops orbax's background-thread ``RuntimeError: Event
    loop is closed`` (its reader threads, cut off by a corrupt checkpoint, outlive the
    restore that already failed and was reported) and passes anything else on."""

    def hook(args):
        if isinstance(args.exc_value, RuntimeError) and "Event loop is closed" in str(
            args.exc_value
        ):
            return
        default(args)

    return hook


OUT_OF_MEMORY_HINT = "try fewer envs, seeds or sweep points, or smaller --hidden-sizes"


def failure_line(prog: str, e: BaseException, oom_hint: str = ""
                 ) -> tuple[str | None, int] | None:
    """The one line and exit status of a command stopped by ``e``: a :class:`CLIError`, an
    interrupt, memory that the host or the device could not give (with ``oom_hint``: what
    to reduce), a setting a library would not start with, or a reader of the output that
    left (no line); None: anything else, which is a bug to show in full."""
    hint = f": {oom_hint}" if oom_hint else ""
    if isinstance(e, CLIError):
        return f"{prog}: {e.kind}: {e}", e.code
    if _caused_by_interrupt(e):
        return f"{prog}: interrupted", 130
    if isinstance(e, MemoryError):
        return f"{prog}: error: out of host memory{hint}", 1
    if (type(e).__name__ in ("JaxRuntimeError", "XlaRuntimeError")
            and "RESOURCE_EXHAUSTED" in str(e)):  # XLA's: an allocation the device refused
        return f"{prog}: error: out of device memory ({first_line(e)}){hint}", 1
    setting = _setting_failure(e)
    if setting:
        return f"{prog}: error: {setting}", 2
    if isinstance(e, BrokenPipeError) and _stdout_reader_gone():
        return None, 141  # `... | head`: nothing to say to a reader that left (128 + SIGPIPE)
    return None


def _caused_by_interrupt(e: BaseException) -> bool:
    """Whether ``e`` is a Ctrl-C, or an error raised because of one (a compiled module that a
    Ctrl-C stopped while it initialized: ``ImportError: initialization failed``, caused by
    the ``KeyboardInterrupt``)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__  # not __context__: a failure while handling a Ctrl-C is its own
    return False


def _stdout_reader_gone() -> bool:
    """Whether standard output is a pipe whose reading end is closed."""
    try:
        import select

        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll(), no file descriptor
        return False


def _setting_failure(e: BaseException) -> str | None:
    """The line for a library that would not start because of an environment variable
    (``MUJOCO_GL``, read when MuJoCo is imported; ``JAX_PLATFORMS``, when JAX starts its
    backends), or None."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, RuntimeError) and "environment variable MUJOCO_GL" in text:
        return f"{text} (MuJoCo's offscreen backends: egl, osmesa; or unset it)"
    tb = traceback.extract_tb(e.__traceback__)
    if (isinstance(e, (RuntimeError, AssertionError)) and tb
            and tb[-1].filename.endswith(os.path.join("jax", "_src", "xla_bridge.py"))):
        asked = os.environ.get("JAX_PLATFORMS", "")
        which = f"the platforms JAX_PLATFORMS={asked!r} names" if asked else "a backend"
        return (f"JAX could not start {which}: "
                + (text or "none of them is installed (a GPU needs: pip install -e '.[cuda]')"))
    return None


_RETRIP = threading.Event()  # a Ctrl-C that was dropped: raise it again
_RETRIPS: list[threading.Thread] = []


def _retrip_forever() -> None:
    while True:
        _RETRIP.wait()
        _RETRIP.clear()
        time.sleep(0.01)  # past the callback or finalizer that dropped it
        _thread.interrupt_main(signal.SIGINT)


def _unraisable(default: Callable[[Any], None]) -> Callable[[Any], None]:
    """A ``sys.unraisablehook`` that does not drop a Ctrl-C: a ``KeyboardInterrupt`` raised
    where Python can only print it ("Exception ignored in ..."): in a garbage-collection
    callback (JAX's runs at every collection, often while a command imports its libraries),
    a finalizer or a weakref callback; the command then ran on to exit 0. It is raised again
    in the main thread (by a thread that waits for it: no thread is started in here, where
    the interrupted code may hold threading's locks). Anything else goes to ``default``."""

    def hook(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            _RETRIP.set()
            return
        default(unraisable)

    hook.keeps_interrupts = True
    return hook


def raise_interrupts() -> None:
    """Let no Ctrl-C be dropped (:func:`_unraisable`), where Python's default SIGINT handler
    is in place (from the main thread; a second call changes nothing)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        return
    if not getattr(sys.unraisablehook, "keeps_interrupts", False):
        sys.unraisablehook = _unraisable(sys.unraisablehook)
    if not _RETRIPS:
        _RETRIPS.append(threading.Thread(target=_retrip_forever, name="ppo_jax-ctrl-c",
                                         daemon=True))
        _RETRIPS[0].start()


def _check_name_length(path: str, what: str) -> None:
    """One line where the file name of ``path`` is longer than its file system takes (found
    only when the file was written: after a whole benchmark, its results then lost)."""
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)  # the nearest folder that exists: its file system
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no limit to ask for
        return
    name = os.path.basename(path)
    room = 16  # for the temporary name it is first written under (".tmp.<pid>")
    if limit and len(os.fsencode(name)) + room > limit:
        raise CLIError(f"{what}: the file name {name[:24]}...{name[-8:]} is longer than the "
                       f"file system takes ({len(os.fsencode(name))} bytes; at most "
                       f"{limit - room}, with room for the temporary name it is written under)")


def one_line_failures(prog: str, before_exit: Callable[[], None] | None = None) -> None:
    """For a script that runs at its top level (``scripts/tutorial.py``, not a ``main``):
    an exception it does not catch ends it as :func:`run_main` ends a command (one line and
    its exit status, for an interrupt and the failures :func:`failure_line` knows; anything
    else in full), after ``before_exit`` (e.g. remove the empty folder it made)."""
    default = sys.excepthook

    def hook(kind, e, tb):
        if before_exit is not None:
            with contextlib.suppress(Exception):
                before_exit()
        line = failure_line(prog, e)
        if line is None:
            default(kind, e, tb)
            return
        exit_with_one_line(*line)

    sys.excepthook = hook


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None,
             oom_hint: str = "") -> None:
    """Run ``main`` and exit with its status; user errors become one line on stderr
    (:func:`failure_line`, with ``oom_hint``)."""
    prog = os.path.basename(sys.argv[0]) or "ppo_jax"
    from ppo_jax.eval.gl import default_offscreen_backend

    default_offscreen_backend()  # before anything imports mujoco
    try:
        from absl import logging as absl_logging

        # orbax logs (and then raises) what it cannot read: the raised error becomes our line
        absl_logging.set_verbosity(absl_logging.FATAL)
    except ImportError:
        pass
    threading.excepthook = _quiet_closed_loop_hook(threading.excepthook)
    raise_interrupts()
    try:
        code = main(argv)
        if sys.stdout is not None:  # flushed here, not at exit: a reader that left is then
            sys.stdout.flush()  # one more case of failure_line's
        message = None
    except BaseException as e:  # noqa: BLE001 (what failure_line does not know is raised)
        line = failure_line(prog, e, oom_hint)
        if line is None:
            raise
        message, code = line
    if code:
        exit_with_one_line(message, code)
    sys.exit(code)
