"""Where a population's backtests run: in process (no cluster, the default) or on the workers of a
cluster.

An :class:`~backtest.evaluation.Evaluator` given a ``cluster`` hands it the kernel's work for a
population: the genomes split into tasks of ``task_size``, run by the workers in parallel, each
genome's accumulators, block sums and fold sums gathered back in the population's order.
Scoring, the trial log and selection stay with the caller. Results are bit-for-bit those of the
in-process path because a genome's backtest depends only on its bars, its parameters and its
seed (the kernel's random stream is seeded from the genome id), never on which genomes share its
task; each worker builds the indicator rows with the same code from the same bars.

Workers hold the bars once per evaluation's bars, not once per task: the bars are shipped to
every worker once (``scatter(broadcast=True)``) and each worker builds its indicator table from
them once, growing it as later tasks ask for other periods.

Extension point: :class:`Cluster` (``_base.py``). Implementation: :class:`DaskCluster`
(``_dask.py``, on Dask distributed).
"""

from backtest.cluster._base import Cluster, Simulated
from backtest.cluster._dask import DEFAULT_TASK_SIZE, DaskCluster

__all__ = ["DEFAULT_TASK_SIZE", "Cluster", "DaskCluster", "Simulated"]
