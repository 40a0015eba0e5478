"""conveyor: asynchronous batch jobs through a queue, with the data on shared storage."""

from __future__ import annotations

from conveyor.jobs import Job
from conveyor.tasks import TaskContext, task

__version__ = "0.1.0"

__all__ = ["Job", "TaskContext", "task"]
