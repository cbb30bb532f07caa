"""Meta settings: the spec's seed numbers, validation with clear messages, environment and flags,
and a bad value stopping `qtmesh serve meta` at start-up."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys

import pytest

from meta.config import MetaConfig, MetaLearningConfig, MetaPolicyRules
from meta.service import APP
from qtmesh.base.config import ConfigError


def test_defaults_are_the_spec_seed_numbers():
    learning, rules = MetaLearningConfig(), MetaPolicyRules()
    assert (
        learning.meta_update_interval_minutes,
        learning.meta_learning_rate,
        learning.performance_window_hours,
        learning.min_samples_for_update,
    ) == (60.0, 0.01, 24.0, 20)
    assert (learning.rl_learning_rate_min, learning.rl_learning_rate_max) == (1e-4, 1e-2)
    assert (learning.rl_exploration_rate_min, learning.rl_exploration_rate_max) == (0.05, 0.40)
    assert (learning.rl_discount_min, learning.rl_discount_max) == (0.90, 0.99)
    assert (learning.risk_multiplier_min, learning.risk_multiplier_max) == (0.5, 1.5)
    assert (rules.sesa_trigger_interval_hours, rules.sesa_performance_drop_threshold) == (
        24.0,
        0.15,
    )
    assert rules.rl_retrain_interval_hours == 12.0
    assert (rules.shadow_min_test_days, rules.shadow_min_trades, rules.shadow_required_sharpe) == (
        7.0,
        50,
        1.0,
    )
    assert (rules.exploration_rate_min, rules.exploration_rate_max) == (0.05, 0.30)
    assert rules.risk_step == 0.10
    config = MetaConfig()
    assert config.learning == learning
    assert config.rules == rules


@pytest.mark.parametrize(
    ("cls", "values", "message"),
    [
        (
            MetaPolicyRules,
            {"exploration_rate_min": 0.4},
            "exploration_rate_min: is above exploration_rate_max",
        ),
        (
            MetaLearningConfig,
            {"rl_discount_min": 0.999},
            "rl_discount_min: is above rl_discount_max",
        ),
        (MetaLearningConfig, {"meta_learning_rate": 1.5}, "meta_learning_rate: must be in (0, 1]"),
        (MetaLearningConfig, {"meta_learning_rate": 0.0}, "meta_learning_rate: must be in (0, 1]"),
        (MetaPolicyRules, {"sesa_performance_drop_threshold": -0.1}, "must be in 0..1"),
        (MetaPolicyRules, {"risk_step": 2.0}, "risk_step: must be in (0, 1]"),
        (
            MetaPolicyRules,
            {"rl_retrain_interval_hours": -12.0},
            "rl_retrain_interval_hours: must not be negative",
        ),
        (MetaLearningConfig, {"meta_update_interval_minutes": -1.0}, "must be positive"),
        (MetaLearningConfig, {"performance_window_hours": float("nan")}, "must be a number"),
        (MetaLearningConfig, {"min_samples_for_update": 1}, "must be at least 2"),
        (
            MetaLearningConfig,
            {"rl_learning_rate_initial": 0.5},
            "rl_learning_rate_initial: must be in",
        ),
        (MetaLearningConfig, {"sesa_mutation_rates": ()}, "must list at least one value"),
        (MetaLearningConfig, {"sesa_mutation_rates": (0.2, 1.5)}, "values must be in 0.01..1"),
        (MetaLearningConfig, {"risk_multiplier_min": 1.2}, "must include 1.0"),
        (MetaConfig, {"exploration_rate_max": 0.45}, "must lie within rl_exploration_rate_min"),
        (
            MetaPolicyRules,
            {"sesa_min_gap_hours": 30.0},
            "must not exceed sesa_trigger_interval_hours",
        ),
    ],
)
def test_bad_settings_are_rejected_naming_the_setting(cls, values, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        cls(**values)


def test_environment_and_flags_fill_every_setting():
    config = APP.load_config(
        environ={
            "QTMESH_META_SESA_TRIGGER_INTERVAL_HOURS": "6",
            "QTMESH_META_SESA_MUTATION_RATES": "0.1, 0.2",
            "QTMESH_META_ADAPT_MODEL_WEIGHTS": "false",
        },
        overrides={"shadow_min_trades": "30"},
    )
    assert config.sesa_trigger_interval_hours == 6.0
    assert config.sesa_mutation_rates == (0.1, 0.2)
    assert not config.adapt_model_weights
    assert config.rules.shadow_min_trades == 30
    with pytest.raises(ConfigError) as failure:
        APP.load_config(environ={"QTMESH_META_EXPLORATION_RATE_MIN": "0.5"})
    assert str(failure.value) == (
        "exploration_rate_min: is above exploration_rate_max (0.5 > 0.3) "
        "(--exploration-rate-min or QTMESH_META_EXPLORATION_RATE_MIN)"
    )


def test_the_database_defaults_to_sqlite_in_the_data_dir_and_hides_its_url(tmp_path):
    assert MetaConfig(data_dir=tmp_path).url == f"sqlite:///{tmp_path}/meta.db"
    config = APP.load_config(environ={"QTMESH_META_DATABASE_URL": "postgresql://u:hunter2@db/meta"})
    assert config.url == "postgresql://u:hunter2@db/meta"
    assert "hunter2" not in repr(config)
    assert dataclasses.replace(config, database_url=None).url.endswith(".qtmesh/data/meta.db")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--exploration-rate-min", "0.5"], "exploration_rate_min: is above exploration_rate_max"),
        (["--meta-learning-rate", "2"], "meta_learning_rate: must be in (0, 1]"),
        (["--rl-retrain-interval-hours", "-1"], "rl_retrain_interval_hours: must not be negative"),
        (["--database-url", "mysql://x/y"], "database_url: cannot open mysql://x/y"),
    ],
)
def test_a_bad_setting_stops_start_up_with_a_clear_message(tmp_path, args, message):
    result = subprocess.run(
        [sys.executable, "-m", "qtmesh", "serve", "meta", "--port", "0", *args],
        cwd=tmp_path,
        env={**os.environ, "QTMESH_LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_serve_help_lists_every_setting_with_its_variable():
    result = subprocess.run(
        [sys.executable, "-m", "qtmesh", "serve", "meta", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for name in ("sesa_trigger_interval_hours", "meta_learning_rate", "database_url"):
        assert f"QTMESH_META_{name.upper()}" in result.stdout
