"""Strategy families, their parameters and bounds (the policy), and the rules that keep every
evaluated genome inside them.

A genome is a family plus named parameters (:class:`StrategyGenome`). Every
family shares the common parameters (direction, entry/exit thresholds, volatility filter,
time-of-day window, ATR stop and take-profit) and adds its own. Bounds come from a
:class:`Policy`; the rule for values outside them is:

* genomes produced inside SESA (mutation, crossover) are *repaired*: clipped into bounds,
  integers rounded, ordered pairs (fast < slow, exit <= entry, vol_min < vol_max) fixed;
* genomes supplied from outside (seeds, Evaluate requests) are *validated*: an unknown
  parameter, a value outside its bounds or a misordered pair is rejected with InvalidArgument
  naming it, never clipped; a missing parameter takes the family default. A value inside the
  bounds is only normalised to its kind: an integer parameter is rounded to the nearest
  integer (halves to even) and a boolean one becomes 1 if >= 0.5, else 0.

Either way no genome is ever evaluated with a value outside the policy.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np

from qtmesh.base.errors import InvalidArgument
from qtmesh.base.frozen import frozen_map


class StrategyFamily(enum.Enum):
    MA_CROSSOVER = 1
    MEAN_REVERSION = 2
    BREAKOUT = 3
    Q_LEARNING = 4


class StrategyStage(enum.Enum):
    REJECTED = 1
    SHADOW = 2
    PRODUCTION = 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class StrategyGenome:
    """A strategy: a family plus named parameters (bounds come from a :class:`Policy`)."""

    id: str
    family: StrategyFamily
    parameters: Mapping[str, float]
    parent_ids: tuple[str, ...] = ()
    generation: int = 0
    origin: str = "seed"

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", frozen_map(self.parameters))


@dataclasses.dataclass(frozen=True)
class ParameterSpec:
    """One parameter: bounds, default, kind and the mutation group it belongs to."""

    name: str
    low: float
    high: float
    default: float
    group: str
    integer: bool = False
    boolean: bool = False
    log_scale: bool = False

    def clip(self, value: float) -> float:
        if self.boolean:
            return 1.0 if value >= 0.5 else 0.0
        value = min(max(value, self.low), self.high)
        return float(round(value)) if self.integer else float(value)

    def to_unit(self, value: float) -> float:
        """Position in [0, 1] (log scale where declared): the space mutation and distance use."""
        if self.log_scale:
            return (math.log(value) - math.log(self.low)) / (
                math.log(self.high) - math.log(self.low)
            )
        return (value - self.low) / (self.high - self.low)

    def from_unit(self, unit: float) -> float:
        unit = min(max(unit, 0.0), 1.0)
        if self.log_scale:
            value = math.exp(math.log(self.low) + unit * (math.log(self.high) - math.log(self.low)))
        else:
            value = self.low + unit * (self.high - self.low)
        return self.clip(value)


# Mutation groups: each operator touches one group (see sesa/mutation/).
DIRECTION = "direction"
THRESHOLDS = "thresholds"
VOLATILITY = "volatility_filter"
TIME_WINDOW = "time_window"
TP_SL = "dynamic_tp_sl"
RISK_REWARD = "risk_reward"
RL = "rl"
SIGNAL = "signal"

COMMON = (
    ParameterSpec("allow_short", 0, 1, 1, DIRECTION, boolean=True),
    ParameterSpec("vol_min", 0.0, 1.0, 0.0, VOLATILITY),
    ParameterSpec("vol_max", 0.05, 5.0, 5.0, VOLATILITY),
    ParameterSpec("session_start", 0.0, 23.0, 0.0, TIME_WINDOW, integer=True),
    ParameterSpec("session_hours", 1.0, 24.0, 24.0, TIME_WINDOW, integer=True),
    ParameterSpec("stop_atr", 0.0, 10.0, 0.0, TP_SL),
    ParameterSpec("atr_period", 5.0, 100.0, 14.0, TP_SL, integer=True),
    ParameterSpec("risk_reward", 0.0, 6.0, 2.0, RISK_REWARD),
)

FAMILY_PARAMETERS: Mapping[StrategyFamily, tuple[ParameterSpec, ...]] = {
    StrategyFamily.MA_CROSSOVER: (
        ParameterSpec("fast", 2, 200, 20, SIGNAL, integer=True, log_scale=True),
        ParameterSpec("slow", 5, 1000, 100, SIGNAL, integer=True, log_scale=True),
        # Spread (fast - slow) / slow that opens a position, and the level that closes it.
        ParameterSpec("entry_threshold", 0.0, 0.01, 0.0, THRESHOLDS),
        ParameterSpec("exit_threshold", -0.01, 0.01, 0.0, THRESHOLDS),
        # 1: enter only on the close where the spread crosses the entry level (a cross event,
        # as backtesting.lib.crossover); 0: whenever it is beyond it (state). Exits are states.
        ParameterSpec("entry_on_cross", 0, 1, 0, THRESHOLDS, boolean=True),
    ),
    StrategyFamily.MEAN_REVERSION: (
        ParameterSpec("bb_period", 10, 500, 60, SIGNAL, integer=True, log_scale=True),
        ParameterSpec("rsi_period", 5, 100, 14, SIGNAL, integer=True, log_scale=True),
        # Long entries need RSI below rsi_band (shorts above 100 - rsi_band).
        ParameterSpec("rsi_band", 5.0, 50.0, 35.0, THRESHOLDS),
        # Bollinger z-score beyond which a position opens, and the one at which it closes.
        ParameterSpec("entry_threshold", 0.5, 4.0, 2.0, THRESHOLDS),
        ParameterSpec("exit_threshold", -1.0, 2.0, 0.0, THRESHOLDS),
    ),
    StrategyFamily.BREAKOUT: (
        ParameterSpec("entry_period", 10, 1000, 120, SIGNAL, integer=True, log_scale=True),
        ParameterSpec("exit_period", 5, 500, 60, SIGNAL, integer=True, log_scale=True),
        # Fraction beyond the channel needed to enter, and the cushion before exiting.
        ParameterSpec("entry_threshold", 0.0, 0.01, 0.0, THRESHOLDS),
        ParameterSpec("exit_threshold", 0.0, 0.01, 0.0, THRESHOLDS),
    ),
    StrategyFamily.Q_LEARNING: (
        ParameterSpec("learning_rate", 0.001, 0.5, 0.05, RL, log_scale=True),
        ParameterSpec("exploration", 0.0, 0.3, 0.05, RL),
        ParameterSpec("discount", 0.5, 0.999, 0.9, RL),
        # Trend bucket edge: the MA(10)/MA(50) spread beyond which the trend feature is up/down.
        ParameterSpec("entry_threshold", 0.0, 0.005, 0.0005, THRESHOLDS),
        # Reward penalty per unit of position held, per bar, in return units.
        ParameterSpec("exit_threshold", 0.0, 0.001, 0.0, THRESHOLDS),
    ),
}

SHORT_NAMES = {
    StrategyFamily.MA_CROSSOVER: "ma",
    StrategyFamily.MEAN_REVERSION: "mr",
    StrategyFamily.BREAKOUT: "bo",
    StrategyFamily.Q_LEARNING: "ql",
}


@dataclasses.dataclass(frozen=True)
class Policy:
    """Parameter bounds per family; ``overrides`` narrows (or widens) any spec by name."""

    overrides: Mapping[tuple[StrategyFamily, str], tuple[float, float]] = dataclasses.field(
        default_factory=dict
    )

    def specs(self, family: StrategyFamily) -> tuple[ParameterSpec, ...]:
        specs = []
        for spec in (*FAMILY_PARAMETERS[family], *COMMON):
            if (family, spec.name) in self.overrides:
                low, high = self.overrides[(family, spec.name)]
                spec = dataclasses.replace(
                    spec, low=low, high=high, default=min(max(spec.default, low), high)
                )
            specs.append(spec)
        return tuple(specs)

    def spec(self, family: StrategyFamily, name: str) -> ParameterSpec:
        for spec in self.specs(family):
            if spec.name == name:
                return spec
        raise KeyError(name)

    def default_genome(self, family: StrategyFamily) -> StrategyGenome:
        return make_genome(family, {s.name: s.default for s in self.specs(family)}, origin="seed")

    def repair(self, family: StrategyFamily, parameters: Mapping[str, float]) -> dict[str, float]:
        """Clips into bounds and fixes ordered pairs: the rule for genomes made inside SESA."""
        specs = self.specs(family)
        values = {s.name: s.clip(parameters.get(s.name, s.default)) for s in specs}
        by_name = {s.name: s for s in specs}
        for low_name, high_name, gap in _ORDERED[family]:
            if values[low_name] + gap > values[high_name]:
                # Move the pair apart around its midpoint, then clip again.
                middle = (values[low_name] + values[high_name]) / 2
                values[low_name] = by_name[low_name].clip(middle - gap / 2)
                values[high_name] = by_name[high_name].clip(values[low_name] + gap)
                values[low_name] = by_name[low_name].clip(values[high_name] - gap)
        return values

    def validate(self, genome: StrategyGenome, *, field: str) -> StrategyGenome:
        """Rejects unknown or out-of-bounds parameters and misordered pairs; rounds integer
        parameters and snaps booleans to 0/1 (the rule for genomes from outside)."""
        specs = {s.name: s for s in self.specs(genome.family)}
        for name, value in genome.parameters.items():
            where = f"{field}.parameters[{name}]"
            if name not in specs:
                known = ", ".join(sorted(specs))
                raise InvalidArgument(
                    where, f"is not a parameter of {genome.family.name} (known: {known})"
                )
            spec = specs[name]
            if not math.isfinite(value) or not spec.low <= value <= spec.high:
                raise InvalidArgument(where, f"{value} is outside [{spec.low}, {spec.high}]")
        values = {
            name: spec.clip(genome.parameters.get(name, spec.default))
            for name, spec in specs.items()
        }
        for low_name, high_name, gap in _ORDERED[genome.family]:
            if values[low_name] + gap > values[high_name]:
                raise InvalidArgument(
                    f"{field}.parameters[{low_name}]",
                    f"{values[low_name]} must be below {high_name} {values[high_name]}",
                )
        return dataclasses.replace(genome, parameters=values)

    def unit_vector(self, genome: StrategyGenome) -> np.ndarray:
        """Parameters in [0, 1] per spec, in spec order (for diversity distances)."""
        return np.array([s.to_unit(genome.parameters[s.name]) for s in self.specs(genome.family)])

    def distance(self, a: StrategyGenome, b: StrategyGenome) -> float:
        """RMS distance in normalised parameter space; genomes of different families are 1 apart."""
        if a.family is not b.family:
            return 1.0
        return float(np.sqrt(np.mean((self.unit_vector(a) - self.unit_vector(b)) ** 2)))


# (lower parameter, upper parameter, minimum gap) per family.
_VOLATILITY_BAND = ("vol_min", "vol_max", 0.01)
_ORDERED: Mapping[StrategyFamily, tuple[tuple[str, str, float], ...]] = {
    StrategyFamily.MA_CROSSOVER: (
        ("fast", "slow", 1.0),
        ("exit_threshold", "entry_threshold", 0.0),
        _VOLATILITY_BAND,
    ),
    StrategyFamily.MEAN_REVERSION: (("exit_threshold", "entry_threshold", 0.1), _VOLATILITY_BAND),
    StrategyFamily.BREAKOUT: (_VOLATILITY_BAND,),
    StrategyFamily.Q_LEARNING: (_VOLATILITY_BAND,),
}


def reject_conflicting_ids(
    genomes: Sequence[StrategyGenome], *, field: str, suffix: str = ".id"
) -> None:
    """Genomes may share an id only when they are the same strategy (family and parameters):
    evaluations are keyed by id, so two strategies under one id would silently get one result.
    Ids from clients are arbitrary, hence the check; ids made here are content addresses."""
    first: dict[str, int] = {}
    for i, genome in enumerate(genomes):
        j = first.setdefault(genome.id, i)
        if j == i:
            continue
        other = genomes[j]
        if other.family is not genome.family or dict(other.parameters) != dict(genome.parameters):
            raise InvalidArgument(
                f"{field}[{i}]{suffix}",
                f"{genome.id!r} is also the id of {field}[{j}], a different strategy",
            )


def genome_id(family: StrategyFamily, parameters: Mapping[str, float]) -> str:
    """Content address: identical strategies share an id (and an evaluation)."""
    text = ",".join(f"{k}={parameters[k]!r}" for k in sorted(parameters))
    digest = hashlib.blake2b(f"{family.name}:{text}".encode(), digest_size=6).hexdigest()
    return f"{SHORT_NAMES[family]}-{digest}"


def make_genome(
    family: StrategyFamily,
    parameters: Mapping[str, float],
    *,
    parent_ids: tuple[str, ...] = (),
    generation: int = 0,
    origin: str = "seed",
) -> StrategyGenome:
    values = dict(parameters)
    return StrategyGenome(
        id=genome_id(family, values),
        family=family,
        parameters=values,
        parent_ids=parent_ids,
        generation=generation,
        origin=origin,
    )
