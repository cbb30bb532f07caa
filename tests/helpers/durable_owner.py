"""An owner of HALT_TRADING in a process of its own, with a durable record (a JSON file), for
tests that kill an owner mid-execution: run as a script by tests/federation/test_recovery.py.

    python durable_owner.py RECORD PORT MODE

It recommends one portfolio halt and applies each idempotency key once into RECORD, which
also lists every ExecuteAction it received. MODE ``die-after-applying``: it SIGKILLs itself
after writing the change and before answering (its caller never hears back); ``serve``:
it answers. Prints "address HOST:PORT" once serving; PORT 0 picks a free one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import structlog

from qtmesh.base import contract as c
from qtmesh.runtime.agent_service import agent_service
from qtmesh.runtime.server import MeshServer, ServerConfig


class Owner:
    name = "owner"

    def __init__(self, record: Path, *, die_after_applying: bool) -> None:
        self.record = record
        self.die_after_applying = die_after_applying

    def _read(self) -> dict:
        if not self.record.exists():
            return {"applied": {}, "calls": []}
        return json.loads(self.record.read_text())

    def _write(self, data: dict) -> None:
        temporary = self.record.with_suffix(".tmp")
        temporary.write_text(json.dumps(data))
        os.replace(temporary, self.record)  # atomic: a kill leaves the old or the new record

    async def recommend(self, context: c.AgentContext) -> list[c.Recommendation]:
        return [
            c.Recommendation(
                id="halt",
                priority=c.Priority.HIGH,
                target="portfolio",
                parameters=c.HaltTrading(scope="portfolio"),
                confidence=0.9,
                rationale="test",
            )
        ]

    async def execute(self, action: c.Action, *, plan_sequence: int) -> c.ExecutionResult:
        data = self._read()
        key = action.idempotency_key
        data["calls"].append(key)
        first = key not in data["applied"]
        if first:
            data["applied"][key] = f"halted for plan {plan_sequence}"
        self._write(data)
        if self.die_after_applying:
            os.kill(os.getpid(), signal.SIGKILL)
        return c.ExecutionResult(first, data["applied"][key])

    async def execution(self, idempotency_key: str) -> c.Execution:
        applied = self._read()["applied"]
        if idempotency_key in applied:
            return c.Execution(c.ExecutionState.APPLIED, applied[idempotency_key])
        return c.NOT_APPLIED


async def main(record: Path, port: int, mode: str) -> None:
    # The log goes to stderr: stdout carries the address alone.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    owner = Owner(record, die_after_applying=mode == "die-after-applying")
    server = MeshServer(
        name="owner",
        services=[agent_service(owner, executes=[c.ActionType.HALT_TRADING])],
        config=ServerConfig(port=port, grace_seconds=1.0),
    )
    print(f"address {await server.start()}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
