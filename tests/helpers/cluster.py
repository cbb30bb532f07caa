"""A Dask cluster of worker processes on this machine, and evaluations compared bit for bit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import cloudpickle

from backtest.cluster import DaskCluster
from backtest.evaluation import Evaluation


@contextlib.contextmanager
def local_cluster(*, workers: int = 2, task_size: int = 8) -> Iterator[DaskCluster]:
    """``workers`` processes, one thread each; small tasks, so every worker gets several."""
    cluster = DaskCluster.local(workers=workers, task_size=task_size)
    try:
        yield cluster
    finally:
        cluster.close()


def exactly(evaluations: Sequence[Evaluation]) -> list[bytes]:
    """Each evaluation's every field, arrays and NaNs included, as bytes."""
    return [cloudpickle.dumps(e) for e in evaluations]
