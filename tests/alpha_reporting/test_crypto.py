"""Sealing reports with AES-GCM under a keyring: round trips, and every way a report is refused
(tampered, truncated, wrong key, retired or unknown key, moved to another id/date/sector)."""

from __future__ import annotations

import base64
import dataclasses
import math
import os
import stat
from pathlib import Path

import pytest

from alpha_reporting.crypto import Keyring, load_or_create_keyring_file, open_report, seal
from alpha_reporting.report import SectorReport, report_id_for, validate_report
from qtmesh.base.config import ConfigError
from qtmesh.base.errors import DataIntegrityError, FailedPrecondition, InvalidArgument

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 16).decode()
K3 = base64.b64encode(b"3" * 24).decode()


def report(**changes) -> SectorReport:
    fields = {
        "report_id": report_id_for("Tech", "2026-02-04"),
        "sector": "Tech",
        "trading_date": "2026-02-04",
        "roi": 0.0125,
        "alpha": 0.0125 - 0.004,
        "benchmark_return": 0.004,
        "volatility": 0.21,
        "max_drawdown": 0.011,
        "trade_count": 42,
        "fleet_size": 9,
    }
    return SectorReport(**{**fields, **changes})


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.parse(f"k1:{K1},k2:{K2}")


def test_a_report_round_trips_under_the_newest_key(keyring):
    sealed = seal(report(), keyring, create_time=5)
    assert sealed.key_id == "k2"
    assert len(sealed.nonce) == 12
    assert b"Tech" not in sealed.ciphertext
    assert open_report(sealed, keyring) == report()
    # Nonces are fresh per report.
    assert seal(report(), keyring).nonce != sealed.nonce


def test_older_keys_still_open_their_reports_after_a_rotation(keyring):
    old = seal(report(), Keyring.parse(f"k1:{K1}"))
    assert old.key_id == "k1"
    rotated = Keyring.parse(f"k1:{K1},k2:{K2},k3:{K3}")
    assert open_report(old, rotated) == report()
    assert seal(report(), rotated).key_id == "k3"


def test_a_retired_or_unknown_key_is_refused_naming_report_and_key(keyring):
    old = seal(report(), Keyring.parse(f"k1:{K1}"))
    retired = Keyring.parse(f"k1:{K1},k2:{K2}", retired=["k1"])
    with pytest.raises(FailedPrecondition, match=r"sealed under key 'k1', which is retired") as e:
        open_report(old, retired)
    assert e.value.metadata == {"report_id": old.report_id, "key_id": "k1"}
    with pytest.raises(FailedPrecondition, match="which is not in the keyring"):
        open_report(old, Keyring.parse(f"k2:{K2}"))
    assert K1 not in str(e.value)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda s: dataclasses.replace(s, ciphertext=flip(s.ciphertext, 3)), id="byte"),
        pytest.param(
            lambda s: dataclasses.replace(s, ciphertext=flip(s.ciphertext, len(s.ciphertext) - 1)),
            id="tag",
        ),
        pytest.param(lambda s: dataclasses.replace(s, nonce=flip(s.nonce, 0)), id="nonce"),
        pytest.param(
            lambda s: dataclasses.replace(s, ciphertext=s.ciphertext[:-1]), id="truncated"
        ),
        pytest.param(lambda s: dataclasses.replace(s, ciphertext=s.ciphertext[:10]), id="stub"),
        pytest.param(lambda s: dataclasses.replace(s, ciphertext=b""), id="empty"),
        pytest.param(lambda s: dataclasses.replace(s, nonce=s.nonce[:8]), id="short-nonce"),
        pytest.param(lambda s: dataclasses.replace(s, trading_date="2026-02-05"), id="date"),
        pytest.param(lambda s: dataclasses.replace(s, sector="Energy"), id="sector"),
        pytest.param(lambda s: dataclasses.replace(s, report_id="eod-other"), id="report-id"),
        pytest.param(lambda s: dataclasses.replace(s, key_id="k1"), id="key-id"),
    ],
)
def test_a_tampered_report_is_rejected_whole(keyring, tamper):
    sealed = seal(report(), keyring)
    with pytest.raises(DataIntegrityError, match=f"report {tamper(sealed).report_id}") as e:
        open_report(tamper(sealed), keyring)
    assert "rejected" in e.value.message
    assert e.value.code == "DATA_LOSS"


