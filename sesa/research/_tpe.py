"""Optuna's tree-structured Parzen estimator over the families' bounds, with the project's own
evaluator as its objective (the composite score, maximised).

The family is a categorical choice and each family's parameters are conditional on it
(define-by-run); integers and log scales are declared as the policy declares them. Trials are
asked in batches so the kernel runs them in one pass; the constant liar keeps a batch's trials
apart. A proposal that repairs to a genome already evaluated is told its known score and does
not count against the budget.
"""

from __future__ import annotations

import optuna

from qtmesh.base.genome import ParameterSpec, make_genome
from sesa.research._base import Objective, Search

_BATCH = 8
_ASKS_PER_GENOME = 20


class TpeSearch(Search):
    name = "tpe"

    def run(self, objective: Objective) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=int(self.rng.integers(2**31)), constant_liar=True)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        names = [f.name.lower() for f in objective.families]
        asks = 0
        while objective.remaining > 0 and asks < _ASKS_PER_GENOME * objective.budget:
            trials = [study.ask() for _ in range(min(_BATCH, objective.remaining))]
            asks += len(trials)
            genomes = []
            for trial in trials:
                name = trial.suggest_categorical("family", names) if len(names) > 1 else names[0]
                family = objective.families[names.index(name)]
                values = {
                    s.name: _suggest(trial, f"{name}.{s.name}", s)
                    for s in objective.policy.specs(family)
                }
                repaired = objective.policy.repair(family, values)
                genomes.append(make_genome(family, repaired, origin="tpe"))
            scores = {e.genome.id: e.composite_score for e in objective.evaluate(genomes)}
            for trial, genome in zip(trials, genomes, strict=True):
                if genome.id in scores:
                    study.tell(trial, scores[genome.id])
                else:  # past the budget
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)


def _suggest(trial: optuna.Trial, name: str, spec: ParameterSpec) -> float:
    if spec.boolean:
        return float(trial.suggest_int(name, 0, 1))
    if spec.integer:
        return float(trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log_scale))
    return trial.suggest_float(name, spec.low, spec.high, log=spec.log_scale)
