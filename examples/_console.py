"""One console for the examples: the terminal's width, or 120 columns when piped (CI logs)."""

from __future__ import annotations

import sys

from rich.console import Console


def console() -> Console:
    return Console() if sys.stdout.isatty() else Console(width=120)
