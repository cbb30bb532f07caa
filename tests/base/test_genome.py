"""Genomes, the policy's bounds and the nine mutation operators."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qtmesh.base import genome as g
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import Policy, StrategyFamily, StrategyGenome, make_genome
from sesa.mutation import OPERATORS

POLICY = Policy()
FAMILIES = list(StrategyFamily)


def in_bounds(genome: StrategyGenome, policy: Policy = POLICY) -> bool:
    specs = policy.specs(genome.family)
    if set(genome.parameters) != {s.name for s in specs}:
        return False
    for spec in specs:
        value = genome.parameters[spec.name]
        if not spec.low <= value <= spec.high:
            return False
        if (spec.integer or spec.boolean) and value != round(value):
            return False
    return True


def test_every_family_has_a_valid_default_and_the_common_parameters():
    for family in FAMILIES:
        default = POLICY.default_genome(family)
        assert in_bounds(default)
        for name in (
            "vol_min",
            "vol_max",
            "session_start",
            "session_hours",
            "stop_atr",
            "risk_reward",
        ):
            assert name in default.parameters
        assert POLICY.validate(default, field="g") == default
    assert {"learning_rate", "exploration", "discount"} <= set(
        POLICY.default_genome(StrategyFamily.Q_LEARNING).parameters
    )


def test_ids_address_content():
    a = make_genome(StrategyFamily.MA_CROSSOVER, {"fast": 10.0, "slow": 50.0})
    b = make_genome(StrategyFamily.MA_CROSSOVER, {"slow": 50.0, "fast": 10.0})
    c = make_genome(StrategyFamily.MA_CROSSOVER, {"fast": 11.0, "slow": 50.0})
    assert a.id == b.id != c.id
    assert a.id.startswith("ma-")


def test_genomes_from_outside_are_validated_not_clipped():
    family = StrategyFamily.MA_CROSSOVER
    base = dict(POLICY.default_genome(family).parameters)
    cases = [
        ({**base, "fast": 5000.0}, "parameters[fast]", "outside [2, 200]"),
        ({**base, "bogus": 1.0}, "parameters[bogus]", "is not a parameter of MA_CROSSOVER"),
        ({**base, "fast": 60.0, "slow": 40.0}, "parameters[fast]", "must be below slow"),
        ({**base, "vol_min": 0.9, "vol_max": 0.5}, "parameters[vol_min]", "must be below vol_max"),
    ]
    for parameters, field, problem in cases:
        genome = StrategyGenome(id="x", family=family, parameters=parameters)
        with pytest.raises(InvalidArgument) as failure:
            POLICY.validate(genome, field="genomes[3]")
        assert failure.value.field == f"genomes[3].{field}"
        assert problem in failure.value.problem
    partial = StrategyGenome(id="x", family=family, parameters={"fast": 7.0, "slow": 30.0})
    filled = POLICY.validate(partial, field="g")
    assert filled.parameters["fast"] == 7.0
    assert filled.parameters["stop_atr"] == POLICY.spec(family, "stop_atr").default
    # In bounds, values only take their kind: integers rounded (halves to even), booleans 0/1.
    kinds = {"fast": 7.4, "slow": 30.0, "session_start": 2.5, "allow_short": 0.5}
    normalised = POLICY.validate(StrategyGenome(id="x", family=family, parameters=kinds), field="g")
    assert normalised.parameters["fast"] == 7.0
    assert normalised.parameters["session_start"] == 2.0
    assert normalised.parameters["allow_short"] == 1.0


def test_one_id_may_not_name_two_strategies():
    family = StrategyFamily.MA_CROSSOVER
    a = StrategyGenome(id="x", family=family, parameters={"fast": 7.0, "slow": 30.0})
    same = StrategyGenome(id="x", family=family, parameters={"slow": 30.0, "fast": 7.0})
    other = StrategyGenome(id="x", family=family, parameters={"fast": 8.0, "slow": 30.0})
    g.reject_conflicting_ids([a, same], field="genomes")
    with pytest.raises(InvalidArgument) as failure:
        g.reject_conflicting_ids([a, same, other], field="genomes")
    assert failure.value.field == "genomes[2].id"
    assert "genomes[0]" in failure.value.problem
    elsewhere = StrategyGenome(id="x", family=StrategyFamily.BREAKOUT, parameters={})
    with pytest.raises(InvalidArgument):
        g.reject_conflicting_ids([elsewhere, a], field="seeds")


def test_genomes_made_inside_are_repaired():
    family = StrategyFamily.MA_CROSSOVER
    repaired = POLICY.repair(
        family, {"fast": 250.4, "slow": 90.0, "allow_short": 0.7, "vol_min": -1}
    )
    assert repaired["fast"] < repaired["slow"]
    assert repaired["fast"] == round(repaired["fast"])
    assert repaired["allow_short"] == 1.0
    assert repaired["vol_min"] == 0.0


def test_policy_overrides_narrow_the_bounds():
    narrow = Policy(overrides={(StrategyFamily.MA_CROSSOVER, "slow"): (50.0, 60.0)})
    assert narrow.repair(StrategyFamily.MA_CROSSOVER, {"slow": 500.0})["slow"] == 60.0


@given(
    operator=st.sampled_from(sorted(OPERATORS)),
    family=st.sampled_from(FAMILIES),
    other=st.sampled_from(FAMILIES),
    magnitude=st.floats(0, 1),
    rate=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
def test_mutations_stay_in_bounds(operator, family, other, magnitude, rate, seed):
    op = OPERATORS[operator]
    if not op.applies_to(family):
        return
    rng = np.random.default_rng(seed)
    parent = POLICY.default_genome(family)
    for _ in range(3):  # mutate a mutant too, from wherever it landed
        mate = POLICY.default_genome(other)
        child = op.mutate(
            [parent, mate], policy=POLICY, rng=rng, magnitude=magnitude, rate=rate, generation=1
        )
        assert in_bounds(child), child
        assert child.family is family
        assert child.origin == operator
        assert child.parent_ids[0] == parent.id
        parent = child


@pytest.mark.parametrize(
    ("operator", "group"),
    [
        ("time_window", g.TIME_WINDOW),
        ("volatility_filter", g.VOLATILITY),
        ("risk_reward", g.RISK_REWARD),
        ("rl_parameters", g.RL),
        ("dynamic_tp_sl", g.TP_SL),
        ("entry_exit_thresholds", g.THRESHOLDS),
    ],
)
def test_group_operators_touch_only_their_group(operator, group):
    family = StrategyFamily.Q_LEARNING if group == g.RL else StrategyFamily.MEAN_REVERSION
    parent = POLICY.default_genome(family)
    rng = np.random.default_rng(5)
    changed: set[str] = set()
    for _ in range(50):
        child = OPERATORS[operator].mutate(
            [parent], policy=POLICY, rng=rng, magnitude=0.5, rate=1.0, generation=1
        )
        changed |= {k for k in parent.parameters if child.parameters[k] != parent.parameters[k]}
    assert changed
    groups = {POLICY.spec(family, name).group for name in changed}
    assert groups == {group}


def test_the_thresholds_operator_switches_a_crossover_between_state_and_cross_entries():
    family = StrategyFamily.MA_CROSSOVER
    spec = POLICY.spec(family, "entry_on_cross")
    assert (spec.boolean, spec.default, spec.group) == (True, 0.0, g.THRESHOLDS)
    parent = POLICY.default_genome(family)
    rng = np.random.default_rng(8)
    seen = set()
    for _ in range(40):
        child = OPERATORS["entry_exit_thresholds"].mutate(
            [parent], policy=POLICY, rng=rng, magnitude=0.5, rate=1.0, generation=1
        )
        assert in_bounds(child)
        seen.add(child.parameters["entry_on_cross"])
        changed = {k for k in parent.parameters if child.parameters[k] != parent.parameters[k]}
        assert {POLICY.spec(family, k).group for k in changed} <= {g.THRESHOLDS}
    assert seen == {0.0, 1.0}  # flipped, and only ever to a boolean
    # A content address over every parameter: the same crossover by cross is another genome.
    by_cross = make_genome(family, {**parent.parameters, "entry_on_cross": 1.0})
    assert by_cross.id != parent.id
    assert POLICY.validate(by_cross, field="g").parameters["entry_on_cross"] == 1.0


def test_rate_is_the_share_of_parameters_touched():
    parent = POLICY.default_genome(StrategyFamily.MA_CROSSOVER)
    rng = np.random.default_rng(1)
    few = OPERATORS["parameter_tweak"].mutate(
        [parent], policy=POLICY, rng=rng, magnitude=0.3, rate=0.0, generation=1
    )
    assert sum(few.parameters[k] != parent.parameters[k] for k in parent.parameters) <= 1
    counts = []
    for _ in range(30):
        many = OPERATORS["parameter_tweak"].mutate(
            [parent], policy=POLICY, rng=rng, magnitude=0.3, rate=1.0, generation=1
        )
        counts.append(sum(many.parameters[k] != parent.parameters[k] for k in parent.parameters))
    assert np.mean(counts) > 6


def test_magnitude_scales_the_step():
    parent = POLICY.default_genome(StrategyFamily.BREAKOUT)
    spec = POLICY.spec(StrategyFamily.BREAKOUT, "entry_period")

    def mean_step(magnitude: float) -> float:
        rng = np.random.default_rng(2)
        steps = []
        for _ in range(200):
            child = OPERATORS["parameter_tweak"].mutate(
                [parent], policy=POLICY, rng=rng, magnitude=magnitude, rate=1.0, generation=1
            )
            steps.append(
                abs(
                    spec.to_unit(child.parameters["entry_period"])
                    - spec.to_unit(parent.parameters["entry_period"])
                )
            )
        return float(np.mean(steps))

    assert mean_step(0.05) < mean_step(0.3)


def test_crossover_mixes_two_parents_and_hybrid_combines_operators():
    a = make_genome(
        StrategyFamily.MA_CROSSOVER,
        POLICY.repair(StrategyFamily.MA_CROSSOVER, {"fast": 5, "slow": 20}),
    )
    b = make_genome(
        StrategyFamily.MA_CROSSOVER,
        POLICY.repair(StrategyFamily.MA_CROSSOVER, {"fast": 100, "slow": 900}),
    )
    rng = np.random.default_rng(3)
    children = [
        OPERATORS["crossover"].mutate(
            [a, b], policy=POLICY, rng=rng, magnitude=0.2, rate=0.3, generation=1
        )
        for _ in range(20)
    ]
    assert all(set(c.parent_ids) == {a.id, b.id} for c in children)
    assert any(c.parameters["slow"] == 900 for c in children)
    assert any(c.parameters["slow"] == 20 for c in children)
    with pytest.raises(InvalidArgument, match="two parents"):
        OPERATORS["crossover"].mutate(
            [a], policy=POLICY, rng=rng, magnitude=0.2, rate=0.3, generation=1
        )
    hybrid = OPERATORS["hybrid"].mutate(
        [a], policy=POLICY, rng=rng, magnitude=0.5, rate=1.0, generation=1
    )
    moved = {
        POLICY.spec(a.family, k).group
        for k in a.parameters
        if hybrid.parameters[k] != a.parameters[k]
    }
    assert len(moved) >= 2


def test_the_same_seed_gives_the_same_children():
    parent = POLICY.default_genome(StrategyFamily.Q_LEARNING)

    def children(seed: int) -> list[str]:
        rng = np.random.default_rng(seed)
        return [
            OPERATORS[name]
            .mutate([parent, parent], policy=POLICY, rng=rng, magnitude=0.2, rate=0.3, generation=1)
            .id
            for name in sorted(OPERATORS)
        ]

    assert children(9) == children(9)
    assert children(9) != children(10)


@pytest.mark.parametrize(("magnitude", "rate"), [(-0.1, 0.3), (1.5, 0.3), (0.2, float("nan"))])
def test_strength_outside_zero_to_one_is_rejected(magnitude, rate):
    with pytest.raises(InvalidArgument):
        OPERATORS["parameter_tweak"].mutate(
            [POLICY.default_genome(StrategyFamily.BREAKOUT)],
            policy=POLICY,
            rng=np.random.default_rng(0),
            magnitude=magnitude,
            rate=rate,
            generation=1,
        )
