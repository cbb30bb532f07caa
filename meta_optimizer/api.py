"""The spec's ``get_meta_optimizer_service()``: a synchronous facade over
:class:`meta_optimizer.client.MetaOptimizerClient`.

The spec calls the service without ``await``, so its methods are plain functions. Each runs the
client's coroutine on an event loop the service owns, in a daemon thread
(``asyncio.run_coroutine_threadsafe``), and waits for the result. One loop for the service's
whole life, rather than ``asyncio.run`` per call, because a gRPC aio channel belongs to the loop
it was opened on (one channel serves every call), and because it also works when the caller is
itself inside a running event loop (a notebook, an async app), where ``asyncio.run`` refuses.
:meth:`MetaOptimizerService.close` closes the channel and stops the loop.

Where the service is (:func:`get_meta_optimizer_service`): ``address`` (``host:port``) when
given; else the ``meta-optimizer`` entry of ``.qtmesh/mesh.json``, which ``qtmesh up`` writes,
when that file exists; else in process (``embedded``). A served meta optimizer audits the
encrypted reports of the mesh's alpha-reporting service. An embedded one is the real
:class:`meta_optimizer.engine.MetaOptimizer`, auditing the reports of an in-process
:class:`alpha_reporting.engine.ReportBook`: ``reports`` when given, else the paper fleet's own
(:func:`fleet_day_reports`), as the mesh's alpha-reporting service would have sealed them from
the market. Its ledger, report book and keyring are files in ``data_dir``
(``.qtmesh/embedded/meta-optimizer``, beside the mesh's own ``.qtmesh/data``), so the history
one service recorded is the next one's, as the spec's second example expects; ``data_dir=None``
keeps them in a temporary directory removed on :meth:`~MetaOptimizerService.close`. Submitting a
report the book holds already is a no-op, so the fleet's reports are sealed once.

Records are dicts with the spec's keys: ``id``, ``type`` (``SCALE_UP``, ...), ``action``,
``rationale``, ``target`` (the sector), and the other ledger fields (``counter_sector``,
``confidence``, ``p_value``, ``factor``, ``allocation``, ``cycle_id``, ``create_time``,
``ledger_index``, ``entry_hash``, ``state``).
"""

from __future__ import annotations

import asyncio
import datetime
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from alpha_reporting.crypto import Keyring, load_or_create_keyring_file
from alpha_reporting.engine import ReportBook
from alpha_reporting.report import (
    DAY_NANOS,
    EncryptedReport,
    SectorReport,
    date_of,
    day_reports,
    day_start,
)
from alpha_reporting.store import ReportStore
from market.fleet import Backtester, FleetState, deploy, simulate
from market.synthetic import SyntheticMarketSpec, generate
from meta_optimizer.audit import AuditSettings
from meta_optimizer.client import MetaOptimizerClient
from meta_optimizer.engine import MetaOptimizer
from meta_optimizer.ledger import Cycle, Proposal
from meta_optimizer.store import LedgerStore, ProposalQuery
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.storage import sqlite_url
from qtmesh.runtime.channels import open_channel
from qtmesh.runtime.supervisor import STATE_FILE, address_in_state

SERVICE = "meta-optimizer"
# The embedded fleet's days: the first warms it up, the others are reported.
EMBEDDED_DAYS = 15
EMBEDDED_DIR = Path(".qtmesh/embedded/meta-optimizer")
_T = TypeVar("_T")
_LIMIT = 1_000_000


def proposal_record(p: Proposal) -> dict[str, Any]:
    return {
        "id": p.id,
        "type": p.type.name,
        "action": p.action,
        "rationale": p.rationale,
        "target": p.target_sector,
        "counter_sector": p.counter_sector,
        "confidence": p.confidence,
        "p_value": p.p_value,
        "factor": p.factor,
        "allocation": p.allocation,
        "cycle_id": p.cycle_id,
        "create_time": p.create_time,
        "ledger_index": p.ledger_index,
        "entry_hash": p.entry_hash,
        "state": p.state.name,
    }


class _Backend(Protocol):
    """What the service calls: the served meta optimizer's client, or the embedded engine."""

    async def run_cycle(self) -> Cycle: ...

    async def proposals(self) -> list[Proposal]: ...

    async def close(self) -> None: ...


class _Served:
    def __init__(self, address: str, timeout: float) -> None:
        self._channel = open_channel(address, timeout=timeout)
        self._client = MetaOptimizerClient(self._channel)

    async def run_cycle(self) -> Cycle:
        return await self._client.run_cycle()

    async def proposals(self) -> list[Proposal]:
        return await self._client.proposals()

    async def close(self) -> None:
        await self._channel.close()


class _ReportBookSource:
    """A :class:`ReportBook` as the optimizer's report source: every page of the window."""

    def __init__(self, book: ReportBook) -> None:
        self._book = book

    async def reports(
        self, *, sector: str = "", start_date: str = "", end_date: str = ""
    ) -> list[EncryptedReport]:
        found: list[EncryptedReport] = []
        after: tuple[str, str] | None = None
        while page := await self._book.page(
            sector=sector, start_date=start_date, end_date=end_date, after=after, limit=500
        ):
            found += page
            after = (page[-1].trading_date, page[-1].sector)
        return found


