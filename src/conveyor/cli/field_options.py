"""Options that each set one field of a frozen dataclass, with their environment twins and
help, and commands whose --help lists them group by group (how `conveyor k8s` declares its
options)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class FieldOption:
    """One option: its flag, the dataclass field it sets, its environment twins and help.

    Attributes:
        flag: the flag, ``--image``; the command gets it as the argument :attr:`name`.
        target, field: the dataclass and the field it sets; the default shown and used is
            that field's own (none when it is None or empty).
        help: the --help text.
        env: its environment variables, the first one set winning.
        extra: more click keywords (``type``, ``metavar``, ``callback``...).
    """

    flag: str
    target: type[Any]
    field: str
    help: str
    env: tuple[str, ...]
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        """The command's argument: the flag with ``_`` for ``-``."""
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def default(self) -> Any:
        """The default of the field it sets, or None."""
        spec = {f.name: f for f in dataclasses.fields(self.target)}[self.field]
        return None if spec.default in (dataclasses.MISSING, ()) else spec.default

    def decorator(self, group: str) -> Callable[[F], F]:
        """The click option, listed under the title ``group`` in --help."""
        kwargs: dict[str, Any] = {"help": self.help, **self.extra}
        if self.default is not None:
            kwargs.update(default=self.default, show_default=True)
        return click.option(
            self.flag,
            self.name,
            cls=GroupedOption,
            group=group,
            envvar=list(self.env),
            show_envvar=True,
            **kwargs,
        )


class GroupedOption(click.Option):
    """An option that --help lists under the title of its group."""

    def __init__(self, *args: Any, group: str = "Options", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group


class GroupedCommand(click.Command):
    """A command whose --help lists its options group by group, plain options first."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        groups: dict[str, list[tuple[str, str]]] = {"Options": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and not isinstance(param, click.Argument):
                groups.setdefault(getattr(param, "group", "Options"), []).append(record)
        for title, rows in groups.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def option_groups(groups: Mapping[str, Sequence[FieldOption]], *titles: str) -> Callable[[F], F]:
    """Apply the options of the groups named ``titles`` to a command, in this order."""

    def decorate(func: F) -> F:
        for title in reversed(titles):
            for option in reversed(groups[title]):
                func = option.decorator(title)(func)
        return func

    return decorate


def values_by_target(
    options: Iterable[FieldOption], given: Mapping[str, Any]
) -> dict[type[Any], dict[str, Any]]:
    """The values of the options a command took (``given``, by :attr:`FieldOption.name`),
    by dataclass and field; the fields of options it does not take are left out."""
    values: dict[type[Any], dict[str, Any]] = {}
    for option in options:
        if option.name in given:
            values.setdefault(option.target, {})[option.field] = given[option.name]
    return values
