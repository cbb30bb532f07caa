"""The spec's meta-optimizer examples run unchanged (but for imports) against a served meta
optimizer found through .qtmesh/mesh.json, as `qtmesh up` writes it."""

from __future__ import annotations

import asyncio
import json

from examples import spec_meta_optimizer
from tests.helpers.meta_optimizer import Progress, optimizer, world


async def test_both_snippets_run_a_cycle_and_read_its_proposals_back(tmp_path, monkeypatch, capsys):
    async with world(tmp_path) as w, optimizer(w, tmp_path, Progress()) as (_, running):
        state = tmp_path / "cwd" / ".qtmesh"
        state.mkdir(parents=True)
        mesh = {"meta-optimizer": {"address": running.address}}
        (state / "mesh.json").write_text(json.dumps(mesh))
        monkeypatch.chdir(tmp_path / "cwd")
        # The facade is synchronous and blocks: off this loop, which serves the servers.
        proposals = await asyncio.to_thread(spec_meta_optimizer.run_cycle)
        history = await asyncio.to_thread(spec_meta_optimizer.audit_history)
    out = capsys.readouterr().out
    assert proposals, "the planted reports call for proposals"
    assert f"Cycle Complete. Generated {len(proposals)} Proposals." in out
    for p in proposals:
        assert f"[{p['type']}] Action: {p['action']}" in out
        assert p["rationale"]
    assert [p["id"] for p in history] == [p["id"] for p in proposals]
    for prop in history:
        assert f"Recorded Proposal ID: {prop['id']} for Sector: {prop['target']}" in out
