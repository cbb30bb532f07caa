"""Hybrid: two or three group mutations applied one after the other to one parent."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qtmesh.base.genome import Policy, StrategyGenome
from sesa.mutation._base import GroupMutation, MutationOperator, check_strength


class HybridMutation(MutationOperator):
    name = "hybrid"

    def __init__(self, components: Sequence[GroupMutation]) -> None:
        self._components = tuple(components)

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
        usable = [c for c in self._components if c.applies_to(parent.family)]
        count = int(rng.integers(2, min(3, len(usable)) + 1))
        chosen = rng.choice(len(usable), size=count, replace=False)
        child = parent
        for index in sorted(chosen):
            child = usable[index].mutate(
                [child],
                policy=policy,
                rng=rng,
                magnitude=magnitude,
                rate=rate,
                generation=generation,
            )
        return self._child(parents[:1], parent.family, dict(child.parameters), policy, generation)
