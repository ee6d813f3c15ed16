"""Orbax checkpoints of a job: the run directory's layout, save, list, read, restore.

A run directory (``--out``) holds ``metrics.json``, ``curves.png`` and ``checkpoints/``
(:data:`CHECKPOINTS`); every function here that takes a directory takes either the run
directory or its ``checkpoints/``.

A checkpoint (one step = batches done) holds, through orbax's ``CheckpointManager``:

* ``state``: the whole :class:`~ppo_jax.core.train.PPOState` of every run (leading axis R: the
  seeds, times the points of a sweep): actor/critic parameters, Adam moments and update count
  (the lr schedule resumes from it), observation-normalization statistics, the envs
  mid-episode, the PRNG key, the run's sweepable hyperparameters, batches done;
* ``meta`` (JSON): the full config, ``num_seeds`` and the sweep (which run is which), frames
  done, env id, package versions and the format version.

Reading a checkpoint's metadata once gives a :class:`Saved` (:func:`open_saved`): the job to
resume (its runs and config), what to check a resume's flags against (:func:`clashes`) and
what :func:`restore` restores, without reading the metadata again.

Checkpoints do not depend on the devices that wrote them: orbax stores each array whole
(each process writes its own shards of it), and a restore lays it out over whatever mesh the
reader uses (:mod:`ppo_jax.run.parallel`), or loads it on the host.

Orbax writes each step into a temporary directory and renames it when complete, so a run
killed while saving leaves the previous checkpoint restorable (an unfinished one is not
listed). Restoring builds the expected tree from the saved config and checks the shape of
every array it reads against it (all of them, or the parts asked for: :func:`restore_run`
reads :data:`POLICY_PARTS`): a checkpoint that does not fit gives a :class:`CheckpointError`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Collection

import jax
import numpy as np
import orbax.checkpoint as ocp

from ppo_jax.config import FLOAT32_MAX, PPOConfig
from ppo_jax.run.runs import Runs
from ppo_jax.run.parallel import Layout, gather
from ppo_jax.util import first_line, held_stderr, is_whole_number, versions
from ppo_jax.run.programs import class_name, spec_json, state_shapes
from ppo_jax.core.train import PPOState, Trainer, build_trainer

# /3: the optimizer's state holds its learning rate and clip norm (optax.inject_hyperparams);
# per-run counts are named *_per_run
FORMAT = "ppo_jax.run.checkpoint/3"
CHECKPOINTS = "checkpoints"
# What evaluation and export read of a run (restore_run's default): the networks, the
# normalization statistics, the evaluation key and the counts; not the envs mid-episode, the
# PRNG key, Adam's moments or the running moments, which serve only a resume (the envs grow
# with --num-envs, Adam's moments with the networks).
POLICY_PARTS = ("params", "obs_stats", "eval_key", "hyper", "batches_done", "failed_batch")


def locate_checkpoints(path: str) -> str:
    """A run directory's ``checkpoints/``, or ``path`` itself when it has none (it is that
    directory, or nothing is there yet)."""
    sub = os.path.join(path, CHECKPOINTS)
    return sub if os.path.isdir(sub) else path


def run_directory(path: str) -> str:
    """The run directory of ``path``, a run directory or its ``checkpoints/`` (where a resume
    writes ``metrics.json``, the curves, the events and new checkpoints)."""
    if os.path.isdir(os.path.join(path, CHECKPOINTS)):
        return path
    if os.path.basename(os.path.normpath(path)) == CHECKPOINTS:
        return os.path.dirname(os.path.normpath(path)) or "."
    return path


def run_checkpoints(run_dir: str) -> str:
    """Where a run directory keeps its checkpoints (whether or not it exists yet)."""
    return os.path.join(run_dir, CHECKPOINTS)


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable, or does not fit what was asked of it."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint that could not be written (a full disk, a directory gone)."""


class _ForeignStepNotices(logging.Filter):
    """Orbax's warning, at every look at the steps, that a numbered folder it did not write
    has no metadata, for the checkpoint directories ppo_jax opened: such a folder is passed
    over (:func:`is_step`; ``--resume`` refuses it), so the warning (three times a restore)
    says nothing to act on. Any other checkpoint directory's warnings pass."""

    def __init__(self):
        super().__init__()
        self.directories: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if not text.startswith("Metadata file does not exist: "):
            return True
        step = os.path.dirname(text.partition(": ")[2].strip())
        directory, name = os.path.split(step)
        return not (directory in self.directories and name.isdigit()
                    and not is_step(directory, name))


