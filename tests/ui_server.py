"""Launch the Gradio app on a free localhost port, in this process, for UI tests.

    with serve(tiny_clip_path, tmp_path / "lib") as app:
        Client(app.url).predict(..., api_name="/search")
        httpx.get(app.url + "api/search", params={"q": "a cat"}).json()["results"]
        app.wb.library   # the same Library object the app uses

The app is built exactly as demo.py builds it (build_workbench -> build_app -> launch with
launch_options), with a tiny real CLIP on the CPU, offline, and no fallback model.
"""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # no phoning home from tests (no network here)

import gradio as gr  # noqa: E402

from core.access import Access, Accounts, Limits  # noqa: E402
from core.safety import SafetyConfig  # noqa: E402
from core.workbench import Workbench, build_workbench  # noqa: E402
from ui import build_app, launch_options  # noqa: E402


@dataclass
class Served:
    url: str            # http://127.0.0.1:PORT/
    wb: Workbench
    demo: gr.Blocks
    access: Access


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(model_path: Path | str, library_dir: Path, lang: str | None = None,
          auth: tuple[str, str] | list[tuple[str, str]] | None = None,
          admin: tuple[str, str] | None = None, limits: Limits | None = None,
          fallback_cache: Path | None = None, safety: SafetyConfig | None = None,
          mcp: bool = False) -> Iterator[Served]:
    """The app (and its JSON API at /api/...) on 127.0.0.1 in a background thread; closed on exit.
    `auth` (user, password) or a list of them: student logins, as demo.py's --auth USER:PASS;
    `admin`: the teacher's login (--admin); `limits`: quotas (default: Limits()).
    `fallback_cache`: start as demo.py does offline with this (empty) model cache, so a named model
    such as "ViT-B/32" is missing and the bundled mini model stands in (the offline first start).
    `safety`: the class's safety policy, as demo.py's --safety flags make it (None: off).
    `mcp`: also the MCP tools at /gradio_api/mcp/, as demo.py's --mcp (ui/mcp.py)."""
    students = [auth] if isinstance(auth, tuple) else list(auth or [])
    accounts = Accounts.parse([f"{u}:{p}" for u, p in students], [f"{u}:{p}" for u, p in ([admin] if admin else [])],
                              env={})
    access = Access(accounts, limits)
    wb = build_workbench(str(model_path), library_dir, device="cpu", offline=True,
                         fallback=fallback_cache is not None, cache=fallback_cache,
                         background=True, access=access,   # as demo.py: features_library.pth is rewritten after writes
                         safety=safety)
    demo = build_app(wb, lang=lang, access=access, mcp=mcp)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                **launch_options(wb, access, lang, mcp=mcp))
    try:
        yield Served(demo.local_url, wb, demo, access)
    finally:
        demo.close()
        wb.close()
