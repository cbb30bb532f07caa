"""Services as child processes (``qtmesh serve NAME --port 0``), for tests that SIGKILL them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from qtmesh.runtime.supervisor import Child, spawn


@contextlib.asynccontextmanager
async def service_process(
    name: str, *, env: Mapping[str, str], log_path: Path
) -> AsyncIterator[Child]:
    """``name`` served by a child process with ``env`` on top of this one's; its address is
    ``child.address``. Stopped with SIGTERM on exit unless the test killed it."""
    child = await spawn(
        name,
        ["-m", "qtmesh", "serve", name, "--port", "0"],
        env={**os.environ, **env},
        log_path=log_path,
    )
    try:
        yield child
    finally:
        if child.process.returncode is None:
            child.process.terminate()
            await child.process.wait()


async def kill(child: Child) -> None:
    """SIGKILL: the service gets no chance to record anything."""
    child.process.kill()
    assert await child.process.wait() == -9
