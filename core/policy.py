"""The rules the front door applies to every call, in one place.

    policy = Policy(access)                       # access: accounts, roles, quotas (core/access.py)
    caller = policy.admit(caller, "remove")       # PermissionDenied for a student; None -> LOCAL
    with policy.intake(caller, sources, library) as intake:   # read + hashed once, "stored?" asked once
        report = ingest(..., intake.uploads, stored=intake.stored)   # per file, held against quota and budget
        intake.done(report)
    result = policy.judge(result)                 # strong and weak hits of a search

core/workbench.py calls these on each action and nothing else decides them: who may do what
(roles), how much a caller may upload (quota, disk budget), what is new (dedupe by content
hash), whose query may read an image file on the server's disk, and what counts as a match
(the weak-hit rule). The adapters (page, JSON API, command
line, MCP tools) only say who is calling and from where, and render what comes back.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

from .access import LOCAL, Access, Caller
from .errors import ImageError, QueryError
from .images import iter_image_files
from .library.ingest import IngestReport, Upload, read_source
from .library.search import SearchResult, count_strong
from .library.store import Library
from .messages import Msg

__all__ = ["Policy", "Intake"]


def _sizes(files: list) -> int:
    """Bytes of files not read yet (an Upload's, or a file's size on disk; 0 for one that cannot be read)."""
    total = 0
    for f in files:
        try:
            total += len(f.data) if isinstance(f, Upload) else Path(f).stat().st_size
        except OSError:
            pass
    return total


@dataclass
class Intake:
    """One upload of a caller of the shared app, read once: its files as Uploads with their hashes
    (an image the library holds already, or met earlier in the upload, without its bytes: it is
    reported, not stored), the files that could not be read, which hashes the library holds, and
    the size of each new image."""
    uploads: list[Upload] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    stored: set[str] = field(default_factory=set)
    new: dict[str, int] = field(default_factory=dict)   # sha256 -> bytes, for images not stored yet
    kept: int = 0                                       # bytes the upload actually stored (set by done)

    def done(self, report: IngestReport) -> IngestReport:
        """Record what the upload stored (only that counts against the quota); the read errors join
        the report's, first."""
        added = set(report.added)
        self.kept = sum(size for sha, size in self.new.items() if sha[:12] in added)
        report.errors[:0] = self.errors
        return report


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
        """Read and hash each file once, ask the library once per file whether it holds it, and hold
        the new bytes against the caller's quota and the disk budget: a QuotaError before anything is
        stored, raised as soon as the new bytes pass what the caller may add, so an upload never sits
        in memory beyond that. On exit only what `done` recorded stays counted."""
        sources = list(sources)
        files = [s for s in sources if isinstance(s, Upload)]
        files += list(iter_image_files(Path(s) for s in sources if not isinstance(s, Upload)))
        stored_bytes = library.image_bytes()   # fresh: what other processes added counts too
        intake, room = Intake(), self.access.room(caller, stored_bytes)
        for i, source in enumerate(files):   # one bad file never stops the others
            try:
                upload = read_source(source)
            except ImageError as e:
                intake.errors.append((e.name, e.reason))
                continue
            intake.uploads.append(self._note(intake, upload, library))
            if sum(intake.new.values()) > room:   # refused: read no further (the rest counted by size)
                self.access.check(caller, sum(intake.new.values()) + _sizes(files[i + 1:]), stored_bytes)
        with self.access.reserve(caller, sum(intake.new.values()), stored_bytes) as keep:
            yield intake
            keep(intake.kept)

    @staticmethod
    def _note(intake: Intake, upload: Upload, library: Library) -> Upload:
        """Record one read upload as new or known; a known one keeps its name and hash, not its bytes."""
        sha = upload.sha256
        if sha not in intake.new and sha not in intake.stored:
            if not library.contains(sha):
                intake.new[sha] = len(upload.data)
                return upload
            intake.stored.add(sha)
        return Upload(upload.name, b"", sha)

    @staticmethod
    def read_file(caller: Caller | None, name: str) -> None:
        """An image file named in a query (core/library/terms.py) is read only for the machine's own user
        (the command line, a script): a user of the shared app would be reading the server's disk, so
        QueryError tells them to upload the image or name a library image by its id instead."""
        if caller is not None and caller.shared:
            raise QueryError(Msg("“{name}”是服务器上的文件路径：请上传这张图片，或用图库图片的 ID",
                                 "'{name}' names a file on the server: upload the image instead, or use a "
                                 "library image's id", name=name))

    @staticmethod
    def judge(result: SearchResult) -> SearchResult:
        """The result with its strong hits counted (count_strong: under WEAK_RATIO of the best score is
        weak); every surface shows hits[:strong] and marks or hides the rest the same way."""
        return replace(result, strong=count_strong(result.hits))
