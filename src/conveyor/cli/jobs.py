"""``conveyor submit`` (files in, one job each) and ``conveyor status`` (the ledger's view)."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import click

from conveyor.cli.options import queue_options, storage_option
from conveyor.cli.settings_options import (
    base_settings,
    import_option,
    json_option,
    open_configured_queue,
)
from conveyor.errors import ConfigError, ConveyorError
from conveyor.jobs import (
    CLAIM_THRESHOLD_BYTES,
    MAX_SEED,
    Job,
    JobState,
    encode_for_queue,
    new_job_id,
    new_seed,
)
from conveyor.ledger import JobRecord, Ledger, LedgerSummary
from conveyor.queues.base import MAX_BATCH, Outgoing, Queue, QueueStats
from conveyor.settings import Settings
from conveyor.storage import Storage, check_relative_path
from conveyor.tasks import default_registry, import_tasks

#: Jobs recorded in the ledger per call during a submit (one append per shard each).
_LEDGER_CHUNK = 1000
#: Show a progress bar (on a terminal) from this many files on.
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
@click.option(
    "--files-from",
    type=click.File("r"),
    default=None,
    help="Also read paths from this file, one per line ('-' for stdin): for many files.",
)
@click.option(
    "--in-storage",
    is_flag=True,
    help="The files are already in the storage: paths are relative to its root.",
)
@click.option(
    "--task",
    default="csv-process",
    show_default=True,
    envvar="CONVEYOR_TASK",
    show_envvar=True,
    help="Task to run on each file.",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A task parameter; repeatable. VALUE is JSON if it parses, else a string.",
)
@click.option(
    "--seed",
    type=click.IntRange(0, MAX_SEED),
    default=None,
    help="Seed for every job [default: a new random seed per job, recorded].",
)
@click.option(
    "--output",
    default=None,
    metavar="PATH",
    help="Output path under the storage root (one file only) [default: outputs/<job_id>/<name>].",
)
@import_option
@json_option
def submit(
    storage: Path,
    queue_url: str | None,
    endpoint_url: str | None,
    files: tuple[str, ...],
    **options: Any,
) -> None:
    """Submit one job per file: copy it into the storage, queue it, print its job id."""
    names = list(files)
    files_from: IO[str] | None = options["files_from"]
    if files_from is not None:
        names.extend(line.strip() for line in files_from if line.strip())
    if not names:
        raise click.UsageError("give at least one file (or --files-from)")
    output: str | None = options["output"]
    if output is not None and len(names) != 1:
        raise click.UsageError("--output names one output: submit one file with it")
    params = dict(parse_param(text) for text in options["params"])
    settings = base_settings(storage, queue_url, endpoint_url, imports=tuple(options["imports"]))
    import_tasks(settings.imports)
    task: str = options["task"]
    default_registry().check(task)
    if output is not None:
        output = check_relative_path(output)
    if not options["in_storage"]:
        _make_root(settings.storage)
    store = Storage(settings.storage)
    submitter = _Submitter(
        store,
        task=task,
        params=params,
        seed=options["seed"],
        output=output,
        in_storage=options["in_storage"],
    )
    with contextlib.closing(open_configured_queue(settings)) as queue:
        ledger = Ledger(store)
        try:
            jobs = submitter.submit_all(queue, ledger, names, echo=not options["as_json"])
            # The sends count too in `conveyor status`'s requests by kind (SQS bills them).
            if counts := queue.request_counts():
                ledger.record_worker_stats(ledger.writer, counts)
        finally:
            ledger.close()
    if options["as_json"]:
        click.echo(json.dumps([_job_summary(job) for job in jobs], indent=1))


class _Submitter:
    """Builds, sends and records the jobs of one submit, in batches."""

    def __init__(
        self,
        storage: Storage,
        *,
        task: str,
        params: dict[str, object],
        seed: int | None,
        output: str | None,
        in_storage: bool,
    ) -> None:
        self.storage = storage
        self.task = task
        self.params = params
        self.seed = seed
        self.output = output
        self.in_storage = in_storage
        self._directories: dict[str, Path] = {}

    def submit_all(
        self, queue: Queue, ledger: Ledger, names: Sequence[str], *, echo: bool
    ) -> list[Job]:
        """Send every job (batches of 10), record them as queued, and return them.

        The ledger is written on a second thread, a chunk at a time, while the next
        messages are built and sent: both are mostly system calls, so they overlap.
        """
        max_bytes = min(CLAIM_THRESHOLD_BYTES, queue.max_message_bytes)
        fifo = bool(getattr(queue, "fifo", False))
        sent: list[Job] = []
        recorded = 0
        with ThreadPoolExecutor(1, thread_name_prefix="ledger") as pool:
            pending: Future[object] | None = None
            with _progress(len(names)) as advance:
                for batch in _chunks(names, MAX_BATCH):
                    jobs = [self._job(name) for name in batch]
                    queue.send_batch(
                        [
                            Outgoing(
                                encode_for_queue(job, self.storage, max_bytes),
                                dedup_id=job.dedup_id if fifo else None,
                            )
                            for job in jobs
                        ]
                    )
                    sent.extend(jobs)
                    if len(sent) - recorded >= _LEDGER_CHUNK:
                        if pending is not None:
                            pending.result()  # one chunk in flight at most; raises its error
                        pending = pool.submit(ledger.record_queued, sent[recorded:])
                        recorded = len(sent)
                    if echo:
                        click.echo("\n".join(job.job_id for job in jobs))
                    advance(len(batch))
            if pending is not None:
                pending.result()
        ledger.record_queued(sent[recorded:])
        return sent

    def _job(self, name: str) -> Job:
        job_id = new_job_id()
        if self.in_storage:
            rel = self._existing_input(name)
        else:
            rel = self.storage.ingest(Path(name), job_id)
        return Job(
            job_id=job_id,
            task=self.task,
            input=rel,
            output=self.output or self.storage.default_output(job_id, rel),
            params=self.params,
            seed=self.seed if self.seed is not None else new_seed(),
        )

    def _existing_input(self, name: str) -> str:
        """Check an input already in the storage: inside the root, a regular file.

        Large submits name many files of one directory, so each directory is resolved
        (symlinks and all) once; a file that is itself a symlink, or not a plain file, gets
        the full check. Workers check every path again before using it.

        Raises:
            UnsafePath: the path leaves the root. BadInput: no such regular file.
        """
        rel = check_relative_path(name)
        parent, _, base = rel.rpartition("/")
        directory = self._directories.get(parent)
        if directory is None and parent:
            directory = self._directories[parent] = self.storage.resolve(parent)
        try:
            mode = os.lstat((directory or self.storage.root) / base).st_mode
        except OSError:
            mode = 0
        if not stat.S_ISREG(mode):
            self.storage.resolve_input(rel)  # a symlink, missing, or odd: the full check
        return rel


def _make_root(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the storage root {root}: {exc.strerror}") from exc


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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


# --- status ------------------------------------------------------------------------------------


@click.command()
@storage_option
@queue_options
@click.argument("job_id", required=False)
@click.option(
    "--state",
    type=click.Choice([state.value for state in JobState]),
    default=None,
    help="List the jobs in this state, newest first.",
)
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True)
@json_option
def status(
    storage: Path,
    queue_url: str | None,
    endpoint_url: str | None,
    job_id: str | None,
    *,
    state: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Show the summary of all jobs, one job (JOB_ID), or the jobs in a --state."""
    settings = base_settings(storage, queue_url, endpoint_url)
    if not settings.storage.is_dir():
        raise ConfigError(f"storage root {settings.storage} does not exist: nothing submitted")
    ledger = Ledger(Storage(settings.storage))
    if job_id is not None:
        record = ledger.get(job_id)
        if record is None:
            raise click.ClickException(f"no job {job_id} in the ledger under {settings.storage}")
        _show_record(record, as_json)
    elif state is not None:
        records = ledger.jobs(JobState(state), limit=limit)
        if as_json:
            click.echo(json.dumps([r.to_dict() for r in records], indent=1))
        for record in [] if as_json else records:
            click.echo(_record_line(record))
    else:
        summary = ledger.summary(failures=limit)
        stats, queue_error = _queue_stats(settings)
        _show_summary(summary, stats, queue_error, as_json)


