"""``conveyor.client_base``: the queue and ledger a Client opens on first use, and closing."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.client import connect
from conveyor.errors import ConfigError
from conveyor.ledger import JobNotFound


def test_reading_before_anything_was_submitted_creates_nothing(tmp_path: Path) -> None:
    with connect(tmp_path / "never") as client:
        with pytest.raises(JobNotFound, match="nothing submitted yet"):
            client.get("01ABC")
        with pytest.raises(JobNotFound):
            client.wait(["01ABC"], timeout_s=0)
    assert not (tmp_path / "never").exists()


def test_a_closed_client_says_so(tmp_path: Path) -> None:
    client = connect(tmp_path)
    client.close()
    client.close()
    with pytest.raises(ConfigError, match="closed"):
        client.submit(task="csv-process", params={})
