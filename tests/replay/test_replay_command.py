"""``qtmesh replay`` end to end: the whole mesh on the market clock for a day and a quarter, then
the static fleet on the same bars, and the report they leave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qtmesh.cli import main as qtmesh

OPEN = {"PENDING", "EXECUTING"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("replay")
    with pytest.raises(SystemExit) as exited:
        qtmesh(["replay", "--days", "1.25", "--seed", "3", "--out", str(out)])
    assert exited.value.code == 0
    return json.loads((out / "replay.json").read_text()), out


@pytest.mark.timeout(400)
def test_the_closed_loop_plans_on_the_market_clock_and_every_action_it_ran_finished(report):
    doc, _ = report
    closed = doc["closed"]
    times = [p["time"] for p in closed["plans"]]
    # A plan every 4 market hours from the start, none at the very end: 30 h -> 8 plans.
    assert len(times) == 8
    assert times[0] == closed["samples"][0]["time"]
    actions = [a for p in closed["plans"] for a in p["actions"]]
    assert actions
    assert not [a for a in actions if a["status"] in OPEN]
    assert any(a["status"] == "COMPLETED" for a in actions)
    # The day the clock left was sealed by the reporting service and audited once.
    assert [a["date"] for a in closed["audits"]] == ["2026-02-04"]
    assert closed["audits"][0]["reports_audited"] > 0
    # Meta learned on the market clock from what the fleet traded.
    assert any(m["cause"] for m in closed["meta"])


def test_both_arms_replay_the_same_bars_and_the_loop_changed_what_the_fleet_traded(report):
    doc, _ = report
    closed, static = doc["closed"], doc["static"]
    assert [s["time"] for s in closed["samples"]] == [s["time"] for s in static["samples"]]
    assert len(closed["samples"]) == 9  # the start and every 4 hours of 30 h (the last at 28 h)
    assert static["plans"] == []
    assert static["summary"]["plans"] == 0
    assert closed["samples"][0]["equity"] == static["samples"][0]["equity"]
    # Executed actions change the fleet: its allocations and equity leave the static fleet's.
    assert closed["samples"][-1]["allocations"] != static["samples"][-1]["allocations"]
    assert closed["samples"][-1]["equity"] != static["samples"][-1]["equity"]
    assert doc["closed_minus_static"]["total_return"] == pytest.approx(
        closed["summary"]["total_return"] - static["summary"]["total_return"]
    )


def test_the_page_shows_the_figures(report):
    _, out = report
    page = (out / "replay.html").read_text()
    assert page.count('src="data:image/png;base64,') >= 4  # equity, drawdown, allocations, ...
    assert "closed" in page
    assert "static" in page


def test_a_missing_data_file_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        qtmesh(["replay", "--data", str(tmp_path / "nope.csv")])
    assert exited.value.code == 2
    assert "nope.csv is not a file" in capsys.readouterr().err
