"""Who may do what in a shared app: accounts and roles, upload quotas, a disk budget, login throttling.

    access = Access(Accounts.parse(students=["ann:pw1"], admins=["teacher:secret"]), Limits())
    ann = access.caller("ann", surface="api")       # Caller(key="ann", admin=False, named=True, surface="api", ...)
    access.admit(ann, "remove")                     # PermissionDenied for a student
    with access.reserve(ann, incoming, stored) as kept:   # QuotaError over the user's quota or the disk budget
        kept(bytes_actually_stored)

The policy of one app, applied in one place: the Workbench (core/workbench.py) holds it and
checks every action's caller with it; the adapters (page, JSON API, CLI, MCP tools) only say
who is calling and from where. Without any account the app is open: every caller is an admin
(one local user, as before) but uploads still count against a per-session quota. Admins who
log in by name are exempt from the per-user quota, never from the library's disk budget. The
machine's own user (`LOCAL`: the command line, a script) is held to neither.
"""
from __future__ import annotations

import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Sequence

from .errors import PermissionDenied, QuotaError
from .messages import Msg

__all__ = ["Access", "Accounts", "Caller", "Limits", "LoginThrottle", "ADMIN_ACTIONS", "SURFACE_ADMIN_ACTIONS",
           "SURFACES", "LOCAL", "parse_logins"]

_MB = 2 ** 20
SURFACES = ("page", "api", "mcp", "cli", "python")   # where a call comes from
_SHARED = ("page", "api", "mcp")                     # surfaces of the shared app: its quotas and budget apply
# What only the teacher may do, and how a refusal names it
ADMIN_ACTIONS = {"remove": Msg("删除图片", "delete images"), "compact": Msg("压缩图库", "compact the library"),
                 "repair": Msg("修复图库", "repair the library"), "reindex": Msg("重新编码图库", "re-encode the library"),
                 "seed": Msg("给图库添加示例图片", "seed the library"),
                 "train": Msg("开始训练", "start a training"), "stop_training": Msg("停止训练", "stop a training"),
                 "switch_model": Msg("切换应用使用的模型", "switch the app's model"),
                 "build_index": Msg("重建搜索索引", "rebuild the search index"),
                 "review": Msg("审核上传的图片", "review uploaded images")}
# What only the teacher may do from a surface: an AI assistant (MCP) adds unattended, possibly in a loop, to
# the library every student's screen shows, so there adding is the teacher's; a student adds on the page
SURFACE_ADMIN_ACTIONS = {"mcp": {"add": Msg("通过 AI 助手（MCP）向图库添加图片",
                                            "add images to the library through an AI assistant (MCP)")}}


@dataclass(frozen=True)
class Caller:
    """Who asks, with which rights, from where. Made by `Access.caller` for the app's users; `LOCAL`
    is the machine's own user (command line, scripts)."""
    key: str                   # login name, or "session:<hash>" without logins
    admin: bool                # may delete and maintain
    named: bool                # logged in by name (False: an anonymous browser session / API client)
    surface: str = "python"    # one of SURFACES: the page, the JSON API, an MCP tool, the command line, Python
    quota_mb: float | None = None   # upload quota (MiB); None: none (a named admin, the local user)

    @property
    def shared(self) -> bool:
        """A user of the shared app (page, JSON API, MCP): the library's disk budget applies."""
        return self.surface in _SHARED


LOCAL = Caller("local", admin=True, named=True, surface="python")


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

    def caller(self, user: str | None, session: str | None = None, surface: str = "page") -> Caller:
        """The caller from a login name (None without logins) or, failing that, a session id, calling
        from `surface` (SURFACES). A named admin has no upload quota; everyone else has Limits'."""
        if surface not in SURFACES:
            raise ValueError(f"surface must be one of {', '.join(SURFACES)}, got {surface!r}")
        if user:
            admin = self.open or user in self.accounts.admins
            return Caller(user, admin=admin, named=True, surface=surface, quota_mb=None if admin else self.limits.quota_mb)
        return Caller(f"session:{session or 'local'}", admin=self.open, named=False, surface=surface,
                      quota_mb=self.limits.quota_mb)

    def role(self, caller: Caller) -> str:
        return "admin" if caller.admin else "student"

    def admit(self, caller: Caller, action: str) -> None:
        """PermissionDenied when `action` is one only the teacher may do (ADMIN_ACTIONS, or from the
        caller's surface: SURFACE_ADMIN_ACTIONS) and the caller is a student; every other action is
        open to every caller."""
        refused = ADMIN_ACTIONS.get(action) or SURFACE_ADMIN_ACTIONS.get(caller.surface, {}).get(action)
        if refused is not None:
            self.require_admin(caller, refused)

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

    @contextmanager
    def reserve(self, caller: Caller, incoming: int, stored: int) -> Iterator[Callable[[int], None]]:
        """Hold `incoming` bytes (new images of one upload) against the caller's quota and, for a user
        of the shared app, the library's disk budget (`stored`: bytes of images stored now), or raise
        QuotaError. Yields kept(n): of what was held, n bytes were stored; the rest (duplicates that
        raced in, unreadable files) is given back on exit, all of it if the upload failed."""
        with self._lock:
            self._refuse(caller, incoming, stored)
            self._used[caller.key] = self._used.get(caller.key, 0) + incoming
            self._in_flight += incoming
        kept = 0

        def keep(n: int) -> None:
            nonlocal kept
            kept = n
        try:
            yield keep
        finally:
            with self._lock:
                self._in_flight -= incoming
                self._used[caller.key] = self._used.get(caller.key, 0) - incoming + kept

    def check(self, caller: Caller, incoming: int, stored: int) -> None:
        """QuotaError when `incoming` more bytes would not fit (as `reserve` would refuse them); holds nothing."""
        with self._lock:
            self._refuse(caller, incoming, stored)

    def room(self, caller: Caller, stored: int) -> float:
        """Bytes this caller may still add now (quota and budget; inf for the unlimited)."""
        with self._lock:
            rooms = [float("inf")]
            if caller.quota_mb is not None:
                rooms.append(caller.quota_mb * _MB - self._used.get(caller.key, 0))
            if caller.shared:
                rooms.append(self.limits.budget_mb * _MB - stored - self._in_flight)
            return min(rooms)

    def _refuse(self, caller: Caller, incoming: int, stored: int) -> None:
        """QuotaError over the caller's quota or the library's budget (the lock held)."""
        used, budget = self._used.get(caller.key, 0), self.limits.budget_mb * _MB
        if caller.quota_mb is not None and used + incoming > caller.quota_mb * _MB:
            raise QuotaError(Msg(
                "上传配额已满：已用 {used:.1f} MiB / {quota:.1f} MiB，本次上传 {incoming:.1f} MiB。"
                "请教师提高 --quota-mb。",
                "Upload quota reached: {used:.1f} MiB of {quota:.1f} MiB used, this upload is "
                "{incoming:.1f} MiB. Ask the teacher to raise --quota-mb.",
                used=used / _MB, quota=caller.quota_mb, incoming=incoming / _MB))
        if caller.shared and stored + self._in_flight + incoming > budget:
            raise QuotaError(Msg(
                "图库空间已满：已用 {stored:.1f} MiB / {budget:.1f} MiB。"
                "教师可以删除图片，或提高 --library-budget-mb。",
                "The library is full: {stored:.1f} MiB of its {budget:.1f} MiB budget are used. "
                "The teacher can delete images or raise --library-budget-mb.",
                stored=stored / _MB, budget=budget / _MB))
