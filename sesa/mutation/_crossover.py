"""Crossover: a child of two parents, each parameter taken from either with equal chance."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import Policy, StrategyGenome
from sesa.mutation._base import MutationOperator, check_strength


class Crossover(MutationOperator):
    """Uniform crossover. The child has the first parent's family; parameters the second parent
    does not have (it may be of another family) come from the first. Magnitude and rate do not
    apply: crossover recombines, it does not perturb."""

    name = "crossover"
    parent_count = 2

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
        if len(parents) < 2:
            raise InvalidArgument("parents", "crossover needs two parents")
        first, second = parents[0], parents[1]
        values = dict(first.parameters)
        for spec in policy.specs(first.family):
            if spec.name in second.parameters and rng.random() < 0.5:
                values[spec.name] = second.parameters[spec.name]
        return self._child(parents[:2], first.family, values, policy, generation)
