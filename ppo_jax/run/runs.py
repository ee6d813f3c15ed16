"""The members of a job: the grid of a ``--sweep`` over sweepable fields
(:data:`ppo_jax.core.hyper.SWEEPABLE`) times ``--num-seeds`` seeds, and each run's config,
seed, PRNG key and hyperparameters."""

from __future__ import annotations

import itertools
from typing import Any, Iterable

import jax

from ppo_jax import util
from ppo_jax.config import SEED_MAX, SEED_MIN, PPOConfig
from ppo_jax.core.hyper import SWEEPABLE, Hyper, hyper_dtype, hyper_of


def prng_key(seed: int):
    """``jax.random.PRNGKey(seed)`` as numpy, made on the host where JAX's default
    ``threefry2x32`` keys are used (no device op to compile at start-up): the seed's high and
    low 32 bits (the high ones are 0 unless x64 is on). Other key implementations ask JAX."""
    import numpy as np

    if jax.config.jax_default_prng_impl != "threefry2x32" or jax.config.jax_enable_custom_prng:
        return np.asarray(jax.random.PRNGKey(seed))
    bits = 64 if jax.config.jax_enable_x64 else 32
    if not -(2 ** (bits - 1)) <= seed < 2 ** bits:
        return np.asarray(jax.random.PRNGKey(seed))  # JAX says what is wrong with it
    u = seed % 2 ** 64 if bits == 64 else seed % 2 ** 32
    return np.array([u >> 32, u & 0xFFFFFFFF], np.uint32)


def sweep_field(spec: str) -> str:
    """The field a ``--sweep FIELD=V1,...`` spec names (``entropy-coeff`` -> ``entropy_coeff``)."""
    return spec.partition("=")[0].strip().replace("-", "_")


def check_sweep_field(name: str, base: PPOConfig, flag: str = "--sweep") -> None:
    """ValueError (one line) unless ``name`` is a field a sweep may vary: a
    :class:`PPOConfig` field that leaves the program's shapes unchanged."""
    if name not in base.to_dict():
        raise ValueError(f"{flag} {name}: no such PPOConfig field")
    if name not in SWEEPABLE:
        raise ValueError(
            f"{flag} {name}: only fields that leave the program's shapes unchanged can be "
            f"swept ({', '.join(SWEEPABLE)}); run other values of {name} separately")


