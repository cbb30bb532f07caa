"""The spec's ``get_meta_optimizer_service()``: a synchronous facade over
:class:`meta_optimizer.client.MetaOptimizerClient`.

The spec calls the service without ``await``, so its methods are plain functions. Each runs the
client's coroutine on an event loop the service owns, in a daemon thread
(``asyncio.run_coroutine_threadsafe``), and waits for the result. One loop for the service's
whole life, rather than ``asyncio.run`` per call, because a gRPC aio channel belongs to the loop
it was opened on (one channel serves every call), and because it also works when the caller is
itself inside a running event loop (a notebook, an async app), where ``asyncio.run`` refuses.
:meth:`MetaOptimizerService.close` closes the channel and stops the loop.

Where the service is: ``address`` (``host:port``) when given, else the ``meta-optimizer`` entry
of ``.qtmesh/mesh.json``, which ``qtmesh up`` writes. The meta optimizer audits the encrypted
alpha reports of the mesh's alpha-reporting service, so it needs a running mesh.

Records are dicts with the spec's keys: ``id``, ``type`` (``SCALE_UP``, ...), ``action``,
``rationale``, ``target`` (the sector), and the other ledger fields (``counter_sector``,
``confidence``, ``p_value``, ``factor``, ``allocation``, ``cycle_id``, ``create_time``,
``ledger_index``, ``entry_hash``, ``state``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from meta_optimizer.client import MetaOptimizerClient
from meta_optimizer.ledger import Proposal
from qtmesh.runtime.channels import open_channel
from qtmesh.runtime.supervisor import STATE_FILE, address_in_state

SERVICE = "meta-optimizer"
_T = TypeVar("_T")


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


class MetaOptimizerService:
    """The meta optimizer at ``address``, called synchronously (module docstring)."""

    def __init__(self, address: str, *, timeout: float = 30.0) -> None:
        self.address = address
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="meta-optimizer-api", daemon=True
        )
        self._thread.start()

        async def connect() -> Any:
            return open_channel(address, timeout=timeout)

        try:
            self._channel = self._call(connect())
        except BaseException:
            self._stop()
            raise
        self._client = MetaOptimizerClient(self._channel)

    def _call(self, work: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def run_optimization_cycle(self) -> list[dict[str, Any]]:
        """Audits the alpha reports and returns the cycle's new proposals."""
        cycle = self._call(self._client.run_cycle())
        return [proposal_record(p) for p in cycle.proposals]

    def get_proposal_history(self) -> list[dict[str, Any]]:
        """Every proposal in the ledger, oldest first."""
        return [proposal_record(p) for p in self._call(self._client.proposals())]

    @property
    def proposal_history(self) -> list[dict[str, Any]]:
        return self.get_proposal_history()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self._channel.close())
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
    address: str | None = None, *, mesh_file: Path = STATE_FILE
) -> MetaOptimizerService:
    """The meta optimizer at ``address``, or where ``mesh_file`` says it listens."""
    return MetaOptimizerService(address or address_in_state(SERVICE, mesh_file))
