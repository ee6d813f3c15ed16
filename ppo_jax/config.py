"""``PPOConfig``: every knob of a run, defaulting to the TorchRL PPO tutorial's setup.

The config is a frozen dataclass: never mutated, hashable (so it can key compiled
functions), serialisable with :meth:`PPOConfig.to_dict` / :meth:`PPOConfig.from_dict`.
Each field's docstring is also its ``--help`` text in ``scripts/train.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

ObsNormMode = Literal["reference", "safe", "running"]
EvalAction = Literal["mean", "tanh_loc"]
CriticLoss = Literal["smooth_l1", "l2", "l1"]
MatmulPrecision = Literal["highest", "tf32", "default"]
EvalSim = Literal["auto", "mjx", "mujoco", "mjx-cpu"]
Linalg = Literal["library", "inline"]
Sampler = Literal["epoch", "torchrl"]

OBS_NORM_MODES: tuple[str, ...] = typing.get_args(ObsNormMode)
EVAL_ACTIONS: tuple[str, ...] = typing.get_args(EvalAction)
CRITIC_LOSSES: tuple[str, ...] = typing.get_args(CriticLoss)
MATMUL_PRECISIONS: tuple[str, ...] = typing.get_args(MatmulPrecision)
EVAL_SIMS: tuple[str, ...] = typing.get_args(EvalSim)
LINALGS: tuple[str, ...] = typing.get_args(Linalg)


INT32_MAX = 2**31 - 1  # the programs' step and batch counters are int32
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the programs' numbers are float32
# a seed is the 32-bit seed of the run's PRNG key (JAX without x64 takes -2**31 as 2**31, ...)
SEED_MIN, SEED_MAX = -(2**31), 2**32 - 1


def check_seed(seed: int, name: str = "seed") -> int:
    """``seed`` if it is a 32-bit PRNG seed, else ``ValueError`` (one line, naming ``name``)."""
    if not SEED_MIN <= seed <= SEED_MAX:
        raise ValueError(f"{name} must be in [{SEED_MIN}, {SEED_MAX}] (a 32-bit PRNG seed; a "
                         f"negative one is the same as itself + 2**32), got {seed}")
    return seed


def _shown(n: int) -> str:
    """A count as a message shows it: a whole float of 1e300 made an int of 301 digits."""
    digits = str(abs(n))  # (not via float: 10**400 has none)
    if len(digits) <= 16:
        return str(n)
    return f"{'-' if n < 0 else ''}{digits[0]}.{digits[1:4]}e+{len(digits) - 1}"


def _doc(text: str) -> dict:
    return {"doc": " ".join(text.split())}


@dataclass(frozen=True)
class PPOConfig:
    """Hyperparameters of one training run (defaults: the TorchRL tutorial)."""

    seed: int = field(default=0, metadata=_doc("Seed of the run's PRNG key."))
    env: str = field(
        default="InvertedDoublePendulum-v4",
        metadata=_doc(
            """The environment: a Gymnasium MuJoCo id ported to MJX (InvertedDoublePendulum-v4,
            InvertedPendulum-v4, HalfCheetah-v4, Hopper-v4, Walker2d-v4, Swimmer-v4,
            Reacher-v4, Ant-v4), brax:NAME (a brax.envs env on MJX) or playground:NAME (a MuJoCo
            Playground env)."""
        ),
    )
    # --- collection ------------------------------------------------------------------------
    num_envs: int = field(
        default=1,
        metadata=_doc(
            """Parallel environments. A batch is num_envs x (frames_per_batch / num_envs)
            steps. The tutorial uses 1."""
        ),
    )
    frames_per_batch: int = field(
        default=1000, metadata=_doc("Env steps (all envs together) collected per batch.")
    )
    total_frames: int = field(
        default=10_000,
        metadata=_doc("Env steps of the whole run (the tutorial: 10k; a full run: 1M)."),
    )
    max_episode_steps: int = field(
        default=0,
        metadata=_doc(
            """Time limit of an episode (Gymnasium's TimeLimit); 0: the env's own (1000 for
            the pendulums and runners, 50 for Reacher-v4, a Playground env's episode_length)."""
        ),
    )
    # --- observation normalization ---------------------------------------------------------
    init_stats_frames: int = field(
        default=1000,
        metadata=_doc(
            """Observations of random-action rollouts (each stopped at the first done) used
            for the normalization statistics (TorchRL's init_stats num_iter)."""
        ),
    )
    obs_norm: ObsNormMode = field(
        default="reference",
        metadata=_doc(
            """'reference': TorchRL's statistics, where a zero-variance entry gets scale
            1/1e-6 (the constraint-force entries: any nonzero force becomes a huge input).
            'safe': zero-variance entries (up to float32 rounding) are only centred (scale
            1). Both stay fixed after init. 'running': 'safe' statistics that start from the
            same random rollouts and take in every batch's observations after its update
            (CleanRL's and Brax's kind of normalization; not the tutorial's)."""
        ),
    )
    # --- networks -------------------------------------------------------------------------
    hidden_sizes: tuple[int, ...] = field(
        default=(256, 256, 256),
        metadata=_doc("Hidden layer widths of the actor and of the critic (Tanh)."),
    )
    # --- PPO ------------------------------------------------------------------------------
    num_epochs: int = field(default=10, metadata=_doc("Optimization epochs per batch."))
    minibatch_size: int = field(
        default=64,
        metadata=_doc(
            """Minibatch size (TorchRL's sub_batch_size); an epoch draws
            frames_per_batch // minibatch_size minibatches without replacement (sampler)."""
        ),
    )
    sampler: Sampler = field(
        default="epoch",
        metadata=_doc(
            """How minibatches are drawn: 'epoch' (a permutation of the batch each epoch,
            cut into minibatches; the frames_per_batch % minibatch_size left over sit the
            epoch out) or 'torchrl' (the tutorial's SamplerWithoutReplacement: one stream of
            permutations across epochs and batches, each pass's remainder a short
            minibatch). Alike in distribution where minibatch_size divides
            frames_per_batch (from other random draws)."""
        ),
    )
    clip_epsilon: float = field(default=0.2, metadata=_doc("PPO ratio clip."))
    gamma: float = field(default=0.99, metadata=_doc("Discount."))
    lmbda: float = field(default=0.95, metadata=_doc("GAE lambda."))
    standardize_advantage: bool = field(
        default=True,
        metadata=_doc(
            """Standardize advantages over the whole batch after GAE (TorchRL's
            average_gae=True): (a - mean) / max(std, 1e-4)."""
        ),
    )
    entropy_coeff: float = field(
        default=1e-4, metadata=_doc("Entropy bonus coefficient (1-sample MC entropy).")
    )
    critic_coeff: float = field(default=1.0, metadata=_doc("Critic loss coefficient."))
    critic_loss: CriticLoss = field(
        default="smooth_l1", metadata=_doc("Critic loss: smooth_l1, l2 or l1.")
    )
    # --- optimizer ------------------------------------------------------------------------
    lr: float = field(default=3e-4, metadata=_doc("Adam learning rate."))
    max_grad_norm: float = field(
        default=1.0,
        metadata=_doc("Clip of the GLOBAL gradient norm over actor and critic together."),
    )
    anneal_lr: bool = field(
        default=True,
        metadata=_doc(
            """Cosine-anneal the learning rate to 0 over the run, stepped once per batch
            (TorchRL's CosineAnnealingLR)."""
        ),
    )
    # --- evaluation -----------------------------------------------------------------------
    eval_every: int = field(
        default=10,
        metadata=_doc(
            """Evaluate after batches 0, eval_every, 2*eval_every, ... (as the tutorial) and
            after the last batch (so the final policy is always evaluated); 0: never."""
        ),
    )
    eval_max_steps: int = field(
        default=1000, metadata=_doc("Step limit of the deterministic evaluation rollout.")
    )
    eval_action: EvalAction = field(
        default="mean",
        metadata=_doc(
            """Deterministic action of evaluation: 'mean' = E[tanh(X)] (what TorchRL's
            ExplorationType.MEAN estimates from 1000 samples; computed here by quadrature) or
            'tanh_loc' = tanh(loc) (TorchRL's ExplorationType.DETERMINISTIC)."""
        ),
    )
    eval_sim: EvalSim = field(
        default="auto",
        metadata=_doc(
            """Where training's evaluations run: 'mjx' (an MJX episode on the training
            device, between batches), 'mujoco' (MuJoCo C, the exact simulator, on the host
            CPU in a worker thread while the device trains the next batches; same start
            states and policy, returns equal within float32 noise; Gymnasium ports only),
            'mjx-cpu' (the same MJX episode as 'mjx', on the host's CPU in that worker
            thread; any env) or 'auto' (where the runs train on a GPU/TPU in one process:
            'mujoco' for an env with a MuJoCo C twin when a MuJoCo C evaluator is given, as
            scripts/train.py gives one, else 'mjx-cpu'; on a CPU, or over several processes,
            'mjx': on a CPU MJX's evaluation is kept, its numbers are the reference ones).
            It changes no training program; a job that evaluates on the host builds no
            evaluate program."""
        ),
    )
    # --- numerics -------------------------------------------------------------------------
    matmul_precision: MatmulPrecision = field(
        default="highest",
        metadata=_doc(
            """Matmul precision: 'highest' (full float32, as PyTorch), 'tf32' (faster on
            recent NVIDIA GPUs; reported to hurt PPO) or 'default' (JAX's default)."""
        ),
    )
    linalg: Linalg = field(
        default="library",
        metadata=_doc(
            """The env's small linear algebra (MJX's Cholesky factorizations and triangular
            solves: the mass matrix, the constraint solver's Newton step): 'library' (as JAX
            lowers them: LAPACK on a CPU, cuSOLVER and cuBLAS calls on a GPU) or 'inline'
            (written out as elementwise ops that XLA fuses, for matrices of up to 32 rows:
            the same results up to float32 rounding, not the same bits; on a GPU the env step
            then needs far fewer kernel launches, see docs/devices.md)."""
        ),
    )

    def __post_init__(self) -> None:
        for name, tp in _resolved_types().items():  # each value as its field's type, exactly
            object.__setattr__(self, name, _as_field_type(name, getattr(self, name), tp))
        self.validate()

    # --- validation -----------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` (one line, naming the fields) for an inconsistent config."""
        positive = (
            "num_envs frames_per_batch total_frames init_stats_frames "
            "num_epochs minibatch_size eval_max_steps"
        ).split()
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_episode_steps < 0:
            raise ValueError(f"max_episode_steps must be >= 0, got {self.max_episode_steps}")
        if not isinstance(self.env, str) or not self.env:
            raise ValueError(f"env must be a non-empty id, got {self.env!r}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be positive widths, got {self.hidden_sizes}")
        for name, allowed in field_choices().items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.frames_per_batch % self.num_envs:
            raise ValueError(
                f"frames_per_batch ({self.frames_per_batch}) must be a multiple of num_envs "
                f"({self.num_envs})"
            )
        if self.minibatch_size > self.frames_per_batch:
            raise ValueError(
                f"minibatch_size ({self.minibatch_size}) is larger than the batch "
                f"(frames_per_batch={self.frames_per_batch})"
            )
        for name in ("clip_epsilon", "lr", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        check_seed(self.seed)
        # the programs count steps and batches in int32
        for name in (*(n for n in positive if n != "total_frames"), "max_episode_steps",
                     "eval_every", "num_batches"):
            if getattr(self, name) > INT32_MAX:
                what = ("total_frames / frames_per_batch" if name == "num_batches" else name)
                raise ValueError(f"{what} must be at most {INT32_MAX}, "
                                 f"got {_shown(getattr(self, name))}")
        if self.total_frames % self.frames_per_batch:  # (after the count's bound: 1e300 is
            raise ValueError(  # an int of 301 digits)
                f"total_frames ({self.total_frames}) must be a multiple of frames_per_batch "
                f"({self.frames_per_batch})"
            )
        if max(self.hidden_sizes) > INT32_MAX:
            raise ValueError(f"hidden_sizes must be at most {INT32_MAX}, got {self.hidden_sizes}")
        updates = self.num_batches * self.num_epochs * self.num_minibatches
        if updates > INT32_MAX:  # (optax's count stops there: the lr schedule would stall)
            raise ValueError(f"the optimizer counts the run's updates in int32 (as sampler "
                             f"'torchrl' its minibatches): num_batches x num_epochs x "
                             f"minibatches per epoch must be at most {INT32_MAX}, got "
                             f"{updates}")
        if self.init_stats_frames < 2:
            raise ValueError(f"init_stats_frames must be >= 2 (a standard deviation needs two "
                             f"observations; TorchRL's init_stats fails too), got "
                             f"{self.init_stats_frames}")
        n = self.init_stats_frames  # its random rollouts: up to n + min(n, time limit) - 1 steps
        steps = n + min(n, self.max_episode_steps or n) - 1  # (0: the env's, at most n counts)
        if steps > INT32_MAX:
            raise ValueError(f"init_stats_frames={n} takes random rollouts of up to "
                             f"init_stats_frames + min(init_stats_frames, max_episode_steps) "
                             f"- 1 = {steps} steps, counted in int32 (at most {INT32_MAX})")
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.lmbda <= 1.0):
            raise ValueError(f"gamma and lmbda must be in [0, 1], got {self.gamma}, {self.lmbda}")

    def check_values(self) -> None:
        """``ValueError`` (one line) for values a new job cannot learn with: a non-finite
        ``lr``, ``entropy_coeff`` or ``critic_coeff`` (in float32, the programs' precision: 1e39
        is inf there, 1e-46 is 0), a negative ``critic_coeff``, a
        ``clip_epsilon`` above 1 (the ratio's lower clip ``1 - clip_epsilon`` would be below 0:
        its log, and the loss of TorchRL's ClipPPOLoss, NaN; an XLA program's clip need
        not carry the NaN on, so it could train on a meaningless objective). (Not part of
        :meth:`validate`: a checkpoint saved with such a value, its run stopped at NaN, still
        opens.)"""
        for name in ("lr", "entropy_coeff", "critic_coeff"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
            if abs(getattr(self, name)) > FLOAT32_MAX:  # inf as the programs' float32
                raise ValueError(f"{name} must be finite in float32, the programs' precision "
                                 f"(at most {FLOAT32_MAX:.4g}), got {getattr(self, name)}")
        for name in ("lr", "clip_epsilon"):  # (validate: > 0) 0 as float32
            if np.float32(getattr(self, name)) == 0:
                raise ValueError(f"{name} must be > 0 in float32, the programs' precision (at "
                                 f"least {float(np.finfo(np.float32).smallest_subnormal):.4g})"
                                 f", got {getattr(self, name)}")
        if self.critic_coeff < 0:
            raise ValueError(f"critic_coeff must be >= 0, got {self.critic_coeff}")
        if self.clip_epsilon > 1:
            raise ValueError(f"clip_epsilon must be at most 1 (the ratio's lower clip is "
                             f"1 - clip_epsilon), got {self.clip_epsilon}")

    # --- derived sizes --------------------------------------------------------------------
    @property
    def steps_per_env(self) -> int:
        """Time steps of each env in a batch: ``frames_per_batch // num_envs``."""
        return self.frames_per_batch // self.num_envs

    @property
    def num_batches(self) -> int:
        """Batches in the run: ``total_frames // frames_per_batch``."""
        return self.total_frames // self.frames_per_batch

    @property
    def num_minibatches(self) -> int:
        """Minibatches per epoch: ``frames_per_batch // minibatch_size`` (TorchRL's
        tutorial's count; with ``sampler="epoch"`` the rest of the batch sits the epoch out)."""
        return self.frames_per_batch // self.minibatch_size

    @property
    def eval_batches(self) -> tuple[int, ...]:
        """Indices of the batches followed by an evaluation: TorchRL's ``i % 10 == 0``, plus
        the last batch (so a final checkpoint's evaluation is always logged)."""
        if self.eval_every == 0:
            return ()
        every = range(0, self.num_batches, self.eval_every)
        return tuple(every) + (() if every[-1] == self.num_batches - 1
                               else (self.num_batches - 1,))

    @property
    def evaluates(self) -> bool:
        """Whether any batch is followed by an evaluation (``eval_every > 0``)."""
        return self.eval_every > 0

    def is_eval_batch(self, i):
        """Whether batch ``i`` (int or traced int) is in :attr:`eval_batches`."""
        if self.eval_every == 0:
            return i < 0  # never (keeps i's type: bool or traced bool)
        return (i % self.eval_every == 0) | (i == self.num_batches - 1)

    # --- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        return d

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "PPOConfig":
        """The preset ``name`` of :data:`PRESETS` (``"tutorial"``, ``"fast"``, ``"tiny"``),
        with ``overrides``."""
        if not isinstance(name, str):
            raise TypeError(f"a preset is named by a str ({', '.join(PRESETS)}), got {name!r}")
        if name not in PRESETS:
            raise ValueError(f"no preset {name!r} (presets: {', '.join(PRESETS)})")
        return cls(**{**PRESETS[name][1], **overrides})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PPOConfig:
        """The config of ``d``'s fields (:meth:`to_dict`'s; those left out keep their
        defaults)."""
        if not isinstance(d, dict):
            raise TypeError(f"PPOConfig.from_dict takes a dict of fields, got "
                            f"{type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(repr, set(d) - names))  # (a key may be no str at all)
        if unknown:
            raise ValueError(f"unknown PPOConfig field(s): {', '.join(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> PPOConfig:
        return dataclasses.replace(self, **changes)


def check_config(config: Any) -> PPOConfig:
    """``config``, if it is a :class:`PPOConfig` (None: the tutorial's, ``PPOConfig()``);
    else a ``TypeError`` that says what it is."""
    if config is None:
        return PPOConfig()
    if not isinstance(config, PPOConfig):
        hint = " (PPOConfig.from_dict makes one from a dict)" if isinstance(config, dict) else ""
        raise TypeError(f"config must be a PPOConfig, got {type(config).__name__}{hint}")
    return config


def _scalar_kind(value: Any) -> str | None:
    """numpy's dtype kind of ``value`` if it is one number or bool (Python, numpy or a 0-d
    array: "b", "i", "u", "f"), else None."""
    for kind, python_type in (("b", bool), ("i", int), ("f", float)):  # any size of int
        if isinstance(value, python_type):
            return kind
    try:
        a = np.asarray(value)
    except Exception:  # noqa: BLE001 - whatever numpy cannot take is not a number
        return None
    return a.dtype.kind if a.ndim == 0 and a.dtype.kind in "biuf" else None


def _whole(name: str, value: Any, what: str = "a whole number") -> int:
    kind = _scalar_kind(value)
    if kind in ("i", "u") or (kind == "f" and math.isfinite(value) and float(value).is_integer()):
        return int(value)
    raise ValueError(f"{name} must be {what}, got {value!r}")


def _as_field_type(name: str, value: Any, tp: Any) -> Any:
    """``value`` as the type of field ``name`` (``tp``): a whole number for an int field (a
    whole float too: ``total_frames=1e6``), a number for a float field, True/False for a bool
    field, a list, tuple or 1-d array of whole numbers for ``hidden_sizes``, a ``str`` for a
    str or Literal field (its value is checked by :meth:`PPOConfig.validate`); ``ValueError``
    (one line) for anything else."""
    if tp is bool:
        if _scalar_kind(value) == "b":
            return bool(value)
        raise ValueError(f"{name} must be True or False, got {value!r}")
    if tp is int:
        return _whole(name, value)
    if tp is float:
        if _scalar_kind(value) in ("i", "u", "f"):
            try:
                return float(value)
            except OverflowError:  # an int past float's range
                raise ValueError(f"{name} must be a number a float holds (at most "
                                 "1.8e308)") from None
        raise ValueError(f"{name} must be a number, got {value!r}")
    if name == "hidden_sizes":
        if not (isinstance(value, (list, tuple))
                or (isinstance(value, np.ndarray) and value.ndim == 1)):
            raise ValueError(f"hidden_sizes must be a sequence of layer widths, e.g. (64, 64), "
                             f"got {value!r}")
        return tuple(_whole(name, h, "a sequence of whole-number layer widths") for h in value)
    if tp is str or typing.get_origin(tp) is Literal:  # the values themselves: validate()
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
        return str(value)
    return value


@functools.cache
def _resolved_types() -> dict[str, Any]:
    """Each ``PPOConfig`` field's annotation, resolved (``Literal[...]`` kept)."""
    hints = typing.get_type_hints(PPOConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(PPOConfig)}


def field_choices() -> dict[str, tuple[Any, ...]]:
    """The allowed values of each ``Literal[...]`` field, from its annotation."""
    return {
        name: typing.get_args(tp)
        for name, tp in _resolved_types().items()
        if typing.get_origin(tp) is Literal
    }


def field_types() -> dict[str, Any]:
    """Type of each ``PPOConfig`` field as a CLI converter: a ``Literal[...]`` field gets the
    type of its values (``str``); its allowed values are :func:`field_choices`."""
    return {
        name: type(typing.get_args(tp)[0]) if typing.get_origin(tp) is Literal else tp
        for name, tp in _resolved_types().items()
    }


# Named starting points for ``scripts/train.py --preset``: (description, PPOConfig fields).
# Flags given with --preset change the preset's values.
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "tutorial": ("the TorchRL tutorial (the defaults): 1 env, 1000 frames per batch, 10k frames",
                 {}),
    "fast": (
        "many envs, for a GPU: 1024 envs x 16 steps per batch, minibatches of 1024, 61 batches "
        "(999,424 frames), evaluated after every batch",
        dict(num_envs=1024, frames_per_batch=16_384, minibatch_size=1024,
             total_frames=16_384 * 61, eval_every=1),
    ),
    "tiny": (
        "a smoke run of seconds (the tests' config): 4 envs x 50 steps per batch, 3 batches, "
        "16x16 networks, 2 epochs of 5 minibatches, 50-step evaluations",
        dict(total_frames=600, frames_per_batch=200, num_envs=4, minibatch_size=40,
             num_epochs=2, hidden_sizes=(16, 16), eval_every=2, eval_max_steps=50,
             init_stats_frames=100),
    ),
}
