"""Async client of the meta service, returning the same domain objects as the meta engine; and
meta's own reader of SESA's evolution stream (meta sits below SESA, so it cannot use
``sesa.client``: it reads WatchEvolutions through the generated stub)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc

from meta import _convert as convert
from meta.engine import TrialLog, UpdateResult
from meta.model import (
    CallerState,
    Evaluation,
    MetaDecision,
    MetaParameters,
    MetaState,
    ParameterChange,
    Trade,
)
from meta.sesa_evaluations import EvolutionEvent
from qtmesh.api.meta.v1 import meta_pb2 as pb
from qtmesh.api.meta.v1 import meta_pb2_grpc as pb_grpc
from qtmesh.api.sesa.v1 import sesa_pb2, sesa_pb2_grpc
from qtmesh.base.convert import timestamp
from qtmesh.runtime.status import mesh_stub


class MetaClient:
    """Calls MetaService over ``channel``; failures raise the server's MeshError subclass."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = mesh_stub(pb_grpc.MetaServiceStub, channel)

    async def update(
        self,
        trades: Sequence[Trade] = (),
        evaluations: Sequence[Evaluation] = (),
        *,
        now: int | None = None,
        state: CallerState | None = None,
    ) -> UpdateResult:
        request = pb.MetaUpdateRequest(
            trades=[convert.trade_to_proto(t) for t in trades],
            evaluations=[convert.evaluation_to_proto(e) for e in evaluations],
            state=convert.caller_state_to_proto(state or CallerState()),
        )
        if now is not None:
            request.now.CopyFrom(timestamp(now))
        response = await self._stub.MetaUpdate(request)
        return UpdateResult(
            convert.parameters_from_proto(response.parameters),
            tuple(convert.change_from_proto(c) for c in response.parameter_changes),
            tuple(
                convert.decision_from_proto(d, field=f"decisions[{i}]")
                for i, d in enumerate(response.decisions)
            ),
            response.adapted,
            response.detail,
        )

    async def decide(
        self, state: MetaState, *, rule_overrides: Mapping[str, float] | None = None
    ) -> list[MetaDecision]:
        request = pb.DecideRequest(
            state=convert.state_to_proto(state), rule_overrides=dict(rule_overrides or {})
        )
        response = await self._stub.Decide(request)
        return [
            convert.decision_from_proto(d, field=f"decisions[{i}]")
            for i, d in enumerate(response.decisions)
        ]

    async def parameters(self) -> MetaParameters:
        response = await self._stub.GetParameters(pb.GetParametersRequest())
        return convert.parameters_from_proto(response.parameters)

    async def watch(
        self, *, after_version: int | None = None
    ) -> AsyncIterator[tuple[MetaParameters, tuple[ParameterChange, ...]]]:
        """Yields every version after ``after_version`` (default: from the current one), once,
        then each new version as it is written."""
        request = pb.WatchParametersRequest()
        if after_version is not None:
            request.after_version = after_version
        call = self._stub.WatchParameters(request)
        try:
            async for message in call:
                yield (
                    convert.parameters_from_proto(message.parameters),
                    tuple(convert.change_from_proto(c) for c in message.parameter_changes),
                )
        finally:
            call.cancel()

    async def trials(self, *, page_size: int = 0) -> TrialLog:
        """The whole SESA trial log (every page)."""
        trials: list[Any] = []
        token = ""
        while True:
            response = await self._stub.ListSesaTrials(
                pb.ListSesaTrialsRequest(page_size=page_size, page_token=token),
            )
            log = convert.trial_log_from_proto(response)
            trials += log.trials
            token = response.next_page_token
            if not token:
                return TrialLog(tuple(trials), log.total_trials, log.total_evaluations)


class SesaEvolutionsClient:
    """Reads SESA's WatchEvolutions over ``channel`` as domain events (implements
    :class:`meta.sesa_evaluations.EvolutionStream`); failures raise the server's MeshError."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = mesh_stub(sesa_pb2_grpc.SesaServiceStub, channel)

    async def watch_evolutions(
        self, *, after_sequence: int | None = None
    ) -> AsyncIterator[EvolutionEvent]:
        """Every kept event after ``after_sequence`` (unset: live events only), then live ones."""
        request = sesa_pb2.WatchEvolutionsRequest()
        if after_sequence is not None:
            request.after_sequence = after_sequence
        call = self._stub.WatchEvolutions(request)
        try:
            async for message in call:
                yield convert.evolution_event_from_proto(message)
        finally:
            call.cancel()
