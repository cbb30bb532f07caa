"""The spec's synchronous meta-optimizer service over the client, against a served optimizer, and
where it looks for one."""

from __future__ import annotations

import asyncio
import json

import pytest

from meta_optimizer import get_meta_optimizer_service
from qtmesh.base.errors import FailedPrecondition, InvalidArgument
from tests.helpers.meta_optimizer import Progress, optimizer, world

SPEC_KEYS = {"id", "type", "action", "rationale", "target"}


def cycle_and_history(address: str) -> tuple[list[dict], list[dict], list[dict]]:
    with get_meta_optimizer_service(address) as service:
        proposals = service.run_optimization_cycle()
        return proposals, service.get_proposal_history(), service.proposal_history


async def test_records_carry_the_spec_keys_and_the_ledger_fields(tmp_path):
    async with world(tmp_path) as w, optimizer(w, tmp_path, Progress()) as (client, running):
        proposals, history, prop = await asyncio.to_thread(cycle_and_history, running.address)
        stored = await client.proposals()
    assert proposals
    assert history == prop
    assert [p["id"] for p in history] == [p.id for p in stored]
    for record, p in zip(history, stored, strict=True):
        assert set(record) >= SPEC_KEYS
        assert record["type"] == p.type.name
        assert record["target"] == p.target_sector
        assert record["ledger_index"] == p.ledger_index
        assert record["entry_hash"] == p.entry_hash


def test_a_mesh_file_must_list_the_service_and_a_remote_one_needs_a_file(tmp_path):
    with pytest.raises(FailedPrecondition, match="qtmesh up"):
        get_meta_optimizer_service(mesh_file=tmp_path / "mesh.json", embedded=False)
    (tmp_path / "mesh.json").write_text(json.dumps({"meta": {"address": "127.0.0.1:1"}}))
    # A mesh file that exists is where the service is: no quiet fall-back to in process.
    with pytest.raises(FailedPrecondition, match="no meta-optimizer service"):
        get_meta_optimizer_service(mesh_file=tmp_path / "mesh.json")


def test_an_embedded_service_has_no_address():
    with pytest.raises(InvalidArgument, match="embedded"):
        get_meta_optimizer_service("localhost:1", embedded=True)
