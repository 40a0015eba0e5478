"""The dashboard's web app (Starlette): a static page, its JSON feed, one page per job.

Every route is GET (and HEAD): the dashboard only reads. The page loads nothing from
other sites, so it works offline, and the Content-Security-Policy forbids it to.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.dashboard.data import DashboardData
from conveyor.errors import BadInput, ConveyorError
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


def create_app(data: DashboardData, *, allowed_hosts: Sequence[str] | None = None) -> Starlette:
    """The dashboard app over ``data``.

    Args:
        data: where the numbers come from.
        allowed_hosts: Host header values to accept (a guard against DNS rebinding when
            served on loopback); None accepts any.
    """

    def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    def overview(request: Request) -> Response:
        try:
            return JSONResponse(data.overview())
        except ConveyorError as exc:
            return _error(503, f"cannot read the ledger: {exc.message}")

    def jobs(request: Request) -> Response:
        state_text = request.query_params.get("state")
        try:
            state = JobState(state_text) if state_text else None
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            return _error(400, f"state is one of {', '.join(JobState)}; limit is a number")
        if not 1 <= limit <= MAX_JOBS_LIMIT:
            return _error(400, f"limit must be within 1..{MAX_JOBS_LIMIT}")
        try:
            return JSONResponse(data.jobs(state, limit))
        except ConveyorError as exc:
            return _error(503, f"cannot read the ledger: {exc.message}")

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
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    return Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/api/overview", overview, methods=["GET"]),
            Route("/api/jobs", jobs, methods=["GET"]),
            Route("/api/jobs/{job_id}", job_json, methods=["GET"]),
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
        return None, (503, f"cannot read the ledger: {exc.message}")
    if record is None:
        return None, (404, f"no job {job_id} in the ledger")
    return record, (200, "")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _job_html(record: dict[str, Any]) -> str:
    """One job's record as a table (the page a failure or dead letter links to)."""
    rows = []
    for key, value in record.items():
        if value is None:
            shown = "—"
        elif key.endswith("_at") and isinstance(value, float):
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
            shown = f"{stamp} ({value:.3f})"
        elif key == "duration_s" and isinstance(value, float):
            shown = f"{value:.3f} s"
        elif isinstance(value, dict):
            shown = json.dumps(value, indent=1, sort_keys=True)
        else:
            shown = str(value)
        cell = f"<pre>{html.escape(shown)}</pre>" if "\n" in shown else html.escape(shown)
        rows.append(
            f'<tr><th>{html.escape(key)}</th><td data-field="{html.escape(key)}">{cell}</td></tr>'
        )
    job_id = html.escape(str(record["job_id"]))
    state = html.escape(str(record["state"]))
    body = (
        f'<h1>Job <code>{job_id}</code> <span class="badge badge-{state}">{state}</span></h1>'
        f'<table class="record">{"".join(rows)}</table>'
        f'<p><a href="/api/jobs/{job_id}">JSON</a></p>'
    )
    return _page(f"Job {record['job_id']}", body)


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
