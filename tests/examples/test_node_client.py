"""examples/node/client.mjs against a real federation (over a real agent server): health, the
plan stream resumed exactly once across a disconnect, and a decoded ErrorInfo."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from federation.client import FederationClient
from tests.helpers.federation import EVOLVE, FakeAgent, mesh, rec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "node"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (examples/node)")


async def _run_client(state_file: Path) -> dict:
    if not (EXAMPLE / "node_modules" / ".package-lock.json").is_file():
        pytest.fail("examples/node has no node_modules: run `make pytest` (or npm ci there)")
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(EXAMPLE / "client.mjs"),
        "--state-file",
        str(state_file),
        "--before-disconnect",
        "3",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    except TimeoutError:
        process.kill()
        raise
    assert process.returncode == 0, err.decode()
    return json.loads(out)


async def test_the_node_client_resumes_the_plan_stream_exactly_once_and_decodes_errors(tmp_path):
    owner = FakeAgent("owner", [rec("e", EVOLVE, 0.8)])
    async with mesh(tmp_path, [owner]) as fed:
        # The format `qtmesh up` writes (qtmesh.runtime.supervisor.Mesh.write_state).
        state = tmp_path / "mesh.json"
        state.write_text(
            json.dumps({"federation": {"address": fed.address, "pid": 1, "log": "f.log"}})
        )
        result = await _run_client(state)
        stored = [plan.sequence async for plan in FederationClient(fed.channel).list_plans()]
        every_event = []
        async for sequence, _ in FederationClient(fed.channel).subscribe(after_sequence=0):
            every_event.append(sequence)
            if sequence == int(result["generated_plans"][-1]):
                break

    assert result["address"] == fed.address
    assert result["health"] == "SERVING"
    generated = [int(s) for s in result["generated_plans"]]
    assert len(generated) == 6
    assert generated == stored

    first = result["first_connection"]
    second = result["second_connection"]
    assert len(first) == 3
    assert result["resumed_after_sequence"] == first[-1]["sequence"]
    # Everything the store holds, up to the last plan, arrived once, in order, across both
    # connections: the resumed one starts right after the last event the first one saw.
    received = [int(e["sequence"]) for e in [*first, *second]]
    assert received == every_event
    assert int(second[0]["sequence"]) == every_event[every_event.index(received[2]) + 1]
    assert [int(e["sequence"]) for e in [*first, *second] if e["event"] == "plan"] == generated
    # The executed first plan's updates are events with sequences of their own.
    updates = result["status_updates"]
    assert {u["plan_sequence"] for u in updates} == {str(generated[0])}
    assert [u["status"] for u in updates][-1] == "ACTION_STATUS_COMPLETED"
    assert all(int(u["sequence"]) not in generated for u in updates)
    assert result["exactly_once"] == {
        "increasing": True,
        "unique": True,
        "every_plan_once": True,
        "contiguous": True,
    }

    invalid = result["invalid"]
    assert invalid["code"] == "INVALID_ARGUMENT"
    assert invalid["details"].startswith("after_sequence: ")
    info = invalid["error_info"]
    assert info["code"] == 3
    assert info["reason"] == "INVALID_FIELD"
    assert info["domain"] == "federation.qtmesh"
    assert info["metadata"]["field"] == "after_sequence"
    assert info["metadata"]["request_id"] == invalid["request_id"]
    assert invalid["request_id"].startswith("node-example-")