_FOREIGN_STEP_NOTICES = _ForeignStepNotices()


def _manager(directory: str, keep: int | None = None, create: bool = False):
    directory = os.path.abspath(directory)
    _FOREIGN_STEP_NOTICES.directories.add(directory)
    logging.getLogger("absl").addFilter(_FOREIGN_STEP_NOTICES)  # (once: it is one object)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
    return ocp.CheckpointManager(directory, options=options)


def save(
    directory: str,
    trainer: Trainer,
    states: PPOState,
    *,
    runs: Runs | None = None,
    keep: int | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> int:
    """Save ``states`` (``[R, ...]``, any sharding) of ``runs`` (default: R seeds of the
    trainer's config) into ``directory`` (a checkpoints directory) at step = batches done
    (the most of any run; each run's own count is in the metadata); keep the last ``keep``.
    Every process of a multi-process job calls it."""
    done = [int(b) for b in gather(states.batches_done).reshape(-1)]
    step = max(done)  # runs that hit NaN/Inf stopped earlier: see batches_done_per_run
    cfg = trainer.config
    runs = runs or Runs(cfg, len(done), new=False)
    if runs.num_runs != len(done):
        raise ValueError(f"{len(done)} states for {runs.num_runs} runs")
    meta = {
        "format": FORMAT,
        "config": cfg.to_dict(),
        **runs.to_meta(),
        "batches_done": step,
        "frames": step * cfg.frames_per_batch,
        "batches_done_per_run": done,
        "frames_per_run": [b * cfg.frames_per_batch for b in done],
        "env_id": trainer.env.env_id,
        "observation_size": int(trainer.env.observation_size),  # (a numpy integer is no JSON)
        "action_size": int(trainer.env.action_size),
        "env_spec": spec_json(trainer.env),
        "env_class": class_name(trainer.env),
        **dict(zip(("action_low", "action_high"), _bounds(trainer.env))),
        "versions": versions(),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra_meta or {}),
    }
    state = _flat_nonempty(states)  # device arrays: orbax writes each process's shards
    try:  # stderr held: a failed write's pending TensorStore writes print tracebacks
        with held_stderr(), _manager(directory, keep=keep, create=True) as mngr:
            # the same state saved again (e.g. the final save)
            if step in mngr.all_steps() and is_step(directory, str(step)):
                return step
            mngr.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                ),
                force=True,
            )
            mngr.wait_until_finished()
    except Exception as e:  # disk full, directory gone: orbax/tensorstore raise many types
        raise CheckpointWriteError(
            f"could not save checkpoint step {step} in {directory} "
            f"({type(e).__name__}: {_reason(e)})") from None
    return step


def steps(directory: str) -> list[int]:
    """Completed checkpoint steps in ``directory`` (raises if it is not a directory)."""
    directory = locate_checkpoints(directory)
    if not os.path.isdir(directory):
        raise CheckpointError(f"no such checkpoint directory: {directory}")
    with _manager(directory) as mngr:
        return sorted(s for s in mngr.all_steps() if is_step(directory, str(s)))


# what orbax writes into every step's directory (a step is renamed into place complete)
_STEP_PARTS = ("_CHECKPOINT_METADATA", "meta", "state")


def is_step(directory: str, name: str) -> bool:
    """Whether ``directory/name`` is a checkpoint step: a number naming a folder that holds
    what orbax writes (another folder of that name, e.g. one a user made there, is not;
    a step of broken files is, and its restore says so)."""
    return name.isdigit() and any(
        os.path.lexists(os.path.join(directory, name, part)) for part in _STEP_PARTS)


