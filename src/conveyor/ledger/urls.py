"""Ledger URLs: the embedded ledger's default, and any URL with its password hidden."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

#: The embedded ledger's file name, beside the SQLite queue in the storage's ``_conveyor/``.
LEDGER_FILE = "ledger.db"


def default_ledger_url(storage: Path) -> str:
    """The embedded ledger's URL for a storage root."""
    from conveyor.settings import STATE_DIR

    return f"sqlite://{(Path(storage) / STATE_DIR / LEDGER_FILE).resolve()}"  # sqlite:///abs


def redact_url(url: str) -> str:
    """The URL with its password (and any ``password=`` query value) replaced by ``***``:
    safe for logs, errors, ``--help`` and manifests."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _ = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if sep else f"{user}@{host}"
    query = "&".join(
        f"{key}=***" if key.lower() in ("password", "passwd") else item
        for item in parts.query.split("&")
        if item
        for key in [item.partition("=")[0]]
    )
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing secret (and urlunsplit would drop sqlite:/// slashes)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
