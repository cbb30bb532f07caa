"""The meta optimizer's gRPC service: a thin adapter from MetaOptimizerService and AgentService
to the optimizer engine, which reads reports from the alpha-reporting service and follows the
federation's plans to record what became of each proposal."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable

import grpc

from alpha_reporting.client import AlphaReportingClient
from alpha_reporting.engine import Refused
from meta_optimizer import _convert as convert
from meta_optimizer.agent import EXECUTES, MetaOptimizerAgent
from meta_optimizer.audit import ProposalType
from meta_optimizer.client import PlanFeed
from meta_optimizer.config import ENV_PREFIX, MetaOptimizerConfig
from meta_optimizer.engine import Clock, MetaOptimizer
from meta_optimizer.follower import Observer, PlanFollower
from meta_optimizer.ledger import LedgerEvent, ProposalState, Verification
from meta_optimizer.schedule import CycleScheduler
from meta_optimizer.store import LedgerStore, ProposalQuery
from qtmesh.api.metaoptimizer.v1 import meta_optimizer_pb2 as pb
from qtmesh.api.metaoptimizer.v1 import meta_optimizer_pb2_grpc as pb_grpc
from qtmesh.base import paging
from qtmesh.base.convert import enum_from_proto, optional_time_from_proto
from qtmesh.base.errors import InvalidArgument, ResourceExhausted, Unavailable
from qtmesh.runtime.agent_service import agent_service
from qtmesh.runtime.app import App, Built, Context, Uses
from qtmesh.runtime.metrics import Metrics
from qtmesh.runtime.server import Service

# Stored events read per query while a subscriber catches up.
WATCH_BATCH = 500


class MetaOptimizerServicer(pb_grpc.MetaOptimizerServiceServicer):
    def __init__(self, optimizer: MetaOptimizer) -> None:
        self._optimizer = optimizer

    async def RunOptimizationCycle(
        self, request: pb.RunOptimizationCycleRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunOptimizationCycleResponse:
        cycle = await self._optimizer.run_cycle(
            start_date=request.start_date, end_date=request.end_date
        )
        return pb.RunOptimizationCycleResponse(cycle=convert.cycle_to_proto(cycle))

    async def ListProposals(
        self, request: pb.ListProposalsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListProposalsResponse:
        size = paging.page_size(request.page_size, default=100, maximum=1000)
        kind = None
        if request.type:
            kind = enum_from_proto(ProposalType, pb.ProposalType, request.type, field="type")
        state = None
        if request.state:
            state = enum_from_proto(ProposalState, pb.ProposalState, request.state, field="state")
        start = optional_time_from_proto(request, "start_time")
        end = optional_time_from_proto(request, "end_time")
        # The token carries the filters, so a page of one query is never read with another.
        expect = {"sector": request.sector, "type": request.type, "start": start, "end": end}
        if state is not None:
            expect["state"] = request.state  # absent when unset: earlier tokens still read
        after = -1
        if request.page_token:
            index = paging.decode_token(request.page_token, expect=expect).get("i")
            if not (isinstance(index, int) and index >= 0):
                raise InvalidArgument("page_token", "is not a token this server issued")
            after = index
        query = ProposalQuery(
            sector=request.sector,
            type=kind,
            start_time=start,
            end_time=end,
            after_index=after,
            state=state,
        )
        found = await self._optimizer.proposals(query, size + 1)
        page = found[:size]
        token = ""
        if len(found) > size:
            token = paging.encode_token(**expect, i=page[-1].ledger_index)
        return pb.ListProposalsResponse(
            proposals=[convert.proposal_to_proto(p) for p in page], next_page_token=token
        )

    async def GetProposal(
        self, request: pb.GetProposalRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetProposalResponse:
        found = await self._optimizer.proposal(request.id)
        return pb.GetProposalResponse(proposal=convert.proposal_to_proto(found))

    async def VerifyLedger(
        self, request: pb.VerifyLedgerRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyLedgerResponse:
        return convert.verification_to_proto(await self._optimizer.verify())

    async def GetPulse(
        self, request: pb.GetPulseRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPulseResponse:
        return convert.pulse_to_proto(await self._optimizer.pulse())

    async def WatchLedger(
        self, request: pb.WatchLedgerRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchLedgerResponse]:
        """Stored events after the cursor, then live ones from the hub. The subscription is
        taken before the store is read, so no event falls between the two; an event the hub
        did not hold (a catch-up longer than the queue, or a gap) is read from the store, where
        every event is before it is published."""
        optimizer = self._optimizer
        hub = optimizer.hub
        subscription = hub.subscribe()
        try:
            last = await optimizer.last_event_sequence()
            cursor = last
            if request.HasField("after_sequence"):
                cursor = request.after_sequence
                if not 0 <= cursor <= last:
                    raise InvalidArgument(
                        "after_sequence",
                        f"must be in 0..{last}, the last event stored (got {cursor})",
                    )
            if hub.closed:
                raise _draining(cursor)
            # Headers now, so a subscriber knows it is connected before the next event exists.
            await context.send_initial_metadata(())
            while True:
                while True:  # from the store
                    batch, through = await optimizer.events_after(cursor, WATCH_BATCH)
                    for event in batch:
                        yield convert.event_to_proto(event)
                    read, cursor = through - cursor, through
                    subscription.discard_while(functools.partial(_at_or_before, cursor))
                    if subscription.overflowed:
                        # What it missed is stored, and anything published from here on reaches
                        # the new subscription: reading on from the store loses nothing.
                        hub.unsubscribe(subscription)
                        subscription = hub.subscribe()
                        continue
                    if read < WATCH_BATCH:
                        break
                while True:  # live
                    live = await subscription.next()
                    if live is None:
                        if subscription.overflowed:
                            raise ResourceExhausted(
                                f"subscriber fell {hub.queue_size} events behind; "
                                f"resume with after_sequence={cursor}",
                                metadata={"resume_after_sequence": str(cursor)},
                            )
                        raise _draining(cursor)
                    if live.sequence <= cursor:
                        continue  # delivered from the store already
                    if live.sequence > cursor + 1:
                        break  # published out of order: the store has the ones between
                    cursor = live.sequence
                    yield convert.event_to_proto(live)
        finally:
            hub.unsubscribe(subscription)


def _at_or_before(sequence: int, event: LedgerEvent) -> bool:
    return event.sequence <= sequence


def _draining(cursor: int) -> Unavailable:
    return Unavailable(
        f"server is shutting down; resume with after_sequence={cursor}",
        metadata={"resume_after_sequence": str(cursor)},
    )


def wall_clock() -> int:
    return time.time_ns()


def verification_metrics(metrics: Metrics) -> Callable[[Verification], None]:
    """Counts each verification of the ledger's hash chain, ``ok`` or ``failed``."""
    verifications = metrics.counter(
        "qtmesh_ledger_verifications_total",
        "Verifications of the proposal ledger's hash chain, by result",
        ["result"],
    )
    ok, failed = verifications.labels("ok"), verifications.labels("failed")
    return lambda verification: (ok if verification.intact else failed).inc()