def foreign_steps(directory: str) -> list[str]:
    """The folders of ``directory`` (a checkpoints directory) named as steps that orbax did
    not write: a run that saves there would find its step's name taken, and orbax would
    count them among the checkpoints it keeps (and delete them)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted((n for n in names if n.isdigit() and not is_step(directory, n)
                   and os.path.isdir(os.path.join(directory, n))), key=int)


def peek_meta(path: str) -> dict[str, Any] | None:
    """The metadata of ``path``'s latest complete checkpoint read as plain JSON from disk,
    without orbax (which starts JAX's backends); None when there is none to read. For
    choices made before JAX starts (the device); :func:`open_saved` checks it properly."""
    directory = locate_checkpoints(path)
    try:
        # orbax writes a step under a temporary name and renames it when complete
        done = sorted(int(n) for n in os.listdir(directory) if is_step(directory, n))
        with open(os.path.join(directory, str(done[-1]), "meta", "metadata")) as f:
            meta = json.load(f)
    except (OSError, IndexError, ValueError, RecursionError):
        return None
    return meta if isinstance(meta, dict) else None


def _pick_step(directory: str, step: int | None) -> int:
    available = steps(directory)
    if not available:
        parent, name = os.path.split(os.path.normpath(directory))
        if os.path.basename(parent) == CHECKPOINTS and is_step(parent, name):
            run = os.path.dirname(parent) or "."
            raise CheckpointError(f"{directory} is checkpoint {name} of the run {run}: give the "
                                  f"run's folder, {run} (to read this checkpoint: --step "
                                  f"{name}, or step={name})")
        raise CheckpointError(f"no checkpoint in {directory}")
    if step is None:
        return available[-1]
    if not is_whole_number(step):
        raise TypeError(f"the checkpoint step must be a whole number, got {step!r}")
    if step not in available:
        raise CheckpointError(
            f"no checkpoint at step {step} in {directory} (available: {available})"
        )
    return int(step)


@dataclasses.dataclass(frozen=True)
class Saved:
    """One checkpoint's metadata, read once (:func:`open_saved`): ``directory`` (the
    checkpoints directory), ``step`` and ``meta``; the job it holds is :attr:`runs`."""

    directory: str
    step: int
    meta: dict[str, Any]

    @property
    def runs(self) -> Runs:
        """The job's runs (config, seeds, sweep); :class:`CheckpointError` if invalid."""
        try:
            return Runs.from_meta(config_from_meta(self.meta), self.meta)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint metadata is invalid: {e}") from None

    @property
    def config(self) -> PPOConfig:
        return self.runs.config


def open_saved(path: str, step: int | None = None) -> Saved:
    """The latest (or given) checkpoint of ``path`` (a run directory or its checkpoints),
    its metadata read and checked; :class:`CheckpointError` otherwise."""
    directory = locate_checkpoints(path)
    step = _pick_step(directory, step)
    try:
        with held_stderr(), _manager(directory) as mngr:
            meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
                "meta"
            ]
    except Exception as e:  # orbax raises many types for unreadable files
        raise CheckpointError(
            f"checkpoint {directory} step {step}: metadata unreadable ({type(e).__name__})"
        ) from None
    if not isinstance(meta, dict) or not str(meta.get("format", "")).startswith("ppo_jax."):
        raise CheckpointError(f"checkpoint {directory} step {step}: not a ppo_jax checkpoint")
    if meta["format"] != FORMAT:
        raise CheckpointError(
            f"checkpoint {directory} step {step} has format {meta['format']}, this ppo_jax "
            f"reads {FORMAT}: evaluate or resume it with the ppo_jax version that wrote it")
    for key, kind in META_FIELDS:
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise CheckpointError(f"checkpoint {directory} step {step}: metadata is invalid "
                                  f"({key!r} is missing or not {_KIND[kind]})")
    bad = _bad_per_run_field(meta)
    if bad:
        raise CheckpointError(f"checkpoint {directory} step {step}: metadata is invalid "
                              f"({bad})")
    return Saved(directory=directory, step=step, meta=meta)


# per-run lists a checkpoint's metadata may hold (older ones lack some): each entry a whole
# number, a number (a return), or either or None (a run that has none yet)
PER_RUN_FIELDS: tuple[tuple[str, str], ...] = (
    ("batches_done_per_run", "count"), ("frames_per_run", "count"),
    ("failed_batch", "count or null"), ("last_eval_frames", "count or null"),
    ("last_eval_return", "number or null"), ("last_eval_sim", "text or null"))


def _bad_per_run_field(meta: dict[str, Any]) -> str | None:
    """What is wrong with the metadata's run count or :data:`PER_RUN_FIELDS` (None: nothing):
    each, where present, a list of one entry per run of its kind."""
    k = meta.get("num_runs", meta["num_seeds"])
    if not is_whole_number(k) or k < 1:
        return "'num_runs' is not a whole number >= 1"
    for key, kind in PER_RUN_FIELDS:
        v = meta.get(key)
        if v is None:
            continue
        if not isinstance(v, list) or len(v) != k or not all(_is_kind(x, kind) for x in v):
            return f"{key!r} is not a list of {k} entries, each a {kind}"
    return None


