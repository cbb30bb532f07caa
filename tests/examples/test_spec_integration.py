"""The spec's "Integrate with Live System" example runs in process and its pieces connect."""

from __future__ import annotations

from examples import spec_integration


async def test_the_snippet_evolves_learns_and_plans(capsys):
    out = await spec_integration.main()
    printed = capsys.readouterr().out
    result, evaluations, gap = out["result"], out["evaluations"], out["gap"]
    assert len(result.generations) == 6  # generation 0 and the 5 the config asks for
    assert [e.strategy_id.partition("/")[2] for e in evaluations] == [
        j.genome_id for j in result.top
    ]
    assert gap.sequence == 1
    assert sorted(r.agent for r in gap.agents) == ["meta", "sesa"]
    assert gap.actions, "the meta update asks for changes"
    # SESA's evolution has just run: it does not ask for another.
    assert all(a.action_type.name != "RUN_EVOLUTION" for a in gap.actions)
    assert f"GAP #{gap.sequence}: {len(gap.actions)} actions" in printed
