"""The action recorder (core/monitor.py) and the server snapshot / Prometheus text (core/health.py),
without a server: windows that roll with a fake clock, percentiles against exact ones, outcomes,
bounded memory, threads, and the text read back by the real prometheus_client parser."""
import math
import random
import threading
import time
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.errors import PermissionDenied, QuotaError
from core.health import Fresh, Health, prometheus_text
from core.messages import Msg
from core.monitor import BUCKETS_S, FINE_ERROR, PROBLEMS, WINDOW_MINUTES, Monitor, measured


class Clock:
    def __init__(self, now: float = 1000.0 * 60):
        self.now = now

    def __call__(self) -> float:
        return self.now


def exact(values: list[float], q: float) -> float:
    """Nearest-rank quantile, the definition the monitor's bins approximate."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def test_percentiles_are_within_the_bins_error_of_the_exact_ones():
    clock, rng = Clock(), random.Random(3)
    m = Monitor(clock)
    times = [rng.lognormvariate(-3, 1.2) for _ in range(5000)]   # ~50 ms median, a long tail
    for s in times:
        m.record("search", "page", s)
    w = m.window(5)["search"]
    assert w.requests == 5000
    for q, got in ((0.5, w.p50_s), (0.95, w.p95_s)):
        assert got == pytest.approx(exact(times, q), rel=FINE_ERROR + 1e-9)


def test_windows_roll_with_the_clock_and_rates_divide_by_the_time_up():
    clock = Clock()
    m = Monitor(clock)
    clock.now += 30                        # 30 s up: a rate over at least one minute
    for _ in range(6):
        m.record("classify", "api", 0.2)
    assert m.window(5)["classify"].per_minute == pytest.approx(6.0)
    clock.now += 9 * 60                    # ten minutes later: out of the 5-minute window, in the hour
    for _ in range(3):
        m.record("classify", "page", 0.4)
    five, hour = m.window(5)["classify"], m.window(60)["classify"]
    assert (five.requests, hour.requests) == (3, 9)
    assert hour.per_minute == pytest.approx(9 / 9.5)   # up 9.5 minutes
    assert five.surfaces == {"page": 3} and hour.surfaces == {"api": 6, "page": 3}
    assert five.p50_s == pytest.approx(0.4, rel=FINE_ERROR)
    api = m.window(60, surface="api")["classify"]   # one surface's own requests and times
    assert (api.requests, api.surfaces) == (6, {"api": 6}) and api.p95_s == pytest.approx(0.2, rel=FINE_ERROR)
    clock.now += WINDOW_MINUTES * 60       # an hour later every minute has rolled out
    assert m.window(60)["classify"].requests == 0 and m.window(60)["classify"].p50_s is None
    series, _ = m.series()                 # ... but the counters since start keep them
    assert series[("classify", "api")].count == 6 and series[("classify", "page")].count == 3


def test_outcomes_kinds_and_the_last_problems():
    m = Monitor(Clock())
    m.record("add", "page", 0.1, QuotaError(Msg("配额已满", "Upload quota reached")))
    m.record("page", "api", 0.01, PermissionDenied("students may not"))
    m.record("search", "mcp", 0.02, KeyError("bug"))
    m.record("search", "mcp", 0.02)
    w = m.window(60)
    assert (w["add"].refused, w["page"].refused, w["search"].failed, w["search"].requests) == (1, 1, 1, 2)
    assert m.errors(60) == {"KeyError": 1, "PermissionDenied": 1, "QuotaError": 1}
    newest = m.problems(2)
    assert [p.kind for p in newest] == ["KeyError", "PermissionDenied"]
    assert newest[0].outcome == "failed" and newest[1].outcome == "refused" and newest[0].surface == "mcp"
    quota = m.problems(3)[2]
    assert quota.message.text("zh") == "配额已满"   # said in either language on the panel
    _, kinds = m.series()
    assert kinds[("add", "refused", "QuotaError")] == 1 and kinds[("search", "failed", "KeyError")] == 1


def test_memory_stays_bounded_over_hours_of_traffic():
    clock, rng = Clock(), random.Random(0)
    m = Monitor(clock)
    for minute in range(3 * WINDOW_MINUTES):
        clock.now += 60
        for _ in range(200):
            m.record(rng.choice(["search", "classify"]), rng.choice(["page", "api"]), rng.uniform(1e-4, 30),
                     RuntimeError("x") if rng.random() < 0.05 else None)
    assert all(len(ring) == WINDOW_MINUTES for ring in m._minutes.values())
    # 30 s / 0.1 ms spans ~18 doublings: at most 16 bins each, whatever the number of requests
    assert max(len(s.fine) for ring in m._minutes.values() for s in ring if s) <= 16 * 19
    assert len(m._series) == 4 and len(m._problems) == PROBLEMS
    assert m.window(60)["search"].requests + m.window(60)["classify"].requests == 200 * WINDOW_MINUTES


def test_threads_lose_no_record():
    m = Monitor()

    def hammer(i):
        for _ in range(3000):
            m.record("search", f"s{i % 2}", 0.001)
    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    series, _ = m.series()
    assert sum(s.count for s in series.values()) == 24000 == m.window(5)["search"].requests


class Door:
    """A stand-in front door with the Workbench's shapes: the caller positional or by keyword."""

    def __init__(self):
        self.monitor = Monitor()

    @measured("search")
    def search(self, query, caller=None):
        if query == "bad":
            raise QuotaError("no")
        return query

    @measured("add")
    def add(self, items, progress=None, caller=None):
        return len(items)

    @measured("add")
    def seed(self, caller=None):
        return self.add([1, 2])            # inside seed: recorded once, as seed's action


