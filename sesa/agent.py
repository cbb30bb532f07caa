"""SESA as an agent of the Global Action Plan: it proposes its candidates and runs evolutions."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from qtmesh.base.contract import (
    Action,
    AgentContext,
    EnableStrategy,
    ExecutionResult,
    Priority,
    PromoteStrategy,
    Recommendation,
    RunEvolution,
)
from qtmesh.base.errors import InvalidArgument
from sesa.evolution import EvolutionResult
from sesa.selection import Judgement

DAY_NANOS = 86_400 * 10**9


@dataclasses.dataclass(frozen=True)
class FinishedEvolution:
    result: EvolutionResult
    symbol: str
    sector: str
    finished_time: int  # Unix nanoseconds on the clock the evolution ran at


class SesaAgent:
    """Recommends promoting production candidates and deploying the best shadow candidates of
    the latest evolution, and running an evolution when there is none or it is a day old.
    Executes RUN_EVOLUTION by starting one through ``start_evolution``."""

    name = "sesa"

    def __init__(
        self,
        *,
        start_evolution: Callable[[tuple[str, ...], int], Awaitable[str]],
        default_symbols: tuple[str, ...],
        top: int = 3,
        stale_after_nanos: int = DAY_NANOS,
    ) -> None:
        self._start_evolution = start_evolution
        self._default_symbols = default_symbols
        self._top = top
        self._stale_after = stale_after_nanos
        self.latest: FinishedEvolution | None = None

    def remember(self, finished: FinishedEvolution) -> None:
        self.latest = finished

    async def recommend(self, context: AgentContext) -> list[Recommendation]:
        latest = self.latest
        if latest is None:
            return [
                self._evolve("no evolution has run yet, so there are no candidates to propose", 0.6)
            ]
        recommendations = [
            self._promote(j, latest) for j in latest.result.production_candidates[: self._top]
        ]
        recommendations += [
            self._shadow(j, latest) for j in latest.result.shadow_candidates[: self._top]
        ]
        age = context.as_of_time - latest.finished_time
        if context.as_of_time and age >= self._stale_after:
            hours = age / 3.6e12
            recommendations.append(
                self._evolve(f"the latest evolution finished {hours:.0f} h ago", 0.7)
            )
        return recommendations

    async def execute(self, action: Action, *, plan_sequence: int) -> ExecutionResult:
        parameters = action.parameters
        if not isinstance(parameters, RunEvolution):
            raise InvalidArgument("action.type", f"sesa does not execute {action.action_type.name}")
        symbols = parameters.symbols or self._default_symbols
        detail = await self._start_evolution(tuple(symbols), parameters.generations)
        return ExecutionResult(True, detail)

    def _evolve(self, reason: str, confidence: float) -> Recommendation:
        return Recommendation(
            id="run-evolution",
            priority=Priority.LOW,
            target="sesa/evolution",
            parameters=RunEvolution(symbols=self._default_symbols),
            confidence=confidence,
            rationale=f"Run a SESA evolution on {', '.join(self._default_symbols)}: {reason}.",
        )

    def _promote(self, judgement: Judgement, latest: FinishedEvolution) -> Recommendation:
        e = judgement.evaluation
        m = e.out_of_sample
        return Recommendation(
            id=f"promote-{e.genome.id}",
            priority=Priority.HIGH,
            target=f"strategy/{e.genome.id}",
            parameters=PromoteStrategy(
                strategy_id=e.genome.id, genome=e.genome, sector=latest.sector
            ),
            confidence=min(max(m.deflated_sharpe_ratio, 0.0), 1.0),
            rationale=(
                f"{e.genome.id} ({e.genome.family.name.lower()}) on {latest.symbol} passed every "
                f"gate out of sample (Sharpe {m.sharpe_ratio:.2f}, win rate {m.win_rate:.0%}, "
                f"profit factor {m.profit_factor:.2f}, max drawdown {m.max_drawdown:.1%}) with a "
                f"deflated Sharpe ratio of {m.deflated_sharpe_ratio:.2f} after {e.trials} trials."
            ),
            evidence=_evidence(judgement),
        )

    def _shadow(self, judgement: Judgement, latest: FinishedEvolution) -> Recommendation:
        e = judgement.evaluation
        m = e.out_of_sample
        return Recommendation(
            id=f"shadow-{e.genome.id}",
            priority=Priority.MEDIUM,
            target=f"strategy/{e.genome.id}",
            parameters=EnableStrategy(
                strategy_id=e.genome.id, sector=latest.sector, genome=e.genome, weight=0.0
            ),
            confidence=min(max(judgement.promotion_readiness, 0.0), 1.0),
            rationale=(
                f"Trade {e.genome.id} ({e.genome.family.name.lower()}) on paper as a shadow: it "
                f"passed the gates out of sample on {latest.symbol} (Sharpe {m.sharpe_ratio:.2f}, "
                f"win rate {m.win_rate:.0%}, profit factor {m.profit_factor:.2f}) but its "
                f"deflated Sharpe ratio {m.deflated_sharpe_ratio:.2f} after {e.trials} trials is "
                "below the production bar."
            ),
            evidence=_evidence(judgement),
        )


def _evidence(judgement: Judgement) -> dict[str, float]:
    e = judgement.evaluation
    m = e.out_of_sample
    return {
        "composite_score": e.composite_score,
        "sharpe_ratio": m.sharpe_ratio,
        "win_rate": m.win_rate,
        "max_drawdown": m.max_drawdown,
        "deflated_sharpe_ratio": m.deflated_sharpe_ratio,
        "trials": float(e.trials),
        "promotion_readiness": judgement.promotion_readiness,
    }
