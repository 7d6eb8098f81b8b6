"""The rules the front door applies to every call, in one place.

    policy = Policy(access)                       # access: accounts, roles, quotas (core/access.py)
    caller = policy.admit(caller, "remove")       # PermissionDenied for a student; None -> LOCAL
    with policy.intake(caller, sources, library) as intake:   # read + hashed once, "stored?" asked once,
        report = ingest(..., intake.uploads, stored=intake.stored)   # held against quota and budget
        intake.done(report)
    result = policy.judge(result)                 # strong and weak hits of a search

core/workbench.py calls these on each action and nothing else decides them: who may do what
(roles), how much a caller may upload (quota, disk budget), what is new (dedupe by content
hash), and what counts as a match (the weak-hit rule). The adapters (page, JSON API, command
line, MCP tools) only say who is calling and from where, and render what comes back.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator

from .access import LOCAL, Access, Caller
from .errors import ImageError
from .images import iter_image_files
from .library.ingest import IngestReport, Upload, read_source
from .library.search import SearchResult, count_strong
from .library.store import Library

__all__ = ["Policy", "Intake"]


@dataclass
class Intake:
    """One upload of a caller of the shared app, read once: its files as Uploads with their hashes,
    the files that could not be read, and which hashes the library holds already."""
    uploads: list[Upload]
    errors: list[tuple[str, str]]
    stored: set[str]
    kept: int = 0   # bytes the upload actually stored (set by done)

    def done(self, report: IngestReport) -> IngestReport:
        """Record what the upload stored (only that counts against the quota); the read errors join
        the report's, first."""
        added = set(report.added)
        self.kept = sum(len(u.data) for u in self._unique() if u.sha256[:12] in added)
        report.errors[:0] = self.errors
        return report

    def new_bytes(self) -> int:
        """Bytes of the images not stored yet (each content once): what the upload may add."""
        return sum(len(u.data) for u in self._unique() if u.sha256 not in self.stored)

    def _unique(self) -> list[Upload]:
        return list({u.sha256: u for u in self.uploads}.values())


class Policy:
    """Roles, quotas, dedupe and the weak-hit rule of one app (thread-safe: Access is)."""

    def __init__(self, access: Access | None = None):
        self.access = access or Access()

    def admit(self, caller: Caller | None, action: str) -> Caller:
        """The caller (LOCAL when None: the command line, a script), admitted to `action`
        (PermissionDenied for a student asking for a teacher's action: core.access.ADMIN_ACTIONS)."""
        caller = caller or LOCAL
        self.access.admit(caller, action)
        return caller

    def reads_first(self, caller: Caller) -> bool:
        """Whether an upload of this caller is read (and held against limits) before it is stored:
        a user of the shared app, or anyone with a quota. The local user's files stream through
        ingest instead, each read once as it goes (a folder of a million images never sits in memory)."""
        return caller.shared or caller.quota_mb is not None

    @contextmanager
    def intake(self, caller: Caller, sources: Iterable, library: Library) -> Iterator[Intake]:
        """Read and hash each file once, ask the library once which are stored, and hold the new bytes
        against the caller's quota and the disk budget (QuotaError before anything is stored); on exit
        only what `done` recorded stays counted."""
        sources = list(sources)
        files = [s for s in sources if isinstance(s, Upload)]
        files += list(iter_image_files(Path(s) for s in sources if not isinstance(s, Upload)))
        uploads, errors = [], []
        for source in files:   # one bad file never stops the others
            try:
                uploads.append(read_source(source))
            except ImageError as e:
                errors.append((e.name, e.reason))
        stored_bytes = library.image_bytes()   # fresh: what other processes added counts too
        intake = Intake(uploads, errors, library.stored(u.sha256 for u in uploads))
        with self.access.reserve(caller, intake.new_bytes(), stored_bytes) as keep:
            yield intake
            keep(intake.kept)

    @staticmethod
    def judge(result: SearchResult) -> SearchResult:
        """The result with its strong hits counted (count_strong: under WEAK_RATIO of the best score is
        weak); every surface shows hits[:strong] and marks or hides the rest the same way."""
        return replace(result, strong=count_strong(result.hits))
