"""The ledger's errors: unknown, ambiguous or finished jobs, a missing ledger, and a schema
this conveyor cannot use."""

from __future__ import annotations

from conveyor.errors import BadInput, ConfigError, ConveyorError


class JobNotFound(BadInput):
    """No job with that id (or id prefix) is in the ledger."""


class AmbiguousJobId(BadInput):
    """The id prefix matches more than one job: give more characters."""


class JobFinished(BadInput):
    """The job has already finished: a finished job cannot be cancelled."""


class SchemaMismatch(ConveyorError):
    """The ledger's schema is not the one this conveyor knows."""

    permanent = True
    exit_code = 78


class LedgerNotFound(ConfigError):
    """There is no ledger at that URL yet (nothing was submitted)."""
