"""The checks of a job envelope's fields: task name, paths, seed, submit time, and params
that JSON carries faithfully (str keys; str, int, finite float, bool, None, list, dict)."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from conveyor.errors import BadInput, BadMessage
from conveyor.job_ids import MAX_SEED
from conveyor.storage import check_job_id, check_relative_path
from conveyor.strict_json import MAX_DEPTH

if TYPE_CHECKING:
    from conveyor.jobs import Job

#: A task's name: 1 to 128 of ``[A-Za-z0-9_.:-]``, starting with a letter or a digit.
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")


def check_job(job: Job) -> None:
    """Check every field of a new ``Job`` (its ``__post_init__``); an ``int`` submit time
    becomes a ``float``.

    Raises:
        BadMessage: a field is of the wrong type or out of range; the reason names it.
    """
    try:
        check_job_id(job.job_id)
    except BadInput as exc:
        raise BadMessage(f"bad message: field 'job_id': {exc.message}") from None
    if not isinstance(job.task, str) or not TASK_NAME.match(job.task):
        raise BadMessage(
            f"bad message: field 'task': {_short(job.task)} is not a task name "
            "(1 to 128 of [A-Za-z0-9_.:-], starting with a letter or digit)"
        )
    if job.input is not None:
        _check_path("input", job.input)
    if job.output is not None:
        _check_path("output", job.output)
    if type(job.seed) is not int or not 0 <= job.seed <= MAX_SEED:
        raise BadMessage(f"bad message: field 'seed': {_short(job.seed)} is not in 0..2**63-1")
    when = job.submitted_at
    if type(when) not in (int, float) or not math.isfinite(when) or when < 0:
        raise BadMessage(f"bad message: field 'submitted_at': {_short(when)} is not a time")
    if not isinstance(job.params, dict):
        raise BadMessage(
            f"bad message: field 'params': expected an object, got {json_type(job.params)}"
        )
    if job.params_ref is not None and job.params:
        raise BadMessage("bad message: field 'params_ref': not allowed with non-empty 'params'")
    # The envelope is level 1 of the message, so its params start at level 2.
    _check_json_value(job.params, "params", 2)
    if type(when) is int:
        object.__setattr__(job, "submitted_at", float(when))


def _check_path(name: str, value: object) -> None:
    try:
        check_relative_path(value)
    except BadInput as exc:
        raise BadMessage(f"bad message: field {name!r}: {exc.message}") from None


def _check_json_value(value: object, where: str, depth: int) -> None:
    """Reject what JSON cannot carry faithfully: non-str keys, NaN, tuples, other types."""
    if depth > MAX_DEPTH:
        raise BadMessage(f"bad message: field {where!r}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise BadMessage(f"bad message: field {where!r}: key {key!r} is not a string")
            if isinstance(item, dict | list):
                _check_json_value(item, f"{where}.{key}", depth + 1)
            else:
                _check_scalar(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict | list):
                _check_json_value(item, f"{where}[{index}]", depth + 1)
            else:
                _check_scalar(item, f"{where}[{index}]")
    else:
        _check_scalar(value, where)


def _check_scalar(value: object, where: str) -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float) and math.isfinite(value):
        return
    raise BadMessage(f"bad message: field {where!r}: {_short(value)} is not a JSON value")


def json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


def _short(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."