def rejection_metrics(metrics: Metrics) -> Refused:
    """Counts each report an optimization cycle rejects, by reason."""
    rejected = metrics.counter(
        "qtmesh_reports_rejected_total",
        "Reports an optimization cycle read and rejected, by reason",
        ["reason"],
    )
    for reason in ("tampered", "undecryptable", "duplicate"):
        rejected.labels(reason)
    return lambda reason: rejected.labels(reason).inc()


def uses(config: MetaOptimizerConfig) -> list[Uses]:
    """Alpha-reporting's client, and the federation's plan stream when ``follow_plans``: followed,
    not a start-order dependency (the federation starts after the meta optimizer, whose
    recommendations it asks for; the follower reconnects until it is up)."""
    declared = [Uses(service="alpha-reporting", client=AlphaReportingClient)]
    if config.follow_plans:
        declared.append(Uses(service="federation", client=PlanFeed, followed=True))
    return declared


def app(*, clock: Clock = wall_clock, observe: Observer | None = None) -> App[MetaOptimizerConfig]:
    """The meta optimizer App; tests inject the ``clock`` that stamps cycles and proposals, and
    ``observe``, called after each federation event the plan follower recorded."""

    async def build(ctx: Context[MetaOptimizerConfig]) -> Built:
        config = ctx.config
        keyring = await asyncio.to_thread(config.load_keyring, service="meta-optimizer")
        store = await asyncio.to_thread(
            config.open, lambda url: LedgerStore(url, ttl_days=config.proposal_ttl_days)
        )
        alpha = ctx.client("alpha-reporting", AlphaReportingClient)
        optimizer = MetaOptimizer(
            store=store,
            source=alpha,
            keyring=keyring,
            settings=config.audit,
            clock=clock,
            queue_size=config.watch_queue_events,
            verified=verification_metrics(ctx.metrics),
            rejected=rejection_metrics(ctx.metrics),
        )

        tasks: list[asyncio.Task[None]] = []
        if config.auto_window_days:
            scheduler = CycleScheduler(
                optimizer=optimizer,
                stream=alpha,
                window_days=config.auto_window_days,
                settle_seconds=config.auto_settle_seconds,
                initial_backoff=config.reconnect_initial_seconds,
                max_backoff=config.reconnect_max_seconds,
            )
            tasks.append(asyncio.ensure_future(scheduler.run()))
        if config.follow_plans:
            follower = PlanFollower(
                optimizer=optimizer,
                stream=ctx.client("federation", PlanFeed),
                initial_backoff=config.reconnect_initial_seconds,
                max_backoff=config.reconnect_max_seconds,
                observe=observe,
            )
            tasks.append(asyncio.ensure_future(follower.run()))

        def drain() -> None:
            optimizer.hub.close_all()
            for task in tasks:
                task.cancel()

        async def close() -> None:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await store.run(store.close)

        return Built(
            services=[
                Service.of(
                    MetaOptimizerServicer(optimizer),
                    pb_grpc.add_MetaOptimizerServiceServicer_to_server,
                    pb.DESCRIPTOR.services_by_name["MetaOptimizerService"],
                ),
                agent_service(MetaOptimizerAgent(optimizer), executes=EXECUTES),
            ],
            drain=drain,
            close=close,
        )

    return App(
        name="meta-optimizer",
        summary="alpha audit, fleet proposals and the hash-chained proposal ledger",
        config_type=MetaOptimizerConfig,
        env_prefix=ENV_PREFIX,
        build=build,
        uses=uses,
    )


APP = app()
