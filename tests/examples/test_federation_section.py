"""The demo's federation section runs against real servers and prints the plan and the stream."""

from __future__ import annotations

import io

from rich.console import Console

from examples import _federation_section
from tests.helpers.federation import EVOLVE, FakeAgent, mesh, rec


async def test_the_section_prints_the_executed_plan_and_what_the_stream_delivered(tmp_path):
    owner = FakeAgent("owner", [rec("evolve", EVOLVE, 0.8)])
    async with mesh(tmp_path, [owner]) as federation:
        console = Console(file=io.StringIO(), width=160)
        plan = await _federation_section.show(console, {"federation": federation.address})
    text = console.file.getvalue()
    assert "Global Action Plan" in text
    assert "run_evolution" in text
    assert "completed" in text
    assert "The subscriber received 3 events" in text  # the plan, executing, completed
    assert owner.executed == [plan.actions[0].idempotency_key]
