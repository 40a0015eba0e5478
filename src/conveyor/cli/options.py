"""Options shared by several commands, built from the settings table (``settings.OPTIONS``):
each has its environment twin, shown in --help, read the way ``conveyor.connect()`` reads it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from conveyor.settings import OPTIONS, Option

F = TypeVar("F", bound=Callable[..., Any])

#: Where the ledger URL given by ``--ledger`` waits for ``base_settings`` (click's context).
LEDGER_URL_KEY = "conveyor.ledger_url"


def _click_type(option: Option) -> click.ParamType[Any] | None:
    """The click type that checks what ``Option.check`` checks, for a usage error (exit 2)."""
    if option.kind == "int":
        return click.IntRange(_int_bound(option.minimum), _int_bound(option.maximum))
    if option.kind == "float":
        return click.FloatRange(option.minimum, option.maximum)
    if option.kind == "path":
        return click.Path(file_okay=option.file_okay, dir_okay=option.dir_okay, path_type=Path)
    if option.kind == "choice":
        return click.Choice(option.choices, case_sensitive=option.case_sensitive)
    return None


def _int_bound(bound: float | None) -> int | None:
    return None if bound is None else int(bound)


def setting_option(field: str, **extra: Any) -> Callable[[F], F]:
    """The ``--flag`` of a setting, with its environment variables, type, bounds, default
    and help from the settings table; the command gets it as the argument ``field``.

    ``extra`` overrides click keywords (``expose_value``, ``callback``...).
    """
    option = OPTIONS[field]
    kwargs: dict[str, Any] = {
        "envvar": list(option.env),
        "show_envvar": True,
        "help": option.help,
    }
    if option.kind == "bool":
        kwargs["is_flag"] = True
    elif option.kind == "list":
        kwargs.update(multiple=True, metavar="MODULE_OR_FILE")
    else:
        kwargs["type"] = _click_type(option)
        default = option.default
        if option.default_text is None and default is not None:
            kwargs.update(default=default, show_default=True)
        else:
            kwargs["default"] = None
    if option.kind in ("str",):
        kwargs.setdefault("metavar", "URL" if field.endswith("_url") else None)
        if kwargs["metavar"] is None:
            del kwargs["metavar"]
    kwargs.update(extra)
    return click.option(f"--{option.flag}", field, **kwargs)


def storage_option(func: F) -> F:
    """``--storage`` / ``CONVEYOR_STORAGE``: the storage root."""
    return setting_option("storage")(func)


def _keep_ledger_url(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Keep ``--ledger`` in the context rather than as an argument, so every command that
    takes the queue options gets it without a parameter of its own."""
    if value:
        ctx.meta[LEDGER_URL_KEY] = value


def queue_options(func: F) -> F:
    """``--queue`` (``CONVEYOR_QUEUE_URL`` or ``SQS_QUEUE_URL``), ``--endpoint-url`` and
    ``--ledger`` (``CONVEYOR_LEDGER_URL``; read by ``base_settings``)."""
    func = setting_option("ledger_url", expose_value=False, callback=_keep_ledger_url)(func)
    func = setting_option("endpoint_url")(func)
    return setting_option("queue_url")(func)
