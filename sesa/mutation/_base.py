"""The base of every mutation operator, and the Gaussian perturbation most of them share."""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import Policy, StrategyFamily, StrategyGenome, make_genome


class MutationOperator(abc.ABC):
    """Derives a child genome from parents. All randomness comes from the ``rng`` passed in.

    ``magnitude`` (0..1) is the standard deviation of a change in the parameter's normalised
    [0, 1] space (log-scaled parameters move multiplicatively); booleans flip with probability
    ``magnitude``. ``rate`` (0..1) is the share of the operator's parameters touched (at least
    one). Children are repaired into the policy's bounds (see sesa/genome.py).
    """

    name: ClassVar[str]
    parent_count: ClassVar[int] = 1

    def applies_to(self, family: StrategyFamily) -> bool:
        return True

    @abc.abstractmethod
    def mutate(
        self,
        parents: Sequence[StrategyGenome],
        *,
        policy: Policy,
        rng: np.random.Generator,
        magnitude: float,
        rate: float,
        generation: int,
    ) -> StrategyGenome: ...

    def _child(
        self,
        parents: Sequence[StrategyGenome],
        family: StrategyFamily,
        parameters: dict[str, float],
        policy: Policy,
        generation: int,
    ) -> StrategyGenome:
        return make_genome(
            family,
            policy.repair(family, parameters),
            parent_ids=tuple(p.id for p in parents),
            generation=generation,
            origin=self.name,
        )


def check_strength(magnitude: float, rate: float) -> None:
    for name, value in (("magnitude", magnitude), ("rate", rate)):
        if not math.isfinite(value) or not 0 <= value <= 1:
            raise InvalidArgument(name, f"{value} is not in 0..1")


def perturb(
    parameters: dict[str, float],
    names: Sequence[str],
    *,
    family: StrategyFamily,
    policy: Policy,
    rng: np.random.Generator,
    magnitude: float,
    rate: float,
) -> dict[str, float]:
    """Moves ``ceil(rate * len(names))`` (at least one) randomly chosen ``names`` by a Gaussian
    step of standard deviation ``magnitude`` in normalised space."""
    if not names:
        return dict(parameters)
    touched = max(1, math.ceil(rate * len(names)))
    chosen = rng.choice(len(names), size=min(touched, len(names)), replace=False)
    values = dict(parameters)
    for index in sorted(chosen):
        spec = policy.spec(family, names[index])
        if spec.boolean:
            if rng.random() < magnitude:
                values[spec.name] = 1.0 - values[spec.name]
            continue
        unit = spec.to_unit(values[spec.name]) + rng.normal(0.0, magnitude)
        values[spec.name] = spec.from_unit(unit)
    return values


class GroupMutation(MutationOperator):
    """Perturbs the parameters of one group (e.g. the volatility filter) of a single parent."""

    group: ClassVar[str]

    def mutate(
        self,
        parents: Sequence[StrategyGenome],
        *,
        policy: Policy,
        rng: np.random.Generator,
        magnitude: float,
        rate: float,
        generation: int,
    ) -> StrategyGenome:
        check_strength(magnitude, rate)
        (parent,) = parents[:1]
        names = [s.name for s in policy.specs(parent.family) if s.group == self.group]
        values = perturb(
            dict(parent.parameters),
            names,
            family=parent.family,
            policy=policy,
            rng=rng,
            magnitude=magnitude,
            rate=rate,
        )
        return self._child(parents[:1], parent.family, values, policy, generation)
