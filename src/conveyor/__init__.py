"""conveyor: asynchronous batch jobs through a queue, with the data on shared storage."""

from __future__ import annotations

__version__ = "0.1.0"