def _is_kind(x: Any, kind: str) -> bool:
    if x is None:
        return kind.endswith("or null")
    if kind.startswith("count"):
        return is_whole_number(x) and x >= 0
    if kind.startswith("text"):
        return isinstance(x, str)
    # a float32 value, as the programs log it (inf and NaN included; 1e40 is none)
    return (isinstance(x, (int, float)) and not isinstance(x, bool)
            and not (np.isfinite(x) and abs(x) > FLOAT32_MAX))


def _reason(e: BaseException) -> str:
    """An orbax or TensorStore error's first line, without TensorStore's pointer to more."""
    return first_line(e).split(" See full TensorStore details")[0].rstrip(" ;.")


_KIND = {dict: "an object", int: "a whole number"}
# what every reader of a checkpoint's metadata takes from it
META_FIELDS: tuple[tuple[str, type], ...] = (
    ("config", dict), ("num_seeds", int), ("batches_done", int), ("frames", int))


def config_from_meta(meta: dict[str, Any]) -> PPOConfig:
    cfg = dict(meta["config"])
    cfg["hidden_sizes"] = tuple(cfg["hidden_sizes"])
    try:
        return PPOConfig.from_dict(cfg)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint config is invalid: {e}") from None


# the metadata entry of how the job checkpoints: {"every": N, "keep": K}, a resume's defaults
CHECKPOINTING = "checkpointing"
DEFAULT_KEEP = 3


def checkpointing(saved: Saved) -> tuple[int, int]:
    """``(every, keep)`` that a resume of ``saved`` checkpoints with unless told otherwise:
    the job's own; for a checkpoint that does not record them, none on the way and enough
    kept that the resume deletes none of those already there (it adds at most one: the
    final or the interrupted batch's)."""
    given = saved.meta.get(CHECKPOINTING)
    if isinstance(given, dict):
        every, keep = given.get("every"), given.get("keep")
        if (isinstance(every, int) and not isinstance(every, bool) and every >= 0
                and isinstance(keep, int) and not isinstance(keep, bool) and keep >= 1):
            return every, keep
    return 0, max(DEFAULT_KEEP, len(steps(saved.directory)) + 1)


def saves_final(saved: Saved) -> bool:
    """Whether a resume of ``saved`` saves a checkpoint at its end unless told otherwise:
    as the job did (``--no-save-final``: only where the last batch falls on the schedule);
    yes where the checkpoint does not record it."""
    given = saved.meta.get(CHECKPOINTING)
    return not (isinstance(given, dict) and given.get("save_final") is False)


# Config fields a resume may change: where the evaluations run changes no training program
# (a run saved on one machine continues on another kind, e.g. over several processes)
RESUME_MAY_CHANGE = ("eval_sim",)


def clashes(saved: Saved, overrides: dict[str, Any], num_seeds: int | None = None
            ) -> list[tuple[str, Any, Any]]:
    """What a resume of ``saved`` was asked that contradicts it: ``(field, asked, saved)``
    for each config field in ``overrides`` whose value differs (but those of
    :data:`RESUME_MAY_CHANGE`), and ``("num_seeds", ...)`` when ``num_seeds`` is given and
    differs."""
    config = saved.config
    out = [(k, v, getattr(config, k)) for k, v in overrides.items()
           if k not in RESUME_MAY_CHANGE and getattr(config, k) != v]
    if num_seeds is not None and num_seeds != saved.meta["num_seeds"]:
        out.append(("num_seeds", num_seeds, saved.meta["num_seeds"]))
    return out


def with_changes(saved: Saved, overrides: dict[str, Any]) -> Saved:
    """``saved`` with the fields of :data:`RESUME_MAY_CHANGE` that ``overrides`` gives (the
    resumed job's config, which its next checkpoints record)."""
    changes = {k: v for k, v in overrides.items() if k in RESUME_MAY_CHANGE}
    if not changes:
        return saved
    meta = dict(saved.meta, config=dict(saved.meta["config"], **changes))
    return dataclasses.replace(saved, meta=meta)


def _bounds(env) -> list[list[float]]:
    """``[low, high]``: an env's action bounds as exact floats (a checkpoint's metadata)."""
    return [np.asarray(b, np.float64).reshape(-1).tolist()
            for b in (env.action_low, env.action_high)]


