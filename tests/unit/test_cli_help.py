"""The command line's options: every one has its environment twin and help text in --help,
and no help text shows reST markup."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from conveyor.cli import cli

#: reST that reads as noise in a terminal: double backquotes and Sphinx roles.
REST_MARKUP = re.compile(r"``|:(?:func|class|meth|mod|data|attr|exc|obj):`")

#: click's own options, which configure nothing.
BUILTIN = frozenset({"help", "version"})


def _commands(
    command: click.Command, path: tuple[str, ...], ctx: click.Context
) -> Iterator[tuple[str, click.Command]]:
    yield " ".join(path), command
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, name
            yield from _commands(sub, (*path, name), click.Context(sub, parent=ctx, info_name=name))


COMMANDS = dict(_commands(cli, (), click.Context(cli, info_name="conveyor")))


def _problems(command: click.Command) -> list[str]:
    """What is missing or wrong in a command's --help, one line per thing."""
    problems = []
    if REST_MARKUP.search(command.help or ""):
        problems.append("reST markup in the command's help")
    for param in command.params:
        if not isinstance(param, click.Option) or param.name in BUILTIN:
            continue
        flag = param.opts[0]
        if not param.envvar:
            problems.append(f"{flag}: no environment variable")
        elif not param.show_envvar:
            problems.append(f"{flag}: its environment variable is not shown")
        if not (param.help or "").strip():
            problems.append(f"{flag}: no help text")
        elif REST_MARKUP.search(param.help or ""):
            problems.append(f"{flag}: reST markup in its help")
    return problems


@pytest.mark.parametrize(
    "name",
    list(COMMANDS),
)
def test_every_option_has_an_env_twin_and_help_without_rest_markup(name: str) -> None:
    assert _problems(COMMANDS[name]) == []


def test_the_walk_sees_every_command() -> None:
    assert {"", "submit", "status", "wait", "cancel", "worker", "health", "dashboard"} <= set(
        COMMANDS
    )
    assert {"ledger migrate", "ledger prune", "dlq list", "k8s render"} <= set(COMMANDS)


def test_health_help_is_plain_text() -> None:
    shown = CliRunner().invoke(cli, ["health", "--help"])

    assert shown.exit_code == 0
    assert "exec: [conveyor, health]" in shown.output
    assert "``" not in shown.output


@pytest.mark.parametrize(
    ("args", "env", "shown"),
    [
        (["status", "--help"], {}, "CONVEYOR_STATUS_LIMIT"),
        (["submit", "--help"], {}, "CONVEYOR_SEED"),
        (["submit", "--help"], {}, "CONVEYOR_OUTPUT"),
        (["worker", "--help"], {}, "CONVEYOR_LOG_LEVEL"),
    ],
)
def test_help_shows_the_env_twins(args: list[str], env: dict[str, str], shown: str) -> None:
    done = CliRunner().invoke(cli, args, env=env)

    assert done.exit_code == 0
    assert shown in done.output


def test_an_env_twin_configures_the_command_like_its_flag(tmp_path: Path) -> None:
    # Given an empty storage root: status's summary in JSON, by flag or by environment
    by_flag = CliRunner().invoke(cli, ["status", f"--storage={tmp_path}", "--json"])
    by_env = CliRunner().invoke(
        cli, ["status", f"--storage={tmp_path}"], env={"CONVEYOR_JSON": "1"}
    )

    # Then both print the same JSON
    assert by_flag.exit_code == by_env.exit_code == 0, by_env.output
    assert by_flag.output == by_env.output
    assert by_env.output.startswith("{")


def test_a_bad_env_twin_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    done = CliRunner().invoke(
        cli, ["status", f"--storage={tmp_path}"], env={"CONVEYOR_STATUS_LIMIT": "0"}
    )

    assert done.exit_code == 2
    assert "--limit" in done.output
