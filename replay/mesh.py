"""The mesh a replay runs on: every service as its own process on ephemeral ports, with fresh
stores in one data directory, planning and auditing left to the replay loop.

The closed loop starts every service of the catalog; the static arm starts the market alone.
The settings a replay needs win over the caller's environment; every other ``QTMESH_*``
variable the caller set still applies.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import grpc

from alpha_reporting.client import AlphaReportingClient
from federation.client import FederationClient
from market.client import MarketClient
from meta.client import MetaClient
from meta_optimizer.client import MetaOptimizerClient
from qtmesh.runtime import catalog
from qtmesh.runtime.channels import open_channel
from qtmesh.runtime.supervisor import running_mesh
from replay.config import Arm, MarketSource
from replay.driver import MeshClients

# Services whose stores live under QTMESH_<NAME>_DATA_DIR.
_DATA_DIR_SERVICES = (
    "MARKET",
    "ALPHA_REPORTING",
    "META_OPTIMIZER",
    "RISK",
    "CEO",
    "META",
    "SESA",
    "FEDERATION",
)


def environment(data_dir: Path, source: MarketSource) -> dict[str, str]:
    """The variables that make a mesh a replay's (module docstring)."""
    env = {f"QTMESH_{name}_DATA_DIR": str(data_dir) for name in _DATA_DIR_SERVICES}
    env |= {
        "QTMESH_ALPHA_REPORTING_KEYRING_FILE": str(data_dir / "alpha-keyring"),
        "QTMESH_MEMORY_SQLITE_PATH": str(data_dir / "memory.db"),
        # The replay plans at its cadence on the market clock, not on the 30-second timer.
        "QTMESH_FEDERATION_GAP_UPDATE_INTERVAL_SECONDS": "0",
        # ... and audits each day once its reports are in, not after wall-clock quiet.
        "QTMESH_META_OPTIMIZER_AUTO_WINDOW_DAYS": "0",
        "QTMESH_MARKET_SEED": str(source.seed),
        "QTMESH_MARKET_SYNTHETIC_NOISE": "true" if source.noise else "false",
    }
    if source.data_path is not None:
        env["QTMESH_MARKET_DATA_PATH"] = str(source.data_path.resolve())
    return env


@contextlib.asynccontextmanager
async def replay_mesh(
    arm: Arm, source: MarketSource, *, data_dir: Path, log_dir: Path
) -> AsyncIterator[tuple[MarketClient, MeshClients | None]]:
    """Starts the arm's services and yields the market's client and, in the closed loop, the
    rest the replay loop calls; stops them all on exit."""
    names = catalog.names() if arm is Arm.CLOSED else ["market"]
    env: Mapping[str, str] = {**os.environ, **environment(data_dir, source)}
    async with (
        running_mesh(names, ephemeral=True, log_dir=log_dir, env=env) as mesh,
        contextlib.AsyncExitStack() as stack,
    ):

        async def channel(name: str) -> grpc.aio.Channel:
            return await stack.enter_async_context(open_channel(mesh.addresses[name]))

        market = MarketClient(await channel("market"))
        clients = None
        if arm is Arm.CLOSED:
            clients = MeshClients(
                federation=FederationClient(await channel("federation")),
                reports=AlphaReportingClient(await channel("alpha-reporting")),
                optimizer=MetaOptimizerClient(await channel("meta-optimizer")),
                meta=MetaClient(await channel("meta")),
            )
        yield market, clients
