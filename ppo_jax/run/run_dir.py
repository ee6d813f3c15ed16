"""A run directory's own names, and the places inside one that no other output may take.

Light on purpose: the commands check their output paths before JAX and orbax load (orbax is
loaded only where a ``checkpoints/`` folder must be read)."""

from __future__ import annotations

import contextlib
import os

# a run directory's own folders (``checkpoint.CHECKPOINTS``, ``events.EVENTS_DIR``) and the
# files a run writes there (``metrics.json`` and ``runner.RUN_FILES``)
RUN_FOLDERS = ("checkpoints", "tensorboard")
RUN_OWN_FILES = ("metrics.json", "curves.png", "policy.mp4")


def holds_run(path: str) -> bool:
    """Whether the directory ``path`` holds a run: its ``metrics.json``, or a checkpoint."""
    if os.path.isfile(os.path.join(path, "metrics.json")):
        return True
    ck = os.path.join(path, RUN_FOLDERS[0])
    if not os.path.isdir(ck):
        return False
    from ppo_jax.run.checkpoint import is_step  # orbax and JAX: only where it is asked

    try:
        return any(is_step(ck, name) for name in os.listdir(ck))
    except OSError:
        return False


def inside_a_run(path: str, what: str, file: bool = False) -> str | None:
    """The one-line reason ``path`` (a directory, or a file with ``file``) must not be
    written, or None: it is or lies inside a run directory's ``checkpoints/`` or
    ``tensorboard/`` (a numbered folder there would stand where the run saves a checkpoint),
    or it is one of the files a run directory holds (``metrics.json``, ...). ``what`` names
    the path in the message (``--out``). Links are followed."""
    p = os.path.realpath(path)
    if file and os.path.basename(p) in RUN_OWN_FILES and holds_run(os.path.dirname(p)):
        return (f"{what} {path} is the {os.path.basename(p)} of the run in "
                f"{os.path.dirname(p)}: choose another name")
    while True:
        parent = os.path.dirname(p)
        if os.path.basename(p) in RUN_FOLDERS and holds_run(parent):
            return (f"{what} {path} is inside the {os.path.basename(p)}/ of the run in "
                    f"{parent}, which that run keeps for itself: choose another place")
        if parent == p:
            return None
        p = parent


def events_problem(out: str) -> str | None:
    """Why a run in ``out`` could not write its TensorBoard events into ``out/tensorboard``
    (a file there, or a folder this process cannot write into), or None. It is made at the
    first batch, not before: a job stopped before then leaves no files."""
    path = os.path.join(out, RUN_FOLDERS[1])
    if not os.path.lexists(path):
        return None
    if not os.path.isdir(path):
        return (f"{path} is not a directory, and the run writes its TensorBoard events there: "
                "move it away")
    if not os.access(path, os.W_OK | os.X_OK):
        return f"cannot write TensorBoard events into {path}: permission denied"
    return None


def utf8_problem(path: str, what: str) -> str | None:
    """The one-line reason ``path`` (named ``what`` in it) cannot be written where it is not
    valid UTF-8 (orbax, TensorStore and the video writer take only text paths), its
    undecodable bytes shown escaped; else None."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "backslashreplace").decode()
        return f"{what} {shown} is not valid UTF-8: choose a path of text characters"
    return None


def first_missing(path: str) -> str | None:
    """The outermost directory of ``path`` (absolute) that does not exist yet (None: it
    exists): what making ``path`` makes, and :func:`remove_empty` takes back."""
    if os.path.exists(path):
        return None
    while not os.path.exists(os.path.dirname(path)) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def remove_empty(path: str, top: str) -> None:
    """Remove ``path`` and its parents up to ``top`` (those a refused or failed run made,
    :func:`first_missing`) while they are empty."""
    while True:
        try:
            os.rmdir(path)  # an empty directory only
        except OSError:
            return
        if path == top or os.path.dirname(path) == path:
            return
        path = os.path.dirname(path)


@contextlib.contextmanager
def taken_back_if_empty(folder: str, lead: bool = True):
    """Around what makes ``folder`` (absolute) and may then be refused or fail: the folders
    it made (:func:`first_missing`) are removed again while empty (``lead``: the process
    that does it, in a job of several); not where another process holds the folder
    (:class:`RunDirBusy`): they are its own, made after this one looked."""
    top = first_missing(folder)
    try:
        yield
    except RunDirBusy:
        raise
    except BaseException:
        if top is not None and lead:
            remove_empty(folder, top)
        raise


def not_made_because(path: str, e: OSError) -> str:
    """Why the directory ``path`` could not be made or written (``e``): the file on its way,
    where the nearest existing one of it and its parents is not a directory (``makedirs``
    says "File exists" or "Not a directory"), else ``e``'s reason."""
    at = os.path.abspath(path)
    while not os.path.lexists(at) and os.path.dirname(at) != at:
        at = os.path.dirname(at)
    if os.path.lexists(at) and not os.path.isdir(at):
        return f"{at} is a file, not a directory"
    return str(e.strerror or e)


class RunDirBusy(ValueError):
    """Another process writes a run in the directory (one line)."""


@contextlib.contextmanager
def held(folder: str, what: str | None = "out"):
    """The run directory ``folder`` for this process alone while the block runs: where
    another process holds it (a run, a resume or ``fit`` still going), :class:`RunDirBusy`.
    Two runs into one directory each passed the check for a run there (it holds none until
    the first checkpoint or ``metrics.json``) and wrote over each other's files. An advisory
    lock (``flock``) on the folder itself: nothing is written into it, and the lock goes
    with the process however it ends. Where the folder is missing (a later check says why)
    or its file system has no locks, nothing is held. ``what``: the argument to choose
    another folder with (None: a resume, which writes where the run is)."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirBusy(f"{folder} is being written by another process (a run or a "
                             "resume that is still going): wait for it to end"
                             + (f", or choose another {what}" if what else "")) from None
        except OSError:  # no locks on this file system: unguarded
            pass
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def held_by_the_job(folder: str, what: str | None = "out"):
    """:func:`held` by process 0 of a job, whose others share the folder: each process of a
    multi-process job enters it at the same point, and is refused where process 0 is (they
    would otherwise wait for it at the job's next barrier)."""
    import jax

    from ppo_jax.run.parallel import from_lead

    with contextlib.ExitStack() as hold:
        busy = ""
        if jax.process_index() == 0:
            try:
                hold.enter_context(held(folder, what))
            except RunDirBusy as e:
                busy = str(e)
        busy = from_lead("run_dir_held", busy)
        if busy:
            if jax.process_count() > 1:  # every process leaves the job together: process
                jax.distributed.shutdown()  # 0's exit would end the others' service first
            raise RunDirBusy(busy)
        yield