def test_the_wrong_key_under_the_right_id_fails_authentication(keyring):
    sealed = seal(report(), keyring)
    impostor = Keyring.parse(f"k1:{K1},k2:{base64.b64encode(b'x' * 16).decode()}")
    with pytest.raises(DataIntegrityError, match="authentication failed"):
        open_report(sealed, impostor)


def test_keys_never_show(keyring):
    assert K1 not in repr(keyring)
    assert "k1" in repr(keyring)
    assert K2 not in str(keyring)


@pytest.mark.parametrize(
    ("text", "retired", "problem"),
    [
        ("", (), "holds no key"),
        ("k1", (), "is not id:base64key"),
        ("bad id:" + K1, (), "is not id:base64key"),
        (f"k1:{K1},k1:{K2}", (), "appears twice"),
        ("k1:%%%", (), "not valid base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", (), "AES needs 16, 24 or 32"),
        (f"k1:{K1},k2:{K2}", ("k2",), "cannot be retired"),
    ],
)
def test_bad_keyrings_stop_start_up_without_showing_keys(text, retired, problem):
    with pytest.raises(ConfigError, match=problem) as e:
        Keyring.parse(text, retired=retired)
    assert K1 not in str(e.value)
    assert K2 not in str(e.value)


def test_a_development_keyring_is_created_once_and_private(tmp_path):
    path = tmp_path / "keys" / "alpha-keyring"
    text, created = load_or_create_keyring_file(path)
    assert created
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_keyring_file(path) == (text, False)
    assert Keyring.parse(text).key_ids == ("dev-1",)


def test_a_starter_losing_the_creation_race_reads_the_winners_key(tmp_path):
    path = tmp_path / "alpha-keyring"
    winner = Keyring.generate_text("winner")

    def other_process_creates_it_meanwhile(n: int) -> bytes:
        path.write_text(winner + "\n")
        return os.urandom(n)

    assert load_or_create_keyring_file(path, random_bytes=other_process_creates_it_meanwhile) == (
        winner,
        False,
    )
    assert os.listdir(tmp_path) == ["alpha-keyring"]


def test_the_keyring_file_never_exists_without_its_key(tmp_path, monkeypatch):
    path = tmp_path / "alpha-keyring"
    linked = []
    real_link = os.link

    def link_then_crash(source, target):
        # What a racing reader would see the moment the name appears.
        linked.append(Path(source).read_text())
        raise OSError("the machine lost power")

    monkeypatch.setattr(os, "link", link_then_crash)
    with pytest.raises(OSError, match="lost power"):
        load_or_create_keyring_file(path)
    assert Keyring.parse(linked[0].strip()).key_ids == ("dev-1",)
    assert not path.exists()
    # The next start is not blocked by what the crash left.
    monkeypatch.setattr(os, "link", real_link)
    text, created = load_or_create_keyring_file(path)
    assert created
    assert path.read_text().strip() == text


def test_an_empty_keyring_file_stops_start_up_saying_what_to_do(tmp_path):
    path = tmp_path / "alpha-keyring"
    path.write_text("")
    with pytest.raises(ConfigError, match="is empty") as e:
        load_or_create_keyring_file(path)
    assert e.value.setting == "keyring_file"
    assert "delete it" in str(e.value)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"roi": math.nan}, "report.roi"),
        ({"benchmark_return": math.inf}, "report.benchmark_return"),
        ({"roi": -1.5, "alpha": -1.504}, "report.roi"),
        ({"alpha": 0.5}, "report.alpha"),
        ({"volatility": -0.1}, "report.volatility"),
        ({"max_drawdown": 1.5}, "report.max_drawdown"),
        ({"trade_count": -1}, "report.trade_count"),
        ({"fleet_size": -2}, "report.fleet_size"),
        ({"trading_date": "2026-02-30"}, "report.trading_date"),
        ({"trading_date": "04/02/2026"}, "report.trading_date"),
        ({"sector": " "}, "report.sector"),
        ({"report_id": "has space"}, "report.report_id"),
    ],
)
def test_bad_reports_are_refused_naming_the_field(changes, field):
    with pytest.raises(InvalidArgument) as bad:
        validate_report(report(**changes))
    assert bad.value.field == field


def test_report_ids_are_readable_and_distinct():
    assert report_id_for("Tech", "2026-02-04").startswith("eod-2026-02-04-tech-")
    assert report_id_for("Real Estate", "2026-02-04") != report_id_for("real-estate", "2026-02-04")
