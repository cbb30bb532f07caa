"""The spec's ``FederatedEngineV2``, a thin layer over :class:`federation.engine.Federation`.

``FederatedEngineV2(meta_learning_os=meta_os, sesa_engine=sesa)`` runs the real federation in
process with the meta-learning OS's engine as its agent (:class:`meta.agent.MetaAgent`, which
also executes the TuneLearning actions aimed at meta's parameters) and a SQLite plan store in a
temporary directory. ``generate_global_action_plan()`` is a coroutine, as the spec awaits it: it
is one :meth:`Federation.generate_plan` cycle, planned at the market time of the OS's latest
update (the wall clock before any), and returns the :class:`federation.plan.Plan`.

``sesa_engine`` is kept for the caller (``self.sesa_engine``): in process, RunEvolution actions
of a plan are recommendations that no owner executes (run them with
``sesa_engine.run_evolution``).

Against a running mesh, ``FederatedEngineV2(address="host:port")`` (or
:meth:`FederatedEngineV2.from_mesh`, the ``federation`` entry of ``.qtmesh/mesh.json``) asks the
federation service through :class:`federation.client.FederationClient` (``generate_plan``); the
service asks every agent of the mesh, meta and SESA included, and drives them itself. A channel
is opened per call, on the caller's event loop (see :mod:`meta.api`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from federation.client import FederationClient
from federation.config import FederationConfig
from federation.engine import Federation
from federation.plan import Plan
from federation.store import PlanStore
from meta.agent import MetaAgent
from meta.api import MetaLearningOS
from qtmesh.base.errors import FailedPrecondition
from qtmesh.base.storage import create_engine, sqlite_url
from qtmesh.runtime.channels import open_channel
from qtmesh.runtime.supervisor import STATE_FILE, address_in_state
from sesa.api import SESAEngine


class FederatedEngineV2:
    """The federation in process over the meta agent, or a mesh's federation service at
    ``address`` (module docstring)."""

    def __init__(
        self,
        *,
        meta_learning_os: MetaLearningOS | None = None,
        sesa_engine: SESAEngine | None = None,
        config: FederationConfig | None = None,
        address: str | None = None,
    ) -> None:
        if address is None and (meta_learning_os is None or meta_learning_os.engine is None):
            raise FailedPrecondition(
                "an in-process federation needs an in-process meta_learning_os; "
                "give the federation service's address to use a mesh"
            )
        self.meta_learning_os = meta_learning_os
        self.sesa_engine = sesa_engine
        self.config = config or FederationConfig()
        self.address = address
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self.store: PlanStore | None = None
        if address is None:
            self._directory = tempfile.TemporaryDirectory(prefix="federation-")
            path = Path(self._directory.name) / "plans.db"
            self.store = PlanStore(create_engine(sqlite_url(path)))
        self._federation: Federation | None = None

    @classmethod
    def from_mesh(cls, *, mesh_file: Path = STATE_FILE) -> FederatedEngineV2:
        """The federation service of the mesh ``qtmesh up`` started (``mesh_file``)."""
        return cls(address=address_in_state("federation", mesh_file))

    def _market_clock(self) -> tuple[int, int] | None:
        at = self.meta_learning_os.last_time if self.meta_learning_os is not None else None
        return None if at is None else (at, 0)

    async def federation(self) -> Federation:
        """The in-process federation, built once."""
        if self.store is None or self.meta_learning_os is None:
            raise FailedPrecondition(f"this engine is the federation service at {self.address}")
        if self._federation is None:
            agent = MetaAgent(await self.meta_learning_os.start())
            self._federation = Federation(
                config=self.config,
                agents={"meta": agent},
                owners={"meta": agent},
                store=self.store,
                market_clock=self._market_clock,
            )
        return self._federation

    async def generate_global_action_plan(self, *, execute: bool = False) -> Plan:
        """One planning cycle; with ``execute``, meta's own actions run in the background."""
        if self.address is not None:
            async with open_channel(self.address) as channel:
                return await FederationClient(channel).generate_plan(execute=execute)
        federation = await self.federation()
        return await federation.generate_plan(execute=execute)

    async def close(self) -> None:
        if self._federation is not None:
            await self._federation.close()
        if self.store is not None:
            self.store.close()
        if self._directory is not None:
            self._directory.cleanup()
