"""How the server is doing, measured in one place: every front-door action's duration, outcome and surface.

    monitor = Monitor()
    with monitor.measure("search", "page"):        # or @measured("search") on a Workbench method
        ...                                        # ok; a WorkbenchError: refused (its kind); else failed
    monitor.window(5)["search"].p95_s              # the last 5 minutes, per action (surface="api": from there only)
    monitor.errors(60), monitor.problems()         # errors by kind, the last few with their messages
    monitor.series()                               # since start, per (action, surface): for GET /metrics

Actions are the front door's (ACTIONS); surfaces say where a call came from (the page, the JSON
API, an MCP tool, the command line, Python). Memory is bounded whatever the traffic: per action and
surface one slot per minute for the last WINDOW_MINUTES (a request count, errors by kind, and a latency
histogram of fixed log-spaced bins, 16 per doubling, so a percentile read from it is within
FINE_ERROR of the exact one), plus cumulative counters and Prometheus buckets per (action,
surface), plus the last PROBLEMS error messages. Recording is O(1) under one short lock.
"""
from __future__ import annotations

import contextvars
import functools
import inspect
import math
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .errors import EXPECTED_ERRORS
from .messages import error_message

__all__ = ["Monitor", "Window", "Problem", "Series", "measured", "ACTIONS", "OUTCOMES", "BUCKETS_S",
           "WINDOWS_MIN", "FINE_ERROR"]

ACTIONS = ("search", "classify", "caption", "add", "page", "train")   # what a class does through the front door
OUTCOMES = ("ok", "refused", "failed")    # refused: the caller's input or rights (a WorkbenchError); failed: a bug
BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)   # Prometheus le
WINDOWS_MIN = (5, 60)       # the windows the health panel shows, minutes
WINDOW_MINUTES = 60         # minutes of per-minute slots kept (the longest window)
PROBLEMS = 20               # last error messages kept
_FINE = 16                  # latency bins per doubling (bin width 2^(1/16) = 4.4 %)
FINE_ERROR = 2 ** (0.5 / _FINE) - 1   # a bin's middle is within this fraction of every time in it (2.2 %)
_FLOOR_S = 1e-6             # shorter times share the lowest bin


@dataclass(frozen=True)
class Window:
    """One action over the last `minutes` (fewer right after a start: `per_minute` divides by the time up)."""
    action: str
    minutes: int
    requests: int
    per_minute: float
    p50_s: float | None     # None without requests
    p95_s: float | None
    refused: int
    failed: int
    surfaces: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """One refused or failed action, as the panel lists it (`message` is a Msg when core gave one)."""
    at: float               # wall-clock seconds (time.time())
    action: str
    surface: str
    outcome: str
    kind: str               # the error's type name, e.g. QuotaError
    message: str


@dataclass
class Series:
    """Since start, one (action, surface): requests per outcome and a Prometheus histogram."""
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS_S))   # counts per bin, not cumulative
    count: int = 0
    seconds: float = 0.0


class _Minute:
    """One minute of one action from one surface."""
    __slots__ = ("minute", "count", "refused", "failed", "kinds", "fine")

    def __init__(self, minute: int):
        self.minute, self.count, self.refused, self.failed = minute, 0, 0, 0
        self.kinds: dict[str, int] = {}
        self.fine: dict[int, int] = {}   # latency bin -> requests


def _bin(seconds: float) -> int:
    return math.floor(math.log2(max(seconds, _FLOOR_S)) * _FINE)


def _middle(fine_bin: int) -> float:
    return 2 ** ((fine_bin + 0.5) / _FINE)


def _percentile(fine: dict[int, int], q: float) -> float | None:
    """The nearest-rank q-quantile (0 < q <= 1) of the times binned in `fine` (the middle of its bin)."""
    total = sum(fine.values())
    if not total:
        return None
    rank, seen = max(1, math.ceil(q * total)), 0
    for b in sorted(fine):
        seen += fine[b]
        if seen >= rank:
            return _middle(b)
    return None   # unreachable: seen ends at total >= rank


