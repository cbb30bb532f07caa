"""Configuration: defaults, environment, flags, validation messages and secrets."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from market.config import ENV_PREFIX as MARKET_PREFIX
from market.config import MarketConfig
from qtmesh.base import config as configuration
from qtmesh.base.config import ConfigError, Secret
from qtmesh.runtime.channels import CLIENT_ENV_PREFIX, ChannelConfig
from qtmesh.runtime.server import ENV_PREFIX, ServerConfig


def test_defaults_then_environment_then_flags():
    assert configuration.load(ServerConfig, env_prefix=ENV_PREFIX, environ={}).port is None
    from_env = configuration.load(
        ServerConfig,
        env_prefix=ENV_PREFIX,
        environ={"QTMESH_PORT": "6000", "QTMESH_GRACE_SECONDS": "2.5", "QTMESH_LOG_FORMAT": "json"},
    )
    assert (from_env.port, from_env.grace_seconds, from_env.log_format) == (6000, 2.5, "json")
    from_flag = configuration.load(
        ServerConfig,
        env_prefix=ENV_PREFIX,
        environ={"QTMESH_PORT": "6000"},
        overrides={"port": "7000"},
    )
    assert from_flag.port == 7000


def test_flags_are_generated_from_the_dataclass():
    parser = argparse.ArgumentParser()
    configuration.add_arguments(parser, MarketConfig, env_prefix=MARKET_PREFIX)
    namespace = parser.parse_args(["--seed", "11", "--synthetic-days", "3"])
    overrides = configuration.flags_for(namespace, MarketConfig)
    assert overrides == {"seed": "11", "synthetic_days": "3"}
    loaded = configuration.load(
        MarketConfig, env_prefix=MARKET_PREFIX, environ={}, overrides=overrides
    )
    assert (loaded.seed, loaded.synthetic_days) == (11, 3)
    assert "QTMESH_MARKET_SEED" in parser.format_help()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"QTMESH_PORT": "70000"}, "port: must be in 0..65535 (--port or QTMESH_PORT)"),
        (
            {"QTMESH_PORT": "eighty"},
            "port: expected an integer, got 'eighty' (--port or QTMESH_PORT)",
        ),
        ({"QTMESH_GRACE_SECONDS": "-1"}, "grace_seconds: must not be negative"),
        ({"QTMESH_LOG_LEVEL": "loud"}, "log_level: must be one of"),
        (
            {"QTMESH_TLS_CERT_FILE": "/nonexistent.pem"},
            "TLS needs both tls_cert_file and tls_key_file",
        ),
        ({"QTMESH_AUTH_TOKENS": "no-colon"}, "auth_tokens: expected client:token pairs"),
        ({"QTMESH_HEALTH_PORT": "-1"}, "health_port: must be in 0..65535 (--health-port or"),
        (
            {"QTMESH_PORT": "50052", "QTMESH_HEALTH_PORT": "50052"},
            "health_port: must differ from port (--health-port or QTMESH_HEALTH_PORT)",
        ),
    ],
)
def test_invalid_server_settings_name_the_setting(environ, message):
    with pytest.raises(ConfigError) as failure:
        configuration.load(ServerConfig, env_prefix=ENV_PREFIX, environ=environ)
    assert message in str(failure.value)


def test_invalid_market_settings_name_the_setting(tmp_path: Path):
    with pytest.raises(ConfigError, match="replay_start: must be in"):
        configuration.load(
            MarketConfig, env_prefix=MARKET_PREFIX, environ={"QTMESH_MARKET_REPLAY_START": "1.5"}
        )
    with pytest.raises(ConfigError, match="data_path: no such file"):
        MarketConfig(data_path=tmp_path / "missing.csv")
    (tmp_path / "bars.txt").write_text("")
    with pytest.raises(ConfigError, match=r"expected a \.csv or \.parquet file"):
        MarketConfig(data_path=tmp_path / "bars.txt")


def test_unknown_override_is_rejected():
    with pytest.raises(ConfigError, match="not a setting of ServerConfig"):
        configuration.load(ServerConfig, env_prefix=ENV_PREFIX, environ={}, overrides={"prot": 1})


def test_secrets_never_show():
    config = configuration.load(
        ServerConfig, env_prefix=ENV_PREFIX, environ={"QTMESH_AUTH_TOKENS": "fed:hunter2"}
    )
    assert "hunter2" not in repr(config)
    assert "hunter2" not in str(config.auth_tokens)
    assert config.auth_tokens.reveal() == "fed:hunter2"
    assert "hunter2" not in repr(ChannelConfig(auth_token=Secret("hunter2")))


def test_client_addresses_come_from_one_variable():
    channels = configuration.load(
        ChannelConfig,
        env_prefix=CLIENT_ENV_PREFIX,
        environ={"QTMESH_ADDRESSES": "market=10.0.0.5:50052, sesa=dns:///sesa:50053"},
    )
    assert channels.address_of("market") == "10.0.0.5:50052"
    assert channels.address_of("sesa") == "dns:///sesa:50053"
    assert channels.address_of("risk", default_port=50058) == "127.0.0.1:50058"
    with pytest.raises(ConfigError, match="name=value pairs"):
        configuration.load(
            ChannelConfig, env_prefix=CLIENT_ENV_PREFIX, environ={"QTMESH_ADDRESSES": "market"}
        )
