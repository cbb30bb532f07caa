"""The meta optimizer over gRPC, reading real alpha-reporting servers: cycles on planted reports,
the ledger's pages, verification and restarts, rejected reports (tampered, rotated-out key), the
pulse, the agent contract and bad requests."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from alpha_reporting.client import AlphaReportingClient
from alpha_reporting.config import AlphaReportingConfig
from alpha_reporting.crypto import Keyring, seal
from alpha_reporting.service import app as alpha_app
from alpha_reporting.store import reports as report_table
from meta_optimizer.audit import ProposalType
from meta_optimizer.client import MetaOptimizerClient
from meta_optimizer.config import MetaOptimizerConfig
from meta_optimizer.engine import open_reports
from meta_optimizer.ledger import CycleStatus, hash_of
from meta_optimizer.service import app as metaopt_app
from meta_optimizer.store import _proposal_row, ledger
from qtmesh.api.metaoptimizer.v1 import meta_optimizer_pb2 as pb
from qtmesh.api.metaoptimizer.v1 import meta_optimizer_pb2_grpc as pb_grpc
from qtmesh.base.config import Secret
from qtmesh.base.contract import Action, ActionType, AdjustExposure, AgentContext, Priority
from qtmesh.base.convert import timestamp
from qtmesh.base.errors import InvalidArgument, NotFound
from qtmesh.base.storage import create_engine
from qtmesh.runtime import catalog
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.runtime.status import error_info
from qtmesh.testing import serving_app
from tests.helpers.meta_optimizer import day_end, noise, planted

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 32).decode()
T0 = 1_800_000_000 * 10**9


class Ticks:
    """A clock that moves one second per reading."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        self.now += 10**9
        return self.now


ALPHAS = {
    "Tech": noise(1, 0.010, 0.003),
    "Energy": noise(2, -0.008, 0.003),
    "Crypto": noise(3, 0.000, 0.003),
    "Financials": noise(4, 0.001, 0.003),
}


@contextlib.asynccontextmanager
async def services(
    tmp_path: Path,
    *,
    alpha_keys: str = f"k1:{K1}",
    optimizer_keys: str = f"k1:{K1}",
    retired: tuple[str, ...] = (),
    clock: Ticks | None = None,
):
    alpha_config = AlphaReportingConfig(
        data_dir=tmp_path / "alpha", keyring=Secret(alpha_keys), watch_market=False
    )
    async with serving_app(alpha_app(), alpha_config) as alpha:
        channels = ChannelConfig(addresses={"alpha-reporting": alpha.address})
        config = MetaOptimizerConfig(
            data_dir=tmp_path / "metaopt",
            keyring=Secret(optimizer_keys),
            retired_key_ids=retired,
            auto_window_days=0,  # the tests ask for every cycle they check
            follow_plans=False,  # no federation here (test_lifecycle_service.py has one)
        )
        async with serving_app(
            metaopt_app(clock=clock or Ticks()), config, channel_config=channels
        ) as optimizer:
            yield (
                AlphaReportingClient(alpha.channel),
                MetaOptimizerClient(optimizer.channel),
                optimizer,
            )


async def submit(alpha: AlphaReportingClient, alphas=ALPHAS) -> None:
    for sector, values in alphas.items():
        for report in planted(sector, values):
            await alpha.submit(report)


async def test_a_cycle_audits_the_reports_and_appends_its_proposals(tmp_path):
    async with services(tmp_path) as (alpha, client, _):
        await submit(alpha)
        cycle = await client.run_cycle()
        assert cycle.status is CycleStatus.SUCCEEDED
        assert cycle.reports_audited == 32
        assert cycle.dominant_sector == "Tech"
        assert [a.sector for a in cycle.sectors][:1] == ["Tech"]
        assert cycle.gap_test.significant
        assert (cycle.gap_test.best_sector, cycle.gap_test.worst_sector) == ("Tech", "Energy")
        assert [(p.type, p.target_sector) for p in cycle.proposals] == [
            (ProposalType.REINFORCEMENT, "Tech"),
            (ProposalType.RISK_MITIGATION, "Energy"),
            (ProposalType.ARB_MISSION, "Tech"),
        ]
        assert [p.ledger_index for p in cycle.proposals] == [0, 1, 2]
        assert cycle.head_hash == cycle.proposals[-1].entry_hash
        assert cycle.duration_seconds > 0
        first = cycle.proposals[0]
        assert first.id == "cycle-000001-1"
        assert first.create_time == T0 + 10**9
        assert await client.proposal(first.id) == first
        with pytest.raises(NotFound):
            await client.proposal("cycle-999999-1")
        # A window narrows the audit to its days.
        narrow = await client.run_cycle(start_date="2026-02-05", end_date="2026-02-06")
        assert narrow.reports_audited == 8
        assert {(a.first_date, a.last_date) for a in narrow.sectors} == {
            ("2026-02-05", "2026-02-06")
        }
        assert narrow.proposals == ()  # two days are fewer than min_days
        verified = await client.verify()
        assert verified.intact
        assert verified.entry_count == 3
        assert verified.head_hash == cycle.head_hash
        pulse = await client.pulse()
        assert pulse.last_cycle == narrow
        assert (pulse.cycle_count, pulse.proposal_count) == (2, 3)
        assert pulse.arb_missions == ()


