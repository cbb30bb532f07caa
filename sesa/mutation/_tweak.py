"""Parameter tweak: a Gaussian step on a share of all of a parent's parameters."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qtmesh.base.genome import Policy, StrategyGenome
from sesa.mutation._base import MutationOperator, check_strength, perturb


class ParameterTweak(MutationOperator):
    name = "parameter_tweak"

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
        parent = parents[0]
        names = [s.name for s in policy.specs(parent.family)]
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
