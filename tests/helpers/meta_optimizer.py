"""Builders of the meta-optimizer tests: sector reports with planted alpha, seeded noise, and the
pieces of the lifecycle tests: a federation served on port 0 with a market clock the test sets,
the fleet that executes the proposals' actions, an observer of the plan follower, and a reader
of the ledger's stream; and the whole lifecycle world (alpha-reporting with planted reports, a
federation asking the meta optimizer, the meta optimizer following it) that the lifecycle and
console tests run on."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
from pathlib import Path

import numpy as np

from alpha_reporting.client import AlphaReportingClient
from alpha_reporting.config import AlphaReportingConfig
from alpha_reporting.report import SectorReport, report_id_for
from alpha_reporting.service import app as alpha_app
from federation.config import FederationConfig
from federation.engine import Federation
from federation.service import FederationServicer, service_of
from federation.store import PlanStore
from meta_optimizer.client import MetaOptimizerClient
from meta_optimizer.config import MetaOptimizerConfig
from meta_optimizer.service import app as metaopt_app
from qtmesh.base import contract as c
from qtmesh.base.config import Secret
from qtmesh.base.errors import FailedPrecondition, MeshError
from qtmesh.base.storage import create_engine, sqlite_url
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.testing import serving, serving_app


def planted(sector: str, alphas, *, benchmark: float = 0.001, first: int = 4) -> list:
    reports = []
    for day, alpha in enumerate(alphas):
        date = (datetime.date(2026, 2, first) + datetime.timedelta(days=day)).isoformat()
        roi = benchmark + float(alpha)
        reports.append(
            SectorReport(
                report_id=report_id_for(sector, date),
                sector=sector,
                trading_date=date,
                roi=roi,
                alpha=roi - benchmark,
                benchmark_return=benchmark,
                volatility=0.2 + day / 100,
                max_drawdown=0.01,
                trade_count=10,
                fleet_size=6,
            )
        )
    return reports


def noise(seed: int, mean: float, scale: float, days: int = 8) -> np.ndarray:
    return mean + scale * np.random.default_rng(seed).standard_normal(days)


def day_end(date: str) -> int:
    """Unix ns of 00:00 UTC after ``date``: the market time of that day's data."""
    moment = datetime.datetime.combine(
        datetime.date.fromisoformat(date) + datetime.timedelta(days=1),
        datetime.time(),
        tzinfo=datetime.UTC,
    )
    return int(moment.timestamp()) * 10**9


HOUR = 3600 * 10**9
DAY = 24 * HOUR


class Fleet:
    """The market's side: executes ADJUST_EXPOSURE and SPAWN_ARB_MISSION once per key, refusing
    every action on a sector in ``refuse`` (FAILED_PRECONDITION)."""

    name = "market"

    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        self.refuse = set(refuse)
        self.applied: list[str] = []

    async def recommend(self, context: c.AgentContext) -> list[c.Recommendation]:
        return []

    async def execute(self, action: c.Action, *, plan_sequence: int) -> c.ExecutionResult:
        p = action.parameters
        sector = p.sector if isinstance(p, c.AdjustExposure) else getattr(p, "long_sector", "")
        if sector in self.refuse:
            raise FailedPrecondition(f"{sector} takes no changes today")
        if action.idempotency_key in self.applied:
            return c.ExecutionResult(False, f"{action.target} already changed")
        self.applied.append(action.idempotency_key)
        return c.ExecutionResult(True, f"{action.target} changed")


class Later:
    """The meta optimizer as the federation asks it, bound once its server is up (the
    federation's address must be known first); unbound, it recommends nothing."""

    name = "meta-optimizer"

    def __init__(self) -> None:
        self.agent: c.Agent | None = None

    async def recommend(self, context: c.AgentContext) -> list[c.Recommendation]:
        return await self.agent.recommend(context) if self.agent is not None else []

    async def execute(self, action: c.Action, *, plan_sequence: int) -> c.ExecutionResult:
        raise AssertionError("the meta optimizer executes nothing")


class MarketClock:
    """The market's replay clock as the federation reads it; tests move ``time``."""

    def __init__(self, time: int) -> None:
        self.time = time

    def __call__(self) -> tuple[int, int]:
        return self.time, 0


