"""One frozen Settings, built once at start-up (flag > CONVEYOR_* env > default), passed down."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

#: Where conveyor keeps its own state inside the storage root (ledger, claim checks,
#: the default SQLite queue). Job paths may not point inside it.
STATE_DIR = "_conveyor"

DEFAULT_STORAGE = Path("conveyor-data")

# Process exit codes, documented in the README and used by Kubernetes podFailurePolicy.
EXIT_OK = 0  #: finished: drained (--until-empty), --max-jobs or --max-idle-s reached
EXIT_FAILED = 1  #: an unexpected error
EXIT_USAGE = 2  #: bad command-line usage (click's own code)
EXIT_BAD_INPUT = 65  #: EX_DATAERR: the input of `conveyor run` is malformed
EXIT_INTERRUPTED = 75  #: EX_TEMPFAIL: stopped by SIGTERM/SIGINT before the queue drained
EXIT_CONFIG = 78  #: EX_CONFIG: broken configuration (bad URL, missing queue, no permission)


def default_queue_url(storage: Path) -> str:
    """The embedded queue's URL for a storage root: a SQLite file in its state directory."""
    return f"sqlite:///{(storage / STATE_DIR / 'queue.db').resolve()}"


@dataclass(frozen=True)
class Settings:
    """Everything a conveyor process is configured with. Seconds carry ``_s`` in the name."""

    storage: Path = DEFAULT_STORAGE
    queue_url: str | None = None
    endpoint_url: str | None = None
    region: str | None = None

    # Worker
    visibility_timeout_s: int = 60
    heartbeat_every_s: float | None = None  # default: a third of the visibility timeout
    max_receive_count: int = 5
    wait_s: float = 20.0
    batch_size: int = 10
    grace_s: float = 25.0
    processes: int = 1
    until_empty: bool = False
    empty_polls: int = 3
    max_jobs: int | None = None
    max_idle_s: float | None = None
    retry_base_s: float = 5.0
    retry_max_s: float = 900.0
    imports: tuple[str, ...] = field(default_factory=tuple)
    metrics_port: int | None = None  # Prometheus /metrics; None: off
    metrics_host: str = "127.0.0.1"  # Kubernetes manifests set 0.0.0.0 for the scraper
    health_file: Path | None = None  # touched every round and heartbeat (liveness probe)

    # Output
    debug: bool = False
    log_format: str = "auto"  # auto | json | text
    log_level: str = "INFO"

    @property
    def resolved_queue_url(self) -> str:
        """The queue URL, falling back to the embedded SQLite queue in the storage root."""
        return self.queue_url or default_queue_url(self.storage)

    @property
    def heartbeat_s(self) -> float:
        """Seconds between lease extensions: well before the visibility timeout expires
        (never more than half of it, whatever was asked for)."""
        every_s = self.heartbeat_every_s
        if every_s is None:
            every_s = max(1.0, self.visibility_timeout_s / 3)
        return min(every_s, self.visibility_timeout_s / 2)

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]
