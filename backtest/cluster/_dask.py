"""The :class:`~backtest.cluster.Cluster` of a Dask distributed scheduler.

``DaskCluster(address="tcp://scheduler:8786")`` connects to a running cluster (in Kubernetes, the
Dask operator's DaskCluster; deploy/README.md); :meth:`DaskCluster.local` starts one of worker
processes on this machine (tests, benchmarks, trying it out). Each evaluation's bars are
scattered to every worker once (``broadcast=True``) and its genomes submitted as tasks of at
most ``task_size`` (fewer when that would leave a worker idle); a worker builds the
:class:`~backtest.indicators.BarData` of scattered bars once and reuses it for every task on
them. Waiting for the tasks polls the cancel token every ``poll_seconds``: once it is cancelled,
every task of the evaluation is cancelled on the cluster and
:class:`~qtmesh.base.concurrency.Cancelled` raised.

``distributed`` is imported when a cluster is first made: a process that evaluates in process
never pays for it.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from backtest.cluster._base import Cluster, Simulated
from qtmesh.base.bars import BarSeries
from qtmesh.base.concurrency import Cancelled, CancelToken
from qtmesh.base.errors import InvalidArgument, Unavailable
from qtmesh.base.genome import StrategyGenome

if TYPE_CHECKING:
    from backtest.evaluation import Evaluator
    from backtest.indicators import BarData

# About 0.15 s of kernel work over 43,200 bars: well above a task's round trip (about 10 ms).
DEFAULT_TASK_SIZE = 256


class _Bars:
    """What is scattered: the bars and the two figures their BarData was built with. On a worker,
    :meth:`data` builds the BarData once; the table of indicator rows it grows is never shipped
    back (pickling keeps the bars only)."""

    def __init__(self, series: BarSeries, bars_per_year: float, spacing: float) -> None:
        self.series = series
        self.bars_per_year = bars_per_year
        self.spacing = spacing
        self._data: BarData | None = None
        self.lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"series": self.series, "bars_per_year": self.bars_per_year, "spacing": self.spacing}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def data(self) -> BarData:
        from backtest.indicators import BarData

        if self._data is None:
            self._data = BarData(
                self.series, bars_per_year=self.bars_per_year, spacing=self.spacing
            )
        return self._data


def _simulate_task(
    bars: _Bars, evaluator: Evaluator, genomes: list[StrategyGenome], summaries: bool
) -> Simulated:
    # One task at a time per scattered bars: BarData grows its table in place.
    with bars.lock:
        return evaluator.simulate_population(genomes, bars.data(), summaries=summaries)


class DaskCluster(Cluster):
    """Populations evaluated on the workers of the Dask scheduler at ``address`` (module
    docstring); ``client`` instead takes an open ``distributed.Client``, which :meth:`close`
    then leaves open."""

    def __init__(
        self,
        *,
        address: str = "",
        client: Any = None,
        task_size: int = DEFAULT_TASK_SIZE,
        poll_seconds: float = 0.05,
        connect_timeout_seconds: float = 30.0,
    ) -> None:
        if (client is None) == (not address):
            raise InvalidArgument("address", "give a scheduler address or a client, not both")
        if task_size < 1:
            raise InvalidArgument("task_size", f"{task_size} is not a positive number of genomes")
        if not poll_seconds > 0:
            raise InvalidArgument("poll_seconds", f"{poll_seconds} is not a positive duration")
        self.task_size = task_size
        self.poll_seconds = poll_seconds
        self._owned: list[Any] = []
        if client is None:
            from distributed import Client

            try:
                client = Client(address, timeout=connect_timeout_seconds, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise Unavailable(f"no Dask scheduler at {address}: {exc}") from None
            self._owned.append(client)
        self.client = client
        self.address = address or str(client.scheduler.address)
        self._scattered: weakref.WeakKeyDictionary[BarData, Any] = weakref.WeakKeyDictionary()
        self._scatter_lock = threading.Lock()

    @classmethod
    def local(
        cls, *, workers: int = 2, kernel_threads: int | None = None, **kwargs: Any
    ) -> DaskCluster:
        """A cluster of ``workers`` processes on this machine, closed with this object. Each
        runs one task at a time on ``kernel_threads`` of the kernel's threads (default: its
        share of the cores), so the workers together do not oversubscribe the machine."""
        from distributed import LocalCluster

        threads = kernel_threads or max(1, (os.cpu_count() or 1) // workers)
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
            env={"NUMBA_NUM_THREADS": str(threads)},
        )
        try:
            made = cls(address=cluster.scheduler_address, **kwargs)
        except BaseException:
            cluster.close()
            raise
        made._owned.append(cluster)
        return made

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def _bars_on_workers(self, data: BarData) -> Any:
        with self._scatter_lock:
            future = self._scattered.get(data)
            if future is None:
                bars = _Bars(data.series, data.bars_per_year, data.spacing)
                future = self.client.scatter(bars, broadcast=True, hash=False)
                self._scattered[data] = future
            return future

    def simulate(
        self,
        evaluator: Evaluator,
        genomes: Sequence[StrategyGenome],
        data: BarData,
        *,
        summaries: bool,
        token: CancelToken | None = None,
    ) -> Simulated:
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        # The evaluator without its cluster: what a worker runs is the in-process path.
        local = evaluator.without_cluster()
        if not genomes:
            return local.simulate_population(genomes, data, summaries=summaries)
        try:
            bars = self._bars_on_workers(data)
            # At most task_size per task, and at least one task per worker.
            size = min(self.task_size, -(-len(genomes) // max(1, self.workers)))
            tasks = [
                self.client.submit(
                    _simulate_task,
                    bars,
                    local,
                    list(genomes[first : first + size]),
                    summaries,
                    pure=False,
                )
                for first in range(0, len(genomes), size)
            ]
        except (OSError, TimeoutError) as exc:
            raise Unavailable(f"the Dask scheduler at {self.address}: {exc}") from None
        try:
            self._wait(tasks, token)
            return Simulated.concatenate(self.client.gather(tasks))
        except (OSError, FutureCancelledError, KilledWorker) as exc:
            self.client.cancel(tasks)
            raise Unavailable(f"the Dask cluster at {self.address} lost the work: {exc}") from None
        except BaseException:
            # Cancelled, a task's own error, an interrupt: nothing of the evaluation runs on.
            self.client.cancel(tasks)
            raise

    def _wait(self, tasks: list[Any], token: CancelToken | None) -> None:
        """Until every task is done or one failed; raises Cancelled once ``token`` is."""
        settled = threading.Event()
        lock = threading.Lock()
        remaining = len(tasks)

        def done(task: Any) -> None:
            nonlocal remaining
            with lock:
                remaining -= 1
                if remaining == 0 or task.status != "finished":
                    settled.set()

        for task in tasks:
            task.add_done_callback(done)
        while not settled.wait(self.poll_seconds):
            if token is not None and token.cancelled:
                raise Cancelled()
        if token is not None and token.cancelled:
            raise Cancelled()

    def close(self) -> None:
        for owned in self._owned:  # the client before the cluster it talks to
            owned.close()
        self._owned.clear()