async def test_the_ledger_pages_filters_and_survives_a_restart(tmp_path):
    clock = Ticks()
    async with services(tmp_path, clock=clock) as (alpha, client, _):
        await submit(alpha)
        for _ in range(3):
            await client.run_cycle()
        first, token = await client.proposals_page(page_size=4)
        assert len(first) == 4
        await client.run_cycle()  # appended entries come after every earlier page
        rest = []
        while token:
            page, token = await client.proposals_page(page_size=4, page_token=token)
            rest += page
        everything = await client.proposals()
        assert first + rest == everything
        assert [p.ledger_index for p in everything] == list(range(12))
        energy = await client.proposals(sector="Energy")
        assert {p.type for p in energy} == {ProposalType.RISK_MITIGATION, ProposalType.ARB_MISSION}
        arbs = await client.proposals(type=ProposalType.ARB_MISSION)
        assert [p.cycle_id for p in arbs] == [f"cycle-00000{i}" for i in range(1, 5)]
        third = [p for p in everything if p.cycle_id == "cycle-000003"]
        timed = await client.proposals(
            start_time=third[0].create_time, end_time=third[0].create_time
        )
        assert timed == third
    async with services(tmp_path, clock=clock) as (alpha, client, _):
        assert await client.proposals() == everything
        cycle = await client.run_cycle()
        assert cycle.id == "cycle-000005"
        assert cycle.proposals[0].previous_hash == everything[-1].entry_hash
        assert (await client.verify()).intact


async def test_verify_names_the_first_entry_tampered_in_the_database(tmp_path):
    async with services(tmp_path) as (alpha, client, _):
        await submit(alpha)
        await client.run_cycle()
        await client.run_cycle()
        engine = create_engine(f"sqlite:///{tmp_path / 'metaopt' / 'metaopt.db'}")
        with engine.begin() as c:
            c.execute(sa.update(ledger).where(ledger.c.ledger_index == 4).values(factor=5.0))
        engine.dispose()
        result = await client.verify()
        assert not result.intact
        assert result.first_bad_index == 4
        assert "entry 4 (cycle-000002-2) was altered" in result.detail


async def test_an_entry_appended_by_hand_fails_verification_and_is_never_recommended(tmp_path):
    async with services(tmp_path) as (alpha, client, optimizer):
        await submit(alpha)
        cycle = await client.run_cycle()
        last = cycle.proposals[-1]
        forged = dataclasses.replace(
            last,
            id=f"{cycle.id}-9",
            ledger_index=last.ledger_index + 1,
            previous_hash=last.entry_hash,
            allocation=0.9,
        )
        forged = dataclasses.replace(forged, entry_hash=hash_of(forged))
        engine = create_engine(f"sqlite:///{tmp_path / 'metaopt' / 'metaopt.db'}")
        with engine.begin() as c:
            c.execute(ledger.insert().values(**_proposal_row(forged)))
        engine.dispose()
        result = await client.verify()
        assert not result.intact
        assert result.first_bad_index == forged.ledger_index
        assert f"entry 3 ({forged.id}) was appended outside any cycle" in result.detail
        assert result.head_hash == cycle.head_hash
        assert (await client.pulse()).last_cycle.proposals == cycle.proposals
        agent = AgentClient(optimizer.channel, name="meta-optimizer")
        recommendations = await agent.recommend(AgentContext(cycle_id="gap-1"))
        assert [r.id for r in recommendations] == [
            f"meta-optimizer/{p.id}" for p in cycle.proposals
        ]


def tamper_with_a_report(tmp_path, sector: str) -> str:
    """Flips one bit of the ciphertext of a stored report of ``sector``, in the database;
    returns the report's id."""
    engine = create_engine(f"sqlite:///{tmp_path / 'alpha' / 'alpha.db'}")
    with engine.begin() as c:
        victim = c.execute(
            sa.select(report_table.c.report_id, report_table.c.ciphertext).where(
                report_table.c.sector == sector
            )
        ).first()
        flipped = bytes([victim.ciphertext[0] ^ 1]) + victim.ciphertext[1:]
        c.execute(
            sa.update(report_table)
            .where(report_table.c.report_id == victim.report_id)
            .values(ciphertext=flipped)
        )
    engine.dispose()
    return victim.report_id


