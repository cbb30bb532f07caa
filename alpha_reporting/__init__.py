"""Alpha reporting: encrypted, authenticated end-of-day performance reports per sector."""

from alpha_reporting.client import AlphaReportingClient
from alpha_reporting.config import AlphaReportingConfig, KeyringConfig
from alpha_reporting.crypto import Keyring, open_report, seal
from alpha_reporting.engine import ReportBook
from alpha_reporting.report import EncryptedReport, SectorReport
from alpha_reporting.watcher import DayReporter

__all__ = [
    "AlphaReportingClient",
    "AlphaReportingConfig",
    "DayReporter",
    "EncryptedReport",
    "Keyring",
    "KeyringConfig",
    "ReportBook",
    "SectorReport",
    "open_report",
    "seal",
]
