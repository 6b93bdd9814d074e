"""The migration page as a Starlette application: `/` the page (Jinja2, autoescaped, refreshed by a meta
tag, no script), `/api/status.json` the same data as JSON. Read-only: GET and HEAD only.

Starlette gives the routing, the responses and a test client; Jinja2 the templates with HTML escaping of
everything a batch name, an address or an Exchange error could smuggle in.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from controller import errors
from controller.web import page

REFRESH_SECONDS = 30
# No script, no frame, nothing from elsewhere: the page is HTML and its own inline style.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def create(
    state_dir: Path,
    *,
    commit_url: str | None = None,
    refresh: int = REFRESH_SECONDS,
    origin: str = "served by the running controller",
) -> Starlette:
    """The application over one state directory; `origin` says on the page who serves it."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("controller.web", "templates"),
        autoescape=True,  # every value is escaped: names, addresses and errors come from outside
        undefined=jinja2.ChainableUndefined,  # a status written by an older controller lacks sections
    )
    environment.filters["when"] = _when
    environment.filters["percent"] = _percent
    template = environment.get_template("page.html")

    def data() -> dict[str, Any] | None:
        return page.load(state_dir, commit_url=commit_url)

    async def html(request: Request) -> Response:
        try:
            found = data()
        except errors.ExternalFailure as error:  # a status file that is not one: said, not a 500
            return HTMLResponse(f"<p>{escape(str(error))}</p>", status_code=503, headers=_HEADERS)
        body = template.render(page=found, refresh=refresh, origin=origin)
        return HTMLResponse(body, headers=_HEADERS)

    async def json(request: Request) -> Response:
        try:
            found = data()
        except errors.ExternalFailure as error:
            return JSONResponse({"error": str(error)}, status_code=503, headers=_HEADERS)
        if found is None:
            return JSONResponse(
                {"error": "no status yet: no pass has run"}, status_code=503, headers=_HEADERS
            )
        return JSONResponse({**found, "refreshSeconds": refresh}, headers=_HEADERS)

    return Starlette(
        routes=[
            Route("/", html, methods=["GET", "HEAD"]),
            Route("/api/status.json", json, methods=["GET", "HEAD"]),
        ]
    )


def _when(value: object, missing: str = "—") -> str:
    """An ISO time as `2026-11-24 18:00 UTC` (all times are UTC, as the controller records them)."""
    if not isinstance(value, str) or not value:
        return missing
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _percent(value: object, total: object) -> str:
    """A bar segment's width: a number only, whatever the data holds."""
    try:
        share = 100 * float(str(value)) / float(str(total))
    except (ValueError, ZeroDivisionError):
        return "0"
    return f"{min(100.0, max(0.0, share)):.1f}"
