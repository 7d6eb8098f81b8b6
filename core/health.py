"""The server at a glance: what the health panel shows, GET /api/health returns and GET /metrics exports.

    health = Health(lambda: wb, budget_mb=access.limits.budget_mb)
    snap = health.snapshot(queue=(waiting, running))   # windows per action, errors, queue, memory, library disk, model, uptime
    snap.json()                    # the same numbers as JSON (benchmarks/bench_classroom.py reads them)
    prometheus_text(snap)          # Prometheus text exposition format 0.0.4

Reading is cheap and never waits behind model work: the action numbers come from the workbench's
Monitor (core/monitor.py), memory from /proc, and the library's size from a copy kept fresh in
the background (its stats wait for the library's lock, which an upload or a compaction holds).
"""
from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .messages import Msg
from .monitor import BUCKETS_S, WINDOWS_MIN, Monitor, Problem, Series, Window

__all__ = ["Health", "Snapshot", "Library", "Fresh", "prometheus_text", "rss_bytes"]

STATS_MAX_AGE_S = 5.0     # the library's stats are read again in the background when older than this
FIRST_WAIT_S = 1.0        # the first read waits this long for them; later reads never wait


def rss_bytes() -> int | None:
    """This process's resident memory (Linux /proc); elsewhere its peak (getrusage); None if neither."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
        import sys
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024   # bytes on macOS, KiB elsewhere
    except (ImportError, OSError):
        return None


class Fresh:
    """A slow read kept fresh in the background: `get()` returns the last value at once and, when it is
    older than `max_age_s`, starts one re-read in a thread (never more than one at a time). Only the
    very first `get()` waits, at most `first_wait_s`. A read that raises keeps the last value."""

    def __init__(self, read: Callable[[], Any], max_age_s: float = STATS_MAX_AGE_S, first_wait_s: float = FIRST_WAIT_S):
        self._read, self.max_age_s, self.first_wait_s = read, max_age_s, first_wait_s
        self._lock = threading.Lock()
        self._value: Any = None
        self._at = -float("inf")
        self._reading = False
        self._first = threading.Event()

    def get(self) -> Any:
        with self._lock:
            start = not self._reading and time.monotonic() - self._at > self.max_age_s
            self._reading = self._reading or start
        if start:
            threading.Thread(target=self._refresh, name="health-read", daemon=True).start()
        self._first.wait(self.first_wait_s)
        with self._lock:
            return self._value

    def _refresh(self) -> None:
        try:
            value = self._read()
        except Exception:   # noqa: BLE001  a panel read must never break; the last value stays
            value = None
        with self._lock:
            if value is not None:
                self._value = value
            self._at, self._reading = time.monotonic(), False
        self._first.set()


@dataclass(frozen=True)
class Library:
    images: int
    image_bytes: int | None        # stored image files (what the budget counts); None until first read
    features_bytes: int | None
    budget_bytes: int
    disk_free_bytes: int | None    # free space of the library's file system


@dataclass(frozen=True)
class Snapshot:
    """Everything the panel shows, read at one moment."""
    uptime_s: float
    model: str
    runtime: Msg | str             # a Msg: the panel says it in either language
    windows: dict[int, dict[str, Window]]   # minutes -> action -> Window
    errors: dict[str, int]         # kind -> refused + failed over the longest window
    problems: list[Problem]        # the last few, newest first
    queue: tuple[int, int] | None  # (waiting, running) in the app's queue; None outside the app
    rss_bytes: int | None
    library: Library
    by_surface: dict[int, dict[str, dict[str, Window]]] = field(default_factory=dict)   # minutes -> surface -> action
    series: dict[tuple[str, str], Series] = field(default_factory=dict)       # since start (for /metrics)
    kinds: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def json(self) -> dict:
        """The snapshot as JSON (English texts, times in ms): GET /api/health's body."""
        return {"uptime_s": round(self.uptime_s, 1), "model": self.model, "runtime": str(self.runtime),
                "windows": {str(m): {a: _window_json(w) for a, w in ws.items()} for m, ws in self.windows.items()},
                "by_surface": {str(m): {s: {a: _window_json(w) for a, w in ws.items() if w.requests}
                                        for s, ws in per.items()} for m, per in self.by_surface.items()},
                "errors": self.errors,
                "problems": [{"at": round(p.at, 3), "action": p.action, "surface": p.surface, "outcome": p.outcome,
                              "kind": p.kind, "message": str(p.message)} for p in self.problems],
                "queue": None if self.queue is None else {"waiting": self.queue[0], "running": self.queue[1]},
                "rss_bytes": self.rss_bytes, "library": vars(self.library)}


