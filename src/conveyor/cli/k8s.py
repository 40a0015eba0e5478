"""``conveyor k8s``: render the Kubernetes manifests and IAM policies for Amazon EKS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from conveyor.cli.field_options import GroupedCommand
from conveyor.cli.k8s_options import ENV_PREFIX, GROUPS, build_deployment, k8s_options
from conveyor.k8s import (
    PARTS,
    POLICIES,
    default_parts,
    render,
    render_policies,
    render_policy,
    to_yaml,
    write_dir,
)


@click.group()
def k8s() -> None:
    """Kubernetes (Amazon EKS) manifests and IAM policies for conveyor."""


@k8s.command("render", cls=GroupedCommand)
@click.option(
    "--only",
    "only",
    multiple=True,
    type=click.Choice(PARTS),
    envvar=ENV_PREFIX + "ONLY",
    show_envvar=True,
    help="Render only these parts (repeatable) [default: what the options describe: "
    "service-account, pull-secret, storage, and queue-job with --queue else job; keda, "
    "ledger-prune and iam on request].",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    envvar=ENV_PREFIX + "OUT",
    show_envvar=True,
    default=None,
    help="Write one file per object (and iam/*.json) into DIR instead of stdout.",
)
@k8s_options(*GROUPS)
def render_command(only: tuple[str, ...], out: Path | None, **opts: Any) -> None:
    """Print the manifests as multi-document YAML: pipe them to kubectl apply -f -.

    The IAM policies (--only iam) are JSON documents for aws iam create-policy: printed
    as one JSON object by name, or written to DIR/iam/NAME.json with --out.
    """
    deploy = build_deployment(opts)
    parts = list(only) or default_parts(deploy)
    with_iam = "iam" in parts or (out is not None and not only)
    policies = render_policies(deploy) if with_iam else {}
    docs = render(deploy, [part for part in parts if part != "iam"])
    if out is not None:
        for path in write_dir(out, docs, policies):
            click.echo(str(path), err=True)
        return
    if "iam" in parts:
        if docs:
            raise click.UsageError(
                "--only iam prints JSON, not YAML manifests: render it alone, or use --out DIR"
            )
        click.echo(json.dumps(policies, indent=2))
        return
    click.echo(to_yaml(docs), nl=False)


@k8s.command("policy", cls=GroupedCommand)
@click.argument("policy_name", metavar="NAME", type=click.Choice(POLICIES))
@k8s_options("Names and AWS")
def policy_command(policy_name: str, **opts: Any) -> None:
    """Print one IAM policy document as JSON, for aws iam create-policy.

    NAME: worker, submitter, admin, scaler (KEDA), trust (IRSA trust of the workers'
    role), ecr-refresh and ecr-refresh-trust (the pull-secret refresher's role).
    """
    deploy = build_deployment(opts)
    deploy.check()
    click.echo(json.dumps(render_policy(deploy, policy_name), indent=2))