def trainer_for(saved: Saved, layout: Layout | None = None, env: Any = None) -> Trainer:
    """The trainer of ``saved``'s config, on its env: the registry's ``config.env``, or
    ``env`` (an env object of that id, for an env of the user's own);
    :class:`CheckpointError` (one line) where neither fits."""
    config = saved.config
    if isinstance(env, (str, bytes)):
        raise CheckpointError(f"env takes the env object a run of your own env was trained "
                              f"on, got the id {env!r}: leave env out for a registered env "
                              "(the checkpoint names it)")
    if env is not None and getattr(env, "env_id", None) != config.env:
        raise CheckpointError(
            f"the checkpoint was trained on {config.env!r}, the env given is "
            f"{getattr(env, 'env_id', type(env).__name__)!r}")
    if env is not None and "action_low" not in saved.meta:
        # written before an env object's time limit was checked against the config's: the
        # config's was ignored then, the env's own applied (as it does with 0)
        config = config.replace(max_episode_steps=0)
    own = " (a run of an env of your own: restore or load_policy it with env=, the env object)"
    if env is None:
        from ppo_jax.envs.registry import is_registered

        if not is_registered(config.env):
            raise CheckpointError(f"the checkpoint's env {config.env!r} is not one ppo_jax "
                                  "registers" + own)
    try:
        trainer = build_trainer(config, layout, env)
    except ValueError as e:  # an env id this process cannot build (or a broken env)
        raise CheckpointError(
            f"cannot build the checkpoint's env {config.env!r}: {first_line(e)}"
            + ("" if env is not None else own)) from None
    if env is None:
        _check_registered_env(saved.meta, trainer.env)
    return trainer


def _check_registered_env(meta: dict[str, Any], env: Any) -> None:
    """:class:`CheckpointError` where the registry's env of the saved id is not the env the
    run was trained on: an env object of that id, built with other arguments (a time limit,
    a frame skip, reward weights) or of a class of the user's own. (The env of a checkpoint
    written before the metadata held its spec is not checked; settings that only one side
    names, from another ppo_jax version, or a library's version, are not compared.)"""
    own = " (restore or load_policy it with env=, the env object it was trained on)"
    trained = meta.get("env_class")
    if (isinstance(trained, str) and not trained.startswith("ppo_jax.")
            and trained != class_name(env)):
        raise CheckpointError(f"the checkpoint's env {env.env_id!r} was trained as a "
                              f"{trained}, not the one ppo_jax registers" + own)
    saved = meta.get("env_spec")
    if not isinstance(saved, dict):
        return
    from ppo_jax.envs.external import VERSION_KEYS

    now = spec_json(env)
    differ = [k for k in sorted(set(saved) & set(now))
              if k not in VERSION_KEYS and saved[k] != now[k]]
    if differ:
        shown = ", ".join(f"{k} {_short(saved[k])} (registered: {_short(now[k])})"
                          for k in differ[:3])
        more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
        raise CheckpointError(f"the checkpoint's env {env.env_id!r} was trained with other "
                              f"settings than the registered one's: {shown}{more}" + own)


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def restore(
    source: str | Saved, step: int | None = None, layout: Layout | None = None,
    env: Any = None, parts: Collection[str] | None = None,
) -> tuple[Trainer, PPOState, dict[str, Any]]:
    """Rebuild the trainer from a checkpoint's config and restore the state of every run.

    Args:
      source: a run directory (or its ``checkpoints/``), or a :class:`Saved` already read.
      step: the checkpoint step (None: the latest).
      layout: the device mesh to lay the states out over (None: this process's first
        device, whatever mesh wrote them).
      env: the env object, for a checkpoint of an env of your own (the registry builds the
        others from the saved id).
      parts: the ``PPOState`` fields to read (None: all of them); the others are ``None`` in
        the state returned, and nothing of them is read from disk (:data:`POLICY_PARTS`:
        what evaluation and export use, without the envs and Adam's moments). Must
        include ``"params"``.

    Returns:
      ``(trainer, states [R, ...], meta)``: the :class:`~ppo_jax.core.train.Trainer`, every
      run's ``PPOState`` (or its ``parts``) and the checkpoint's metadata.

    Raises:
      CheckpointError: a missing, unreadable or mismatched checkpoint (one line).
      TypeError: a ``step`` that is not a whole number, a ``layout`` that is not one.
    """
    saved = source if isinstance(source, Saved) else open_saved(source, step)
    directory, step, meta = saved.directory, saved.step, saved.meta
    runs = saved.runs
    trainer = trainer_for(saved, layout, env)
    if (meta.get("observation_size"), meta.get("action_size")) != (
        trainer.env.observation_size,
        trainer.env.action_size,
    ):
        raise CheckpointError(
            f"checkpoint is for observation/action size {meta.get('observation_size')}/"
            f"{meta.get('action_size')}, this env has {trainer.env.observation_size}/"
            f"{trainer.env.action_size}"
        )
    bounds = _bounds(trainer.env)
    if "action_low" in meta and [meta["action_low"], meta["action_high"]] != bounds:
        low, high = bounds
        raise CheckpointError(
            f"checkpoint is for action bounds {meta['action_low']} .. {meta['action_high']}, "
            f"this env has {low} .. {high} (the policy's actions are mapped onto them)")
    target = state_shapes(trainer, runs.num_runs)
    if layout is None:  # on this process's first device (whatever mesh wrote it)
        one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree_util.tree_map(lambda _: one, target)
    else:
        shardings = layout.state_shardings(target)
    target = jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), target, shardings)
    skipped = _skipped_parts(parts)
    target = target.replace(**{f: None for f in skipped})
    flat_target = _flat_nonempty(target)
    if skipped:  # orbax's partial restore: only these arrays are read
        args = ocp.args.PyTreeRestore(
            item=flat_target, partial_restore=True,
            restore_args=ocp.checkpoint_utils.construct_restore_args(flat_target))
    else:
        args = ocp.args.StandardRestore(flat_target)
    try:
        with held_stderr(), _manager(directory) as mngr:
            _check_stored_shapes(directory, step, flat_target)
            flat = mngr.restore(step, args=ocp.args.Composite(state=args))["state"]
        # a partial restore hands back the target's own entry for an array it lacks
        missing = sorted(k for k in flat_target if not isinstance(flat.get(k), jax.Array))
        if missing:
            raise CheckpointError(f"checkpoint {directory} step {step} does not fit its "
                                  f"config: it holds no {missing[0]}")
        restored = _unflatten(target, flat, layout)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {directory} step {step} is unreadable or corrupt "
            f"({type(e).__name__}: {_reason(e)})"
        ) from None
    if not all(np.all(np.isfinite(gather(x))) for x in jax.tree_util.tree_leaves(
        restored.params
    )):
        raise CheckpointError(f"checkpoint {directory} step {step} holds non-finite parameters")
    return trainer, restored, meta


def restore_run(path: str, step: int | None = None, run_index: int = 0, env: Any = None,
                parts: Collection[str] | None = None,
                ) -> tuple[Trainer, PPOState, dict[str, Any]]:
    """``(trainer, state of run run_index, meta)`` of the job saved in ``path`` (a run
    directory or its checkpoints), restored on one device; :class:`CheckpointError` for a
    missing, corrupt or unfitting checkpoint or a run index out of range. ``parts``: as in
    :func:`restore` (None: :data:`POLICY_PARTS`, what evaluation and export read: the
    envs and Adam's moments stay on disk, so a restore's time and memory do not grow with
    the envs). The whole state of one run: ``restore`` and take its row."""
    if not is_whole_number(run_index):
        raise TypeError(f"the run index must be a whole number, got {run_index!r}")
    run_index = int(run_index)  # (as the export's metadata records it)
    trainer, states, meta = restore(path, step, env=env,
                                    parts=POLICY_PARTS if parts is None else parts)
    k = int(meta.get("num_runs") or meta["num_seeds"])
    if not 0 <= run_index < k:
        raise CheckpointError(f"run index {run_index} is not in [0, {k - 1}] for this {k}-run "
                              f"checkpoint (its runs: metrics.json's 'runs')")
    return trainer, jax.tree_util.tree_map(lambda x: x[run_index], states), meta


def run_progress(meta: dict[str, Any], run_index: int) -> tuple[int, int, int | None]:
    """``(batches done, frames, failed batch or None)`` of run ``run_index`` of a checkpoint:
    its own, which fall behind the checkpoint's step where the run stopped at NaN/Inf (its
    state is its policy before that batch)."""
    done, frames = int(meta["batches_done"]), int(meta["frames"])
    per_done, per_frames = meta.get("batches_done_per_run"), meta.get("frames_per_run")
    if (isinstance(per_done, list) and isinstance(per_frames, list)
            and run_index < min(len(per_done), len(per_frames))):
        done, frames = int(per_done[run_index]), int(per_frames[run_index])
    failed = meta.get("failed_batch")
    failed = failed[run_index] if isinstance(failed, list) and run_index < len(failed) else None
    return done, frames, (None if failed is None else int(failed))