def parse_sweep(specs: Iterable[str], base: PPOConfig, *,
                distinct: bool = True) -> list[dict[str, Any]]:
    """``["lr=1e-4,3e-4", "clip_epsilon=0.1,0.2"]`` -> the grid's overrides, one dict per
    configuration (the first field varies slowest). Raises ``ValueError`` (one line) for a
    malformed spec, a field that is unknown or shapes the program, a repeated field, or a
    value that makes an invalid config; with ``distinct``, also for a value repeated (as the
    programs take it: :func:`_trained`). ``distinct=False`` reads a saved job's points as
    given (one saved before that check)."""
    fields: dict[str, list[float]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = sweep_field(spec)
        if not sep or not name or not values.strip():
            raise ValueError(f"--sweep {spec!r}: expected FIELD=V1,V2,... (e.g. lr=1e-4,3e-4)")
        check_sweep_field(name, base)
        if name in fields:
            raise ValueError(f"--sweep {name} is given twice")
        try:
            vals = [float(v) for v in values.split(",")]
        except ValueError:
            raise ValueError(f"--sweep {name}: values must be numbers, got {values!r}") from None
        if distinct and len(set(map(_trained, vals))) != len(vals):
            raise ValueError(f"--sweep {name}: repeated value in {values!r}" + (
                "" if len(set(vals)) != len(vals) else f" ({_same()})"))
        fields[name] = vals
    grid = [dict(zip(fields, combo)) for combo in itertools.product(*fields.values())]
    for overrides in grid:
        base.replace(**overrides).check_values()  # validates (ValueError names the field)
    return grid or [{}]


def check_sweep(sweep: list[dict[str, Any]], base: PPOConfig) -> list[dict[str, float]]:
    """A sweep given as its points (``fit(sweep=[{"lr": 1e-4}, {"lr": 3e-4}])``), checked as
    :func:`parse_sweep` checks its specs: each point a dict of sweepable fields to real
    numbers (taken as floats), no point twice. ValueError (one line) otherwise; the configs'
    values are checked by :class:`Runs`."""
    if isinstance(sweep, (dict, str)) or not hasattr(sweep, "__iter__"):
        raise ValueError(f"sweep must be a list of dicts (one per point, e.g. [{{'lr': 1e-4}}, "
                         f"{{'lr': 3e-4}}]), got {type(sweep).__name__}")
    points = []
    for point in sweep:
        if not isinstance(point, dict):
            raise ValueError(f"sweep: each point must be a dict of field -> value, got "
                             f"{_short(point)}")
        for name, value in point.items():
            check_sweep_field(name, base, "sweep:")
            if not _real_scalar(value):
                raise ValueError(f"sweep: {name} must be a number (one per point), got "
                                 f"{_short(value)}")
        point = {name: float(value) for name, value in point.items()}
        if point in points:
            raise ValueError(f"sweep: the point {label(point)} is given twice")
        points.append(point)
    names = sorted({name for point in points for name in point})
    trained: dict[tuple, dict[str, float]] = {}
    for point in points:  # {} beside {"lr": <the config's lr>}, or values float32 rounds alike
        values = tuple(_trained(point.get(name, getattr(base, name))) for name in names)
        if values in trained:
            first, second = labels([trained[values], point])
            raise ValueError(f"sweep: the points {first} and {second} train the same config "
                             f"({_same()})")
        trained[values] = point
    return points or [{}]


def _same() -> str:
    return f"equal in {hyper_dtype()}, the precision the programs train in"


def _trained(value: float):
    """``value`` as the programs take it (:func:`ppo_jax.core.hyper.hyper_dtype`)."""
    import numpy as np

    with np.errstate(over="ignore"):  # (past float32's range: the config's checks refuse it)
        return hyper_dtype().type(value)


def _real_scalar(value: Any) -> bool:
    """A real number: a Python int or float, or a 0-d numpy or JAX array of one (not bool)."""
    import numpy as np

    try:
        a = np.asarray(value)
    except Exception:  # noqa: BLE001 - anything numpy cannot take is not a number
        return False
    return a.ndim == 0 and a.dtype.kind in "iuf"  # bool is kind "b", a str "U", else "O"


def _short(value: Any, width: int = 80) -> str:
    """``value``'s repr on one line, cut to ``width`` characters."""
    text = " ".join(repr(value).split())
    return text if len(text) <= width else text[:width - 3] + "..."


def run_configs(base: PPOConfig, sweep: list[dict[str, Any]]) -> list[PPOConfig]:
    """The configuration of each point of ``sweep`` (``[{}]``: just ``base``)."""
    return [base.replace(**overrides) for overrides in sweep]


def label(overrides: dict[str, Any], digits: int | None | dict[str, int | None] = 6) -> str:
    """``{"lr": 1e-4, "clip_epsilon": 0.1}`` -> ``"lr=0.0001 clip_epsilon=0.1"`` (each value
    to ``digits`` significant digits: see :func:`value_texts`)."""
    return " ".join(f"{k}={t}" for k, t in value_texts(overrides, digits).items()) or "base config"


def labels(points: list[dict[str, Any]]) -> list[str]:
    """Each point's :func:`label`, each field's values with the fewest significant digits (6
    at least) that tell them apart (``lr=0.0001`` and ``lr=0.000100001``, not two
    ``lr=0.0001``)."""
    digits = label_digits(points)
    return [label(p, digits) for p in points]


def value_texts(overrides: dict[str, Any], digits: int | None | dict[str, int | None] = 6
                ) -> dict[str, str]:
    """A point's values as text, to ``digits`` significant digits: one count for every field,
    or a count per field (:func:`label_digits`; a field it lacks: 6). None: the shortest
    text that reads back as the same float."""
    def text(name, value):
        d = digits.get(name, 6) if isinstance(digits, dict) else digits
        return repr(float(value)) if d is None else f"{value:.{d}g}"

    return {k: text(k, v) for k, v in overrides.items()}


def label_digits(points: list[dict[str, Any]]) -> dict[str, int | None]:
    """Per field of ``points``, the fewest significant digits, 6 at least, at which its
    distinct values read apart (None: as many as each value needs to read back, which tells
    any two floats apart). Each field's values then read apart, so distinct points do too."""
    out: dict[str, int | None] = {}
    for name in dict.fromkeys(k for p in points for k in p):
        values = {p[name] for p in points if name in p}
        out[name] = next((d for d in range(6, 17)
                          if len({value_texts({name: v}, d)[name] for v in values})
                          == len(values)), None)
    return out


class Runs:
    """The members of a job, R runs: each point of a sweep (``[{}]``: just the config) times
    ``num_seeds`` seeds, in that order (run ``r`` = point ``r // num_seeds``, seed
    ``config.seed + r % num_seeds``). Every point uses the same seeds."""

    def __init__(self, config: PPOConfig, num_seeds: int = 1,
                 sweep: list[dict[str, Any]] | None = None, *, new: bool = True):
        """``new``: a job about to start, whose seeds and values are checked
        (:meth:`PPOConfig.check_values`); a saved job is taken as it was."""
        if not util.is_whole_number(num_seeds) or num_seeds < 1:
            raise ValueError(f"num_seeds must be a whole number >= 1, got {num_seeds!r}")
        last = config.seed + int(num_seeds) - 1
        if new and last > SEED_MAX:
            room = SEED_MAX - int(num_seeds) + 1  # the highest first seed, where there is one
            raise ValueError(f"the seeds {config.seed}..{last} go past {SEED_MAX} (32-bit "
                             "PRNG seeds): " + (f"start at seed <= {room}" if room >= SEED_MIN
                                                else f"train at most {SEED_MAX - SEED_MIN + 1} "
                                                     "seeds"))
        self.config = config
        self.num_seeds = int(num_seeds)
        self.sweep = (check_sweep([] if sweep is None else sweep, config) if new
                      else [dict(o) for o in (sweep or [{}])])
        self.configs = run_configs(config, self.sweep)
        if new:
            for c in self.configs:
                c.check_values()

    @property
    def num_points(self) -> int:
        return len(self.sweep)

    @property
    def num_runs(self) -> int:
        return self.num_points * self.num_seeds

    @property
    def is_sweep(self) -> bool:
        return self.sweep != [{}]

    def seed_of(self, r: int) -> int:
        return self.config.seed + r % self.num_seeds

    def point_of(self, r: int) -> int:
        return r // self.num_seeds

    def config_of(self, r: int) -> PPOConfig:
        return self.configs[self.point_of(r)]

    def describe(self, r: int) -> str:
        head = f"seed {self.seed_of(r)}"
        return (f"{labels(self.sweep)[self.point_of(r)]}, {head}" if self.is_sweep
                else head)

    def keys(self):
        """``[R, 2]`` PRNG keys (seed s runs with ``PRNGKey(s)``), as numpy."""
        import numpy as np

        return np.stack([prng_key(self.seed_of(r)) for r in range(self.num_runs)])

    def hypers(self) -> Hyper:
        """``[R]`` hyperparameters, as numpy."""
        import numpy as np

        per_point = [hyper_of(c) for c in self.configs]
        rows = [per_point[self.point_of(r)] for r in range(self.num_runs)]
        return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *rows)

    def to_meta(self) -> dict[str, Any]:
        return {"num_seeds": self.num_seeds, "num_runs": self.num_runs, "sweep": self.sweep,
                "runs": [{"seed": self.seed_of(r), **self.sweep[self.point_of(r)]}
                         for r in range(self.num_runs)]}

    @classmethod
    def from_meta(cls, config: PPOConfig, meta: dict[str, Any]) -> Runs:
        return cls(config, int(meta["num_seeds"]), meta.get("sweep") or [{}], new=False)
