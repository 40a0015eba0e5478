"""Fixtures shared by several unit test modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.client import Client
from conveyor.default_tasks import default_registry
from conveyor.settings import settings_from_env
from conveyor.task_context import TaskContext
from conveyor.task_registry import TaskRegistry


@pytest.fixture
def forget_tasks() -> Iterator[list[str]]:
    """Names registered in the default registry by a test, removed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        default_registry().unregister(name)


@pytest.fixture
def registry() -> TaskRegistry:
    """A task registry of one task, ``noop``."""
    registry = TaskRegistry()

    @registry.task("noop")
    def noop(ctx: TaskContext) -> None:
        return None

    return registry


@pytest.fixture
def client(tmp_path: Path, registry: TaskRegistry) -> Iterator[Client]:
    """A client on the embedded queue and ledger under ``tmp_path/storage``."""
    (tmp_path / "storage").mkdir()
    settings = settings_from_env({}, storage=tmp_path / "storage")
    with Client(settings, registry=registry) as client:
        yield client
