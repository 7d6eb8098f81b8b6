"""A class on one link: N simulated students against the real app, over real HTTP.

    python benchmarks/bench_classroom.py                       # 40 students, mini model
    python benchmarks/bench_classroom.py --students 10 --json  # ... ends with one JSON line
    python benchmarks/bench_classroom.py --model random:ViT-B/32   # the default model's size, random weights

Starts `demo.py` (fresh temp library, its own process) and drives N students with one light
asyncio + httpx generator through Gradio's queue API (POST /gradio_api/call/<api_name>, then
its SSE stream), as a browser does, without downloading thumbnails. Each student opens the
page, uploads 3 distinct images in one add, runs 3 searches (English and Chinese), 2
classifications (each uploads its image first) and browses 2 library pages. Then every
acknowledged upload must be in the library exactly once and `library verify` must pass.

Prints per-endpoint p50 / p95 (ms), errors, the generator's CPU seconds next to the app's
(from /proc), and with --json a final line {"students", "errors", "lost", "duplicated",
"p50_ms", "p95_ms", "generator_cpu_s", "app_cpu_s", "panel", ...}.

The latencies the teacher's health panel shows are read back from the app (GET /api/health, the
panel's numbers: core/health.py) and set beside the generator's own: per action, the panel must
count every request the generator made, and its p50 / p95 (the time inside the front door) must
lie within the generator's (which adds the queue wait and the HTTP round trips), up to the
panel's bin width (core.monitor.FINE_ERROR). Both are nearest-rank percentiles here.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SEARCHES = ["a photo of a cat", "一只猫", "a red circle", "蓝色的正方形", "a clock on the wall", "星空"]
LABELS = "cat, dog, circle, square, 猫, 汽车"
TIMEOUT = 120.0     # seconds one request may take before it counts as an error
ACTIONS = {"add_to_library": "add", "search": "search", "classify": "classify", "library_page": "page"}   # -> front door
SURFACE = "page"    # Gradio's queue API is the page's surface (the app's own seeding at start is "python")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (and its waited-for children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def make_image(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A distinct photo-sized JPEG (~15 KB): smooth colour gradients plus noise."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = rng.uniform(0, 255, 3) * (1 - x[..., None]) + rng.uniform(0, 255, 3) * y[..., None]
    pixels = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=85)
    return out.getvalue()


class Student:
    """One simulated student: a session of Gradio's queue API."""

    def __init__(self, http: httpx.AsyncClient, index: int, record):
        self.http, self.index, self.record = http, index, record
        self.session = f"student{index}-{random.getrandbits(32):08x}"
        self.acked: list[str] = []   # sha256 of images the app said it stored

    async def timed(self, endpoint: str, coro):
        start = time.perf_counter()
        try:
            result = await coro
        except Exception as e:  # noqa: BLE001  any failure is an error of that endpoint, counted and reported
            self.record(endpoint, None, f"{type(e).__name__}: {str(e)[:200]}")
            return None
        self.record(endpoint, (time.perf_counter() - start) * 1000, None)
        return result

    async def upload(self, files: list[tuple[str, bytes]]) -> list[dict]:
        r = await self.http.post("/gradio_api/upload", files=[("files", (n, d, "image/jpeg")) for n, d in files])
        r.raise_for_status()
        return [{"path": p, "orig_name": n, "meta": {"_type": "gradio.FileData"}} for p, (n, _) in zip(r.json(), files)]

    async def call(self, api: str, data: list):
        r = await self.http.post(f"/gradio_api/call/{api}", json={"data": data, "session_hash": self.session})
        r.raise_for_status()
        event = r.json()["event_id"]
        async with self.http.stream("GET", f"/gradio_api/call/{api}/{event}") as stream:
            kind = None
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:") and kind in ("complete", "error"):
                    payload = line[5:].strip()
                    if kind == "error":
                        raise RuntimeError(f"{api}: {payload}")
                    return json.loads(payload)
        raise RuntimeError(f"{api}: stream ended without a result")

    async def open_page(self):
        r = await self.http.get("/")
        r.raise_for_status()
        r = await self.http.get("/config")
        r.raise_for_status()

    async def add(self, images: list[bytes]):
        files = [(f"s{self.index}_{i}.jpg", d) for i, d in enumerate(images)]
        uploaded = await self.upload(files)
        summary = (await self.call("add_to_library", [uploaded]))[0]
        if "unreadable 0" not in summary and "无法读取 0" not in summary:
            raise RuntimeError(f"add_to_library: {summary[:200]}")
        self.acked += [hashlib.sha256(d).hexdigest() for d in images]

    async def search(self, text: str):
        return await self.call("search", [text, None, "", 12, 0])

    async def classify(self, image: bytes):
        uploaded = await self.upload([(f"q{self.index}.jpg", image)])
        return await self.call("classify", [uploaded[0], "custom", LABELS, "single", "", False])

    async def page(self, number: int):
        return await self.call("library_page", [number])

    async def run(self, images: list[bytes], queries: list[bytes], think: float):
        pause = lambda: asyncio.sleep(random.uniform(0, think))  # noqa: E731
        await self.timed("page_open", self.open_page())
        steps = [("add_to_library", lambda: self.add(images))]
        steps += [("search", lambda t=t: self.search(t)) for t in random.sample(SEARCHES, 3)]
        steps += [("classify", lambda q=q: self.classify(q)) for q in queries]
        steps += [("library_page", lambda n=n: self.page(n)) for n in (1, 2)]
        first, rest = steps[0], steps[1:]
        random.shuffle(rest)
        for endpoint, step in [first, *rest]:   # the upload first: a page of the class's images to browse
            await pause()
            await self.timed(endpoint, step())


