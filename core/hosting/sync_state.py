"""The library's side of its Hub backup (core/hosting/sync.py): which files make it whole, which
library it is, whether it holds any image, and what the backup of this folder remembers over
restarts. Everything here reads files only: no network, no opening of the library.

    library_files(root)   {rel: path} of one consistent state (the caller holds the library's lock)
    identity(store_json)  the library's `created` time: the same in every copy, new in a new library
    holds_rows(root)      True / False (no live row: a restore may fill it) / None (cannot tell: keep it)
    SyncState.load(...)   <library>/.hub-sync.json: the files pushed, the library they belong to,
                          a hold on pushes that lasts until the repo is checked, a restore under way
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..library.columns import COLUMN_FILES
from ..library.disk import JOURNAL_NAME, MANIFEST_NAME, SNAPSHOT_NAME, STORE_DIR
from ..library.journal import JOURNAL_HEADER, JOURNAL_MAGIC, read_records, write_atomic

__all__ = ["library_files", "identity", "holds_rows", "stat", "SyncState", "STATE_NAME", "HOLD_RESTORE", "HOLD_CONFLICT",
           "HOLD_WRITER"]

STATE_NAME = ".hub-sync.json"       # in the library folder, never pushed
HOLD_RESTORE = "restore"            # a restore failed: the repo may hold the class's library
HOLD_CONFLICT = "conflict"          # the repo holds another library than this one
HOLD_WRITER = "writer"              # another copy of this library pushed to the repo: one writer per repo
_COLUMN_STEMS = {name.partition(".")[0] for name in COLUMN_FILES}


def library_files(root: Path) -> dict[str, Path]:
    """The files of the library at `root` that make it whole (relative posix path -> path). The
    caller holds the library's lock, so they are one consistent state. {} when there is no store.json."""
    try:
        gen = str(int(json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))["generation"]))
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    files = {name: root / name for name in (MANIFEST_NAME, JOURNAL_NAME, SNAPSHOT_NAME) if (root / name).is_file()}
    for p in sorted((root / STORE_DIR).glob(f"*.{gen}.*")):
        parts = p.name.split(".")
        if p.is_file() and parts[0] in _COLUMN_STEMS and parts[1] == gen:
            files[f"{STORE_DIR}/{p.name}"] = p
    for sub in ("images", "staging"):
        for p in sorted((root / sub).rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                files[p.relative_to(root).as_posix()] = p
    return files


def identity(manifest: Path) -> float | None:
    """Which library a store.json belongs to: its `created` time, kept by every compaction, copy and
    restore and new in every new library. None when there is no readable store.json."""
    try:
        return float(json.loads(manifest.read_text(encoding="utf-8"))["created"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def holds_rows(root: Path) -> bool | None:
    """Whether the library at `root` holds a live image, read from its files: the snapshot's rows
    plus the journal's adds and removes. False also for no library at all (images/ may still hold
    files that no row names: they are kept, never counted). None when it cannot be told (a
    version-1 library or a lost store.json beside a journal or features_library.pth, unreadable
    files): such a library is kept as it is."""
    if not (root / MANIFEST_NAME).exists():
        return None if (root / JOURNAL_NAME).exists() or (root / SNAPSHOT_NAME).exists() else False
    try:
        gen = int(json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))["generation"])
        shas = np.load(root / STORE_DIR / f"sha.{gen}.npy", mmap_mode="r", allow_pickle=False)
        try:
            data = (root / JOURNAL_NAME).read_bytes()
        except FileNotFoundError:
            data = b""
        records: list[tuple[str, str]] = []      # a journal of an older generation is ignored, as on open
        if data:
            if len(data) < JOURNAL_HEADER.size or data[:4] != JOURNAL_MAGIC:
                return None
            journal_gen = JOURNAL_HEADER.unpack_from(data)[2]
            if journal_gen > gen:
                return None
            if journal_gen == gen:
                records = [(h["op"], h["sha"]) for _, h, _ in read_records(data, JOURNAL_HEADER.size)]
        if len(shas) > sum(op == "remove" for op, _ in records):   # not every snapshot row can be gone
            return True
        live = {bytes(s).decode() for s in shas}
        for op, sha in records:
            if op == "add":
                live.add(sha)
            elif op == "remove":
                live.discard(sha)
        return bool(live)
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class SyncState:
    """What the backup of one library folder to one repo remembers over restarts."""
    path: Path
    repo: str
    library: float | None = None                   # identity of the library `sent` belongs to
    sent: dict[str, tuple[int, int]] = field(default_factory=dict)   # rel -> (size, mtime_ns) on the repo
    hold: str | None = None                        # HOLD_RESTORE | HOLD_CONFLICT: no push until the repo is checked
    other: float | None = None                     # with HOLD_CONFLICT: the identity of the repo's library
    restoring: bool = False                        # files were being moved into place (a crash: do it again)
    head: str | None = None                        # the repo's commit this folder last pushed or restored
    pending: str | None = None                     # the marker of a commit sent whose answer never came

    @classmethod
    def load(cls, path: Path, repo: str) -> "SyncState":
        """The state kept for `repo` (a state of another repo, or none that reads: a fresh one)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("repo") != repo:
                return cls(path, repo)
            return cls(path, repo, library=data.get("library"),
                       sent={rel: (int(s[0]), int(s[1])) for rel, s in data.get("sent", {}).items()},
                       hold=data.get("hold"), other=data.get("other"), restoring=bool(data.get("restoring")),
                       head=data.get("head"), pending=data.get("pending"))
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
            return cls(path, repo)

    def save(self) -> None:
        data = {"repo": self.repo, "library": self.library, "hold": self.hold, "other": self.other,
                "restoring": self.restoring, "head": self.head, "pending": self.pending,
                "sent": {rel: list(s) for rel, s in sorted(self.sent.items())}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, lambda f: f.write(json.dumps(data).encode()))

    def bind(self, library: float | None) -> None:
        """This folder now holds `library`: what was sent for another library is forgotten."""
        if library != self.library:
            self.library, self.sent = library, {}


def stat(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns
