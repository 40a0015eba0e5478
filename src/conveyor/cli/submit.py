"""``conveyor submit``: one job per file (or one without input), or with ``--split-rows``
one group of shard jobs merged into one output; a thin layer over :class:`conveyor.Client`.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import click
from click.core import ParameterSource

from conveyor.cli.shared_options import (
    base_settings,
    command_option,
    import_option,
    json_option,
    queue_options,
    storage_option,
)
from conveyor.client import Client
from conveyor.client_groups import Group
from conveyor.job_ids import MAX_SEED
from conveyor.jobs import Job
from conveyor.submit_plan import Item

#: Show a progress bar (on a terminal) from this many jobs on.
_PROGRESS_FROM = 200


def parse_param(text: str) -> tuple[str, object]:
    """``key=value`` to a pair; the value is JSON-decoded when it parses, else a string.

    ``n=5`` gives 5, ``ok=true`` True, ``tags=["a"]`` a list, ``name=abc`` "abc".

    Raises:
        click.BadParameter: no ``=``, or an empty key.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r}: expected KEY=VALUE", param_hint="--param")
    try:
        value: object = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


@click.command()
@storage_option
@queue_options
@click.argument("files", nargs=-1)
@command_option(
    "--files-from",
    envvar="CONVEYOR_FILES_FROM",
    type=click.File("r"),
    default=None,
    help="Also read paths from this file, one per line ('-' for stdin): for many files.",
)
@command_option(
    "--in-storage",
    envvar="CONVEYOR_IN_STORAGE",
    is_flag=True,
    help="The files are already in the storage: paths are relative to its root.",
)
@command_option(
    "--task",
    envvar="CONVEYOR_TASK",
    default="csv-process",
    show_default=True,
    help="Task to run on each file.",
)
@command_option(
    "--param",
    "params",
    envvar="CONVEYOR_PARAM",
    multiple=True,
    metavar="KEY=VALUE",
    help="A task parameter; repeatable. VALUE is JSON if it parses, else a string. "
    "With no files, submits one job that carries only its parameters (the env var takes "
    "a space-separated list).",
)
@command_option(
    "--seed",
    envvar="CONVEYOR_SEED",
    type=click.IntRange(0, MAX_SEED),
    default=None,
    help="Seed for every job [default: a new random seed per job, recorded].",
)
@command_option(
    "--output",
    envvar="CONVEYOR_OUTPUT",
    default=None,
    metavar="PATH",
    help="Output path under the storage root (one job only) [default: "
    "outputs/<job_id>/<name>; none for a job without input].",
)
@command_option(
    "--split-rows",
    envvar="CONVEYOR_SPLIT_ROWS",
    type=click.IntRange(1),
    default=None,
    metavar="N",
    help="Split one CSV into a group of jobs of N rows each, merged into one output "
    "(byte-identical to the unsplit job's); prints the group id.",
)
@command_option(
    "--tolerate-failures",
    envvar="CONVEYOR_TOLERATE_FAILURES",
    default="0",
    show_default=True,
    metavar="N|N%",
    help="With --split-rows: shards that may fail with the group still merging the others.",
)
@import_option
@json_option
@click.pass_context
def submit(
    ctx: click.Context,
    /,
    storage: Path,
    queue_url: str | None,
    endpoint_url: str | None,
    files: tuple[str, ...],
    *,
    files_from: IO[str] | None,
    in_storage: bool,
    task: str,
    params: tuple[str, ...],
    seed: int | None,
    output: str | None,
    split_rows: int | None,
    tolerate_failures: str,
    imports: tuple[str, ...],
    as_json: bool,
) -> None:
    """Submit one job per file: copy it into the storage, queue it, print its job id.

    With no files, --task T --param KEY=VALUE submits one job without input.
    Interrupted (SIGINT/SIGTERM), it stops before its next batch of 10: the jobs printed
    are queued and in the ledger, and nothing is left of the others (exit 75).
    """
    items = _items(ctx, files, files_from, params)
    if split_rows is not None:
        if len(items) != 1 or not isinstance(items[0], str):
            raise click.UsageError("--split-rows splits one file: give exactly one")
        settings = base_settings(storage, queue_url, endpoint_url, imports=imports)
        tolerate = int(tolerate_failures) if tolerate_failures.isdigit() else tolerate_failures
        with Client(settings) as client:
            group = client.submit(
                items[0],
                task=task,
                params=dict(parse_param(text) for text in params) or None,
                seed=seed,
                output=output,
                in_storage=in_storage,
                split_rows=split_rows,
                tolerate_failures=tolerate,
            )
        _show_group_submitted(group, as_json)
        return
    if output is not None:
        if len(items) != 1:
            raise click.UsageError("--output names one output: submit one file with it")
        items = [{"input": items[0], "output": output}]
    settings = base_settings(storage, queue_url, endpoint_url, imports=imports)
    echo = not as_json
    with Client(settings) as client, _progress(len(items)) as advance:

        def on_sent(jobs: Sequence[Job]) -> None:
            if echo:
                click.echo("\n".join(job.job_id for job in jobs))
            advance(len(jobs))

        jobs = client.submit_many(
            items,
            task=task,
            params=dict(parse_param(text) for text in params),
            seed=seed,
            in_storage=in_storage,
            on_sent=on_sent,
        )
    if not echo:
        click.echo(json.dumps([_job_summary(job) for job in jobs], indent=1))


def _show_group_submitted(group: Group, as_json: bool) -> None:
    """What ``submit --split-rows`` prints: the group id, or a summary in JSON."""
    if as_json:
        summary = {
            "group_id": group.group_id,
            "jobs": len(group.jobs),
            "completion_job_id": group.completion_job_id,
        }
        click.echo(json.dumps(summary, indent=1))
    else:
        click.echo(group.group_id)


def _items(
    ctx: click.Context, files: tuple[str, ...], files_from: IO[str] | None, params: Sequence[str]
) -> list[Item]:
    """The submit's items: its files, or one job without input when there are none but
    parameters or an explicit task.

    Raises:
        click.UsageError: nothing to submit.
    """
    names: list[Item] = list(files)
    if files_from is not None:
        names.extend(line.strip() for line in files_from if line.strip())
    if names:
        return names
    explicit_task = ctx.get_parameter_source("task") is ParameterSource.COMMANDLINE
    if files_from is None and (params or explicit_task):
        return [None]
    raise click.UsageError(
        "give at least one file (or --files-from), or --task/--param for a job without input"
    )


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Any]:
    """A progress bar on stderr for long submits at a terminal; a no-op otherwise."""
    if total < _PROGRESS_FROM or not sys.stderr.isatty():
        yield lambda n: None
        return
    with click.progressbar(length=total, label="submitting", file=sys.stderr) as bar:
        yield bar.update


def _job_summary(job: Job) -> dict[str, object]:
    return {
        "job_id": job.job_id,
        "task": job.task,
        "input": job.input,
        "output": job.output,
        "seed": job.seed,
    }