async def test_reports_under_a_rotated_out_key_or_tampered_are_rejected(tmp_path):
    async with services(tmp_path) as (alpha, _client, _):
        await submit(alpha, {"Tech": ALPHAS["Tech"][:4]})  # sealed under k1
    # Rotated: alpha seals under k2 now; the optimizer refuses k1's reports.
    keys = f"k1:{K1},k2:{K2}"
    async with services(tmp_path, alpha_keys=keys, optimizer_keys=keys, retired=("k1",)) as (
        alpha,
        client,
        _,
    ):
        await submit(alpha, {"Energy": ALPHAS["Energy"][:4]})
        victim = tamper_with_a_report(tmp_path, "Energy")
        cycle = await client.run_cycle()
        assert cycle.status is CycleStatus.PARTIAL
        assert cycle.reports_audited == 3
        assert cycle.reports_rejected == 5
        retired = [r for r in cycle.rejections if "which is retired" in r]
        assert len(retired) == 4
        assert all("'k1'" in r for r in retired)
        (tampered,) = [r for r in cycle.rejections if "authentication failed" in r]
        assert victim in tampered
        assert [a.sector for a in cycle.sectors] == ["Energy"]
        assert K1 not in repr(cycle)


async def test_an_unreachable_source_fails_the_cycle_on_record(tmp_path):
    config = MetaOptimizerConfig(data_dir=tmp_path, keyring=Secret(f"k1:{K1}"), follow_plans=False)
    channels = ChannelConfig(addresses={"alpha-reporting": "127.0.0.1:1"})
    async with serving_app(metaopt_app(), config, channel_config=channels) as optimizer:
        client = MetaOptimizerClient(optimizer.channel)
        cycle = await client.run_cycle()
        assert cycle.status is CycleStatus.FAILED
        assert cycle.rejections[0].startswith("alpha-reporting: ")
        assert (await client.pulse()).last_cycle.status is CycleStatus.FAILED


async def test_proposals_reach_the_federation_as_recommendations(tmp_path):
    async with services(tmp_path) as (alpha, client, optimizer):
        agent = AgentClient(optimizer.channel, name="meta-optimizer")
        assert await agent.recommend(AgentContext(cycle_id="gap-1")) == []
        await submit(alpha)
        cycle = await client.run_cycle()
        recommendations = await agent.recommend(AgentContext(cycle_id="gap-2"))
        assert [r.id for r in recommendations] == [
            f"meta-optimizer/{p.id}" for p in cycle.proposals
        ]
        reinforce, mitigate, arb = recommendations
        assert reinforce.action_type is ActionType.ADJUST_EXPOSURE
        assert (reinforce.parameters.sector, reinforce.parameters.factor) == ("Tech", 1.2)
        assert reinforce.priority is Priority.MEDIUM
        assert reinforce.target == "market/fleet/Tech"
        assert mitigate.parameters.factor == 0.5
        assert mitigate.priority is Priority.HIGH
        assert arb.action_type is ActionType.SPAWN_ARB_MISSION
        assert (arb.parameters.long_sector, arb.parameters.short_sector) == ("Tech", "Energy")
        assert arb.priority is Priority.LOW
        assert reinforce.confidence == pytest.approx(cycle.proposals[0].confidence)
        assert reinforce.rationale == cycle.proposals[0].rationale
        assert reinforce.evidence["p_value"] == pytest.approx(cycle.proposals[0].p_value)
        # The market time of the data: the end of the last reported day, 2026-02-11.
        assert {r.as_of_time for r in recommendations} == {day_end("2026-02-11")}
        # Not offered once the market has moved a day past that data (proposal_ttl_days).
        late = AgentContext(cycle_id="gap-3", as_of_time=day_end("2026-02-12"))
        assert await agent.recommend(late) == []
        assert len(await agent.recommend(AgentContext(cycle_id="gap-4"))) == 3


