"""What the server serves and who may knock: served folders and the login throttle.

Only three kinds of file are ever served over HTTP: stored library images, their
thumbnails, and the bundled sample images. The library's snapshot, journal, lock,
manifest, columns and staging folder, the bundled weights and everything else in
assets/ are refused (403), with or without a login. The served folders are also
Gradio "static" paths: a gallery of thumbnails is served straight from disk, with no
per-request copy into Gradio's cache.

Failed logins (the Gradio login form and HTTP Basic on /api) count per client address
in core's `LoginThrottle`; past the limit the client gets 429 until the window passes.
"""
from __future__ import annotations

import os

import json
from pathlib import Path
from urllib.parse import parse_qs

import gradio as gr

from core.access import LoginThrottle
from core.settings import ASSETS_DIR

__all__ = ["served_paths", "blocked_paths", "LoginLimiter", "client_address"]

SAMPLE_DIRS = (ASSETS_DIR / "samples", ASSETS_DIR / "shapes")   # bundled images, shown and seeded
_LIBRARY_PRIVATE = ("store", "staging", "journal.log", "store.json", ".lock", "features_library.pth",
                    ".hub-sync", ".hub-sync.json", ".hub-restore", ".hub-restore-replaced")   # the backup's (core/hosting/sync.py)


def served_paths(library_root: Path | None) -> list[str]:
    """The only folders files may be served from (also marked static: no copy per request)."""
    folders = list(SAMPLE_DIRS)
    if library_root is not None:
        root = Path(library_root).resolve()
        folders += [root / "images", root / "thumbs"]
    gr.set_static_paths([str(p) for p in folders])
    return [str(p) for p in folders]


def blocked_paths(library_root: Path | None) -> list[str]:
    """Refused even if they lie in a folder Gradio serves by default (defence in depth)."""
    blocked = [ASSETS_DIR / "mini", ASSETS_DIR / "eval"]
    if library_root is not None:
        root = Path(library_root).resolve()
        blocked += [root / name for name in _LIBRARY_PRIVATE]
    return [str(p) for p in blocked]


def client_address(scope: dict) -> str:
    """The client's address. X-Forwarded-For is read only behind a proxy we know of (a Hugging
    Face Space sets SPACE_ID; CLIP_WB_TRUST_PROXY=1 says so elsewhere): anywhere else a client
    could send a made-up address with each login attempt and never be throttled."""
    if os.environ.get("SPACE_ID") or os.environ.get("CLIP_WB_TRUST_PROXY") == "1":
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                return value.decode("latin-1").split(",")[-1].strip()
    client = scope.get("client")
    return client[0] if client else "unknown"


class LoginLimiter:
    """ASGI middleware: POST .../login from a client (and name) over its failure limit gets 429;
    each 400 (wrong password) from Gradio's login route counts as a failure, a success clears
    that name's. The small login form is read here and handed on unchanged."""

    def __init__(self, app, throttle: LoginThrottle):
        self.app, self.throttle = app, throttle

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].rstrip("/").endswith("/login"):
            return await self.app(scope, receive, send)
        client, body = client_address(scope), await _read_body(receive)
        user = (parse_qs(body.decode("utf-8", "replace")).get("username") or [""])[0].strip()
        wait = self.throttle.retry_after(client, user)
        if wait > 0:
            return await _too_many(send, wait)

        async def watch(message):
            if message["type"] == "http.response.start":
                if message["status"] == 400:
                    self.throttle.failed(client, user)
                elif message["status"] < 300:
                    self.throttle.succeeded(client, user)
            await send(message)

        async def replay():
            nonlocal body
            message, body = {"type": "http.request", "body": body, "more_body": False}, b""
            return message
        await self.app(scope, replay, watch)


async def _read_body(receive, limit: int = 64 * 1024) -> bytes:
    """The request body (a login form is tiny; more than `limit` is cut, the login then fails)."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False) and size < limit
    return b"".join(chunks)[:limit]


async def _too_many(send, wait: float) -> None:
    body = json.dumps({"detail": f"Too many failed logins; try again in {int(wait) + 1} s. "
                                 f"登录失败次数过多，请 {int(wait) + 1} 秒后再试。"}, ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": 429,
                "headers": [(b"content-type", b"application/json"), (b"retry-after", str(int(wait) + 1).encode()),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
