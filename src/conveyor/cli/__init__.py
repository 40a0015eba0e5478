"""The ``conveyor`` command line: a thin layer over the library."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from typing import Any

import click

from conveyor.cli.shared_options import setting_option
from conveyor.errors import ConveyorError

#: Subcommands, loaded only when used so that `conveyor run` never imports boto3.
COMMANDS: dict[str, str] = {
    "run": "conveyor.cli.run:run",
    "submit": "conveyor.cli.submit:submit",
    "status": "conveyor.cli.status:status",
    "wait": "conveyor.cli.jobs:wait",
    "cancel": "conveyor.cli.jobs:cancel",
    "worker": "conveyor.cli.worker:worker",
    "health": "conveyor.cli.worker:health",
    "queue": "conveyor.cli.queue:queue",
    "dlq": "conveyor.cli.dlq:dlq",
    "k8s": "conveyor.cli.k8s:k8s",
    "dashboard": "conveyor.cli.dashboard:dashboard",
    "ledger": "conveyor.cli.ledger:ledger",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(
            name
            for name, target in COMMANDS.items()
            if importlib.util.find_spec(target.partition(":")[0]) is not None
        )

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        if importlib.util.find_spec(module_name) is None:
            return None
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConveyorError as exc:
            if ctx.meta.get("conveyor.debug"):
                traceback.print_exc()
            notes = "".join(f" ({note})" for note in getattr(exc, "__notes__", ()))
            click.echo(f"conveyor: error: {exc.message}{notes}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@setting_option("debug")
@click.version_option(package_name="conveyor")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Run batch jobs through a queue, with the data on shared storage."""
    ctx.meta["conveyor.debug"] = debug


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="conveyor")