def describe_stop(run_index: int, failed: int | None) -> str | None:
    """The line that says a run's policy is from before its NaN/Inf batch; None if it ran on."""
    if failed is None:
        return None
    return (f"note: run {run_index} stopped at batch {failed} (NaN/Inf in training): this is "
            "its policy before that batch")


def restore_for_export(path: str, step: int | None = None, run_index: int = 0
                       ) -> tuple[Trainer, PPOState, dict[str, Any]]:
    """:func:`restore_run`, and the ``source`` an export records: the checkpoint's absolute
    path, its step, the run's index, the frames that run trained and, where it stopped at
    NaN/Inf, its ``failed_batch``. Returns ``(trainer, state, source)``."""
    trainer, state, meta = restore_run(path, step, run_index)
    _, frames, failed = run_progress(meta, run_index)
    source = {
        "checkpoint": os.path.abspath(locate_checkpoints(path)),
        "step": int(meta["batches_done"]),
        "frames": frames,
        "run_index": run_index,
        **({} if failed is None else {"failed_batch": failed}),
    }
    return trainer, state, source


def _check_stored_shapes(directory: str, step: int, flat_target: dict[str, Any]) -> None:
    """Before orbax reads an array: each array to restore is stored with the shape the
    config and env make (CheckpointError naming the first that is not). A read that orbax
    starts and then refuses leaves tasks behind that print tracebacks of their own later."""
    from etils import epath

    state = epath.Path(os.path.abspath(directory), str(step), "state")  # (orbax: absolute)
    handler = ocp.PyTreeCheckpointHandler()
    try:
        stored = handler.metadata(state)
    finally:
        handler.close()
    stored = getattr(stored, "tree", stored)  # (older orbax: the dict itself)
    for key, leaf in flat_target.items():
        if key not in stored:
            raise CheckpointError(f"checkpoint {directory} step {step} does not fit its "
                                  f"config: it holds no {key}")
        shape = tuple(getattr(stored[key], "shape", None) or ())
        if shape != tuple(leaf.shape):
            raise CheckpointError(
                f"checkpoint {directory} step {step} does not fit its config and env: {key} "
                f"is stored with shape {list(shape)}, where they make {list(leaf.shape)}")


def _flat_nonempty(tree) -> dict[str, Any]:
    """``{path: leaf}`` of the non-empty leaves (orbax cannot store zero-size arrays, and
    ``mjx.Data`` has several for this model)."""
    return {
        jax.tree_util.keystr(path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
        if np.prod(leaf.shape) > 0
    }


def _skipped_parts(parts: Collection[str] | None) -> list[str]:
    """The ``PPOState`` fields a restore of ``parts`` leaves out (ValueError for a name that
    is not a field, or without ``params``)."""
    if parts is None:
        return []
    fields = [f.name for f in dataclasses.fields(PPOState)]
    if isinstance(parts, str) or not isinstance(parts, Collection):
        raise ValueError(f"parts must be a collection of PPOState fields (e.g. ('params',)), "
                         f"got {parts!r}")
    unknown = sorted(set(parts) - set(fields))
    if unknown or "params" not in parts:
        raise ValueError(f"parts must be PPOState fields and include 'params': got "
                         f"{sorted(parts)} (fields: {', '.join(fields)})")
    return [f for f in fields if f not in parts]


def _unflatten(target, flat: dict[str, Any], layout: Layout | None = None):
    """Inverse of :func:`_flat_nonempty` given the expected tree (zero-size leaves: zeros)."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(target)
    leaves = []
    for path, leaf in paths:
        name = jax.tree_util.keystr(path)
        if name in flat:
            value = flat[name] if layout is not None else np.asarray(flat[name])
            if tuple(value.shape) != tuple(leaf.shape):
                raise CheckpointError(
                    f"checkpoint does not fit its config: {name} has shape {value.shape}, "
                    f"expected {tuple(leaf.shape)}"
                )
            leaves.append(value)
        elif layout is not None:
            leaves.append(layout.put(np.zeros(leaf.shape, leaf.dtype), leaf.sharding))
        else:
            leaves.append(np.zeros(leaf.shape, leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)
