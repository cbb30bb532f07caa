"""The evolution loop: mutate parents, evaluate the generation, select, repeat.

Generation 0 evaluates the seeds. Each later generation takes the ``elite_carry_forward`` best
composite scores so far (kept diverse) as parents; each parent gets
``num_mutations_per_parent`` children from operators drawn uniformly among those that apply to
its family (crossover pairs it with another parent); the elites carry forward unevaluated.
Every genome ever evaluated counts as a trial for the deflated Sharpe ratio, and the final
candidates are judged with the final count. All randomness comes from the ``rng`` given, and
evaluation is deterministic, so a seed reproduces a run exactly.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable, Sequence

import numpy as np

from backtest.evaluation import Evaluation, Evaluator, TrialLog
from backtest.indicators import BarData
from qtmesh.base.concurrency import CancelToken
from qtmesh.base.errors import FailedPrecondition, InvalidArgument
from qtmesh.base.genome import Policy, StrategyFamily, StrategyGenome, reject_conflicting_ids
from sesa.mutation import OPERATORS, MutationOperator
from sesa.selection import Judgement, SelectionConfig, diverse_top, judge, rank

_DUPLICATE_REDRAWS = 8

# Largest generation: elite_carry_forward x (1 + num_mutations_per_parent). Work per generation
# (evaluation, and the pairwise diversity) grows with it; this keeps one well under a minute.
MAX_POPULATION = 5000
# Largest scenario_paths x bars of a simulation: every path is held in memory with its
# indicators while the population runs on it.
MAX_SCENARIO_BARS = 2_000_000


class EvaluationType(enum.Enum):
    BACKTEST = 1
    SIMULATION = 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvolutionConfig:
    """The spec's EvolutionConfig with its defaults, validated; the population is at most
    ``MAX_POPULATION`` and a simulation's scenario_paths x bars at most ``MAX_SCENARIO_BARS``
    (checked by :meth:`check_scenario_bars` once the bars are known)."""

    num_mutations_per_parent: int = 10
    mutation_rate: float = 0.3
    mutation_magnitude: float = 0.2
    evaluation_type: EvaluationType = EvaluationType.BACKTEST
    evaluation_lookback_days: int = 30
    num_generations: int = 5
    elite_carry_forward: int = 2
    # Scenario paths per genome when evaluation_type is SIMULATION.
    scenario_paths: int = 8

    def __post_init__(self) -> None:
        checks = (
            ("num_mutations_per_parent", 1 <= self.num_mutations_per_parent <= 1000, "1..1000"),
            ("mutation_rate", 0 <= self.mutation_rate <= 1, "0..1"),
            ("mutation_magnitude", 0 <= self.mutation_magnitude <= 1, "0..1"),
            ("evaluation_lookback_days", 1 <= self.evaluation_lookback_days <= 3650, "1..3650"),
            ("num_generations", 0 <= self.num_generations <= 1000, "0..1000"),
            ("elite_carry_forward", 1 <= self.elite_carry_forward <= 100, "1..100"),
            ("scenario_paths", 1 <= self.scenario_paths <= 1000, "1..1000"),
        )
        for name, ok, bounds in checks:
            if not ok:
                raise InvalidArgument(f"config.{name}", f"{getattr(self, name)} is not in {bounds}")
        if self.population > MAX_POPULATION:
            raise InvalidArgument(
                "config.num_mutations_per_parent",
                f"a population of elite_carry_forward x (1 + num_mutations_per_parent) = "
                f"{self.population} exceeds {MAX_POPULATION}",
            )

    def check_scenario_bars(self, bars: int) -> None:
        """Rejects a simulation whose paths of ``bars`` bars would exceed MAX_SCENARIO_BARS."""
        if self.evaluation_type is not EvaluationType.SIMULATION:
            return
        if self.scenario_paths * bars > MAX_SCENARIO_BARS:
            raise InvalidArgument(
                "config.scenario_paths",
                f"{self.scenario_paths} paths of {bars} bars exceed {MAX_SCENARIO_BARS} "
                "scenario bars",
            )

    @property
    def population(self) -> int:
        return self.elite_carry_forward * (1 + self.num_mutations_per_parent)


@dataclasses.dataclass(frozen=True)
class GenerationStats:
    generation: int
    best_composite: float
    median_composite: float
    worst_composite: float
    diversity: float
    evaluated: int
    passed_gates: int
    trials: int
    top: tuple[Judgement, ...]
    elapsed_seconds: float


@dataclasses.dataclass(frozen=True)
class EvolutionResult:
    top: tuple[Judgement, ...]
    shadow_candidates: tuple[Judgement, ...]
    production_candidates: tuple[Judgement, ...]
    generations: tuple[GenerationStats, ...]
    trials: int
    elapsed_seconds: float
    # The probability of backtest overfitting of the whole run (backtest.overfitting), over
    # every genome evaluated; None for a simulation or a run of one genome.
    pbo: float | None = None


class Evolution:
    """One evolution run; call :meth:`start`, then :meth:`step` per generation, then
    :meth:`result`. Each call does one generation's work, so callers can stream progress and
    cancel between (or, through ``token``, inside) generations."""

    def __init__(
        self,
        *,
        evaluator: Evaluator,
        selection: SelectionConfig,
        config: EvolutionConfig,
        rng: np.random.Generator,
        prior_trials: int = 0,
        trials: TrialLog | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """``trials`` counts the genomes tried so far for the deflated Sharpe ratio (a fresh
        log after ``prior_trials`` earlier ones when None); a caller that evaluates beside the
        evolution passes its own."""
        self.evaluator = evaluator
        self.policy: Policy = evaluator.policy
        self.selection = selection
        self.config = config
        self.rng = rng
        if trials is not None and prior_trials:
            raise InvalidArgument("prior_trials", "give either prior_trials or trials")
        self.trials = trials if trials is not None else TrialLog(prior_trials)
        self._clock = clock
        self._started = clock()
        self._data: BarData | None = None
        self._paths: list[BarData] = []
        self._archive: dict[str, Evaluation] = {}
        self._stats: list[GenerationStats] = []
        self.generation = -1

    @property
    def finished(self) -> bool:
        return self.generation >= self.config.num_generations

    def start(
        self,
        seeds: Sequence[StrategyGenome],
        data: BarData,
        *,
        paths: Sequence[BarData] = (),
        token: CancelToken | None = None,
    ) -> GenerationStats:
        """Evaluates the seeds (validated against the policy) as generation 0."""
        began = self._clock()
        if self.generation >= 0:
            raise FailedPrecondition("the evolution has already started")
        if self.config.evaluation_type is EvaluationType.SIMULATION and not paths:
            raise InvalidArgument("paths", "simulation needs scenario paths")
        checked = [self.policy.validate(s, field=f"seeds[{i}]") for i, s in enumerate(seeds)]
        reject_conflicting_ids(checked, field="seeds")
        if not checked:
            checked = [self.policy.default_genome(f) for f in StrategyFamily]
        self._data = data
        self._paths = list(paths)
        evaluated = self._evaluate(checked, token)
        return self._finish_generation(evaluated, generation=0, time_started=began, token=token)

    def step(
        self, token: CancelToken | None = None, *, limit: int | None = None
    ) -> GenerationStats:
        """Breeds and evaluates the next generation; with ``limit``, at most that many of its
        children not evaluated before are (the rest are dropped), so a run can keep to a budget
        of evaluations."""
        if self.generation < 0:
            raise FailedPrecondition("start the evolution first")
        if self.finished:
            raise FailedPrecondition("every generation has run")
        began = self._clock()
        # The counter moves only once the generation is complete: a cancelled step leaves no
        # numbered generation without stats.
        generation = self.generation + 1
        parents = [j.evaluation for j in self._parents()]
        children = self._breed([e.genome for e in parents], generation)
        fresh = [c for c in children if c.id not in self._archive]
        if limit is not None:
            if limit < 1:
                raise InvalidArgument("limit", f"{limit} is not a positive number of genomes")
            dropped = {c.id for c in fresh[limit:]}
            fresh = fresh[:limit]
            children = [c for c in children if c.id not in dropped]
        evaluated = {e.genome.id: e for e in self._evaluate(fresh, token)}
        population = list(parents)
        seen = {e.genome.id for e in parents}
        for child in children:
            if child.id in seen:
                continue
            seen.add(child.id)
            population.append(evaluated.get(child.id) or self._archive[child.id])
        return self._finish_generation(
            population, generation=generation, time_started=began, token=token
        )

    def result(self) -> EvolutionResult:
        """The best strategies of the whole run, judged with the final number of trials."""
        ranking = rank(
            list(self._archive.values()), self.trials, self.selection, policy=self.policy
        )
        return EvolutionResult(
            top=ranking.top,
            shadow_candidates=ranking.shadow_candidates,
            production_candidates=ranking.production_candidates,
            generations=tuple(self._stats),
            trials=self.trials.count,
            elapsed_seconds=self._clock() - self._started,
            pbo=ranking.pbo,
        )

    @property
    def evaluations(self) -> list[Evaluation]:
        """Every genome evaluated so far, in the order first evaluated."""
        return list(self._archive.values())

    # -- internals ---------------------------------------------------------------------------

    def _evaluate(
        self, genomes: Sequence[StrategyGenome], token: CancelToken | None
    ) -> list[Evaluation]:
        if not genomes:
            return []
        assert self._data is not None
        if self.config.evaluation_type is EvaluationType.SIMULATION:
            evaluations = self.evaluator.evaluate_scenarios(
                genomes, self._paths, trials=self.trials, token=token
            )
        else:
            evaluations = self.evaluator.evaluate(
                genomes, self._data, trials=self.trials, token=token
            )
        for e in evaluations:
            self._archive[e.genome.id] = e
        return evaluations

    def _parents(self) -> list[Judgement]:
        judged = [judge(e, self.selection) for e in self._archive.values()]
        return diverse_top(
            judged,
            k=self.config.elite_carry_forward,
            min_distance=self.selection.min_distance,
            policy=self.policy,
        )

    def _breed(self, parents: list[StrategyGenome], generation: int) -> list[StrategyGenome]:
        children: list[StrategyGenome] = []
        seen = {p.id for p in parents}
        for index, parent in enumerate(parents):
            operators = [
                op
                for op in OPERATORS.values()
                if op.applies_to(parent.family) and (op.parent_count == 1 or len(parents) > 1)
            ]
            for _ in range(self.config.num_mutations_per_parent):
                # A step clipped at a bound can reproduce a parent; redraw a few times rather
                # than spend the slot on a strategy already known.
                for _attempt in range(_DUPLICATE_REDRAWS):
                    child = self._mutant(parents, index, operators, generation)
                    if child.id not in seen:
                        break
                seen.add(child.id)
                children.append(child)
        return children

    def _mutant(
        self,
        parents: list[StrategyGenome],
        index: int,
        operators: list[MutationOperator],
        generation: int,
    ) -> StrategyGenome:
        operator = operators[int(self.rng.integers(len(operators)))]
        mates = [parents[index]]
        if operator.parent_count == 2:
            others = [p for i, p in enumerate(parents) if i != index]
            mates.append(others[int(self.rng.integers(len(others)))])
        return operator.mutate(
            mates,
            policy=self.policy,
            rng=self.rng,
            magnitude=self.config.mutation_magnitude,
            rate=self.config.mutation_rate,
            generation=generation,
        )

    def _finish_generation(
        self,
        population: list[Evaluation],
        *,
        generation: int,
        time_started: float,
        token: CancelToken | None,
    ) -> GenerationStats:
        judged = [judge(e, self.selection) for e in population]
        scores = np.array([e.composite_score for e in population])
        top = diverse_top(
            judged,
            k=self.selection.top_k,
            min_distance=self.selection.min_distance,
            policy=self.policy,
        )
        stats = GenerationStats(
            generation=generation,
            best_composite=float(scores.max()),
            median_composite=float(np.median(scores)),
            worst_composite=float(scores.min()),
            diversity=self._diversity([e.genome for e in population], token),
            evaluated=len(population),
            passed_gates=sum(j.passed_gates for j in judged),
            trials=self.trials.count,
            top=tuple(top),
            elapsed_seconds=self._clock() - time_started,
        )
        self._stats.append(stats)
        self.generation = generation
        return stats

    def _diversity(self, genomes: list[StrategyGenome], token: CancelToken | None) -> float:
        """Mean pairwise distance in normalised parameter space (Policy.distance): pairs of
        one family from their unit vectors, a row against all later rows at a time; pairs
        across families are 1 apart."""
        n = len(genomes)
        if n < 2:
            return 0.0
        by_family: dict[StrategyFamily, list[np.ndarray]] = {}
        for genome in genomes:
            by_family.setdefault(genome.family, []).append(self.policy.unit_vector(genome))
        total = 0.0
        same_family_pairs = 0
        for vectors in by_family.values():
            units = np.array(vectors)
            m = len(units)
            same_family_pairs += m * (m - 1) // 2
            for i in range(m - 1):
                if token is not None and i % 256 == 0:
                    token.raise_if_cancelled()
                total += float(np.sqrt(np.mean((units[i + 1 :] - units[i]) ** 2, axis=1)).sum())
        pairs = n * (n - 1) // 2
        return (total + (pairs - same_family_pairs)) / pairs
