"""The federation the benchmarks measure: `qtmesh serve federation` in its own process, asking
``count`` agents served by one process of benchmarks._agents; both stop when the block ends.

    async with federation_with_agents(count=7) as running:
        running.federation.address, running.agents, running.env
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from qtmesh.runtime.supervisor import Child, spawn


@dataclasses.dataclass
class Running:
    federation: Child
    # Each agent's name and address.
    agents: dict[str, str]
    # The environment the federation runs with (QTMESH_ADDRESSES names the agents and it).
    env: dict[str, str]
    directory: Path
    children: list[Child]

    async def spawn(self, name: str, argv: list[str]) -> Child:
        """Another process beside them, with the same environment, stopped with them."""
        return await spawn(
            name,
            argv,
            env=self.env,
            log_path=self.directory / f"{name}.log",
            into=self.children,
        )


@contextlib.asynccontextmanager
async def federation_with_agents(
    *, count: int, settings: Mapping[str, str] | None = None
) -> AsyncIterator[Running]:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        children: list[Child] = []
        try:
            agents = await spawn(
                "agents",
                ["-m", "benchmarks._agents", "--count", str(count)],
                env=os.environ,
                log_path=directory / "agents.log",
                into=children,
            )
            addresses = json.loads(agents.address)
            env = {
                **os.environ,
                "QTMESH_ADDRESSES": ",".join(f"{k}={v}" for k, v in addresses.items()),
                "QTMESH_FEDERATION_AGENTS": ",".join(addresses),
                "QTMESH_FEDERATION_GAP_UPDATE_INTERVAL_SECONDS": "0",
                "QTMESH_FEDERATION_DATA_DIR": tmp,
                "QTMESH_LOG_LEVEL": "warning",
                **(settings or {}),
            }
            federation = await spawn(
                "federation",
                ["-m", "qtmesh", "serve", "federation", "--port", "0"],
                env=env,
                log_path=directory / "federation.log",
                into=children,
            )
            env["QTMESH_ADDRESSES"] += f",federation={federation.address}"
            yield Running(federation, addresses, env, directory, children)
        finally:
            for child in children:
                if child.process.returncode is None:
                    child.process.terminate()
                    await child.process.wait()
