"""The dashboard's web app (Starlette): a static page, its JSON feed, one page per job.

Every route is GET (and HEAD): the dashboard only reads. The page loads nothing from
other sites, so it works offline, and the Content-Security-Policy forbids it to.
"""

from __future__ import annotations

import html
import ipaddress
import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers, QueryParams
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.dashboard.data import DashboardData
from conveyor.errors import BadInput, ConfigError, ConveyorError
from conveyor.jobs import JobState

STATIC_DIR = Path(__file__).with_name("static")

#: Headers on every response: no framing, no sniffing, nothing loaded from elsewhere.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
#: Most jobs ``/api/jobs`` returns at once.
MAX_JOBS_LIMIT = 1000


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` (and ``no-store``) to responses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                extra = {**SECURITY_HEADERS, "cache-control": "no-store"}
                headers += [
                    (name.encode(), value.encode())
                    for name, value in extra.items()
                    if name.encode() not in names
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HostGuard:
    """ASGI middleware refusing requests whose ``Host`` header names another host.

    A page on any web site can make the browser send requests to a loopback address if a
    name it controls resolves there (DNS rebinding); such requests carry that name as
    their ``Host``. IPv6 literals (``[::1]:8080``) are understood, unlike Starlette's own
    check, and compared in their canonical form.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(canonical_host(name) for name in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = Headers(scope=scope).get("host", "")
            if canonical_host(host_of(host)) not in self.allowed:
                response = PlainTextResponse("Invalid host header", status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def host_of(header: str) -> str:
    """The host part of a ``Host`` header value: without its port, IPv6 brackets removed."""
    value = header.strip()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def canonical_host(host: str) -> str:
    """A host name or address in one spelling: lower case, no trailing dot, IPv6
    compressed (``0:0::1`` is ``::1``)."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


def loopback_hosts(bind_host: str) -> list[str] | None:
    """The ``Host`` names to accept for a dashboard bound to ``bind_host``: the address it
    is bound to (the one it prints) and ``localhost``, when that is a loopback address
    (all of 127.0.0.0/8, ``::1``, ``localhost``); None (no check) for any other bind,
    which is reached by whatever name points at it.
    """
    name = canonical_host(bind_host)
    if name == "localhost":
        return ["localhost", "127.0.0.1", "::1"]
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return None
    if not address.is_loopback:
        return None
    return [address.compressed, "localhost"]


def create_app(data: DashboardData, *, allowed_hosts: Sequence[str] | None = None) -> Starlette:
    """The dashboard app over ``data``.

    Args:
        data: where the numbers come from.
        allowed_hosts: Host header values to accept (a guard against DNS rebinding when
            served on loopback: see :func:`loopback_hosts`); None accepts any.
    """

    def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    def overview(request: Request) -> Response:
        try:
            return JSONResponse(data.overview())
        except ConveyorError as exc:
            return _error(503, exc.message)

    def jobs(request: Request) -> Response:
        params = request.query_params
        state_text = params.get("state")
        wrong = f"state is one of {', '.join(JobState)}; limit is a number"
        try:
            state = JobState(state_text) if state_text else None
        except ValueError:
            return _error(400, wrong)
        limit = _limit(params, "100", not_a_number=wrong)
        if isinstance(limit, Response):
            return limit
        task = params.get("task")
        return _answer(lambda: data.jobs(state, limit, before=params.get("before"), task=task))

    def groups(request: Request) -> Response:
        params = request.query_params
        limit = _limit(params, "50")
        if isinstance(limit, Response):
            return limit
        return _answer(lambda: data.groups(limit, before=params.get("before")))

    def group_json(request: Request) -> Response:
        group_id = request.path_params["group_id"]
        return _answer(lambda: data.group(group_id), f"no group {group_id} in the ledger")

    def dead_letters(request: Request) -> Response:
        params = request.query_params
        limit = _limit(params, "50")
        if isinstance(limit, Response):
            return limit
        before = params.get("before")
        try:
            return JSONResponse(data.dead_letters(limit, before))
        except ConfigError as exc:  # a cursor the queue cannot use
            return _error(400 if before else 503, exc.message)
        except ConveyorError as exc:
            return _error(503, exc.message)

    def job_json(request: Request) -> Response:
        record, problem = _find(data, request.path_params["job_id"])
        if record is None:
            return _error(*problem)
        return JSONResponse(record)

    def job_page(request: Request) -> Response:
        record, problem = _find(data, request.path_params["job_id"])
        if record is None:
            return HTMLResponse(
                _page("Job not found", f"<p>{html.escape(problem[1])}</p>"), problem[0]
            )
        return HTMLResponse(_job_html(record))

    def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    middleware = [Middleware(SecurityHeaders)]
    if allowed_hosts is not None:
        middleware.append(Middleware(HostGuard, allowed_hosts=list(allowed_hosts)))
    return Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/api/overview", overview, methods=["GET"]),
            Route("/api/jobs", jobs, methods=["GET"]),
            Route("/api/jobs/{job_id}", job_json, methods=["GET"]),
            Route("/api/groups", groups, methods=["GET"]),
            Route("/api/groups/{group_id}", group_json, methods=["GET"]),
            Route("/api/dead-letters", dead_letters, methods=["GET"]),
            Route("/jobs/{job_id}", job_page, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=middleware,
    )


def _find(data: DashboardData, job_id: str) -> tuple[dict[str, Any] | None, tuple[int, str]]:
    """The job's record, or the HTTP status and message saying why there is none."""
    try:
        record = data.job(job_id)
    except BadInput as exc:
        return None, (400, exc.message)
    except ConveyorError as exc:
        return None, (503, exc.message)
    if record is None:
        return None, (404, f"no job {job_id} in the ledger")
    return record, (200, "")


def _limit(
    params: QueryParams, default: str, not_a_number: str = "limit is a number"
) -> int | Response:
    """The ``limit`` of a page request, or the 400 response saying what is wrong with it."""
    try:
        limit = int(params.get("limit", default))
    except ValueError:
        return _error(400, not_a_number)
    if not 1 <= limit <= MAX_JOBS_LIMIT:
        return _error(400, f"limit must be within 1..{MAX_JOBS_LIMIT}")
    return limit


def _answer(read: Callable[[], dict[str, Any] | None], not_found: str = "") -> Response:
    """What ``read()`` returns, as JSON: 400 for a malformed request (an id, a cursor, an
    ambiguous prefix), 503 when the ledger cannot be read, 404 (``not_found``) for None."""
    try:
        document = read()
    except BadInput as exc:
        return _error(400, exc.message)
    except ConveyorError as exc:
        return _error(503, exc.message)
    if document is None:
        return _error(404, not_found)
    return JSONResponse(document)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _job_html(record: dict[str, Any]) -> str:
    """One job's record as a table, then its history of state changes (the page a
    failure, a dead letter or a listed job links to)."""
    rows = []
    for key, value in record.items():
        if key == "history":
            continue
        shown = _shown(key, value)
        cell = f"<pre>{html.escape(shown)}</pre>" if "\n" in shown else html.escape(shown)
        rows.append(
            f'<tr><th>{html.escape(key)}</th><td data-field="{html.escape(key)}">{cell}</td></tr>'
        )
    job_id = html.escape(str(record["job_id"]))
    state = html.escape(str(record["state"]))
    body = (
        f'<h1>Job <code>{job_id}</code> <span class="badge badge-{state}">{state}</span></h1>'
        f'<table class="record">{"".join(rows)}</table>'
        f"{_history_html(record.get('history') or [])}"
        f'<p><a href="/api/jobs/{job_id}">JSON</a></p>'
    )
    return _page(f"Job {record['job_id']}", body)


def _shown(key: str, value: object) -> str:
    """A record field as text: times as local dates, seconds with their unit."""
    if value is None:
        return "—"
    if key.endswith("_at") and isinstance(value, float):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
        return f"{stamp} ({value:.3f})"
    if key == "duration_s" and isinstance(value, float):
        return f"{value:.3f} s"
    if isinstance(value, dict):
        return json.dumps(value, indent=1, sort_keys=True)
    return str(value)


def _history_html(history: list[dict[str, Any]]) -> str:
    """The job's state changes, oldest first: every attempt, failure and redrive."""
    if not history:
        return '<h2 class="history">History</h2><p class="empty">No state changes recorded.</p>'
    rows = []
    for change in history:
        at = change["at"]
        stamp = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + f".{int(at % 1 * 1000):03d}"
        )
        state = html.escape(str(change["state"]))
        rows.append(
            f'<tr data-state="{state}"><td class="when">{html.escape(stamp)}</td>'
            f'<td><span class="badge badge-{state}">{state}</span></td>'
            f"<td>{html.escape(str(change['attempt']))}</td>"
            f'<td class="mono">{html.escape(change.get("worker") or "")}</td>'
            f'<td class="reason">{html.escape(change.get("error") or "")}</td></tr>'
        )
    return (
        '<h2 class="history">History</h2><table class="list" data-testid="history">'
        "<thead><tr><th>at</th><th>state</th><th>attempt</th><th>worker</th><th>error</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} · conveyor</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="/static/dashboard.css"></head>'
        '<body><header class="top"><a class="brand" href="/">conveyor</a>'
        '<span class="sub">job record</span></header>'
        f'<main class="narrow">{body}<p><a href="/">← dashboard</a></p></main></body></html>'
    )
