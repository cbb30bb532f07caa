"""The extension point of :mod:`backtest.cluster`: what an evaluator asks of a cluster."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from qtmesh.base.concurrency import CancelToken
from qtmesh.base.genome import StrategyGenome

if TYPE_CHECKING:
    from backtest.evaluation import Evaluator
    from backtest.indicators import BarData


@dataclasses.dataclass(frozen=True)
class Simulated:
    """The kernel's output for a population, one row per genome in its order: ``accumulators``
    (genomes, 2, kernel.ACCUMULATOR_COUNT); with summaries, the out-of-sample ``blocks``
    (genomes, BLOCKS, 3) and the later folds' sums ``folds`` (genomes, folds - 1, 3)."""

    accumulators: np.ndarray
    blocks: np.ndarray | None = None
    folds: np.ndarray | None = None

    @staticmethod
    def concatenate(parts: Sequence[Simulated]) -> Simulated:
        def joined(rows: list[np.ndarray | None]) -> np.ndarray | None:
            return None if any(r is None for r in rows) else np.concatenate(rows)  # type: ignore[arg-type]

        return Simulated(
            accumulators=np.concatenate([p.accumulators for p in parts]),
            blocks=joined([p.blocks for p in parts]),
            folds=joined([p.folds for p in parts]),
        )


class Cluster(abc.ABC):
    """Runs :meth:`Evaluator.simulate_population` for a population across workers.

    Implementations keep the population's order, raise :class:`~qtmesh.base.concurrency.Cancelled`
    once ``token`` is cancelled (after cancelling the work still queued or running), raise
    :class:`~qtmesh.base.errors.Unavailable` when the cluster cannot be reached or loses the
    work, and re-raise a task's own error (an InvalidArgument, say) as itself."""

    @abc.abstractmethod
    def simulate(
        self,
        evaluator: Evaluator,
        genomes: Sequence[StrategyGenome],
        data: BarData,
        *,
        summaries: bool,
        token: CancelToken | None = None,
    ) -> Simulated: ...

    @property
    @abc.abstractmethod
    def workers(self) -> int:
        """Workers the cluster has now."""

    @abc.abstractmethod
    def close(self) -> None:
        """Releases the connection (and a cluster this object started)."""
