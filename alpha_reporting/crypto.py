"""AES-GCM sealing of sector reports under a keyring with key ids, and the keyring itself.

* **Keyring.** ``"k1:<base64 key>,k2:<base64 key>"``: ids of 1-32 letters, digits, '.', '_' or
  '-'; keys of 16, 24 or 32 bytes (AES-128/192/256). The last key is the newest: every new
  report is sealed under it. Older keys still open the reports they sealed, unless their id is
  listed as retired, in which case those reports are refused (re-seal them before retiring).
* **Sealing.** The plaintext is the report as canonical JSON; the nonce is 96 random bits per
  report; the associated data binds the format version, report id, trading date, sector and
  key id, so an envelope whose fields were changed, or a ciphertext moved to another report,
  fails authentication.
* **Opening** either returns the whole report or raises: an unknown or retired key id is
  FailedPrecondition; a tampered, truncated or wrongly keyed report is DataIntegrityError. The
  messages name the report and the key id, never key material.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from alpha_reporting.report import EncryptedReport, SectorReport, validate_report
from qtmesh.base.config import ConfigError
from qtmesh.base.errors import DataIntegrityError, FailedPrecondition, InvalidArgument

FORMAT = "qtmesh.alpha.v1"
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9._\-]{1,32}$")
KEY_SIZES = (16, 24, 32)
RandomBytes = Callable[[int], bytes]


@dataclasses.dataclass(frozen=True)
class Keyring:
    """Keys by id, oldest first; the last is the newest. Never shows key material."""

    _keys: tuple[tuple[str, bytes], ...] = dataclasses.field(repr=False)
    retired: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self._keys:
            raise ValueError("a keyring needs at least one key")

    def __repr__(self) -> str:
        return f"Keyring(key_ids={self.key_ids}, retired={sorted(self.retired)})"

    __str__ = __repr__

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(key_id for key_id, _ in self._keys)

    @property
    def newest_id(self) -> str:
        return self._keys[-1][0]

    def key(self, key_id: str, *, report_id: str) -> bytes:
        """The key ``key_id``; FailedPrecondition if it is retired or unknown."""
        if key_id in self.retired:
            raise FailedPrecondition(
                f"report {report_id} is sealed under key {key_id!r}, which is retired; "
                "it is refused",
                metadata={"report_id": report_id, "key_id": key_id},
            )
        for known, key in self._keys:
            if known == key_id:
                return key
        raise FailedPrecondition(
            f"report {report_id} is sealed under key {key_id!r}, which is not in the keyring",
            metadata={"report_id": report_id, "key_id": key_id},
        )

    @classmethod
    def parse(cls, text: str, *, retired: Iterable[str] = (), setting: str = "keyring") -> Keyring:
        """Parses ``id:base64,...``; raises ConfigError naming ``setting`` (never the key)."""
        keys: list[tuple[str, bytes]] = []
        for position, part in enumerate(p.strip() for p in text.split(",")):
            if not part:
                continue
            key_id, sep, encoded = part.partition(":")
            key_id = key_id.strip()
            if not sep or not KEY_ID_PATTERN.match(key_id):
                raise ConfigError(
                    setting,
                    f"entry {position + 1} is not id:base64key with an id of 1-32 letters, "
                    "digits, '.', '_' or '-'",
                )
            if key_id in (k for k, _ in keys):
                raise ConfigError(setting, f"key id {key_id!r} appears twice")
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(setting, f"key {key_id!r} is not valid base64") from None
            if len(key) not in KEY_SIZES:
                raise ConfigError(
                    setting, f"key {key_id!r} has {len(key)} bytes; AES needs 16, 24 or 32"
                )
            keys.append((key_id, key))
        if not keys:
            raise ConfigError(setting, "holds no key")
        retired_ids = frozenset(r.strip() for r in retired if r.strip())
        if keys[-1][0] in retired_ids:
            raise ConfigError(
                "retired_key_ids", f"the newest key {keys[-1][0]!r} cannot be retired"
            )
        return cls(tuple(keys), retired_ids)

    @staticmethod
    def generate_text(key_id: str = "dev-1", *, random_bytes: RandomBytes = os.urandom) -> str:
        """A fresh one-key keyring (AES-256) in the ``id:base64`` form."""
        return f"{key_id}:{base64.b64encode(random_bytes(32)).decode()}"


def load_or_create_keyring_file(
    path: Path, *, random_bytes: RandomBytes = os.urandom
) -> tuple[str, bool]:
    """The keyring text in ``path``, creating the file (mode 0600) with a fresh key when it does
    not exist; True when it was created. Concurrent starters agree on one file.

    The key is written and synced to a private temporary file beside ``path`` and then hard
    linked into place, which fails if ``path`` exists: the file never exists without its key,
    so a racing starter cannot read it empty and a crash cannot leave it empty (at worst a
    stray temporary file). The starter that loses the race reads the winner's key."""
    try:
        return _read_keyring_file(path), False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    text = Keyring.generate_text(random_bytes=random_bytes)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "w") as file:  # mkstemp creates it 0600
            file.write(text + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return _read_keyring_file(path), False
        _sync_directory(path.parent)
    finally:
        os.unlink(temporary)
    return text, True


def _read_keyring_file(path: Path) -> str:
    text = path.read_text().strip()
    if not text:
        # Only a writer that created the file before writing it (as releases before this one
        # did) can have left it empty; no key was ever in it, but another process may be
        # about to write one, so it is not replaced behind its back.
        raise ConfigError(
            "keyring_file",
            f"{path} is empty (an interrupted start left it); delete it to have a new "
            "development key created",
        )
    return text


def _sync_directory(directory: Path) -> None:
    """Makes a new directory entry durable, so a crash cannot lose a key already in use."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def associated_data(report_id: str, trading_date: str, sector: str, key_id: str) -> bytes:
    return json.dumps([FORMAT, report_id, trading_date, sector, key_id]).encode()


def _plaintext(report: SectorReport) -> bytes:
    return json.dumps(
        dataclasses.asdict(report), sort_keys=True, separators=(",", ":"), allow_nan=False
    ).encode()


def seal(
    report: SectorReport,
    keyring: Keyring,
    *,
    create_time: int = 0,
    random_bytes: RandomBytes = os.urandom,
) -> EncryptedReport:
    """The report encrypted and authenticated under the keyring's newest key."""
    validate_report(report)
    if not report.report_id:
        raise InvalidArgument("report.report_id", "must be set before sealing")
    key_id = keyring.newest_id
    nonce = random_bytes(NONCE_BYTES)
    aad = associated_data(report.report_id, report.trading_date, report.sector, key_id)
    ciphertext = AESGCM(keyring.key(key_id, report_id=report.report_id)).encrypt(
        nonce, _plaintext(report), aad
    )
    return EncryptedReport(
        report_id=report.report_id,
        sector=report.sector,
        trading_date=report.trading_date,
        key_id=key_id,
        nonce=nonce,
        ciphertext=ciphertext,
        create_time=create_time,
    )


def open_report(sealed: EncryptedReport, keyring: Keyring) -> SectorReport:
    """The verified report, or an exception: nothing of a report that fails is returned."""
    rid = sealed.report_id
    key = keyring.key(sealed.key_id, report_id=rid)

    def broken(problem: str) -> DataIntegrityError:
        return DataIntegrityError(
            f"report {rid} (key {sealed.key_id!r}) is rejected: {problem}",
            metadata={"report_id": rid, "key_id": sealed.key_id},
        )

    if len(sealed.nonce) != NONCE_BYTES:
        raise broken(f"its nonce has {len(sealed.nonce)} bytes, not {NONCE_BYTES}")
    if len(sealed.ciphertext) < TAG_BYTES:
        raise broken("its ciphertext is truncated")
    aad = associated_data(rid, sealed.trading_date, sealed.sector, sealed.key_id)
    try:
        plaintext = AESGCM(key).decrypt(sealed.nonce, sealed.ciphertext, aad)
    except InvalidTag:
        raise broken(
            "authentication failed: the ciphertext or its id, date, sector or key id was "
            "altered or truncated, or it was sealed under another key"
        ) from None
    try:
        fields = json.loads(plaintext)
        report = SectorReport(**fields)
        validate_report(report)
    except (ValueError, TypeError, InvalidArgument) as exc:
        raise broken(f"its authenticated content is not a valid report ({exc})") from None
    if (report.report_id, report.sector, report.trading_date) != (
        rid,
        sealed.sector,
        sealed.trading_date,
    ):
        raise broken("its content belongs to another report")
    return report
