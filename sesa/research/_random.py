"""Random search: genomes drawn independently and uniformly over the families' bounds."""

from __future__ import annotations

from sesa.research._base import Objective, Search, random_genome

# Genomes per evaluation call: the kernel runs a batch in one pass.
_BATCH = 32
# Draws per genome of budget before giving up on finding new ones (a small integer space).
_DRAWS_PER_GENOME = 20


class RandomSearch(Search):
    name = "random"

    def run(self, objective: Objective) -> None:
        draws = 0
        while objective.remaining > 0 and draws < _DRAWS_PER_GENOME * objective.budget:
            batch = []
            for _ in range(min(_BATCH, objective.remaining)):
                family = objective.families[int(self.rng.integers(len(objective.families)))]
                batch.append(random_genome(family, objective.policy, self.rng, origin="random"))
            draws += len(batch)
            objective.evaluate(batch)
