"""The group half of the Ledger contract: create a group, read groups, and the outbox of
completions made due (see :class:`~conveyor.ledger.base.Ledger` for the rules)."""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Mapping
from typing import Any

from conveyor.errors import BadInput
from conveyor.ledger.checks import check_limit, clean_text, parse_cursor
from conveyor.ledger.errors import AmbiguousJobId
from conveyor.ledger.groups import (
    Completion,
    GroupRecord,
    GroupSpec,
    check_count,
    check_group_id,
    completion_job,
)


class GroupLedger(abc.ABC):
    """Job groups in the ledger: the public methods check their arguments; a backend
    implements the underscored ones, each in one transaction or one indexed query."""

    def create_group(
        self,
        group_id: str,
        *,
        total: int,
        tolerate_failures: int = 0,
        completion: Mapping[str, Any] | None = None,
        source: str | None = None,
        at: float | None = None,
    ) -> list[Completion]:
        """Create a group of ``total`` jobs, in one transaction; call it before recording
        the group's jobs (jobs recorded earlier are counted too, whatever the order).

        Args:
            group_id: its id (the job id alphabet; :meth:`group` finds it by prefix).
            total: how many jobs the group has (its jobs are those whose events carry
                ``group=group_id``); fixed once created.
            tolerate_failures: how many of its jobs may fail or be cancelled with the
                group still succeeding (an absolute count).
            completion: the envelope fields of the job to run once every job is terminal
                with no more failures than tolerated: ``job_id`` (deterministic: derive
                it from the group id) and ``task`` required; ``input``, ``output``,
                ``params`` (JSON) and ``seed`` optional (a seed is drawn and stored if
                not given). None for a group with no completion, which succeeds when its
                last job ends.
            source: the submitted file name, shown by ``status``.
            at: the creation time (default: the clock).

        Idempotent: creating the same id again with the same total, tolerance and
        completion job id changes nothing and returns []. A group of 0 jobs is done at
        once: its completion is due at once (and returned), or it succeeds at once.

        Returns:
            The completion this call made due: only for a group whose jobs are all
            already terminal (0 jobs, or all recorded before the group).

        Raises:
            GroupConflict: the group exists with another total, tolerance or completion.
            BadInput: an id, count or completion field is invalid.
        """
        check_group_id(group_id)
        check_count("group total", total)
        check_count("tolerated failures", tolerate_failures)
        created_at = time.time() if at is None else float(at)
        if not math.isfinite(created_at) or created_at < 0:
            raise BadInput(f"bad group creation time {at!r}")
        job = None if completion is None else completion_job(group_id, completion, created_at)
        spec = GroupSpec(
            group_id=group_id,
            total=total,
            tolerate_failures=tolerate_failures,
            completion_job_id=None if job is None else job.job_id,
            completion_json=None if job is None else job.to_json(),
            source=clean_text(source),
            created_at=created_at,
        )
        return self._create_group(spec)

    def mark_completion_sent(self, group_id: str, *, at: float | None = None) -> bool:
        """Mark the group's completion message sent: :meth:`due_completions` stops listing
        it. Idempotent.

        Returns:
            True if this call marked it; False if it was marked already, or the group is
            unknown or has no due completion.
        """
        check_group_id(group_id)
        return self._mark_completion_sent(group_id, time.time() if at is None else at)

    def group(self, group_id: str) -> GroupRecord | None:
        """The group with this id, or with this case-insensitive unique id prefix; None if
        there is none. Constant time (its counts are kept, not counted).

        Raises:
            AmbiguousJobId: the prefix matches several groups.
            BadInput: it could not be part of a group id.
        """
        check_group_id(group_id)
        found = self._get_group(group_id)
        if found is not None:
            return found
        matches = self._find_group_prefix(group_id.upper(), 2)
        if len(matches) > 1:
            raise AmbiguousJobId(
                f"group id prefix {group_id} matches several groups ({', '.join(matches)}, "
                "...): give more characters"
            )
        return self._get_group(matches[0]) if matches else None

    def groups(self, *, limit: int = 100, before: str | None = None) -> list[GroupRecord]:
        """Groups, newest created first; ``before`` is the :attr:`GroupRecord.cursor` of
        the last record of the previous page.

        Raises:
            BadInput: ``limit`` is not 1 to 10,000, or the cursor is malformed.
        """
        check_limit(limit)
        return self._groups(limit, None if before is None else parse_cursor(before))

    def due_completions(self, *, limit: int = 100) -> list[Completion]:
        """Completions made due and not yet marked sent, oldest first (an index walk over
        those only). Whoever sends one calls :meth:`mark_completion_sent` after; a
        completion sent twice is harmless (its job id is fixed), so a sender that died
        between the two leaves only a duplicate behind.

        Raises:
            BadInput: ``limit`` is not 1 to 10,000.
        """
        check_limit(limit)
        return self._due_completions(limit)

    # --- the backend's part ------------------------------------------------------------

    @abc.abstractmethod
    def _create_group(self, spec: GroupSpec) -> list[Completion]:
        """Create the group (or check an existing one against ``spec``) and settle it, in
        one transaction."""

    @abc.abstractmethod
    def _mark_completion_sent(self, group_id: str, at: float) -> bool:
        """Set the group's completion-sent time if unset; True if this call set it."""

    @abc.abstractmethod
    def _prune_group_batch(self, cutoff: float, limit: int) -> tuple[int, bool]:
        """Delete up to ``limit`` jobs of groups finished before ``cutoff``, and such
        groups left with no job (one transaction); (jobs deleted, whether more remain)."""

    @abc.abstractmethod
    def _get_group(self, group_id: str) -> GroupRecord | None:
        """The created group with exactly this id."""

    @abc.abstractmethod
    def _find_group_prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` created group ids whose upper-cased form starts with ``prefix``."""

    @abc.abstractmethod
    def _groups(self, limit: int, before: tuple[float, str] | None) -> list[GroupRecord]:
        """A page of created groups, newest first, strictly after ``before``."""

    @abc.abstractmethod
    def _due_completions(self, limit: int) -> list[Completion]:
        """Completions of groups in ``completing`` not marked sent, oldest due first."""