def test_the_decorator_records_the_callers_surface_once_per_call():
    door = Door()
    door.search("a", SimpleNamespace(surface="api"))
    door.search("b", caller=SimpleNamespace(surface="mcp"))
    door.search("c")
    with pytest.raises(QuotaError):
        door.search("bad", caller=SimpleNamespace(surface="page"))
    assert door.seed(caller=SimpleNamespace(surface="page")) == 2
    series, kinds = door.monitor.series()
    assert {k: s.count for k, s in series.items()} == {("search", "api"): 1, ("search", "mcp"): 1,
                                                      ("search", "python"): 1, ("search", "page"): 1, ("add", "page"): 1}
    assert series[("search", "page")].outcomes["refused"] == 1 and kinds == {("search", "refused", "QuotaError"): 1}


class Wb(SimpleNamespace):
    """A stand-in workbench with what Health reads: its monitor, model, runtime, stats, root and size."""

    def __len__(self):
        return 7


def fake_workbench(monitor: Monitor) -> Wb:
    runtime = SimpleNamespace(describe=lambda: Msg("CPU（2 线程）", "CPU (2 threads)"))
    return Wb(monitor=monitor, encoder=SimpleNamespace(model_id='tiny "x"\\y', runtime=runtime),
              stats=lambda: {"image_bytes": 3 * 2 ** 20, "features_bytes": 4096}, root=".")


def test_prometheus_text_reads_back_with_the_real_parser():
    m = Monitor()
    for s in (0.003, 0.02, 0.02, 0.7, 200.0):
        m.record("search", "page", s)
    m.record("search", "api", 0.05, QuotaError("full"))
    m.record("add", "page", 1.5, OSError("disk"))
    wb = fake_workbench(m)
    snap = Health(lambda: wb, budget_mb=10).snapshot(queue=(4, 2))
    families = {f.name: f for f in text_string_to_metric_families(prometheus_text(snap))}
    requests = {(s.labels["action"], s.labels["surface"], s.labels["outcome"]): s.value
                for s in families["clipwb_requests"].samples}
    assert requests[("search", "page", "ok")] == 5 and requests[("search", "api", "refused")] == 1
    assert requests[("add", "page", "failed")] == 1 and requests[("search", "page", "failed")] == 0
    hist = families["clipwb_request_seconds"]
    assert hist.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in hist.samples
               if s.name.endswith("_bucket") and s.labels["action"] == "search" and s.labels["surface"] == "page"}
    assert buckets["0.005"] == 1 and buckets["0.025"] == 3 and buckets["1.0"] == 4 and buckets["+Inf"] == 5
    assert len(buckets) == len(BUCKETS_S) + 1
    total = [s.value for s in hist.samples if s.name.endswith("_sum") and s.labels["surface"] == "page"
             and s.labels["action"] == "search"]
    assert total == [pytest.approx(200.743)]
    errors = {(s.labels["kind"], s.labels["outcome"]): s.value for s in families["clipwb_errors"].samples}
    assert errors == {("QuotaError", "refused"): 1, ("OSError", "failed"): 1}
    gauges = {name: families[name].samples[0].value for name in
              ("clipwb_queue_waiting", "clipwb_queue_running", "clipwb_library_images", "clipwb_library_image_bytes",
               "clipwb_library_budget_bytes", "clipwb_memory_rss_bytes")}
    assert gauges["clipwb_queue_waiting"] == 4 and gauges["clipwb_queue_running"] == 2
    assert gauges["clipwb_library_images"] == 7 and gauges["clipwb_library_image_bytes"] == 3 * 2 ** 20
    assert gauges["clipwb_library_budget_bytes"] == 10 * 2 ** 20 and gauges["clipwb_memory_rss_bytes"] > 10 * 2 ** 20
    info = families["clipwb_info"].samples[0].labels
    assert info == {"model": 'tiny "x"\\y', "runtime": "CPU (2 threads)"}   # escaped and read back intact


def test_fresh_never_makes_a_reader_wait_behind_a_slow_read():
    gate, calls = threading.Event(), []

    def slow():
        calls.append(1)
        if len(calls) > 1:
            gate.wait(10)              # the second read is stuck (a compaction holds the library)
        return len(calls)
    fresh = Fresh(slow, max_age_s=0.0)
    assert fresh.get() == 1            # the first read waits (briefly) for its value
    start = time.perf_counter()
    values = [fresh.get() for _ in range(50)]
    assert time.perf_counter() - start < 0.5 and set(values) == {1}
    assert len(calls) == 2             # one read in flight at a time, however many readers
    gate.set()
    deadline = time.monotonic() + 5
    while fresh.get() != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fresh.get() >= 2


def test_a_snapshot_as_json_has_the_panels_numbers():
    clock = Clock()
    m = Monitor(clock)
    clock.now += 120
    for s in (0.1, 0.2, 0.3, 0.4):
        m.record("classify", "page", s)
    wb = fake_workbench(m)
    body = Health(lambda: wb, budget_mb=1).snapshot().json()
    w = body["windows"]["5"]["classify"]
    assert w["requests"] == 4 and w["per_minute"] == pytest.approx(2.0)
    assert w["p50_ms"] == pytest.approx(200, rel=FINE_ERROR) and w["p95_ms"] == pytest.approx(400, rel=FINE_ERROR)
    assert body["library"]["images"] == 7 and body["queue"] is None and body["runtime"] == "CPU (2 threads)"
    assert body["by_surface"]["5"] == {"page": {"classify": w}}   # the same, from the one surface it came from
