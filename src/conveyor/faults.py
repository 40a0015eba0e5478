"""Test-only fault injection: make a worker crash (``os._exit``) at one named step of a job.

Set ``CONVEYOR_TEST_CRASH_AT=<point>[:<job_id>]`` in a worker's environment to have it kill
itself there; the fault suite (tests/faults) uses it to prove every crash converges. Never
set it in production. Unset, it costs one ``is None`` test per step.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from conveyor.errors import ConfigError

#: The environment variable a worker reads once, when it is constructed (not at import).
CRASH_ENV = "CONVEYOR_TEST_CRASH_AT"
#: The exit status of a deliberate crash, so a test can tell it from any other death.
CRASH_EXIT_CODE = 86


class FaultPoint(enum.StrEnum):
    """The steps of a job a worker can be made to crash at, in the order they happen."""

    AFTER_RECEIVE = "after_receive"  #: lease held, message decoded, nothing recorded yet
    MID_WRITE = "mid_write"  #: the temporary output holds only part of its bytes, unsynced
    AFTER_FSYNC = "after_fsync"  #: the temporary output is complete and durable, not renamed
    AFTER_RENAME = "after_rename"  #: the output is published; the ledger does not know yet
    AFTER_LEDGER = "after_ledger"  #: the ledger says succeeded; the message is not acked
    BEFORE_ACK = "before_ack"  #: the round's work is done; its ack batch is about to be sent


def _exit_now(code: int) -> NoReturn:
    os._exit(code)


@dataclass(frozen=True)
class FaultPoints:
    """Where this worker process crashes: one point, for one job or for every job.

    Attributes:
        point: the step to crash at.
        job_id: only this job's step crashes (None: the first job to reach it).
        exit: what crashing means (``os._exit``; unit tests pass a function that raises).
    """

    point: FaultPoint
    job_id: str | None = None
    exit: Callable[[int], NoReturn] = field(default=_exit_now, repr=False, compare=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> FaultPoints | None:
        """The crash point ``CONVEYOR_TEST_CRASH_AT`` asks for, or None when it is unset.

        Raises:
            ConfigError: the value names no known point.
        """
        value = environ.get(CRASH_ENV, "").strip()
        if not value:
            return None
        name, _, job_id = value.partition(":")
        try:
            point = FaultPoint(name)
        except ValueError:
            known = ", ".join(p.value for p in FaultPoint)
            raise ConfigError(
                f"{CRASH_ENV}={value!r}: unknown crash point {name!r} (one of: {known}); "
                "this variable is for tests only"
            ) from None
        return cls(point, job_id or None)

    def hit(self, point: FaultPoint, job_id: str | None, temp: Path | None = None) -> None:
        """Crash now if ``point`` (for ``job_id``) is the configured one; else do nothing.

        At ``mid_write`` the temporary file ``temp`` is first cut to half its size, which is
        what a process killed while writing leaves behind.
        """
        if point is not self.point or (self.job_id is not None and job_id != self.job_id):
            return
        if point is FaultPoint.MID_WRITE and temp is not None:
            try:
                size = temp.stat().st_size
                os.truncate(temp, size // 2)
            except OSError:
                pass  # nothing written: a crash before the first byte is also mid-write
        os.write(2, f"conveyor: {CRASH_ENV}: crashing at {point.value} (job {job_id})\n".encode())
        self.exit(CRASH_EXIT_CODE)

    def storage_hook(self, job_id: str | None) -> Callable[[str, Path], None]:
        """The callback :func:`conveyor.storage.atomic_output` calls at its own steps."""

        def hook(step: str, temp: Path) -> None:
            self.hit(FaultPoint(step), job_id, temp)

        return hook