class Progress:
    """Observes the plan follower: every event sequence it recorded, in order, and the
    transitions it made; ``reach(n)`` waits until it recorded event ``n``."""

    def __init__(self) -> None:
        self.sequences: list[int] = []
        self.transitions: list = []
        self._moved = asyncio.Event()

    def __call__(self, sequence: int, transitions) -> None:
        self.sequences.append(sequence)
        self.transitions += transitions
        self._moved.set()

    async def reach(self, sequence: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not self.sequences or self.sequences[-1] < sequence:
                self._moved.clear()
                await self._moved.wait()


@contextlib.asynccontextmanager
async def federation_serving(
    tmp_path: Path, *, agents: dict[str, c.Agent], fleet: Fleet, clock: MarketClock, **settings
):
    """The federation engine asking ``agents`` and executing on ``fleet``, its stream served on
    port 0; yields (running server, engine)."""
    store = PlanStore(create_engine(sqlite_url(tmp_path / "federation" / "federation.db")))
    config = FederationConfig(
        data_dir=tmp_path / "federation",
        agents=tuple(agents),
        gap_update_interval_seconds=0.0,
        agent_timeout_seconds=5.0,
        **settings,
    )
    federation = Federation(
        config=config, agents=agents, owners={"market": fleet}, store=store, market_clock=clock
    )
    servicer = FederationServicer(federation)
    try:
        async with serving(
            [service_of(servicer)], name="federation", on_drain=servicer.drain
        ) as running:
            yield running, federation
    finally:
        await federation.close()
        store.close()


async def plan(federation: Federation, *, execute: bool = True):
    """One planning cycle, executed to its end; the plan and the last event's sequence."""
    made = await federation.generate_plan(execute=execute)
    await federation.wait_for_executions()
    last = await federation.store.run(federation.store.last_sequence)
    return made, last


class Watcher:
    """Reads ``client.watch(after_sequence=...)`` into ``events`` in the background; ``reach(n)``
    waits until it received event ``n``, ``ended()`` until the stream ended (its error)."""

    def __init__(self, client, *, after_sequence: int | None) -> None:
        self.events: list = []
        self.error: MeshError | None = None
        self._moved = asyncio.Event()
        self._task = asyncio.ensure_future(self._read(client, after_sequence))

    async def _read(self, client, after_sequence: int | None) -> None:
        try:
            async for event in client.watch(after_sequence=after_sequence):
                self.events.append(event)
                self._moved.set()
        except MeshError as exc:
            self.error = exc
        finally:
            self._moved.set()

    @property
    def sequences(self) -> list[int]:
        return [e.sequence for e in self.events]

    @property
    def done(self) -> bool:
        return self._task.done()

    async def reach(self, sequence: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not self.events or self.events[-1].sequence < sequence:
                if self._task.done():
                    raise AssertionError(f"the stream ended before {sequence}: {self.error!r}")
                self._moved.clear()
                await self._moved.wait()

    async def ended(self, timeout: float = 10.0) -> MeshError | None:
        await asyncio.wait_for(asyncio.shield(self._task), timeout)
        return self.error

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


KEYS = f"k1:{base64.b64encode(b'1' * 32).decode()}"
T0 = 1_800_000_000 * 10**9
ALPHAS = {
    "Tech": noise(1, 0.010, 0.003),
    "Energy": noise(2, -0.008, 0.003),
    "Crypto": noise(3, 0.000, 0.003),
    "Financials": noise(4, 0.001, 0.003),
}
# The planted reports run 2026-02-04..11: their data reaches 00:00 UTC on the 12th.
DATA_END = day_end("2026-02-11")


class Ticks:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        self.now += 10**9
        return self.now


@dataclasses.dataclass
class World:
    alpha: AlphaReportingClient
    alpha_address: str
    federation_address: str
    federation: Federation
    later: Later
    clock: MarketClock


@contextlib.asynccontextmanager
async def world(tmp_path: Path, *, refuse: tuple[str, ...] = (), others=()):
    """Alpha-reporting with the planted reports, and a federation asking the meta optimizer (and
    ``others``) with the market clock an hour after the reports' data."""
    config = AlphaReportingConfig(
        data_dir=tmp_path / "alpha", keyring=Secret(KEYS), watch_market=False
    )
    async with serving_app(alpha_app(), config) as alpha:
        client = AlphaReportingClient(alpha.channel)
        for sector, values in ALPHAS.items():
            for report in planted(sector, values):
                await client.submit(report)
        later, clock = Later(), MarketClock(DATA_END + HOUR)
        agents = {"meta-optimizer": later, **{a.name: a for a in others}}
        async with federation_serving(
            tmp_path, agents=agents, fleet=Fleet(refuse), clock=clock
        ) as (running, federation):
            yield World(client, alpha.address, running.address, federation, later, clock)


@contextlib.asynccontextmanager
async def optimizer(w: World, tmp_path: Path, progress: Progress, **settings):
    """The meta optimizer following ``w``'s federation, which asks it while it serves."""
    channels = ChannelConfig(
        addresses={"alpha-reporting": w.alpha_address, "federation": w.federation_address}
    )
    config = MetaOptimizerConfig(
        data_dir=tmp_path / "metaopt",
        keyring=Secret(KEYS),
        auto_window_days=0,
        reconnect_initial_seconds=0.01,
        reconnect_max_seconds=0.05,
        **settings,
    )
    app = metaopt_app(clock=Ticks(), observe=progress)
    async with serving_app(app, config, channel_config=channels) as running:
        w.later.agent = AgentClient(running.channel, name="meta-optimizer")
        try:
            yield MetaOptimizerClient(running.channel), running
        finally:
            w.later.agent = None
