"""The offline evolution example ends as the spec says: 3 generations, 30 mutations, top 5, a
meta-learning update and a Global Action Plan."""

from __future__ import annotations

import sys

from examples import offline_evolution_example


def test_the_example_evolves_then_learns_and_plans(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["offline_evolution_example", "--seed", "7"])
    offline_evolution_example.main()
    out = capsys.readouterr().out
    assert "generation 3:" in out
    assert "generation 4:" not in out
    assert "Top 5 after 30 mutations" in out
    assert "Meta-learning update:" in out
    assert "5 evaluations" in out
    assert "Global Action Plan #1:" in out
