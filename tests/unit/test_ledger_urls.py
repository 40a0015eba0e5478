"""Ledger URLs: passwords never shown."""

from __future__ import annotations

import pytest

from conveyor.ledger import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p%40ss@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        ("postgresql://u@h/db?password=pw&x=1", "postgresql://u@h/db?password=***&x=1"),
        ("postgresql://h/db?PassWord=pw", "postgresql://h/db?PassWord=***"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:///abs/ledger.db", "sqlite:///abs/ledger.db"),
        ("postgresql://u:pw@[::1", "<unparseable URL>"),
    ],
)
def test_redact_url_hides_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown
