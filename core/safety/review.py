"""The review queue: which stored images wait for the teacher, kept beside the library.

    book = ReviewBook(library.root)
    book.hold({"3f2a...": Held("flagged", "nudity / 裸体", "ann")})   # durable before the images are stored
    book.held()                  # {sha256: Held} waiting now
    book.release(["3f2a..."])    # approved (or removed): visible again / gone

The library's own format is untouched: the queue is one small side file, `review.json` in the
library folder, that only this module reads and writes:

    {"version": 1,
     "held": {"<sha256>": {"why": "flagged" | "strict" | "unjudged",
                           "concept": "nudity / 裸体" | null,   # the concept that flagged it
                           "by": "ann",                          # who uploaded it (a login or session key)
                           "at": 1733300000.0}}}                 # unix time it was held

Only images waiting are listed: an approval or a removal deletes the line, so the file stays as
small as the queue. Crash safety: ingest calls `hold` with each batch's hashes *before* the batch
is written to the journal (core/library/ingest.py `before_store`), and the file is replaced
atomically (write, fsync, rename), so an acknowledged image that was to be held is held after any
crash; a hold whose image never got stored names a hash the library lacks and is ignored, then
dropped at the next write. Several processes (the app, the command line) share the file under
an fcntl lock; each reads it again when it changed on disk.
"""
from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..errors import LibraryError
from ..library.journal import write_atomic
from ..messages import Msg

__all__ = ["ReviewBook", "Held", "REVIEW_NAME", "REASONS"]

REVIEW_NAME = "review.json"
REVIEW_VERSION = 1
# Why an image waits, in the teacher's words
REASONS = {"flagged": Msg("过滤器标记", "flagged by the filter"),
           "strict": Msg("严格模式：学生上传需批准", "strict mode: students' uploads wait for approval"),
           "unjudged": Msg("模型无法判断，等待老师查看", "the model cannot judge it; waiting for the teacher")}


@dataclass(frozen=True)
class Held:
    why: str                    # a key of REASONS
    concept: str | None = None  # the unsafe concept that flagged it
    by: str = ""                # who uploaded it
    at: float = 0.0             # unix time it was held

    def reason(self) -> Msg:
        """What the teacher reads beside the image (both languages)."""
        base = REASONS.get(self.why) or Msg("原因：{why}", "reason: {why}", why=self.why)
        if self.concept:
            return Msg("{base}：{concept}", "{base}: {concept}", base=base, concept=self.concept)
        return base


class ReviewBook:
    """The review queue of one library folder (thread- and process-safe)."""

    def __init__(self, root: str | os.PathLike):
        self.path = Path(root) / REVIEW_NAME
        self._lock = threading.RLock()
        self._held: dict[str, Held] = {}
        self._stamp: tuple[int, int] | None = None   # (mtime_ns, size) of the file last read

    @contextmanager
    def _process_lock(self) -> Iterator[None]:
        with open(self.path.with_name(".review.lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _load(self) -> None:
        """Read the file again when it changed on disk (another process wrote it)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._held, self._stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            held = {sha: Held(**fields) for sha, fields in data.get("held", {}).items()}
        except (OSError, ValueError, TypeError) as e:
            raise LibraryError(Msg("审核队列 {path} 已损坏（{why}）：请删除它，然后让老师重新检查图库",
                                   "The review queue {path} is damaged ({why}): delete it and have the teacher look "
                                   "over the library again", path=str(self.path), why=str(e))) from None
        self._held, self._stamp = held, stamp

    def _change(self, edit: Callable[[dict[str, Held]], None], keep: Callable[[str], bool] | None = None) -> None:
        """Read-modify-write under both locks; `keep(sha)` prunes holds of images no longer stored."""
        with self._lock, self._process_lock():
            self._load()
            held = dict(self._held)
            edit(held)
            if keep is not None:
                held = {sha: h for sha, h in held.items() if keep(sha)}
            body = json.dumps({"version": REVIEW_VERSION, "held": {s: asdict(h) for s, h in sorted(held.items())}},
                              ensure_ascii=False, indent=1).encode("utf-8")
            write_atomic(self.path, lambda f: f.write(body))
            self._held, self._stamp = held, None

    # ------------------------------------------------------------------ reading

    def held(self) -> dict[str, Held]:
        """{sha256: Held} of every image waiting (including holds of images not stored: callers
        look their hashes up in the library)."""
        with self._lock:
            self._load()
            return dict(self._held)

    def is_held(self, sha256: str) -> bool:
        return sha256 in self.held()

    # ------------------------------------------------------------------ writing

    def hold(self, items: dict[str, Held], keep: Callable[[str], bool] | None = None) -> None:
        """Put these images in the queue (durably: the file is on disk when this returns). An image
        already waiting keeps its first reason."""
        if items:
            now = time.time()

            def add(held: dict[str, Held]) -> None:
                for sha, h in items.items():
                    held.setdefault(sha, h if h.at else Held(h.why, h.concept, h.by, now))
            self._change(add, keep)

    def release(self, sha256s: Iterable[str], keep: Callable[[str], bool] | None = None) -> list[str]:
        """Take these images out of the queue (approved, or removed); returns the ones that waited."""
        shas = set(sha256s)
        released: list[str] = []

        def drop(held: dict[str, Held]) -> None:
            released.extend(sha for sha in shas if held.pop(sha, None) is not None)
        if shas & set(self.held()) or keep is not None:
            self._change(drop, keep)
        return released