def _queue_stats(settings: Settings) -> tuple[QueueStats | None, str | None]:
    """The queue's counts, or why they are unavailable (status still shows the ledger)."""
    try:
        with contextlib.closing(open_configured_queue(settings)) as queue:
            return queue.stats(), None
    except ConveyorError as exc:
        return None, exc.message


def _show_record(record: JobRecord, as_json: bool) -> None:
    data = record.to_dict()
    if as_json:
        click.echo(json.dumps(data, indent=1))
        return
    for key, value in data.items():
        if value is None:
            continue
        shown = value
        if key.endswith("_at") and isinstance(value, float):
            shown = _when(value)
        elif isinstance(value, dict):
            shown = json.dumps(value)
        click.echo(f"{key + ':':<14}{shown}")


def _record_line(record: JobRecord) -> str:
    error = f"  {record.error}" if record.error else ""
    return f"{record.job_id}  {record.state.value:<9}  attempts={record.attempts}{error}"


def _show_summary(
    summary: LedgerSummary, stats: QueueStats | None, queue_error: str | None, as_json: bool
) -> None:
    if as_json:
        data = summary.to_dict()
        data["queue"] = (
            {
                "visible": stats.visible,
                "in_flight": stats.in_flight,
                "delayed": stats.delayed,
                "dead_lettered": stats.dead_lettered,
            }
            if stats is not None
            else {"error": queue_error}
        )
        click.echo(json.dumps(data, indent=1))
        return
    counts = "  ".join(f"{state.value} {n:,}" for state, n in summary.counts.items())
    click.echo(f"jobs:      {summary.total:,} total  {counts}")
    overall = summary.rate_overall_per_s
    click.echo(
        f"rate:      {summary.rate_last_minute_per_s:.2f} jobs/s over the last minute"
        + (f", {overall:.2f} jobs/s overall" if overall is not None else "")
    )
    if summary.oldest_queued_age_s is not None:
        age_s = summary.oldest_queued_age_s
        click.echo(f"waiting:   the oldest queued job was submitted {age_s:,.0f} s ago")
    if stats is not None:
        click.echo(
            f"queue:     {stats.visible:,} visible  {stats.in_flight:,} in flight  "
            f"{stats.delayed:,} delayed  {stats.dead_lettered:,} dead-lettered"
        )
    else:
        click.echo(f"queue:     unavailable ({queue_error})")
    if summary.queue_requests:
        requests = "  ".join(f"{k} {v:,}" for k, v in sorted(summary.queue_requests.items()))
        click.echo(f"requests:  {requests}  (queue requests by kind: workers and submits)")
    if summary.recent_failures:
        click.echo("failures:")
        for failure in summary.recent_failures:
            click.echo(f"  {failure.job_id}  {failure.task or '?'}  {failure.error or ''}")


def _when(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s)) + f" ({epoch_s:.3f})"
