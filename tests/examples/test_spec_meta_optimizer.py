"""The spec's meta-optimizer examples run unchanged (but for imports) against a served meta
optimizer found through .qtmesh/mesh.json, as `qtmesh up` writes it, and in process where no
mesh runs; the embedded service audits as the served one does."""

from __future__ import annotations

import asyncio
import json

from examples import spec_meta_optimizer
from meta_optimizer import get_meta_optimizer_service
from meta_optimizer.api import fleet_day_reports
from tests.helpers.meta_optimizer import ALPHAS, Progress, optimizer, planted, world


def assert_printed(out: str, proposals: list[dict], history: list[dict]) -> None:
    assert f"Cycle Complete. Generated {len(proposals)} Proposals." in out
    for p in proposals:
        assert f"[{p['type']}] Action: {p['action']}" in out
        assert p["rationale"]
    for prop in history:
        assert f"Recorded Proposal ID: {prop['id']} for Sector: {prop['target']}" in out


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
    assert proposals, "the planted reports call for proposals"
    assert [p["id"] for p in history] == [p["id"] for p in proposals]
    assert_printed(capsys.readouterr().out, proposals, history)
    assert not (tmp_path / "cwd" / ".qtmesh" / "embedded").exists()


def test_without_a_mesh_the_snippets_audit_the_paper_fleet_in_process(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    proposals = spec_meta_optimizer.run_cycle()
    history = spec_meta_optimizer.audit_history()
    # The second snippet's service is another object: it reads the ledger the first one wrote.
    assert [p["id"] for p in history] == [p["id"] for p in proposals]
    assert_printed(capsys.readouterr().out, proposals, history)
    ledger = tmp_path / ".qtmesh" / "embedded" / "meta-optimizer" / "ledger.db"
    assert ledger.is_file()
    with get_meta_optimizer_service(embedded=True, data_dir=ledger.parent) as again:
        cycle = again.run_cycle()
    reports = fleet_day_reports()
    assert cycle.reports_audited == len(reports)
    assert cycle.reports_rejected == 0
    assert {a.sector for a in cycle.sectors} == {r.sector for r in reports}
    days = sorted({r.trading_date for r in reports})
    assert (cycle.start_date, cycle.end_date) == ("", "")
    assert {(a.first_date, a.last_date) for a in cycle.sectors} == {(days[0], days[-1])}


async def test_embedded_audit_proposes_what_the_served_one_proposes(tmp_path):
    reports = [r for sector, values in ALPHAS.items() for r in planted(sector, values)]
    async with world(tmp_path) as w, optimizer(w, tmp_path, Progress()) as (client, _):
        served = await client.run_cycle()

    def embedded():
        with get_meta_optimizer_service(embedded=True, reports=reports, data_dir=None) as svc:
            return svc.run_cycle(), svc.get_proposal_history()

    cycle, history = await asyncio.to_thread(embedded)

    def decided(c):
        return [
            (p.type, p.target_sector, p.counter_sector, p.action, p.p_value) for p in c.proposals
        ]

    assert served.proposals
    assert decided(cycle) == decided(served)
    assert cycle.sectors == served.sectors
    assert cycle.dominant_sector == served.dominant_sector
    assert [p["id"] for p in history] == [p.id for p in cycle.proposals]
    assert {p["type"] for p in history} == {p.type.name for p in served.proposals}
