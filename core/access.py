"""Who may do what in a shared app: accounts and roles, upload quotas, a disk budget, login throttling.

    access = Access(Accounts.parse(students=["ann:pw1"], admins=["teacher:secret"]), Limits())
    who = access.caller("ann")                      # Caller(key="ann", admin=False, named=True)
    access.require_admin(who, "remove")             # PermissionDenied for a student
    report = access.add(wb, who, ["/tmp/upload.jpg"])   # QuotaError over the user's quota or the disk budget

One policy for every front end: the Gradio UI and the JSON HTTP API both resolve their
caller (a login name, or a browser session without logins) and go through the same
`Access`. Without any account the app is open: every caller is an admin (one local
user, as before) but uploads still count against a per-session quota. Admins who log in
by name are exempt from the per-user quota, never from the library's disk budget.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .errors import PermissionDenied, QuotaError
from .messages import Msg
from .library.ingest import IngestReport, Upload

__all__ = ["Access", "Accounts", "Caller", "Limits", "LoginThrottle", "ADMIN_ACTIONS", "parse_logins"]

_MB = 2 ** 20
ADMIN_ACTIONS = ("remove", "compact", "repair", "reindex", "seed")   # what only the teacher may do


@dataclass(frozen=True)
class Caller:
    key: str        # login name, or "session:<hash>" without logins
    admin: bool     # may delete and maintain
    named: bool     # logged in by name (False: an anonymous browser session / API client)


@dataclass(frozen=True)
class Limits:
    """Fair use for a class. Sizes are of the stored image files (what fills the disk)."""
    quota_mb: float = float(os.environ.get("CLIP_WB_QUOTA_MB", 100))             # per student / session
    budget_mb: float = float(os.environ.get("CLIP_WB_LIBRARY_BUDGET_MB", 4096))  # the whole library's images
    failed_logins: int = 5          # failed logins for one name from one address ...
    failed_logins_per_address: int = 100   # ... or for any names from one address (a class shares a school's) ...
    login_window_s: float = 300.0   # ... within this many seconds, then refused until the window passes


def parse_logins(items: Iterable[str], what: str = "--auth") -> dict[str, str]:
    """["user:pass", ...] (also comma- or newline-separated in one string) -> {user: pass}."""
    accounts = {}
    for item in items:
        for part in str(item).replace("\n", ",").split(","):
            part = part.strip()
            if not part or part.startswith("#"):
                continue
            user, sep, password = part.partition(":")
            if not sep or not user.strip() or not password:
                raise ValueError(f"{what} must look like user:password, got {part.split(':')[0]!r}:…")
            accounts[user.strip()] = password
    return accounts


@dataclass
class Accounts:
    students: dict[str, str] = field(default_factory=dict)
    admins: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, students: Sequence[str] = (), admins: Sequence[str] = (), env: dict | None = None) -> "Accounts":
        """Logins from flags plus, for Spaces secrets, $CLIP_WB_AUTH / $CLIP_WB_ADMIN ("user:pass,user:pass")
        and $CLIP_WB_AUTH_FILE (one "user:pass" per line; a line "admin user:pass" is a teacher)."""
        env = os.environ if env is None else env
        more_students, more_admins = [env.get("CLIP_WB_AUTH", "")], [env.get("CLIP_WB_ADMIN", "")]
        if env.get("CLIP_WB_AUTH_FILE"):
            for line in Path(env["CLIP_WB_AUTH_FILE"]).read_text(encoding="utf-8").splitlines():
                role, _, rest = line.strip().partition(" ")
                (more_admins if role == "admin" and rest else more_students).append(rest if role == "admin" else line)
        accounts = cls(parse_logins([*students, *more_students]), parse_logins([*admins, *more_admins], "--admin"))
        for user in accounts.admins:
            accounts.students.pop(user, None)   # one role per name: the teacher's
        return accounts

    def __bool__(self) -> bool:
        return bool(self.students or self.admins)

    def check(self, user: str, password: str) -> bool:
        stored = self.admins.get(user, self.students.get(user))
        return stored is not None and secrets.compare_digest(stored.encode(), (password or "").encode())


class LoginThrottle:
    """Failed logins in a sliding window, per (address, name) and per address: a student's typos
    lock out only that name from that address, while a class behind one school address can
    still log in unless someone there guesses at many names."""

    def __init__(self, limit: int, window_s: float, per_address: int | None = None):
        self.limit, self.window_s, self.per_address = limit, window_s, per_address or 20 * limit
        self._failures: dict[tuple, list[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str, user: str | None = None) -> float:
        """Seconds until this client (and name) may try again (0: now)."""
        with self._lock:
            waits = [self._wait((client, None), self.per_address)]
            if user is not None:
                waits.append(self._wait((client, user), self.limit))
            return max(waits)

    def failed(self, client: str, user: str | None = None) -> None:
        with self._lock:
            now = time.monotonic()
            self._recent((client, None)).append(now)
            if user is not None:
                self._recent((client, user)).append(now)

    def succeeded(self, client: str, user: str | None = None) -> None:
        with self._lock:
            self._failures.pop((client, user), None)
            if user is None:   # clear everything of this address (an operator's reset)
                for key in [k for k in self._failures if k[0] == client]:
                    del self._failures[key]

    def _wait(self, key: tuple, limit: int) -> float:
        recent = self._recent(key)
        return 0.0 if len(recent) < limit else max(0.0, recent[0] + self.window_s - time.monotonic())

    def _recent(self, key: tuple) -> list[float]:
        cutoff = time.monotonic() - self.window_s
        times = [t for t in self._failures.get(key, []) if t > cutoff]
        self._failures[key] = times
        return times


class Access:
    """The policy of one app: roles, quotas, the disk budget, login throttling. Thread-safe."""

    def __init__(self, accounts: Accounts | None = None, limits: Limits | None = None):
        self.accounts, self.limits = accounts or Accounts(), limits or Limits()
        self.throttle = LoginThrottle(self.limits.failed_logins, self.limits.login_window_s,
                                      self.limits.failed_logins_per_address)
        self._used: dict[str, int] = {}       # bytes stored (or in flight) per caller key
        self._in_flight = 0                   # bytes reserved by uploads still running
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        """True without any account: no login, everyone is the one local (admin) user."""
        return not self.accounts

    def caller(self, user: str | None, session: str | None = None) -> Caller:
        """The caller from a login name (None without logins) or, failing that, a session id."""
        if user:
            return Caller(user, admin=self.open or user in self.accounts.admins, named=True)
        return Caller(f"session:{session or 'local'}", admin=self.open, named=False)

    def role(self, caller: Caller) -> str:
        return "admin" if caller.admin else "student"

    def require_admin(self, caller: Caller, action: str | Msg) -> None:
        """PermissionDenied for a student; `action` says what was refused (a Msg, e.g.
        Msg("删除图片", "delete images"), is said in the user's language)."""
        if not caller.admin:
            raise PermissionDenied(Msg(
                "只有教师（--admin 账号）可以{action}；你当前的登录身份是 {user!r}（学生）。",
                "Only the teacher (an --admin login) may {action}; you are logged in as {user!r} (student).",
                action=action, user=caller.key))

    def used_mb(self, caller: Caller) -> float:
        with self._lock:
            return self._used.get(caller.key, 0) / _MB

    # ------------------------------------------------------------ uploads

    def add(self, wb, caller: Caller, sources: Sequence, **kwargs) -> IngestReport:
        """wb.add(sources) within the caller's quota and the library's disk budget. Only the bytes of
        images actually stored count; duplicates and unreadable files are given back."""
        sizes = {_sha_of(s): _size_of(s) for s in sources}
        incoming = sum(size for sha, size in sizes.items() if not wb.library.contains(sha))   # re-sends are free
        self._reserve(caller, incoming, wb.stats()["image_bytes"])
        kept = 0
        try:
            report = wb.add(sources, **kwargs)
            kept = sum(size for sha, size in sizes.items() if sha[:12] in set(report.added))
            return report
        finally:
            with self._lock:
                self._in_flight -= incoming
                self._used[caller.key] = self._used.get(caller.key, 0) - incoming + kept

    def _reserve(self, caller: Caller, incoming: int, stored: int) -> None:
        quota, budget = self.limits.quota_mb * _MB, self.limits.budget_mb * _MB
        with self._lock:
            used = self._used.get(caller.key, 0)
            if not (caller.admin and caller.named) and used + incoming > quota:
                raise QuotaError(Msg(
                    "上传配额已满：已用 {used:.1f} MiB / {quota:.1f} MiB，本次上传 {incoming:.1f} MiB。"
                    "请教师提高 --quota-mb。",
                    "Upload quota reached: {used:.1f} MiB of {quota:.1f} MiB used, this upload is "
                    "{incoming:.1f} MiB. Ask the teacher to raise --quota-mb.",
                    used=used / _MB, quota=quota / _MB, incoming=incoming / _MB))
            if stored + self._in_flight + incoming > budget:
                raise QuotaError(Msg(
                    "图库空间已满：已用 {stored:.1f} MiB / {budget:.1f} MiB。"
                    "教师可以删除图片，或提高 --library-budget-mb。",
                    "The library is full: {stored:.1f} MiB of its {budget:.1f} MiB budget are used. "
                    "The teacher can delete images or raise --library-budget-mb.",
                    stored=stored / _MB, budget=budget / _MB))
            self._used[caller.key] = used + incoming
            self._in_flight += incoming


def _size_of(source) -> int:
    if isinstance(source, Upload):
        return len(source.data)
    try:
        return Path(source).stat().st_size if Path(source).is_file() else 0
    except OSError:
        return 0   # unreadable: ingest reports it


def _sha_of(source) -> str:
    """The content hash ingest will give the file (read in chunks; '' for something unreadable)."""
    digest = hashlib.sha256()
    if isinstance(source, Upload):
        digest.update(source.data)
        return digest.hexdigest()
    try:
        with open(source, "rb") as f:
            for chunk in iter(lambda: f.read(_MB), b""):
                digest.update(chunk)
    except OSError:
        return f"unreadable:{source}"
    return digest.hexdigest()
