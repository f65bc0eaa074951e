"""How many entries a home's ledger holds: the "nothing was recorded" check of the CLI tests."""

from __future__ import annotations

from pathlib import Path

from immutrail.ledger.home import open_ledger


def ledger_size(home: Path) -> int:
    with open_ledger(home) as ledger:
        return ledger.head().size
