"""SESA's own search: the evolution loop of sesa/evolution.py (the Evolve RPC's), started
from each family's default genome plus genomes drawn at random over the bounds (together
``initial_share`` of the budget: an evolution bred from the defaults alone searches only their
neighbourhood), and run generation by generation until the budget is spent."""

from __future__ import annotations

import numpy as np

from sesa.evolution import Evolution, EvolutionConfig
from sesa.research._base import Objective, Search, random_genome
from sesa.selection import SelectionConfig

# Generations in a row that find nothing new before the search stops short of its budget.
_STALE_GENERATIONS = 5


class SesaSearch(Search):
    name = "sesa"

    def __init__(
        self,
        *,
        rng: np.random.Generator,
        config: EvolutionConfig | None = None,
        selection: SelectionConfig | None = None,
        initial_share: float = 0.25,
    ) -> None:
        super().__init__(rng=rng)
        self.config = config or EvolutionConfig(num_generations=1000)
        self.selection = selection or SelectionConfig()
        self.initial_share = initial_share

    def run(self, objective: Objective) -> None:
        policy = objective.policy
        seeds = [policy.default_genome(f) for f in objective.families]
        for i in range(round(self.initial_share * objective.budget) - len(seeds)):
            family = objective.families[i % len(objective.families)]
            seeds.append(random_genome(family, policy, self.rng, origin="random"))
        evolution = Evolution(
            evaluator=objective.evaluator,
            selection=self.selection,
            config=self.config,
            rng=self.rng,
            trials=objective.trials,
        )
        self.generations.append(
            evolution.start(seeds[: objective.budget], objective.data, token=objective.token)
        )
        objective.record(evolution.evaluations)
        stale = 0
        while objective.remaining > 0 and not evolution.finished and stale < _STALE_GENERATIONS:
            before = objective.remaining
            self.generations.append(evolution.step(objective.token, limit=objective.remaining))
            objective.record(evolution.evaluations)
            stale = stale + 1 if objective.remaining == before else 0
