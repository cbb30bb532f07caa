"""Settings of the fleet, alpha-reporting and the meta optimizer: validated at start-up with a
message naming the setting (never a key), listed by `qtmesh serve --help`."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest

from alpha_reporting.config import AlphaReportingConfig
from market.config import ENV_PREFIX as MARKET_PREFIX
from market.config import MarketConfig
from meta_optimizer.config import ENV_PREFIX as METAOPT_PREFIX
from meta_optimizer.config import MetaOptimizerConfig
from qtmesh.base import config as configuration
from qtmesh.base.config import ConfigError, Secret

KEY = base64.b64encode(b"s" * 32).decode()


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"fleet_families": ("MOMENTUM",)}, "fleet_families"),
        ({"fleet_allocations": {"Tech": "0.9"}}, "fleet_allocations"),
        ({"fleet_allocations": {"Tech": "lots"}}, "fleet_allocations"),
        ({"max_total_allocation": 0.2}, "max_total_allocation"),
        ({"max_arb_allocation": 0.0}, "max_arb_allocation"),
        ({"max_exposure_factor": 0.5}, "max_exposure_factor"),
        ({"arb_mission_days": 0.0}, "arb_mission_days"),
        ({"fleet_commission_bps": -1.0}, "fleet_commission_bps"),
    ],
)
def test_bad_fleet_settings_name_the_setting(settings, name):
    with pytest.raises(ConfigError) as bad:
        MarketConfig(**settings)
    assert bad.value.setting == name


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"min_days": 1}, "min_days"),
        ({"reinforcement_significance": 1.0}, "reinforcement_significance"),
        ({"arb_significance": 0.0}, "arb_significance"),
        ({"reinforcement_factor": 1.0}, "reinforcement_factor"),
        ({"mitigation_factor": 1.0}, "mitigation_factor"),
        ({"arb_allocation": 2.0}, "arb_allocation"),
        ({"watch_queue_events": 0}, "watch_queue_events"),
        ({"keyring": Secret(f"k1:{KEY}"), "retired_key_ids": ("k1",)}, "retired_key_ids"),
    ],
)
def test_bad_optimizer_settings_name_the_setting(settings, name):
    with pytest.raises(ConfigError) as bad:
        MetaOptimizerConfig(**settings)
    assert bad.value.setting == name


def test_the_keyring_variables_configure_both_services_and_stay_secret():
    environ = {"QTMESH_ALPHA_KEYRING": f"k1:{KEY}", "QTMESH_ALPHA_RETIRED_KEY_IDS": "k0"}
    optimizer = configuration.load(MetaOptimizerConfig, env_prefix=METAOPT_PREFIX, environ=environ)
    alpha = configuration.load(AlphaReportingConfig, env_prefix="QTMESH_ALPHA_", environ=environ)
    for config in (optimizer, alpha):
        assert config.keyring.reveal() == f"k1:{KEY}"
        assert config.retired_key_ids == ("k0",)
        assert KEY not in repr(config)
    with pytest.raises(ConfigError) as bad:
        configuration.load(
            AlphaReportingConfig,
            env_prefix="QTMESH_ALPHA_",
            environ={"QTMESH_ALPHA_KEYRING": "k1:abc"},
        )
    assert "QTMESH_ALPHA_KEYRING" in str(bad.value)
    environ = {"QTMESH_MARKET_FLEET_ALLOCATIONS": "Tech=0.4,Energy=0.1"}
    market = configuration.load(MarketConfig, env_prefix=MARKET_PREFIX, environ=environ)
    assert market.allocations == {"Tech": 0.4, "Energy": 0.1}


def test_a_bad_keyring_stops_start_up_without_showing_the_key(tmp_path):
    short = base64.b64encode(b"x" * 10).decode()
    result = subprocess.run(
        [sys.executable, "-m", "qtmesh", "serve", "alpha-reporting", "--port", "0"],
        cwd=tmp_path,
        env={**os.environ, "QTMESH_ALPHA_KEYRING": f"k1:{short}", "QTMESH_LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "keyring: key 'k1' has 10 bytes; AES needs 16, 24 or 32" in result.stderr
    assert short not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("service", "variables"),
    [
        ("market", ["QTMESH_MARKET_DATA_DIR", "QTMESH_MARKET_FLEET_ALLOCATIONS"]),
        ("alpha-reporting", ["QTMESH_ALPHA_DATA_DIR", "QTMESH_ALPHA_KEYRING_FILE"]),
        ("meta-optimizer", ["QTMESH_METAOPT_DATA_DIR", "QTMESH_ALPHA_KEYRING"]),
    ],
)
def test_serve_help_lists_the_settings_with_their_variables(service, variables):
    result = subprocess.run(
        [sys.executable, "-m", "qtmesh", "serve", service, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for variable in variables:
        assert variable in result.stdout
