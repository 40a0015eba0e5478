"""``conveyor run``: the tutorial's batch job on one CSV file, here and now (no queue)."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from types import FrameType

import click

from conveyor.errors import InputNotFound, Interrupted
from conveyor.job_ids import MAX_SEED, new_seed


@click.command()
@click.argument(
    "input_path",
    metavar="[INPUT]",
    required=False,
    type=click.Path(dir_okay=True, path_type=Path),
    envvar="CONVEYOR_INPUT",
)
@click.option(
    "--output",
    "-o",
    "output_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("output.csv"),
    envvar="CONVEYOR_OUTPUT",
    show_envvar=True,
    show_default=True,
    help="Where to write the result; replaced atomically, and only when the run succeeds.",
)
@click.option(
    "--seed",
    type=click.IntRange(0, MAX_SEED),
    default=None,
    envvar="CONVEYOR_SEED",
    show_envvar=True,
    help="Seed of the random factors: the same input and seed give the same output, byte "
    "for byte. [default: a new random seed, printed]",
)
@click.option(
    "--sample",
    is_flag=True,
    envvar="CONVEYOR_SAMPLE",
    show_envvar=True,
    help="Read the tutorial's 10-row input.csv shipped with conveyor instead of INPUT.",
)
def run(input_path: Path | None, output_path: Path, seed: int | None, sample: bool) -> None:
    """Process INPUT (a CSV with header ID,Value; default: input.csv) into --output.

    Each row gets ProcessedValue = Value x a factor in [0.8, 1.2) drawn from the seed and the
    row number, as in the tutorial's batch_processing.py, but streaming (any file size, little
    memory), reproducible, and all or nothing. Malformed input stops the run with one line
    naming the file, the line and the problem (exit 65); a missing or unreadable INPUT is
    exit 66; SIGTERM or SIGINT stop it with no output written (exit 75).

    Environment: CONVEYOR_INPUT for INPUT.
    """
    if sample and input_path is not None:
        raise click.UsageError("give INPUT or --sample, not both")
    if not sample:
        _check_readable(input_path)
    from conveyor.csvjob.pipeline import process_csv  # polars and numpy load only when a job runs

    chosen = seed is None
    seed = new_seed() if seed is None else seed
    click.echo("Starting batch task...")
    how = f" (random; rerun with --seed {seed} to reproduce)" if chosen else ""
    click.echo(f"Seed: {seed}{how}")
    with _input(input_path, sample) as source, _interruptible():
        stats = process_csv(source, output_path, seed)
    click.echo("Batch task completed.")
    click.echo(f"{stats.rows} rows in {stats.seconds:.3f} s (seed {stats.seed}) -> {output_path}")


def _check_readable(input_path: Path | None) -> None:
    """Fail before anything is printed when the input cannot be read at all.

    Raises:
        InputNotFound: it does not exist, is a directory, or cannot be opened (exit 66).
    """
    path = Path("input.csv") if input_path is None else input_path
    hint = " (give INPUT, or --sample for the tutorial's input)" if input_path is None else ""
    try:
        # O_NONBLOCK: a named pipe given as INPUT must not block this check.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputNotFound(f"{path}: no such file{hint}") from None
    except OSError as exc:
        raise InputNotFound(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise InputNotFound(f"{path}: is a directory, not a CSV file")
    finally:
        os.close(fd)


@contextlib.contextmanager
def _input(input_path: Path | None, sample: bool) -> Iterator[Path]:
    """The file to read: ``input_path``, the bundled sample, or ``input.csv`` here."""
    if not sample:
        yield Path("input.csv") if input_path is None else input_path
        return
    with resources.as_file(resources.files("conveyor").joinpath("data", "input.csv")) as path:
        yield path


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Turn the first SIGTERM or SIGINT into :class:`Interrupted`, so cleanup code runs.

    Later signals are ignored until the block ends, so a second Ctrl-C cannot cut the
    cleanup (removing the temporary output) short.
    """
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        name = signal.Signals(signum).name
        raise Interrupted(f"interrupted by {name}; no output was written")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
