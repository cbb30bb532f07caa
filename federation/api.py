"""The spec's ``FederatedEngineV2``, a thin layer over :class:`federation.engine.Federation`.

``FederatedEngineV2(meta_learning_os=meta_os, sesa_engine=sesa)`` runs the real federation in
process with the meta-learning OS's engine as an agent (:class:`meta.agent.MetaAgent`, which
also executes the TuneLearning actions aimed at meta's parameters) and a SQLite plan store in a
temporary directory. ``generate_global_action_plan()`` is a coroutine, as the spec awaits it: it
is one :meth:`Federation.generate_plan` cycle, planned at the market time of the OS's latest
update (the wall clock before any), and returns the :class:`federation.plan.Plan`.

With an in-process ``sesa_engine`` the federation also asks SESA, as the mesh does: a
:class:`sesa.agent.SesaAgent` recommends an evolution when none ran or the latest is a day old,
and executes RUN_EVOLUTION through ``sesa_engine.run_evolution`` (on the engine's own symbol and
bars), tuned by the meta OS's current parameters (:class:`sesa.priors.Priors`: mutation rate and
magnitude, the Q-learning seed), once per idempotency key. ``generate_global_action_plan(
execute=True)`` runs the plan's actions in the background; :meth:`FederatedEngineV2.settle`
waits for them. There is no market in process, so candidates go to no shadow book.

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
from qtmesh.base.contract import Agent
from qtmesh.base.errors import FailedPrecondition, InvalidArgument
from qtmesh.base.storage import create_engine, sqlite_url
from qtmesh.runtime.channels import open_channel
from qtmesh.runtime.supervisor import STATE_FILE, address_in_state
from sesa.agent import EvolutionOrder, EvolutionReport, FinishedEvolution, SesaAgent, evolution_id
from sesa.api import SESAEngine
from sesa.evolution import EvolutionConfig
from sesa.priors import Priors, TunedParameters


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
        self._sesa: SesaAgent | None = None

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
            agents: dict[str, Agent] = {"meta": MetaAgent(await self.meta_learning_os.start())}
            if self.sesa_engine is not None and self.sesa_engine.address is None:
                agents["sesa"] = self._sesa_agent(self.sesa_engine)
            self._federation = Federation(
                config=self.config,
                agents=agents,
                owners=agents,
                store=self.store,
                market_clock=self._market_clock,
            )
        return self._federation

    def _priors(self) -> Priors:
        engine = self.meta_learning_os.engine if self.meta_learning_os is not None else None
        if engine is None:
            return Priors(None, "no meta-learning OS in process")
        p = engine.parameters
        return Priors(TunedParameters.of(p))

    def _sesa_agent(self, engine: SESAEngine) -> SesaAgent:
        """SESA as the federation's agent in process (module docstring)."""

        async def check(order: EvolutionOrder) -> None:
            for i, symbol in enumerate(order.symbols):
                if symbol != engine.symbol:
                    raise InvalidArgument(
                        f"action.parameters.run_evolution.symbols[{i}]",
                        f"the in-process SESA evolves {engine.symbol!r} only, not {symbol!r}",
                    )

        async def run(order: EvolutionOrder) -> EvolutionReport:
            priors = self._priors()
            generations = order.generations or EvolutionConfig().num_generations
            config = priors.config(EvolutionConfig(num_generations=generations))
            seeds = priors.seeds(engine.evaluation_engine.policy)
            result = await engine.run_evolution(initial_strategies=seeds, config=config)
            finished = FinishedEvolution(
                result,
                engine.symbol,
                engine.last_sector,
                engine.last_time,
                evolution_id("run_evolution", order.key, engine.symbol),
            )
            return EvolutionReport(
                order=order,
                priors=priors,
                config=config,
                seeds=tuple(seeds),
                evolutions=(finished,),
            )

        agent = SesaAgent(run_evolution=run, check_order=check, default_symbols=(engine.symbol,))
        self._sesa = agent
        return agent

    async def settle(self, timeout: float | None = None) -> bool:
        """Waits until the executions ``execute=True`` started are done; False on timeout."""
        if self._federation is None:
            return True
        return await self._federation.wait_for_executions(timeout)

    async def generate_global_action_plan(self, *, execute: bool = False) -> Plan:
        """One planning cycle; with ``execute``, its actions run in the background."""
        if self.address is not None:
            async with open_channel(self.address) as channel:
                return await FederationClient(channel).generate_plan(execute=execute)
        federation = await self.federation()
        self._remember_direct_run()
        return await federation.generate_plan(execute=execute)

    def _remember_direct_run(self) -> None:
        """An evolution the caller ran on the engine itself counts as SESA's latest, as one the
        agent ran does: SESA does not ask for another while it is fresh."""
        engine, agent = self.sesa_engine, self._sesa
        if engine is None or agent is None or engine.last_result is None:
            return
        if agent.latest is not None and agent.latest.result is engine.last_result:
            return
        agent.remember(
            FinishedEvolution(
                engine.last_result, engine.symbol, engine.last_sector, engine.last_time
            )
        )

    async def close(self) -> None:
        if self._federation is not None:
            await self._federation.close()
        if self._sesa is not None:
            await self._sesa.close()
        if self.store is not None:
            self.store.close()
        if self._directory is not None:
            self._directory.cleanup()