def random_b32_file(path: Path) -> Path:
    """A randomly initialised ViT-B/32 (the default model's size and cost) saved as a state dict."""
    import clip
    import torch
    from bench_text_trim import B32
    torch.manual_seed(0)
    torch.save(clip.model.CLIP(**B32).state_dict(), path)
    return path


def start_app(model: str, library: Path, port: int, extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(ROOT / "demo.py"), "--model", model, "--library", str(library), "--offline",
           "--host", "127.0.0.1", "--port", str(port), "--lang", "en", *extra]
    log = open(library.parent / "app.log", "wb")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited with code {proc.returncode}")
        try:
            if httpx.get(url + "/gradio_api/info", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the app did not start in time")


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def nearest_rank(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) as the panel defines it: the ceil(q/100 * n)-th smallest value."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, int(-(-len(ordered) * q // 100))) - 1]


def panel_agreement(panel: dict, times: dict[str, list[float]], errors: dict[str, list[str]]) -> dict:
    """Per endpoint: the generator's count and nearest-rank p50 / p95 beside the panel's (its last 60
    minutes from SURFACE), and whether they agree: the same count, the panel's times within the
    generator's (which hold them, plus queue wait and HTTP), up to the panel's bin width."""
    from core.monitor import FINE_ERROR
    rows = {}
    for endpoint, action in ACTIONS.items():
        mine = times.get(endpoint, [])
        theirs = panel.get(action) or {"requests": 0, "p50_ms": None, "p95_ms": None}
        row = {"requests": len(mine) + len(errors.get(endpoint, [])), "panel_requests": theirs["requests"],
               "p50_ms": nearest_rank(mine, 50), "p95_ms": nearest_rank(mine, 95),
               "panel_p50_ms": theirs["p50_ms"], "panel_p95_ms": theirs["p95_ms"]}
        within = all(row[f"panel_{p}"] is not None and row[p] is not None and row[f"panel_{p}"] <= row[p] * (1 + FINE_ERROR)
                     for p in ("p50_ms", "p95_ms")) if mine else theirs["requests"] == 0
        row["agree"] = row["requests"] == row["panel_requests"] and within
        rows[endpoint] = row
    return rows


def read_panel(url: str) -> dict:
    """The health panel's numbers from the app: {action: {"requests", "p50_ms", "p95_ms", ...}} over its
    last 60 minutes, from SURFACE only."""
    body = httpx.get(url + "/api/health", timeout=30).json()
    return body["by_surface"]["60"].get(SURFACE, {})


def check_library(library: Path, acked: list[str]) -> tuple[int, int, bool]:
    """(lost, duplicated, verify healthy) for the acknowledged sha256s, the library read from disk."""
    out = subprocess.run([sys.executable, "-m", "core", "library", "verify", "--library", str(library)],
                         cwd=ROOT, capture_output=True, text=True)
    healthy = out.returncode == 0
    from core.library.store import MANIFEST_NAME, Library
    manifest = json.loads((library / MANIFEST_NAME).read_text())
    lib = Library(library, manifest["model_id"], int(manifest["dim"]))
    stored = [e.sha256 for e in lib.entries()]
    counts: dict[str, int] = {}
    for s in stored:
        counts[s] = counts.get(s, 0) + 1
    lost = sum(1 for s in set(acked) if s not in counts)
    duplicated = sum(1 for s in counts.values() if s > 1)
    return lost, duplicated, healthy


async def drive(url: str, n: int, think: float, seed: int) -> tuple[dict, dict, list[str], float]:
    random.seed(seed)
    images = [[make_image(seed * 100_000 + s * 10 + i) for i in range(3)] for s in range(n)]
    queries = [[make_image(seed * 100_000 + 5_000_000 + s * 10 + i, (224, 224)) for i in range(2)] for s in range(n)]
    times: dict[str, list[float]] = {}
    errors: dict[str, list[str]] = {}

    def record(endpoint, ms, error):
        if error is None:
            times.setdefault(endpoint, []).append(ms)
        else:
            errors.setdefault(endpoint, []).append(error)
    limits = httpx.Limits(max_connections=4 * n + 10, max_keepalive_connections=4 * n + 10)
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT, limits=limits) as http:
        students = [Student(http, i, record) for i in range(n)]
        start = time.perf_counter()
        await asyncio.gather(*(s.run(images[i], queries[i], think) for i, s in enumerate(students)))
        wall = time.perf_counter() - start
    return times, errors, [sha for s in students for sha in s.acked], wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--students", type=int, default=40)
    p.add_argument("--model", default="mini",
                   help="model for demo.py --model (default: the bundled mini); random:ViT-B/32 = the default "
                        "model's architecture with random weights (no download)")
    p.add_argument("--think", type=float, default=1.0, help="max random pause between a student's steps, s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--app-arg", action="append", default=[], help="extra demo.py argument (repeatable)")
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    p.add_argument("--keep", action="store_true", help="keep the temp folder (library, app.log) afterwards")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench_classroom_"))
    library, port = work / "library", free_port()
    url = f"http://127.0.0.1:{port}"
    model = str(random_b32_file(work / "vit_b32_random.pt")) if args.model == "random:ViT-B/32" else args.model
    proc = start_app(model, library, port, args.app_arg)
    try:
        wait_up(url, proc)
        load_before = os.getloadavg()
        app_cpu0, gen0 = cpu_seconds(proc.pid), resource.getrusage(resource.RUSAGE_SELF)
        times, errors, acked, wall = asyncio.run(drive(url, args.students, args.think, args.seed))
        gen1, app_cpu1 = resource.getrusage(resource.RUSAGE_SELF), cpu_seconds(proc.pid)
        load_after = os.getloadavg()
        panel = panel_agreement(read_panel(url), times, errors)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    lost, duplicated, healthy = check_library(library, acked)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    generator_cpu = (gen1.ru_utime + gen1.ru_stime) - (gen0.ru_utime + gen0.ru_stime)
    result = {
        "students": args.students, "model": args.model, "wall_s": round(wall, 1),
        "errors": sum(len(v) for v in errors.values()), "errors_by_endpoint": {k: len(v) for k, v in errors.items()},
        "error_samples": sorted({e for v in errors.values() for e in v})[:5],
        "acknowledged": len(acked), "lost": lost, "duplicated": duplicated, "verify_ok": healthy,
        "requests": {k: len(v) for k, v in times.items()},
        "p50_ms": {k: pct(v, 50) for k, v in sorted(times.items())},
        "p95_ms": {k: pct(v, 95) for k, v in sorted(times.items())},
        "generator_cpu_s": round(generator_cpu, 1), "app_cpu_s": round(app_cpu1 - app_cpu0, 1),
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(), "panel": panel, "panel_agrees": all(r["agree"] for r in panel.values()),
    }
    print(f"{args.students} students, model {args.model}, {wall:.1f} s wall; load average before "
          f"{load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'endpoint':<16}{'n':>5}{'p50 ms':>10}{'p95 ms':>10}{'errors':>8}")
    for k in sorted(set(times) | set(errors)):
        print(f"{k:<16}{len(times.get(k, [])):>5}{pct(times.get(k, []), 50) or 0:>10.0f}"
              f"{pct(times.get(k, []), 95) or 0:>10.0f}{len(errors.get(k, [])):>8}")
    print("the health panel (time inside the front door) beside the generator (nearest-rank, ms):")
    print(f"{'endpoint':<16}{'n':>5}{'panel n':>9}{'p50':>8}{'panel':>8}{'p95':>8}{'panel':>8}  agree")
    for k, r in panel.items():
        print(f"{k:<16}{r['requests']:>5}{r['panel_requests']:>9}{r['p50_ms'] or 0:>8.0f}{r['panel_p50_ms'] or 0:>8.0f}"
              f"{r['p95_ms'] or 0:>8.0f}{r['panel_p95_ms'] or 0:>8.0f}  {'yes' if r['agree'] else 'NO'}")
    print(f"acknowledged {len(acked)} images: lost {lost}, duplicated {duplicated}; library verify "
          f"{'ok' if healthy else 'FAILED'}")
    print(f"CPU seconds: app {result['app_cpu_s']}, generator {result['generator_cpu_s']}")
    for e in result["error_samples"]:
        print("  error:", e)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    return 0 if not result["errors"] and not lost and not duplicated and healthy and result["panel_agrees"] else 1


if __name__ == "__main__":
    sys.exit(main())
