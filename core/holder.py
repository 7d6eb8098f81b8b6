"""One workbench per server: the object every surface (page, JSON API, MCP tools) reads the current
Workbench from, so that switching models (the Learn tab's "use this model") changes all of them at
once, or none.

    holder = Holder.of(wb)                     # the one holder of the server that started with wb
    holder.wb.search(query, caller)            # each call reads the workbench in place now
    holder.switch(caller, "runs/r1/best.pt", "runs/r1/library")

The adapters ask `Holder.of(wb)` for the holder of the workbench they were given, so the page
(ui/app.py build_app) and the JSON API (launch_options -> ui/http_api.py) built from the same
workbench share one holder, and a switch reaches both.
"""
from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Callable

from .access import Access, Caller
from .workbench import Workbench

__all__ = ["Holder"]


class Holder:
    """The one Workbench of a server, read by every surface (page, JSON API, MCP tools) at each call:
    `switch` puts another one in place for all of them at once, or for none when it fails."""

    _of: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # the workbench a server started with -> its holder
    _of_lock = threading.Lock()

    def __init__(self, wb: Workbench):
        self._wb, self._lock = wb, threading.Lock()

    @classmethod
    def of(cls, wb: "Workbench | Holder") -> "Holder":
        """The holder of the server that started with `wb` (made on first ask), or `wb` if it is one."""
        if isinstance(wb, Holder):
            return wb
        with cls._of_lock:
            holder = cls._of.get(wb)
            if holder is None:
                holder = cls._of[wb] = cls(wb)
            return holder

    @property
    def wb(self) -> Workbench:
        return self._wb

    @property
    def access(self) -> Access:
        """The server's accounts, roles and quotas: the same object whichever workbench is in place."""
        return self._wb.access

    def switch(self, caller: Caller | None, model: str, library_dir: str | Path,
               ready: Callable[[Workbench], None] | None = None) -> Workbench:
        """Serve `model` with its own library in `library_dir` (Workbench.with_model; the teacher only).
        `ready(new)` runs before the switch (e.g. let the server serve the new library's files); the
        old workbench is flushed and closed after it. Returns the new one."""
        with self._lock:   # one switch at a time
            self._wb.policy.admit(caller, "switch_model")
            new = self._wb.with_model(model, library_dir)
            if ready is not None:
                ready(new)
            old, self._wb = self._wb, new
        old.close()
        return new
