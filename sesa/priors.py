"""Meta's tuned parameters as the priors of an evolution the federation asks for.

An evolution started by RUN_EVOLUTION reads the meta service's current parameter version and
uses:

* ``sesa_mutation_rate`` and ``sesa_mutation_magnitude`` as the evolution's mutation rate and
  magnitude (:class:`~sesa.evolution.EvolutionConfig`);
* ``rl_learning_rate``, ``rl_exploration_rate`` and ``rl_discount`` as the seed genome of the
  Q-learning family (its ``learning_rate``, ``exploration`` and ``discount``), each clipped into
  that gene's policy bounds (meta's ranges are not the genome's: meta's exploration may reach
  0.40, the gene stops at 0.30). The other families start from their defaults.

When meta cannot be read, the evolution runs on SESA's own defaults (those of
``EvolutionConfig`` and ``Policy.default_genome``) and says so: its meta version is
``"unavailable"``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from qtmesh.base.genome import Policy, StrategyFamily, StrategyGenome, make_genome
from sesa.evolution import EvolutionConfig

UNAVAILABLE = "unavailable"

# Q-learning gene <- meta parameter.
RL_GENES = {
    "learning_rate": "rl_learning_rate",
    "exploration": "rl_exploration_rate",
    "discount": "rl_discount",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TunedParameters:
    """The meta parameters an evolution reads, with the version they belong to."""

    version: int
    sesa_mutation_rate: float
    sesa_mutation_magnitude: float
    rl_learning_rate: float
    rl_exploration_rate: float
    rl_discount: float

    @classmethod
    def of(cls, parameters: Any) -> TunedParameters:
        """The fields an evolution reads of meta's parameters (the engine's or the client's)."""
        return cls(**{f.name: getattr(parameters, f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class Priors:
    """What an evolution takes from meta: ``tuned``, or None with the reason in ``unavailable``
    when meta could not be read (SESA's own defaults then)."""

    tuned: TunedParameters | None
    unavailable: str = ""

    @property
    def version(self) -> str:
        """The meta parameter version used, as text; ``"unavailable"`` without one."""
        return str(self.tuned.version) if self.tuned is not None else UNAVAILABLE

    def config(self, base: EvolutionConfig) -> EvolutionConfig:
        """``base`` with meta's mutation rate and magnitude (kept within 0..1)."""
        if self.tuned is None:
            return base
        return dataclasses.replace(
            base,
            mutation_rate=_unit(self.tuned.sesa_mutation_rate),
            mutation_magnitude=_unit(self.tuned.sesa_mutation_magnitude),
        )

    def seeds(self, policy: Policy) -> list[StrategyGenome]:
        """The default genome of every family; the Q-learning one takes meta's RL parameters,
        clipped into the policy's bounds."""
        seeds = [policy.default_genome(f) for f in StrategyFamily]
        if self.tuned is None:
            return seeds
        family = StrategyFamily.Q_LEARNING
        values = dict(policy.default_genome(family).parameters)
        for gene, name in RL_GENES.items():
            values[gene] = policy.spec(family, gene).clip(getattr(self.tuned, name))
        prior = make_genome(family, values, origin=f"meta/v{self.tuned.version}")
        return [prior if s.family is family else s for s in seeds]


def _unit(value: float) -> float:
    return min(max(value, 0.0), 1.0)