@pytest.mark.parametrize(
    ("method", "request_message", "field"),
    [
        (
            "RunOptimizationCycle",
            pb.RunOptimizationCycleRequest(start_date="2026-2-4"),
            "start_date",
        ),
        (
            "RunOptimizationCycle",
            pb.RunOptimizationCycleRequest(start_date="2026-02-05", end_date="2026-02-04"),
            "end_date",
        ),
        ("ListProposals", pb.ListProposalsRequest(page_size=-1), "page_size"),
        ("ListProposals", pb.ListProposalsRequest(type=99), "type"),
        ("ListProposals", pb.ListProposalsRequest(state=99), "state"),
        ("ListProposals", pb.ListProposalsRequest(page_token="nope"), "page_token"),
        (
            "ListProposals",
            pb.ListProposalsRequest(start_time=timestamp(T0), end_time=timestamp(T0 - 1)),
            "end_time",
        ),
        ("GetProposal", pb.GetProposalRequest(id=""), "id"),
    ],
)
async def test_bad_requests_name_the_field_and_record_nothing(
    tmp_path, method, request_message, field
):
    async with services(tmp_path) as (_alpha, client, optimizer):
        stub = pb_grpc.MetaOptimizerServiceStub(optimizer.channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await getattr(stub, method)(request_message)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(failure.value).metadata["field"] == field
        pulse = await client.pulse()
        assert (pulse.cycle_count, pulse.proposal_count) == (0, 0)


async def test_the_optimizer_executes_nothing(tmp_path):
    async with services(tmp_path) as (_alpha, _client, optimizer):
        agent = AgentClient(optimizer.channel, name="meta-optimizer")
        action = Action(
            id="a",
            priority=Priority.HIGH,
            target="market/fleet/Tech",
            parameters=AdjustExposure("Tech", 1.2),
            confidence=0.9,
            rationale="",
            idempotency_key="k",
        )
        with pytest.raises(InvalidArgument) as bad:
            await agent.execute(action, plan_sequence=1)
        assert bad.value.field == "action.type"


def test_the_federation_it_follows_is_no_start_order_dependency():
    app = metaopt_app()
    assert app.depends_on == ("alpha-reporting",)
    assert app.calls == ("alpha-reporting", "federation")
    # The federation asks the meta optimizer, so it starts after it; the follower reconnects.
    layers = [
        [e.name for e in layer]
        for layer in catalog.start_layers(["federation", "meta-optimizer", "alpha-reporting"])
    ]
    assert layers == [["alpha-reporting"], ["meta-optimizer"], ["federation"]]
    config = MetaOptimizerConfig(keyring=Secret(f"k1:{K1}"), follow_plans=False)
    assert [u.service for u in app.clients(config)] == ["alpha-reporting"]


def counted(running, name: str, label: str) -> dict[str, float]:
    """One of the server's counters, by the value of its one label."""
    families = text_string_to_metric_families(running.server.metrics.text())
    (family,) = [f for f in families if f.name == name.removesuffix("_total")]
    return {s.labels[label]: s.value for s in family.samples if s.name == name}


async def test_each_verification_of_the_ledger_is_counted_by_its_result(tmp_path):
    async with services(tmp_path) as (alpha, client, optimizer):
        assert counted(optimizer, "qtmesh_ledger_verifications_total", "result") == {
            "ok": 0,
            "failed": 0,
        }
        await submit(alpha)
        await client.run_cycle()
        assert (await client.verify()).intact
        assert (await client.verify()).intact
        engine = create_engine(f"sqlite:///{tmp_path / 'metaopt' / 'metaopt.db'}")
        with engine.begin() as c:
            c.execute(sa.update(ledger).where(ledger.c.ledger_index == 1).values(factor=5.0))
        engine.dispose()
        assert not (await client.verify()).intact
        assert counted(optimizer, "qtmesh_ledger_verifications_total", "result") == {
            "ok": 2,
            "failed": 1,
        }


async def test_reports_a_cycle_rejects_are_counted_by_their_reason(tmp_path):
    async with services(tmp_path) as (alpha, _client, _):
        await submit(alpha, {"Tech": ALPHAS["Tech"][:4]})  # sealed under k1, retired below
    keys = f"k1:{K1},k2:{K2}"
    async with services(tmp_path, alpha_keys=keys, optimizer_keys=keys, retired=("k1",)) as (
        alpha,
        client,
        optimizer,
    ):
        await submit(alpha, {"Energy": ALPHAS["Energy"][:4]})
        tamper_with_a_report(tmp_path, "Energy")
        cycle = await client.run_cycle()
        assert cycle.reports_rejected == 5
        assert counted(optimizer, "qtmesh_reports_rejected_total", "reason") == {
            "tampered": 1,
            "undecryptable": 4,
            "duplicate": 0,
        }


def test_a_second_report_of_a_sector_day_is_rejected_as_a_duplicate():
    keyring = Keyring.parse(f"k1:{K1}")
    first, second = planted("Tech", ALPHAS["Tech"][:2])
    again = dataclasses.replace(second, report_id="other", trading_date=first.trading_date)
    sealed = [seal(r, keyring) for r in (first, again, second)]
    reasons: list[str] = []
    opened, rejections = open_reports(sealed, keyring, rejected=reasons.append)
    assert [r.report_id for r in opened] == [first.report_id, second.report_id]
    assert reasons == ["duplicate"]
    assert "second report of Tech" in rejections[0]