class _Embedded:
    def __init__(
        self, reports: Iterable[SectorReport], settings: AuditSettings, data_dir: Path | None
    ) -> None:
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._directory = tempfile.TemporaryDirectory(prefix="meta-optimizer-")
            data_dir = Path(self._directory.name)
        self._folder = data_dir
        self._reports = list(reports)
        self._settings = settings
        self._engine: MetaOptimizer | None = None
        self._stores: list[ReportStore | LedgerStore] = []

    async def _started(self) -> MetaOptimizer:
        if self._engine is None:
            folder = self._folder
            folder.mkdir(parents=True, exist_ok=True)
            text, _ = await asyncio.to_thread(load_or_create_keyring_file, folder / "keyring")
            keyring = Keyring.parse(text)
            reports = await asyncio.to_thread(ReportStore, sqlite_url(folder / "reports.db"))
            ledger = await asyncio.to_thread(LedgerStore, sqlite_url(folder / "ledger.db"))
            self._stores += [reports, ledger]
            book = ReportBook(store=reports, keyring=keyring, clock=time.time_ns)
            for report in self._reports:
                await book.submit(report)
            self._engine = MetaOptimizer(
                store=ledger,
                source=_ReportBookSource(book),
                keyring=keyring,
                settings=self._settings,
                clock=time.time_ns,
            )
        return self._engine

    async def run_cycle(self) -> Cycle:
        return await (await self._started()).run_cycle()

    async def proposals(self) -> list[Proposal]:
        return await (await self._started()).proposals(ProposalQuery(), _LIMIT)

    async def close(self) -> None:
        for store in self._stores:
            await asyncio.to_thread(store.close)
        if self._directory is not None:
            self._directory.cleanup()


def fleet_day_reports(*, seed: int = 7, days: int = EMBEDDED_DAYS) -> list[SectorReport]:
    """The default paper fleet's sector reports of each whole day on the synthetic market of
    ``seed``: deployed at the end of its first day (``days`` in all), as the market deploys it
    with default settings, each report the fleet accounted over one day's bars, as the mesh's
    alpha-reporting service reports them."""
    market = generate(SyntheticMarketSpec(seed=seed, days=days))
    series = {s.symbol: s for s in market.series}
    first = market.series[0].time
    deployment = int(first[int(DAY_NANOS // (first[1] - first[0])) - 1])
    setup = deploy({s.symbol: s.sector for s in market.series}, deployment_time=deployment)
    clock = int(max(s.time[-1] for s in market.series))
    run = simulate(FleetState(setup), series, clock_time=clock, backtester=Backtester(setup))
    reports: list[SectorReport] = []
    day = date_of(deployment) + datetime.timedelta(days=1)
    while day_start(day) <= clock:
        start = day_start(day)
        fleet = run.report(start_time=start, end_time=start + DAY_NANOS - 1)
        if fleet.bar_count:
            reports += day_reports(fleet, day)
        day += datetime.timedelta(days=1)
    return reports


class MetaOptimizerService:
    """The meta optimizer, served or embedded, called synchronously (module docstring); built by
    :func:`get_meta_optimizer_service`."""

    def __init__(self, backend: Callable[[], _Backend], *, address: str | None = None) -> None:
        """``backend`` is called on the service's own loop, where its channel must be opened."""
        self.address = address
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="meta-optimizer-api", daemon=True
        )
        self._thread.start()

        async def connect() -> _Backend:
            return backend()

        try:
            self._backend = self._call(connect())
        except BaseException:
            self._stop()
            raise

    @property
    def embedded(self) -> bool:
        return self.address is None

    def _call(self, work: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def run_optimization_cycle(self) -> list[dict[str, Any]]:
        """Audits the alpha reports and returns the cycle's new proposals."""
        return [proposal_record(p) for p in self.run_cycle().proposals]

    def run_cycle(self) -> Cycle:
        """One cycle, as the ledger recorded it (sector audits, proposals, rejections)."""
        return self._call(self._backend.run_cycle())

    def get_proposal_history(self) -> list[dict[str, Any]]:
        """Every proposal in the ledger, oldest first."""
        return [proposal_record(p) for p in self._call(self._backend.proposals())]

    @property
    def proposal_history(self) -> list[dict[str, Any]]:
        return self.get_proposal_history()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self._backend.close())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> MetaOptimizerService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def get_meta_optimizer_service(
    address: str | None = None,
    *,
    mesh_file: Path = STATE_FILE,
    embedded: bool | None = None,
    reports: Iterable[SectorReport] | None = None,
    settings: AuditSettings | None = None,
    data_dir: Path | None = EMBEDDED_DIR,
    timeout: float = 30.0,
) -> MetaOptimizerService:
    """The meta optimizer at ``address``, else where ``mesh_file`` says it listens, else (no
    such file) in process; ``embedded`` True or False insists on one. An embedded service
    audits ``reports`` (default: :func:`fleet_day_reports`) under ``settings`` (default: the
    service's defaults) with its files in ``data_dir`` (module docstring)."""
    if embedded and address is not None:
        raise InvalidArgument("embedded", f"an embedded service has no address ({address!r})")
    if embedded is None:
        embedded = address is None and not mesh_file.is_file()
    if not embedded:
        where = address or address_in_state(SERVICE, mesh_file)
        return MetaOptimizerService(lambda: _Served(where, timeout), address=where)
    given = fleet_day_reports() if reports is None else list(reports)
    return MetaOptimizerService(lambda: _Embedded(given, settings or AuditSettings(), data_dir))
