"""Settings of the alpha-reporting service (QTMESH_ALPHA_REPORTING_<NAME>), and the keyring
settings it shares with the meta optimizer (the same QTMESH_ALPHA_REPORTING_KEYRING* variables
configure both)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import structlog

from alpha_reporting.crypto import Keyring, load_or_create_keyring_file
from qtmesh.base.config import ConfigError, Secret, setting
from qtmesh.base.reconnect import ReconnectConfig
from qtmesh.base.storage import DataDirConfig

ENV_PREFIX = "QTMESH_ALPHA_REPORTING_"
KEYRING_ENV = "QTMESH_ALPHA_REPORTING_KEYRING"
RETIRED_ENV = "QTMESH_ALPHA_REPORTING_RETIRED_KEY_IDS"
KEYRING_FILE_ENV = "QTMESH_ALPHA_REPORTING_KEYRING_FILE"

_log = structlog.get_logger("alpha_reporting.keyring")


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyringConfig:
    """Where the report keys come from. Production sets ``keyring`` (or mounts a file at
    ``keyring_file``); without either, a random development key is created in the file."""

    keyring: Secret | None = setting(
        None,
        env=KEYRING_ENV,
        help="report keys as id:base64key pairs, oldest first; new reports use the last",
    )
    retired_key_ids: tuple[str, ...] = setting(
        (), env=RETIRED_ENV, help="key ids whose reports are refused (rotated out)"
    )
    keyring_file: Path = setting(
        Path(".qtmesh/keys/alpha-keyring"),
        env=KEYRING_FILE_ENV,
        help="file holding the keyring when keyring is unset; created with a random key on "
        "first start (DEVELOPMENT ONLY: set keyring or provide the file in production)",
    )

    def __post_init__(self) -> None:
        if self.keyring is not None:
            Keyring.parse(self.keyring.reveal(), retired=self.retired_key_ids, setting="keyring")

    def load_keyring(self, *, service: str) -> Keyring:
        """The configured keyring; logs which key ids are in use (never the keys)."""
        if self.keyring is not None:
            keyring = Keyring.parse(
                self.keyring.reveal(), retired=self.retired_key_ids, setting="keyring"
            )
            source = "keyring setting"
        else:
            try:
                text, created = load_or_create_keyring_file(self.keyring_file)
            except OSError as exc:
                raise ConfigError("keyring_file", f"cannot read or create it: {exc}") from None
            keyring = Keyring.parse(text, retired=self.retired_key_ids, setting="keyring_file")
            source = str(self.keyring_file)
            if created:
                _log.warning(
                    f"created a development keyring; set {KEYRING_ENV} in production",
                    service=service,
                    path=source,
                )
        _log.info(
            "report keyring loaded",
            service=service,
            source=source,
            key_ids=list(keyring.key_ids),
            newest=keyring.newest_id,
            retired=sorted(keyring.retired),
        )
        return keyring


@dataclasses.dataclass(frozen=True, kw_only=True)
class AlphaReportingConfig(DataDirConfig, ReconnectConfig, KeyringConfig):
    database_file = "alpha.db"

    watch_market: bool = setting(
        True, help="write each sector's report when the market's replay clock ends a UTC day"
    )

    def __post_init__(self) -> None:
        self.check_database()
        KeyringConfig.__post_init__(self)
        self.check_reconnect()
