"""Cross-site request refusal for the JSON API's writing endpoints.

The JSON API accepts the Gradio login cookie, so a page on another site could make a logged-in
student's browser POST to it (an upload, a search) with that cookie attached. Browsers name the
page that made a request in its `Origin` header (and `Referer` when Origin is missing); a POST
whose Origin (or Referer) is not this app's own address is refused. Clients that are not
browsers (curl, scripts, the tests' httpx) send neither header and are unaffected: they must log
in with HTTP Basic credentials, which a foreign page cannot supply.

This app's address is the request's `Host`, or `X-Forwarded-Host` behind a proxy (a Space, a
share link). A foreign page cannot set that header without a CORS preflight, which this server
never grants. CLIP_WB_API_ORIGINS (comma-separated origins, e.g. "https://school.example") lists
sites that may call the API from a browser on purpose.
"""
from __future__ import annotations

import os
from urllib.parse import urlsplit

from starlette.requests import Request

__all__ = ["foreign_origin", "SAFE_METHODS"]

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")   # they change nothing: browsers may send them cross-site


def _hosts(request: Request) -> set[str]:
    """The addresses (host[:port], lower case) this request reached the app by."""
    hosts = {request.headers.get("host", "")}
    hosts |= {h.strip() for h in request.headers.get("x-forwarded-host", "").split(",")}
    return {h.lower() for h in hosts if h}


def _allowed() -> set[str]:
    return {o.strip().rstrip("/").lower() for o in os.environ.get("CLIP_WB_API_ORIGINS", "").split(",") if o.strip()}


def foreign_origin(request: Request) -> str | None:
    """The origin of a writing request made by another site's page ("null" for a sandboxed or
    file page), or None when it is this app's own page, an allowed site, or no browser at all."""
    if request.method in SAFE_METHODS:
        return None
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if not referer:
            return None   # not a browser (or one that says nothing): Basic credentials decide
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}" if parts.netloc else "null"
    origin = origin.strip().rstrip("/").lower()
    if origin in _allowed():
        return None
    netloc = urlsplit(origin).netloc
    return None if netloc and netloc in _hosts(request) else origin
