"""Shared fixtures: a scrubbed environment for every test."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _scrub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's CONVEYOR_*, SQS_* or AWS_* settings."""
    for name in list(os.environ):
        if name.startswith(("CONVEYOR_", "AWS_", "SQS_")):
            monkeypatch.delenv(name, raising=False)


pytest_plugins = ["tests.fixtures.queues", "tests.fixtures.sqs", "tests.fixtures.postgres"]
