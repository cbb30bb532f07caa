"""A renamed environment prefix keeps working for one release: its variables are read when the
new ones are unset, with a warning naming the new variable, and messages name what was set."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from alpha_reporting.config import AlphaReportingConfig
from meta_optimizer.config import ENV_PREFIX, MetaOptimizerConfig
from qtmesh.base import config as configuration
from qtmesh.runtime import catalog


def test_an_old_variable_is_read_with_a_warning_naming_the_new_one():
    with capture_logs() as logs:
        config = configuration.load(
            MetaOptimizerConfig, env_prefix=ENV_PREFIX, environ={"QTMESH_METAOPT_MIN_DAYS": "5"}
        )
    assert config.min_days == 5
    (warning,) = [e for e in logs if e["event"] == "deprecated setting variable"]
    assert warning["variable"] == "QTMESH_METAOPT_MIN_DAYS"
    assert warning["use"] == "QTMESH_META_OPTIMIZER_MIN_DAYS"
    assert warning["log_level"] == "warning"


def test_the_new_variable_wins_and_the_old_one_is_then_ignored_silently():
    environ = {"QTMESH_METAOPT_MIN_DAYS": "2", "QTMESH_META_OPTIMIZER_MIN_DAYS": "4"}
    with capture_logs() as logs:
        config = configuration.load(MetaOptimizerConfig, env_prefix=ENV_PREFIX, environ=environ)
    assert config.min_days == 4
    assert not [e for e in logs if e["event"] == "deprecated setting variable"]


def test_a_bad_value_under_the_old_name_is_reported_under_the_old_name():
    with pytest.raises(configuration.ConfigError) as bad:
        configuration.load(
            AlphaReportingConfig,
            env_prefix="QTMESH_ALPHA_REPORTING_",
            environ={"QTMESH_ALPHA_WATCH_MARKET": "perhaps"},
        )
    assert "QTMESH_ALPHA_WATCH_MARKET" in str(bad.value)
    assert "--watch-market" in str(bad.value)


def test_every_service_is_spelled_one_way():
    for entry in catalog.CATALOG:
        app = entry.load()
        package = entry.target.partition(":")[0].removesuffix(".service")
        assert package.rpartition(".")[2] == app.name.replace("-", "_")
        assert app.env_prefix == configuration.service_env_prefix(app.name)
        assert app.name == entry.name
