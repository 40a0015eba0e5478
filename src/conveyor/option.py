"""``Option``: one setting as a command-line flag and environment variables give it, and
how its text (an environment variable's) and its typed values are read and checked."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from conveyor.errors import ConfigError

Kind = Literal["path", "str", "int", "float", "bool", "choice", "list"]


@dataclass(frozen=True)
class Option:
    """One setting as the command line and the environment give it.

    Attributes:
        field: the :class:`~conveyor.settings.Settings` field it sets.
        flag: the command-line flag without its dashes (``visibility-timeout-s``); as a
            keyword of ``conveyor.connect()`` it is spelt with underscores (:attr:`keyword`).
        env: its environment variables, the first one set (and not empty) winning.
        kind: how its text is read: a path, a string, a number, a flag (``1``/``0``,
            ``true``/``false``...), one of ``choices``, or a space-separated list.
        help: the ``--help`` text.
        default: the value when neither the flag nor an environment variable gives one
            (the :class:`~conveyor.settings.Settings` field's default too).
        minimum, maximum: inclusive bounds of a number.
        choices: the allowed values of a choice.
        case_sensitive: whether a choice is matched case-sensitively (else upper-cased).
        default_text: what ``--help`` shows as the default when it is computed.
        dir_okay, file_okay: for a path, what it may name (for the command line's checks).
    """

    field: str
    flag: str
    env: tuple[str, ...]
    kind: Kind
    help: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    case_sensitive: bool = True
    default_text: str | None = None
    dir_okay: bool = True
    file_okay: bool = True

    @property
    def keyword(self) -> str:
        """The keyword of ``conveyor.connect()``: the flag with ``_`` for ``-``
        (``import``, a Python keyword, is ``imports``)."""
        return "imports" if self.flag == "import" else self.flag.replace("-", "_")

    def parse(self, text: str, origin: str) -> Any:
        """The value of this option given as text (an environment variable's).

        Raises:
            ConfigError: the text is not a valid value; the message names ``origin``.
        """
        try:
            return self.check(_parse_text(self, text), origin)
        except ValueError:
            raise ConfigError(f"bad value {text!r} for {origin}: {self.expected}") from None

    def check(self, value: Any, origin: str) -> Any:
        """``value`` converted to the field's type, if it is one this option allows.

        Raises:
            ConfigError: it is not; the message names ``origin``.
        """
        if value is None:
            return None
        try:
            return _convert(self, value)
        except (TypeError, ValueError):
            raise ConfigError(f"bad value {value!r} for {origin}: {self.expected}") from None

    @property
    def expected(self) -> str:
        """What a valid value looks like, for error messages."""
        if self.kind not in ("int", "float"):
            if self.kind == "choice":
                return f"one of {', '.join(self.choices)}"
            return _EXPECTED[self.kind]
        what = "an integer" if self.kind == "int" else "a number"
        if self.minimum is not None and self.maximum is not None:
            return f"{what} from {self.minimum:g} to {self.maximum:g}"
        if self.minimum is not None:
            return f"{what} >= {self.minimum:g}"
        return what


_EXPECTED = {
    "bool": "a boolean (1/0, true/false, yes/no, on/off)",
    "list": "a list of strings",
    "path": "a path",
    "str": "a string",
}
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off", ""})


def _parse_text(option: Option, text: str) -> Any:
    """Text to a value of the option's kind, as the command line reads it.

    Raises:
        ValueError: it is not one.
    """
    if option.kind == "bool":
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(text)
    if option.kind == "list":
        return tuple(text.split())
    if option.kind == "int":
        return int(text.strip())
    if option.kind == "float":
        return float(text.strip())
    return text


def _convert(option: Option, value: Any) -> Any:
    """A typed value checked against the option's kind and bounds.

    Raises:
        TypeError, ValueError: it does not fit.
    """
    kind = option.kind
    if kind == "path":
        if not isinstance(value, str | os.PathLike) or not os.fspath(value):
            raise TypeError(value)
        return Path(value)
    if kind == "str":
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError(value)
        return value
    if kind == "list":
        items = (value,) if isinstance(value, str | os.PathLike) else tuple(value)
        if not all(isinstance(item, str | os.PathLike) for item in items):
            raise TypeError(value)
        return tuple(os.fspath(item) for item in items)
    if kind == "choice":
        if not isinstance(value, str):
            raise TypeError(value)
        chosen = value if option.case_sensitive else value.upper()
        if chosen not in option.choices:
            raise ValueError(value)
        return chosen
    return _number(option, value)


def _number(option: Option, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(value)
    if option.kind == "int":
        if not isinstance(value, int):
            raise TypeError(value)
        number: int | float = value
    else:
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(value)
    if option.minimum is not None and number < option.minimum:
        raise ValueError(value)
    if option.maximum is not None and number > option.maximum:
        raise ValueError(value)
    return number


def env_value(option: Option, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The option's text in the environment and the variable it came from, or None.

    The first of its variables that is set and not empty wins (as on the command line).
    """
    for name in option.env:
        text = environ.get(name)
        if text:
            return name, text
    return None
