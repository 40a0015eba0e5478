"""What a task is: the function type it has, and the :class:`TaskContext` it is called with."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor.jobs import Job

if TYPE_CHECKING:
    from conveyor.storage import Storage

#: What a task returns: a small JSON object stored in the ledger as the job's result, or None.
TaskResult = Mapping[str, object] | None
#: A task: called with the job's context, writes ``ctx.write_path``, returns its result.
TaskFunction = Callable[["TaskContext"], TaskResult]
#: What a given task returns.
R = TypeVar("R", bound=TaskResult)
#: A task's split: ``split(input_path, rows)`` -> the params of each piece's job, in order.
SplitFunction = Callable[[Path, int], list[dict[str, Any]]]
#: A task's merge: ``merge(ctx, part_paths)`` writes ``ctx.write_path`` from the pieces'
#: outputs (in order; a tolerated failed piece's is left out) and returns the result.
MergeFunction = Callable[["TaskContext", list[Path]], TaskResult]


def _lease_always_held() -> None:
    """The lease check outside a worker (tests, ``conveyor run``): there is no lease to lose."""


@dataclass(frozen=True)
class TaskContext:
    """What a task gets: its job, safe resolved paths, and a way to check its lease.

    Attributes:
        job: the message envelope.
        input_path: the job's input, resolved under the storage root (None if it has none).
        output_path: where the output will be published, or None when the job has no
            output (``job.output`` is null): the worker then publishes nothing.
        write_path: a temporary file beside ``output_path``: the task writes there and the
            worker publishes it atomically once the task returns (the task never renames).
            None exactly when ``output_path`` is: such a job's task writes no file.
        storage: the worker's storage root, for the few tasks that read or write other
            files of it than their input and output (a group's merge); None outside a worker.
    """

    job: Job
    input_path: Path | None
    output_path: Path | None
    write_path: Path | None
    lease_check: Callable[[], None] = field(default=_lease_always_held, repr=False)
    storage: Storage | None = field(default=None, repr=False)

    @property
    def params(self) -> Mapping[str, Any]:
        """The job's parameters (a JSON object)."""
        return self.job.params

    @property
    def seed(self) -> int:
        """The job's seed: derive all randomness from it, so a rerun gives the same output."""
        return self.job.seed

    def check_lease(self) -> None:
        """Raise ``LeaseLost`` if the worker lost this job's lease; long tasks call it.

        Once the lease is lost another worker may run the job, so carrying on is wasted work.
        """
        self.lease_check()
