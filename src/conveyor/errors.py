"""One error tree for conveyor: what went wrong, and whether retrying can help."""

from __future__ import annotations


class ConveyorError(Exception):
    """conveyor failed."""

    #: A permanent error will fail the same way on every attempt (bad input, unknown task):
    #: the worker records it as failed and dead-letters the message without burning retries.
    permanent: bool = False
    #: Process exit code when this error reaches the command line.
    exit_code: int = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


# --- configuration ---------------------------------------------------------------------


class ConfigError(ConveyorError):
    """conveyor is configured wrongly."""

    permanent = True
    exit_code = 78  # EX_CONFIG


# --- input and messages ------------------------------------------------------------------


class BadInput(ConveyorError):
    """The job's input is malformed."""

    permanent = True
    exit_code = 65  # EX_DATAERR


class InputNotFound(BadInput):
    """The input file does not exist or cannot be read."""

    exit_code = 66  # EX_NOINPUT


class BadMessage(BadInput):
    """A queue message is not a valid conveyor job envelope."""


class UnknownTask(BadInput):
    """The message names a task that no imported module registered."""


# --- storage -------------------------------------------------------------------------------


class StorageError(ConveyorError):
    """The storage could not be read or written."""


class UnsafePath(StorageError, BadInput):
    """A path in a message escapes the storage root."""

    permanent = True
    exit_code = 65


class StorageFull(StorageError):
    """The storage is full (ENOSPC or EDQUOT); the job can succeed once space is freed."""


# --- queue ---------------------------------------------------------------------------------


class QueueError(ConveyorError):
    """The queue failed."""


class TransientQueueError(QueueError):
    """The queue is briefly unavailable (throttling, 5xx, a locked database); retry."""


class QueueNotFound(QueueError):
    """The queue does not exist."""

    permanent = True
    exit_code = 78


class AccessDenied(QueueError):
    """The credentials lack a permission the queue needs."""

    permanent = True
    exit_code = 78


class LeaseLost(QueueError):
    """The lease on a message expired or was taken by another receive; do not publish or ack."""


class LeaseCapReached(LeaseLost):
    """The lease cannot be extended: SQS keeps a message invisible at most 12 hours after
    it is received."""


class MessageTooLarge(QueueError):
    """A message is larger than the queue accepts, even after the claim check."""

    permanent = True


# --- tasks ---------------------------------------------------------------------------------


class TaskError(ConveyorError):
    """A task failed."""


class TransientTaskError(TaskError):
    """A task failed in a way that may pass on retry."""


class PermanentTaskError(TaskError):
    """A task failed in a way that will not pass on retry."""

    permanent = True


class Interrupted(ConveyorError):
    """Stopped by SIGTERM or SIGINT before the work was done; running it again can finish it."""

    exit_code = 75  # EX_TEMPFAIL


#: Errors no retry fixes: the queue cannot be used at all. They end a worker (exit 78)
#: through every boundary that catches other errors.
FATAL_ERRORS = (ConfigError, QueueNotFound, AccessDenied)
