"""``conveyor wait`` and ``cancel``: thin layers over :class:`conveyor.Client`.

``conveyor submit`` is in :mod:`conveyor.cli.submit` and ``conveyor status`` in
:mod:`conveyor.cli.status`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from conveyor.cli.shared_options import (
    base_settings,
    command_option,
    json_option,
    queue_options,
    storage_option,
)
from conveyor.cli.status import group_line, record_line
from conveyor.client import Client
from conveyor.errors import ConveyorError
from conveyor.jobs import JobState
from conveyor.ledger import GroupState, JobRecord
from conveyor.settings import EXIT_FAILED, EXIT_OK


@click.command()
@storage_option
@queue_options
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB...")
@command_option(
    "--timeout-s",
    envvar="CONVEYOR_WAIT_TIMEOUT_S",
    type=click.FloatRange(0),
    default=None,
    help="Give up after this many seconds (exit 124) [default: wait as long as it takes].",
)
@json_option
def wait(
    storage: Path,
    queue_url: str | None,
    endpoint_url: str | None,
    job_ids: tuple[str, ...],
    *,
    timeout_s: float | None,
    as_json: bool,
) -> None:
    """Wait until the jobs have finished, then print their states.

    JOB is a job id or a unique prefix of one; '-' reads ids from stdin, one per line.
    One GROUP id waits for the group and prints it; a group among several ids stands
    for its jobs and its completion job.

    Exit codes: 0 all succeeded, 1 any failed or was cancelled, 124 still running after
    --timeout-s.
    """
    ids = _job_ids(job_ids)
    settings = base_settings(storage, queue_url, endpoint_url)
    with Client(settings) as client:
        group = _group_named(client, ids)
        if group is not None:
            record = client.wait_group(group, timeout_s)
            if as_json:
                click.echo(json.dumps(record.to_dict(), indent=1))
            else:
                click.echo(group_line(record))
            sys.exit(EXIT_OK if record.state is GroupState.SUCCEEDED else EXIT_FAILED)
        records = client.wait(ids, timeout_s)
    _show_records(records, as_json)
    ok = all(record.state is JobState.SUCCEEDED for record in records)
    sys.exit(EXIT_OK if ok else EXIT_FAILED)


@click.command()
@storage_option
@queue_options
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB...")
@command_option(
    "--reason",
    envvar="CONVEYOR_CANCEL_REASON",
    default=None,
    help="Why, kept in the ledger as the job's error.",
)
@json_option
def cancel(
    storage: Path,
    queue_url: str | None,
    endpoint_url: str | None,
    job_ids: tuple[str, ...],
    *,
    reason: str | None,
    as_json: bool,
) -> None:
    """Cancel jobs that have not finished.

    JOB is a job id or a unique prefix of one; '-' reads ids from stdin, one per line.
    A queued job never runs (the worker that receives it acks it); a running one is not
    published. Cancelling a finished job is an error (one line per such job; the others
    are still cancelled).
    """
    ids = _job_ids(job_ids)
    settings = base_settings(storage, queue_url, endpoint_url)
    records: list[JobRecord] = []
    code = EXIT_OK
    with Client(settings) as client:
        for job_id in ids:
            try:
                records.append(client.cancel(job_id, reason=reason))
            except ConveyorError as exc:
                click.echo(f"conveyor: error: {exc.message}", err=True)
                code = code or exc.exit_code
    _show_records(records, as_json)
    sys.exit(code)


def _group_named(client: Client, ids: Sequence[str]) -> str | None:
    """The group id, when the one id given names a group (not a job)."""
    if len(ids) != 1:
        return None
    try:
        return client.group(ids[0]).group_id
    except ConveyorError:
        return None


def _job_ids(args: Sequence[str]) -> list[str]:
    """The job ids given, with '-' replaced by the ids on stdin (one per line)."""
    ids: list[str] = []
    for arg in args:
        if arg == "-":
            ids.extend(line.strip() for line in sys.stdin if line.strip())
        else:
            ids.append(arg)
    if not ids:
        raise click.UsageError("give at least one job id")
    return ids


def _show_records(records: Sequence[JobRecord], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([record.to_dict() for record in records], indent=1))
        return
    for record in records:
        click.echo(record_line(record))
