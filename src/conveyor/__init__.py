"""conveyor: asynchronous batch jobs through a queue, with the data on shared storage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Job", "TaskContext", "task"]

if TYPE_CHECKING:
    from conveyor.jobs import Job
    from conveyor.tasks import TaskContext, task

# Imported on first use, so that `conveyor run` does not pay for the queue machinery.
_LAZY = {"Job": "conveyor.jobs", "TaskContext": "conveyor.tasks", "task": "conveyor.tasks"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'conveyor' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