def _window_json(w: Window) -> dict:
    ms = lambda s: None if s is None else round(s * 1000, 2)   # noqa: E731
    return {"requests": w.requests, "per_minute": round(w.per_minute, 3), "p50_ms": ms(w.p50_s), "p95_ms": ms(w.p95_s),
            "refused": w.refused, "failed": w.failed, "surfaces": w.surfaces}


class Health:
    """Reads a snapshot of one server. `workbench()` returns the workbench serving now (the Learn tab may
    switch it; its monitor goes with it)."""

    def __init__(self, workbench: Callable[[], Any], budget_mb: float):
        self._workbench, self.budget_bytes = workbench, int(budget_mb * 2 ** 20)
        self._stats = Fresh(lambda: self._workbench().stats())

    def snapshot(self, queue: tuple[int, int] | None = None, last_problems: int = 5) -> Snapshot:
        """`queue`: (waiting, running) in the app's queue, which only the app can read (None elsewhere)."""
        wb = self._workbench()
        monitor: Monitor = wb.monitor
        series, kinds = monitor.series()
        surfaces = sorted({s for _, s in series})
        return Snapshot(monitor.uptime_s, wb.encoder.model_id, wb.encoder.runtime.describe(),
                        {m: monitor.window(m) for m in WINDOWS_MIN}, monitor.errors(max(WINDOWS_MIN)),
                        monitor.problems(last_problems), queue, rss_bytes(), self._library(wb),
                        {m: {s: monitor.window(m, s) for s in surfaces} for m in WINDOWS_MIN}, series, kinds)

    def _library(self, wb) -> Library:
        stats = self._stats.get() or {}
        try:
            free = shutil.disk_usage(wb.root).free
        except OSError:
            free = None
        return Library(len(wb), stats.get("image_bytes"), stats.get("features_bytes"), self.budget_bytes, free)


# ---------------------------------------------------------------- Prometheus text exposition format

def prometheus_text(snap: Snapshot) -> str:
    """The snapshot as Prometheus text (format 0.0.4): counters and histograms per action and surface
    since start, error counts per kind, and gauges for the queue, memory, the library and disk."""
    out: list[str] = []
    _family(out, "clipwb_requests_total", "counter", "Front-door actions by action, surface and outcome.",
            [({"action": a, "surface": s, "outcome": o}, n) for (a, s), ser in sorted(snap.series.items())
             for o, n in ser.outcomes.items()])
    _family(out, "clipwb_request_seconds", "histogram", "Duration of front-door actions in seconds.",
            [sample for (a, s), ser in sorted(snap.series.items()) for sample in _histogram(a, s, ser)])
    _family(out, "clipwb_errors_total", "counter", "Refused and failed actions by error kind.",
            [({"action": a, "outcome": o, "kind": k}, n) for (a, o, k), n in sorted(snap.kinds.items())])
    gauges = [("clipwb_queue_waiting", "Requests waiting in the app's queue.", snap.queue and snap.queue[0]),
              ("clipwb_queue_running", "Requests running from the app's queue.", snap.queue and snap.queue[1]),
              ("clipwb_memory_rss_bytes", "Resident memory of the server process.", snap.rss_bytes),
              ("clipwb_library_images", "Images in the library.", snap.library.images),
              ("clipwb_library_image_bytes", "Bytes of the library's stored images.", snap.library.image_bytes),
              ("clipwb_library_features_bytes", "Bytes of the library's feature files.", snap.library.features_bytes),
              ("clipwb_library_budget_bytes", "The library's disk budget for images.", snap.library.budget_bytes),
              ("clipwb_disk_free_bytes", "Free bytes on the library's file system.", snap.library.disk_free_bytes),
              ("clipwb_uptime_seconds", "Seconds since the server started.", snap.uptime_s)]
    for name, text, value in gauges:
        if value is not None:
            _family(out, name, "gauge", text, [({}, value)])
    _family(out, "clipwb_info", "gauge", "The model and runtime serving now.",
            [({"model": snap.model, "runtime": str(snap.runtime)}, 1)])
    return "\n".join(out) + "\n"


def _histogram(action: str, surface: str, s: Series) -> list[tuple[dict, float, str]]:
    labels, seen, rows = {"action": action, "surface": surface}, 0, []
    for bound, n in zip(BUCKETS_S, s.buckets):
        seen += n
        rows.append(({**labels, "le": _number(bound)}, seen, "_bucket"))
    rows.append(({**labels, "le": "+Inf"}, s.count, "_bucket"))
    return rows + [(labels, s.seconds, "_sum"), (labels, s.count, "_count")]


def _family(out: list[str], name: str, kind: str, text: str, samples: list[tuple]) -> None:
    out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
    for labels, value, *suffix in samples:
        body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        out.append(f"{name}{suffix[0] if suffix else ''}{{{body}}} {_number(value)}" if body
                   else f"{name} {_number(value)}")


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))

