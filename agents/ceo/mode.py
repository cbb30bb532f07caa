"""The strategic mode the CEO owns, and its evaluations: one per completed period of the market,
each scoring the inputs and stepping the hysteresis (see :mod:`agents.ceo.scoring`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from agents.ceo.inputs import CeoInputs
from agents.ceo.scoring import Hysteresis, ScoringRule, confidence, indicated
from qtmesh.base.bars import format_time
from qtmesh.base.contract import StrategicMode


@dataclasses.dataclass(frozen=True)
class ModeState:
    """The mode in force, since when (market time; 0 before any switch) and why."""

    mode: StrategicMode
    since: int = 0
    cause: str = "the initial mode"

    def switched(self, mode: StrategicMode, *, at: int, cause: str) -> tuple[ModeState, str]:
        if mode is self.mode:
            since = format_time(self.since) if self.since else "start-up"
            return self, f"already {mode.name} since {since}"
        # The mode changes no position itself: say so, and what it does change.
        return ModeState(mode, at, cause), (
            f"mode {self.mode.name} -> {mode.name} (the fleet trades as before: the mode is the "
            "CEO's stance, and in a plan a switch to DEFENSIVE or CAPITAL_PRESERVATION outranks "
            "sector raises)"
        )

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode.name, "since": self.since, "cause": self.cause}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModeState:
        return cls(StrategicMode[data["mode"]], data["since"], data["cause"])


@dataclasses.dataclass(frozen=True, kw_only=True)
class Evaluation:
    inputs: CeoInputs
    score: float
    severities: Mapping[str, float]
    indicated: StrategicMode
    current: StrategicMode
    target: StrategicMode
    pending: StrategicMode | None
    confirmations: int
    confidence: float
    rationale: str

    def evidence(self) -> dict[str, float]:
        """Every input by name, as GetMode and the recommendation report them."""
        i = self.inputs
        values = {
            "score": self.score,
            "drawdown": i.drawdown,
            "observations": float(i.observations),
            **{f"severity.{name}": s for name, s in self.severities.items()},
        }
        if i.volatility is not None:
            values["volatility"] = i.volatility
        if i.trend is not None:
            values["trend_t"] = i.trend
        if i.regime is not None:
            values["regime_stress"] = i.regime.stress
            values["regime_probability"] = i.regime.probability
            values |= {f"p_{label}": p for label, p in i.regime.probabilities.items()}
        return values


class ModeEvaluator:
    """Evaluations in period order; remembers the pending switch between them."""

    def __init__(self, rule: ScoringRule, hysteresis: Hysteresis) -> None:
        self.rule = rule
        self.hysteresis = hysteresis
        self.pending: tuple[StrategicMode, int] | None = None
        self.last: Evaluation | None = None

    def evaluate(self, inputs: CeoInputs, current: StrategicMode, *, note: str = "") -> Evaluation:
        score, severities = self.rule.score(inputs.values())
        self.pending, target = self.hysteresis.step(current, self.pending, score)
        pending, count = self.pending if self.pending is not None else (None, 0)
        evaluation = Evaluation(
            inputs=inputs,
            score=score,
            severities=severities,
            indicated=indicated(score),
            current=current,
            target=target,
            pending=pending,
            confirmations=count,
            confidence=confidence(
                current, score, inputs.regime.probability if inputs.regime else None
            ),
            rationale=self._rationale(
                inputs, score, severities, current, target, pending, count, note
            ),
        )
        self.last = evaluation
        return evaluation

    def _rationale(
        self,
        inputs: CeoInputs,
        score: float,
        severities: Mapping[str, float],
        current: StrategicMode,
        target: StrategicMode,
        pending: StrategicMode | None,
        count: int,
        note: str,
    ) -> str:
        parts = [("drawdown", f"drawdown {inputs.drawdown:.2%}")]
        if inputs.volatility is not None:
            parts.append(("volatility", f"volatility {inputs.volatility:.1%} a year"))
        if inputs.regime is not None:
            p = inputs.regime.probabilities
            parts.append(
                (
                    "regime",
                    f"regime stress {inputs.regime.stress:+.2f} (volatile "
                    f"{p.get('volatile', 0):.0%}, calm {p.get('calm', 0):.0%})",
                )
            )
        if inputs.trend is not None:
            parts.append(("trend", f"P&L trend t = {inputs.trend:+.2f}"))
        shown = [
            f"{text} -> {severities[name]:.2f}" if name in severities else text
            for name, text in parts
        ]
        text = (
            f"Stress score {score:.2f} of 3 ({'; '.join(shown)}) at "
            f"{format_time(inputs.time)} indicates {indicated(score).name}; the mode is "
            f"{current.name}."
        )
        needed = self.hysteresis.confirmations
        if target is not current:
            text += (
                f" {target.name} came out of {count} consecutive evaluations ({needed} needed): "
                f"switch to {target.name}."
            )
        elif pending is not None:
            text += (
                f" {pending.name} is a candidate in {count} of the {needed} consecutive "
                "evaluations a switch needs: hold for now."
            )
        else:
            text += (
                f" The score is within {current.name}'s band widened by "
                f"{self.hysteresis.margin:g}: hold."
            )
        if note:
            text += f" {note}"
        return text
