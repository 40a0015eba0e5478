"""A submit's items checked and turned into jobs before anything is copied or sent:
:class:`Planner` gives each item its :class:`Planned` job, or refuses the whole submit."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.errors import BadInput
from conveyor.job_ids import new_job_id, new_seed
from conveyor.jobs import Job
from conveyor.storage import Storage, check_relative_path

#: The keys an item of ``submit_many`` may have when it is a mapping.
ITEM_KEYS = frozenset({"input", "params", "seed", "output"})

#: What ``submit_many`` takes per job: an input path, None (parameters only), or a mapping
#: with any of ``input``, ``params``, ``seed`` and ``output``.
Item = str | os.PathLike[str] | Mapping[str, Any] | None


@dataclass(frozen=True)
class Planned:
    """A checked job, ready to send: its envelope, the name it was submitted as, and the
    local file to copy into the storage first (None when nothing is copied)."""

    job: Job
    source: str | None
    local: Path | None


class Planner:
    """Checks the items of one ``submit_many`` and builds their jobs.

    Args:
        storage: where inputs are copied to (or found, ``in_storage``).
        task: the task every job runs (checked by the caller).
        params: parameters every job gets; an item's own are merged over them.
        seed: every job's seed (default: a new random one per job).
        in_storage: the inputs are paths already under the storage root.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        task: str,
        params: Mapping[str, Any] | None = None,
        seed: int | None = None,
        in_storage: bool = False,
    ) -> None:
        self.storage = storage
        self.task = task
        self.params = dict(params or {})
        self.seed = seed
        self.in_storage = in_storage
        self._directories: dict[str, Path] = {}

    def plan(self, items: Iterable[Item]) -> list[Planned]:
        """Check every item and build its job; nothing is copied or sent.

        Raises:
            BadInput: an item is malformed, names a missing or unsafe file, has params
                that are not JSON, a bad seed, or an output that is its input or another
                job's; the message names the item.
        """
        items = list(items)
        planned: list[Planned] = []
        outputs: dict[str, int] = {}
        for index, item in enumerate(items):
            try:
                one = self._plan_one(item)
            except BadInput as exc:
                reason = exc.message.removeprefix("bad message: ")
                where = f"item {index} ({_shown(item)}): " if len(items) > 1 else ""
                raise type(exc)(f"{where}{reason}") from None
            output = one.job.output
            if output is not None:
                if output in outputs:
                    raise BadInput(
                        f"items {outputs[output]} and {index} both publish to {output}: "
                        "give each job its own output"
                    )
                outputs[output] = index
            planned.append(one)
        return planned

    def _plan_one(self, item: Item) -> Planned:
        fields = _item_fields(item)
        job_id = new_job_id()
        source, local, rel = self._input(fields.get("input"), job_id)
        params = self.params
        if fields.get("params") is not None:
            own = fields["params"]
            if not isinstance(own, Mapping):
                raise BadInput(f"params must be a mapping, not {type(own).__name__}")
            params = {**params, **own}
        seed = fields.get("seed", self.seed)
        output = fields.get("output")
        if output is not None:
            output = check_relative_path(os.fspath(output))
            if rel is not None:
                self._check_not_overwritten(output, rel)
        elif rel is not None:
            output = self.storage.default_output(job_id, rel)
        job = Job(
            job_id=job_id,
            task=self.task,
            input=rel,
            output=output,
            params=params,
            seed=new_seed() if seed is None else seed,
        )
        return Planned(job, source, local)

    def _input(self, value: object, job_id: str) -> tuple[str | None, Path | None, str | None]:
        """(source name, local file to copy, path under the storage) of an item's input."""
        if value is None:
            return None, None, None
        if not isinstance(value, str | os.PathLike):
            raise BadInput(f"input must be a path, not {type(value).__name__}")
        name = os.fspath(value)
        if self.in_storage:
            if os.path.isabs(name):
                rel = self.storage.relative(name)
                if rel is None:
                    raise BadInput(f"{name} is not under the storage root {self.storage.root}")
                name = rel
            return name, None, self._existing_input(name)
        local = Path(name)
        try:
            mode = local.stat().st_mode
        except OSError:
            mode = 0
        if not stat.S_ISREG(mode):
            raise BadInput(f"input file not found or not a regular file: {local}")
        rel = check_relative_path(f"inputs/{job_id}/{local.name}")
        return name, local, rel

    def _check_not_overwritten(self, output: str, rel: str) -> None:
        """Refuse an output that is the job's own input: the worker would overwrite the
        input it reads (``conveyor run`` refuses the same).

        Raises:
            BadInput: the output names the input file, directly or through a symlink.
        """
        same = output == rel
        if not same and self.in_storage:
            with contextlib.suppress(OSError, ValueError):
                same = os.path.samefile(self.storage.root / output, self.storage.root / rel)
        if same:
            raise BadInput(
                f"output {output} is the job's input {rel}: the job would overwrite its own "
                "input; choose another output path"
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


def _item_fields(item: Item) -> dict[str, Any]:
    """An item as a dict of the known keys.

    Raises:
        BadInput: it is a mapping with unknown keys, or not an item at all.
    """
    if item is None:
        return {}
    if isinstance(item, str | os.PathLike):
        return {"input": item}
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - ITEM_KEYS)
        if unknown:
            raise BadInput(
                f"unknown key(s) {', '.join(map(repr, unknown))}: an item has "
                f"{', '.join(sorted(ITEM_KEYS))}"
            )
        return dict(item)
    raise BadInput(
        f"an item is a path, None or a mapping of {', '.join(sorted(ITEM_KEYS))}, "
        f"not {type(item).__name__}"
    )


def _shown(item: object) -> str:
    if isinstance(item, Mapping):
        item = item.get("input", "no input")
    text = os.fspath(item) if isinstance(item, str | os.PathLike) else repr(item)
    return text if len(text) <= 80 else text[:77] + "..."