class Monitor:
    """Records every action of one server; thread-safe. `clock` (monotonic seconds) is for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self._clock, self._wall = clock, wall
        self.started = clock()
        self.started_wall = wall()
        self._lock = threading.Lock()
        self._minutes: dict[tuple[str, str], list[_Minute | None]] = {}   # (action, surface) -> ring of slots
        self._series: dict[tuple[str, str], Series] = {}
        self._kinds: dict[tuple[str, str, str], int] = {}       # (action, outcome, kind) -> since start
        self._problems: deque[Problem] = deque(maxlen=PROBLEMS)

    @property
    def uptime_s(self) -> float:
        return self._clock() - self.started

    # ------------------------------------------------------------ recording

    @contextmanager
    def measure(self, action: str, surface: str) -> Iterator[None]:
        """Time the block; an exception leaving it is recorded (refused or failed) and re-raised."""
        start = time.perf_counter()
        try:
            yield
        except BaseException as e:
            self.record(action, surface, time.perf_counter() - start, e)
            raise
        self.record(action, surface, time.perf_counter() - start)

    def record(self, action: str, surface: str, seconds: float, error: BaseException | None = None) -> None:
        """One action that took `seconds`; `error`: what it raised (None: ok)."""
        outcome, kind = _outcome(error)
        problem = None if error is None else Problem(self._wall(), action, surface, outcome, kind, error_message(error))
        minute, fine, le = int(self._clock() // 60), _bin(seconds), _le(seconds)
        with self._lock:
            slot = self._slot((action, surface), minute)
            slot.count += 1
            slot.fine[fine] = slot.fine.get(fine, 0) + 1
            series = self._series.get((action, surface))
            if series is None:
                series = self._series[(action, surface)] = Series()
            series.outcomes[outcome] += 1
            series.count += 1
            series.seconds += seconds
            if le < len(BUCKETS_S):
                series.buckets[le] += 1
            if problem is not None:
                setattr(slot, outcome, getattr(slot, outcome) + 1)
                slot.kinds[kind] = slot.kinds.get(kind, 0) + 1
                self._kinds[(action, outcome, kind)] = self._kinds.get((action, outcome, kind), 0) + 1
                self._problems.append(problem)

    def _slot(self, key: tuple[str, str], minute: int) -> _Minute:
        ring = self._minutes.get(key)
        if ring is None:
            ring = self._minutes[key] = [None] * WINDOW_MINUTES
        slot = ring[minute % WINDOW_MINUTES]
        if slot is None or slot.minute != minute:   # an hour old (or never used): start it again
            slot = ring[minute % WINDOW_MINUTES] = _Minute(minute)
        return slot

    # ------------------------------------------------------------ reading

    def window(self, minutes: int, surface: str | None = None) -> dict[str, Window]:
        """Per action (those seen since start, ACTIONS first): the last `minutes` (at most WINDOW_MINUTES),
        from every surface or only from `surface`."""
        minutes = max(1, min(int(minutes), WINDOW_MINUTES))
        now = self._clock()
        recent = self._recent(int(now // 60), minutes)
        span = max(1.0, min(now - self.started, (minutes - 1) * 60 + now % 60) / 60)   # minutes covered
        out = {}
        for action in self._order({a for a, _ in recent}):
            mine = {s: slots for (a, s), slots in recent.items() if a == action and surface in (None, s)}
            slots = [slot for per_surface in mine.values() for slot in per_surface]
            fine: dict[int, int] = {}
            for slot in slots:
                _add(fine, slot.fine)
            count = sum(slot.count for slot in slots)
            out[action] = Window(action, minutes, count, count / span, _percentile(fine, 0.5), _percentile(fine, 0.95),
                                 sum(slot.refused for slot in slots), sum(slot.failed for slot in slots),
                                 {s: n for s, per_surface in sorted(mine.items()) if (n := sum(x.count for x in per_surface))})
        return out

    def errors(self, minutes: int = WINDOW_MINUTES) -> dict[str, int]:
        """Refused and failed actions by error kind over the last `minutes`, most frequent first."""
        kinds: dict[str, int] = {}
        for slots in self._recent(int(self._clock() // 60), max(1, min(int(minutes), WINDOW_MINUTES))).values():
            for s in slots:
                _add(kinds, s.kinds)
        return dict(sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))

    def problems(self, last: int = 5) -> list[Problem]:
        """The last `last` refused or failed actions, newest first."""
        with self._lock:
            return list(self._problems)[::-1][:last]

    def series(self) -> tuple[dict[tuple[str, str], Series], dict[tuple[str, str, str], int]]:
        """Copies of the counters since start: {(action, surface): Series}, {(action, outcome, kind): n}."""
        with self._lock:
            series = {k: Series(dict(s.outcomes), list(s.buckets), s.count, s.seconds) for k, s in self._series.items()}
            return series, dict(self._kinds)

    def _recent(self, minute: int, minutes: int) -> dict[tuple[str, str], list[_Minute]]:
        """Copies of each (action, surface)'s slots of the last `minutes` minutes (the current one included)."""
        first = minute - minutes + 1
        with self._lock:
            return {key: [_copy(s) for s in ring if s is not None and first <= s.minute <= minute]
                    for key, ring in self._minutes.items()}

    @staticmethod
    def _order(actions: set[str]) -> list[str]:
        return [a for a in ACTIONS if a in actions] + sorted(a for a in actions if a not in ACTIONS)


def _copy(s: _Minute) -> _Minute:
    c = _Minute(s.minute)
    c.count, c.refused, c.failed = s.count, s.refused, s.failed
    c.kinds, c.fine = dict(s.kinds), dict(s.fine)
    return c


def _add(total: dict, part: dict) -> None:
    for k, n in part.items():
        total[k] = total.get(k, 0) + n


def _le(seconds: float) -> int:
    """Index of the first Prometheus bucket that holds `seconds` (len(BUCKETS_S): only +Inf)."""
    for i, bound in enumerate(BUCKETS_S):
        if seconds <= bound:
            return i
    return len(BUCKETS_S)


def _outcome(error: BaseException | None) -> tuple[str, str]:
    if error is None:
        return "ok", ""
    return ("refused" if isinstance(error, EXPECTED_ERRORS) else "failed"), type(error).__name__


# ---------------------------------------------------------------- the front door's decorator

_measuring = contextvars.ContextVar("clipwb_measuring", default=False)


def measured(action: str) -> Callable:
    """Decorate a Workbench method: each call is recorded in `self.monitor` as `action`, from the surface
    of its `caller` argument ("python" without one). A measured call made inside another (seed -> add)
    is part of the outer one and not recorded again."""
    def decorate(method: Callable) -> Callable:
        names = list(inspect.signature(method).parameters)
        at = names.index("caller") - 1 if "caller" in names else None   # its position after self

        @functools.wraps(method)
        def run(self, *args, **kwargs):
            monitor = getattr(self, "monitor", None)
            if monitor is None or _measuring.get():
                return method(self, *args, **kwargs)
            caller = kwargs.get("caller", args[at] if at is not None and len(args) > at else None)
            token = _measuring.set(True)
            try:
                with monitor.measure(action, getattr(caller, "surface", None) or "python"):
                    return method(self, *args, **kwargs)
            finally:
                _measuring.reset(token)
        return run
    return decorate
