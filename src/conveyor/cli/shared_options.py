"""The options several commands share, built from the settings table (``settings.OPTIONS``),
and ``base_settings()``, which turns them into :class:`~conveyor.settings.Settings`.

Every option here has its environment twin, shown in --help; the table's are read the way
``conveyor.connect()`` reads them. The settings themselves live in the library.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from conveyor.errors import ConfigError
from conveyor.ledger import redact_url
from conveyor.option import Option
from conveyor.settings import Settings, check_heartbeat, default_wait_s
from conveyor.settings_table import OPTIONS

F = TypeVar("F", bound=Callable[..., Any])

#: Where the ledger URL given by ``--ledger`` waits for ``base_settings`` (click's context).
LEDGER_URL_KEY = "conveyor.ledger_url"


def command_option(*decls: str, envvar: str, help: str, **kwargs: Any) -> Callable[[F], F]:
    """A command's own option (not a setting), with its environment twin shown in --help."""
    return click.option(*decls, envvar=envvar, show_envvar=True, help=help, **kwargs)


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
    if option.kind == "str" and field.endswith("_url"):
        kwargs["metavar"] = "URL"
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


def import_option(func: F) -> F:
    """``--import`` / ``CONVEYOR_IMPORT``: modules or .py files that register tasks."""
    return setting_option("imports")(func)


def json_option(func: F) -> F:
    """``--json`` / ``CONVEYOR_JSON``: machine-readable output for scripts."""
    return command_option(
        "--json", "as_json", envvar="CONVEYOR_JSON", is_flag=True, help="Print JSON for scripts."
    )(func)


def base_settings(
    storage: Path, queue_url: str | None, endpoint_url: str | None, **fields: Any
) -> Settings:
    """Settings from the shared options, plus any fields a command adds.

    The ledger URL comes from ``--ledger`` / ``CONVEYOR_LEDGER_URL`` (kept in the click
    context by the queue options) unless ``fields`` gives one; ``debug`` from the root
    ``--debug``; ``wait_s``, when None or not given, defaults by queue as
    :func:`conveyor.settings.settings_from_env` does.

    Raises:
        click.UsageError: the heartbeat is not shorter than the visibility timeout.
    """
    ctx = click.get_current_context(silent=True)
    if "ledger_url" not in fields:
        fields["ledger_url"] = ctx.meta.get(LEDGER_URL_KEY) if ctx is not None else None
    fields.setdefault("debug", is_debug())
    if fields.get("wait_s") is None:
        fields["wait_s"] = default_wait_s(queue_url)
    settings = Settings(storage=storage, queue_url=queue_url, endpoint_url=endpoint_url, **fields)
    try:
        check_heartbeat(settings)
    except ConfigError as exc:
        raise click.UsageError(exc.message) from None
    return settings


def shown_ledger_url(settings: Settings) -> str:
    """The ledger's URL with any password hidden: the only form ever printed or logged."""
    return redact_url(settings.resolved_ledger_url)


def is_debug() -> bool:
    """Whether the root ``--debug`` flag is on (for tracebacks and debug logs)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().meta.get("conveyor.debug"))
