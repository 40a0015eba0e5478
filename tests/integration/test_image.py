"""deploy/Dockerfile kept honest without a container engine: its builder command builds the
wheel, the wheel goes into a fresh venv, and the image's ENTRYPOINT + CMD run there."""

from __future__ import annotations

import csv
import fnmatch
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conveyor.k8s.config import RUN_AS_UID, SAMPLE_INPUT

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
#: Installing the wheel's runtime dependencies from PyPI can take a while on a cold cache.
INSTALL_TIMEOUT_S = 300


@dataclass
class Stage:
    """One FROM … AS name stage and its instructions, in order."""

    name: str
    base: str
    platform: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name} has no {keyword}"
        return found[-1]


def logical_lines(text: str) -> Iterator[str]:
    """Instructions with their backslash continuations joined and comments dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages of a Dockerfile, with global ARG defaults substituted into FROM."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif keyword == "FROM":
            words = rest.split()
            platform = next(
                (w.split("=", 1)[1] for w in words if w.startswith("--platform=")), None
            )
            words = [w for w in words if not w.startswith("--")]
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, base, platform))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return {stage.name: stage for stage in parse_dockerfile(DOCKERFILE.read_text())}


def copy_args(rest: str) -> tuple[list[str], str, dict[str, str]]:
    """(sources, destination, flags) of a COPY instruction."""
    words = shlex.split(rest)
    flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
    paths = [w for w in words if not w.startswith("--")]
    return paths[:-1], paths[-1], flags


def exec_form(rest: str) -> list[str]:
    """ENTRYPOINT/CMD must be JSON arrays: a shell form would not receive SIGTERM."""
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def env_of(stage: Stage) -> dict[str, str]:
    """The ENV of a stage (``K=V`` pairs, quotes allowed)."""
    env: dict[str, str] = {}
    for rest in stage.all("ENV"):
        for pair in shlex.split(rest):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


# --- the Dockerfile as written ------------------------------------------------------------


def test_the_image_is_multi_stage_slim_current_and_non_root(stages: dict[str, Stage]) -> None:
    assert list(stages) == ["builder", "runtime"]
    builder, runtime = stages["builder"], stages["runtime"]
    # The wheel is pure Python: built once on the build machine, not under emulation.
    assert builder.platform == "$BUILDPLATFORM"
    assert builder.base == runtime.base
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim(-\w+)?", runtime.base)
    assert match, f"not a pinned python slim tag: {runtime.base}"
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    floor = tuple(int(n) for n in re.findall(r"\d+", requires)[:2])
    assert (int(match[1]), int(match[2])) >= floor
    assert runtime.last("USER") == f"{RUN_AS_UID}:{RUN_AS_UID}"
    assert exec_form(runtime.last("ENTRYPOINT")) == ["conveyor"]
    # Nothing but the wheel's install and the sample reach the runtime stage.
    sources = [copy_args(rest)[0] for rest in runtime.all("COPY")]
    assert sources == [["src/conveyor/data/input.csv"]]


def test_the_default_command_is_the_sample_job_the_manifests_rely_on(
    stages: dict[str, Stage],
) -> None:
    runtime = stages["runtime"]
    cmd = exec_form(runtime.last("CMD"))
    assert cmd[0] == "run" and SAMPLE_INPUT in cmd
    destinations = [copy_args(rest)[1] for rest in runtime.all("COPY")]
    assert SAMPLE_INPUT in destinations
    output = cmd[cmd.index("--output") + 1]
    assert output.startswith("/tmp/")  # the only writable place on a read-only root


def dockerignore_excludes(path: str, rules: list[str]) -> bool:
    """Docker's .dockerignore matching: the last matching rule wins, ``!`` re-includes."""
    excluded = False
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule[1:] if negate else rule
        pattern = pattern.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatchcase(prefix, pattern)
            or (pattern.startswith("**/") and fnmatch.fnmatchcase(prefix, pattern[3:]))
            for prefix in prefixes
        ):
            excluded = not negate
    return excluded


def test_dockerignore_sends_only_what_the_build_copies(stages: dict[str, Stage]) -> None:
    rules = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [
        source
        for stage in stages.values()
        for rest in stage.all("COPY")
        if "from" not in copy_args(rest)[2]
        for source in copy_args(rest)[0]
    ]
    assert copied
    for source in copied:
        assert not dockerignore_excludes(source.rstrip("/"), rules), source
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    for private in (
        ".venv/bin/python",
        ".git/HEAD",
        "conveyor-data/x",
        "tests/unit/k8s/test_workloads.py",
    ):
        assert dockerignore_excludes(private, rules), private


# --- the Dockerfile, run ---------------------------------------------------------------


