"""The Deployment's sections: the ledger's Secret is NAME or NAME:KEY, checked."""

from __future__ import annotations

import pytest

from conveyor.errors import ConfigError
from conveyor.k8s.sections import LedgerSecret


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("conveyor-ledger", LedgerSecret("conveyor-ledger", "url")),
        ("rds.ledger:dsn", LedgerSecret("rds.ledger", "dsn")),
        ("db:DATABASE_URL", LedgerSecret("db", "DATABASE_URL")),
        (None, LedgerSecret()),
        ("", LedgerSecret()),
    ],
)
def test_the_ledger_secret_is_name_and_key(value: str | None, expected: LedgerSecret) -> None:
    assert LedgerSecret.parse(value) == expected


@pytest.mark.parametrize("value", ["Conveyor", "db:", "db:a/b", "-db", "db:url:x", "a" * 254])
def test_a_malformed_ledger_secret_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="--ledger-secret"):
        LedgerSecret.parse(value)
