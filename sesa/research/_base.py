"""The extension point of research: a search proposes genomes, the objective evaluates them.

Rules every search keeps:

* it evaluates only through :class:`Objective`, which counts every genome not evaluated
  before against the budget and stops at it, so ``budget`` means the same for every search;
* it sees only the training bars the objective holds (the held-out bars never reach it);
* its randomness comes from the ``rng`` it was constructed with, so a seed reproduces a run.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np

from backtest.evaluation import Evaluation, Evaluator, TrialLog
from backtest.indicators import BarData
from qtmesh.base.concurrency import CancelToken
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import Policy, StrategyFamily, StrategyGenome, make_genome
from sesa.evolution import GenerationStats


class Objective:
    """The project's evaluator on the training bars, under a budget of genomes evaluated.

    Every genome evaluated is kept (:attr:`archive`, in evaluation order) with its score, and
    counts as one trial of the deflated Sharpe ratio."""

    def __init__(
        self,
        *,
        evaluator: Evaluator,
        data: BarData,
        families: Sequence[StrategyFamily],
        budget: int,
        progress: Callable[[int], None] = lambda evaluated: None,
        token: CancelToken | None = None,
    ) -> None:
        if budget < 1:
            raise InvalidArgument("budget", f"{budget} is not a positive number of genomes")
        if not families:
            raise InvalidArgument("families", "no strategy family to search")
        self.evaluator = evaluator
        self.policy: Policy = evaluator.policy
        self.data = data
        self.families = tuple(families)
        self.budget = budget
        self.trials = TrialLog()
        self.archive: dict[str, Evaluation] = {}
        self._progress = progress
        self.token = token

    @property
    def remaining(self) -> int:
        return self.budget - len(self.archive)

    def evaluate(self, genomes: Sequence[StrategyGenome]) -> list[Evaluation]:
        """Evaluations of ``genomes`` in order: known ones from the archive, new ones evaluated
        while the budget lasts; genomes past the budget are left out."""
        new: dict[str, StrategyGenome] = {}
        for genome in genomes:
            if genome.id not in self.archive and len(new) < self.remaining:
                new.setdefault(genome.id, genome)
        if new:
            evaluated = self.evaluator.evaluate(
                list(new.values()), self.data, trials=self.trials, token=self.token
            )
            for evaluation in evaluated:
                self.archive[evaluation.genome.id] = evaluation
            self._progress(len(self.archive))
        return [self.archive[g.id] for g in genomes if g.id in self.archive]

    def record(self, evaluations: Sequence[Evaluation]) -> None:
        """Adds evaluations made elsewhere with this objective's evaluator, data and trials
        (an evolution's), counting them against the budget."""
        for evaluation in evaluations:
            self.archive.setdefault(evaluation.genome.id, evaluation)
        self._progress(len(self.archive))


def random_genome(
    family: StrategyFamily, policy: Policy, rng: np.random.Generator, *, origin: str
) -> StrategyGenome:
    """A genome drawn uniformly over the family's bounds (log-uniform where a parameter is on
    a log scale), its ordered pairs repaired."""
    values = {s.name: s.from_unit(float(rng.random())) for s in policy.specs(family)}
    return make_genome(family, policy.repair(family, values), origin=origin)


class Search(abc.ABC):
    """A way of spending an :class:`Objective`'s budget; see the module docstring. A search that
    runs in generations records each one's statistics in ``generations``."""

    name: ClassVar[str]

    def __init__(self, *, rng: np.random.Generator) -> None:
        self.rng = rng
        self.generations: list[GenerationStats] = []

    @abc.abstractmethod
    def run(self, objective: Objective) -> None:
        """Evaluates genomes through ``objective`` until its budget is spent (or the search
        has nothing left to propose)."""