@dataclass
class Image:
    """A stand-in for the built image: a directory playing its root filesystem."""

    root: Path
    env: dict[str, str]
    workdir: Path
    entrypoint: list[str]
    cmd: list[str]

    def rebase(self, value: str) -> str:
        """Absolute paths (and ``:``-lists of them) moved under the stand-in root."""
        parts = [str(self.root) + p if p.startswith("/") else p for p in value.split(":")]
        return ":".join(parts)

    def run(self, args: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        argv = self.entrypoint + (self.cmd if args is None else args)
        argv = [argv[0]] + [self.rebase(a) if a.startswith("/") else a for a in argv[1:]]
        executable = shutil.which(argv[0], path=self.env["PATH"])
        assert executable, f"{argv[0]} is not on the image's PATH"
        return subprocess.run(
            [executable, *argv[1:]],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def copy_from_context(stage: Stage, root: Path, workdir: str) -> None:
    for rest in stage.all("COPY"):
        sources, destination, flags = copy_args(rest)
        assert "from" not in flags
        target = (
            Path(workdir, destination) if not destination.startswith("/") else Path(destination)
        )
        for source in sources:
            src = REPO / source
            dest = root / target.relative_to("/")
            if destination.endswith("/") or len(sources) > 1:
                dest = dest / src.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(
                    src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
                )
            else:
                shutil.copy2(src, dest)


@pytest.fixture(scope="module")
def image(stages: dict[str, Stage], tmp_path_factory: pytest.TempPathFactory) -> Image:
    """Build the stand-in: the builder stage's own RUN builds the wheel, then a fresh
    venv gets it as the runtime stage's RUN does, then COPY, ENV and WORKDIR apply."""
    builder, runtime = stages["builder"], stages["runtime"]
    root = tmp_path_factory.mktemp("image-root")

    build_dir = builder.last("WORKDIR")
    copy_from_context(builder, root, build_dir)
    command = shlex.split(builder.last("RUN"))
    assert command[:5] == ["python", "-m", "pip", "wheel", "--no-deps"], command
    command = [sys.executable, *[str(root) + c if c.startswith("/") else c for c in command[1:]]]
    subprocess.run(
        [*command, "--disable-pip-version-check", "-q"],
        cwd=root / build_dir.lstrip("/"),
        check=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    (wheel,) = (root / "dist").glob("conveyor-*.whl")

    install = runtime.last("RUN")
    for step in ("python -m venv /opt/venv", "/opt/venv/bin/pip install /dist/*.whl"):
        assert step in install, f"the runtime stage no longer runs {step!r}"
    assert "source=/dist" in install  # the builder's /dist, bind-mounted
    venv = root / "opt" / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", str(wheel)],
        check=True,
        timeout=INSTALL_TIMEOUT_S,
    )

    workdir = runtime.last("WORKDIR")
    copy_from_context(runtime, root, workdir)
    stand_in = Image(root, {}, root / workdir.lstrip("/"), [], [])
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    for key, value in env_of(runtime).items():
        marked = value.replace("$PATH", "\0")
        env[key] = stand_in.rebase(marked).replace("\0", os.environ["PATH"])
    stand_in.env = env
    stand_in.workdir.mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    stand_in.entrypoint = exec_form(runtime.last("ENTRYPOINT"))
    stand_in.cmd = exec_form(runtime.last("CMD"))
    return stand_in


@pytest.mark.slow
@pytest.mark.timeout(2 * INSTALL_TIMEOUT_S)
def test_the_image_command_runs_the_tutorial_sample_job(image: Image) -> None:
    result = image.run()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "Starting batch task..." in lines
    assert "Batch task completed." in lines
    assert lines.index("Starting batch task...") < lines.index("Batch task completed.")

    output = Path(image.rebase(image.cmd[image.cmd.index("--output") + 1]))
    sample = Path(image.rebase(SAMPLE_INPUT))
    with sample.open(newline="") as f:
        given = list(csv.DictReader(f))
    with output.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["ID", "Value", "ProcessedValue"]
    assert [(r["ID"], r["Value"]) for r in rows] == [(r["ID"], r["Value"]) for r in given]
    assert len(rows) == 10
    for row in rows:
        assert 0.8 <= float(row["ProcessedValue"]) / float(row["Value"]) <= 1.2


@pytest.mark.slow
@pytest.mark.timeout(2 * INSTALL_TIMEOUT_S)
@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            ["worker", "--help"],
            ["--until-empty", "CONVEYOR_GRACE_S", "SQS_QUEUE_URL", "CONVEYOR_LEDGER_URL"],
        ),
        (["health", "--help"], ["--file", "--max-age-s"]),
        (["run", "--help"], ["--output"]),
        (["k8s", "render", "--help"], ["--only", "--ledger-secret", "CONVEYOR_LEDGER_SECRET"]),
        # The ledger-prune CronJob, and the one-off Job docs/kubernetes.md renders for it.
        (["ledger", "prune", "--help"], ["--older-than", "CONVEYOR_LEDGER_URL"]),
        (["ledger", "migrate", "--help"], ["CONVEYOR_LEDGER_URL"]),
    ],
)
def test_the_image_has_the_commands_the_manifests_run(
    image: Image, command: list[str], expected: list[str]
) -> None:
    result = image.run(command)
    assert result.returncode == 0, result.stderr
    for text in expected:
        assert text in result.stdout, f"`conveyor {' '.join(command)}` lacks {text}"


@pytest.mark.slow
@pytest.mark.timeout(2 * INSTALL_TIMEOUT_S)
def test_the_image_can_reach_a_postgresql_ledger(image: Image) -> None:
    # psycopg and its libpq come with the wheel's dependencies: a server that is not there
    # is a one-line connection error (not an ImportError), with the password hidden.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://conveyor:s3cret-pw@127.0.0.1:{port}/ledger"
    result = image.run(["ledger", "migrate", "--ledger", url])
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert "cannot reach the ledger" in line
    assert "s3cret-pw" not in result.stderr + result.stdout
