"""conveyor: asynchronous batch jobs through a queue, with the data on shared storage.

``conveyor.connect()`` gives a :class:`Client` (submit, submit_many, get, wait, cancel);
``@conveyor.task`` registers a task, which can then submit itself (``wordcount.submit(...)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.lazy import lazy_exports

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Job",
    "JobRecord",
    "JobState",
    "SubmitInterrupted",
    "Task",
    "TaskContext",
    "WaitTimeout",
    "connect",
    "open_queue",
    "task",
]

if TYPE_CHECKING:
    from conveyor.client import Client, connect
    from conveyor.default_tasks import task
    from conveyor.jobs import Job, JobState
    from conveyor.ledger import JobRecord
    from conveyor.queues import open_queue
    from conveyor.submission import SubmitInterrupted
    from conveyor.task_context import TaskContext
    from conveyor.task_registry import Task
    from conveyor.waiting import WaitTimeout

# Imported on first use, so that `conveyor run` does not pay for the queue machinery.
_LAZY = {
    "Client": "conveyor.client",
    "connect": "conveyor.client",
    "Job": "conveyor.jobs",
    "JobState": "conveyor.jobs",
    "JobRecord": "conveyor.ledger",
    "open_queue": "conveyor.queues",
    "SubmitInterrupted": "conveyor.submission",
    "WaitTimeout": "conveyor.waiting",
    "Task": "conveyor.task_registry",
    "TaskContext": "conveyor.task_context",
    "task": "conveyor.default_tasks",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
