"""Keeping a library beyond the life of its disk: a Hugging Face dataset repo as its backup, and
what the app should say about where the library lives (a Space's ephemeral disk loses it).

    sync = HubSync("library", "me/class-library")   # --sync-to-hub me/class-library
    sync.restore()        # before the library opens: one that holds no image is filled from the repo
    wb = build_workbench(..., "library")
    sync.start()          # a CommitScheduler pushes the library every `every` minutes
    ...
    sync.close()          # at exit, after wb.close() has flushed: one last push, then stop
    storage("library").warning   # a bilingual Msg when the images would vanish, else None

What is pushed (SYNCED; a restored copy opens and passes `verify`):

    store.json  journal.log  features_library.pth  store/<column>.<G>.*  images/**  staging/*  review.json

(review.json: the images waiting for the teacher, core/safety/review.py; restored first, so a held
image never comes back without its hold.)

G is the generation store.json names; older generations, the ANN index files (store/index.*),
thumbs/ (derived, remade on demand), .lock, temp files (.*.tmp) and a fallback model's
offline-mini/ library are never pushed.

Consistency: the library writes only while holding its inter-process lock (flock on
`<library>/.lock`: every add, remove, compaction and flush). A push takes that same lock for
as long as it takes to copy the files above into a mirror folder (`<library>/.hub-sync/`:
hard links for files that are never changed in place: images, columns, the atomically
replaced features_library.pth; real copies of store.json and the appended journal.log), so
the mirror is one instant of the library: store.json, its generation's columns and a journal
of whole records, with every image a row names. The upload then reads the mirror, never the
live library, and the library's writers wait only for the copy, never for the network. The
mirror is written only under the scheduler's `lock`. Files gone from the library (a removed
image, a compacted generation) are deleted from the repo in the same commit, so every commit
made here is a library that opens. Deleted images stay in the dataset's git history until
it is squashed (HfApi.super_squash_history).

Whose library: a library is known by its store.json's `created` time (core/hosting/sync_state.py:
the same in every copy and restore, new in every new library). Before the first push of each
run the repo's store.json is read: a repo that holds another library is never pushed to (a
push would replace the class's library with, say, the sample images of a machine that could
not restore it); `problem` says so and how to go on, and the hold is kept in
`<library>/.hub-sync.json` over restarts until a check finds no other library. A push only
ever deletes repo files that this folder's sync pushed or restored itself (listed in that
same file), never files it merely found in the repo. A repo that is public is not pushed to
unless `allow_public` (--sync-public) says so: `private=True` only applies to a repo created here.

One writer per repo: every commit names its parent (`parent_commit`: the commit this folder last
pushed or restored, kept in `.hub-sync.json`), so a second copy of the same library (a copied
folder, a second machine restored from the repo) cannot replace what the other pushed: the Hub
refuses the commit (412), and the copy is held (HOLD_WRITER) with a `problem` that says so. A
commit whose answer was lost is recognised by a marker in its description (`pending`).

Restore: only when the local library holds no image (no library at all, or one with no live
row: e.g. a start whose restore failed), or when a restore was cut short and the folder still has
no store.json or has the repo's (a library made there since, e.g. after a failed retry, is kept
and checked like any other, never moved aside). It is downloaded
into `<library>/.hub-restore/`, checked (store.json present), then moved into place,
store.json last; images already there are kept (same name, same content), and the empty
library's own store.json, journal, snapshot and columns are moved aside into
`<library>/.hub-restore-replaced/<time>/`. Nothing here ever deletes a local file. A library
whose rows cannot be counted (a version-1 library, a lost store.json) is kept as it is.

Failures (no token, repo missing or not writable, no network) never raise: they are logged
and kept as `problem`, a bilingual `Msg` the app shows. A restore that failed stops pushes for
this run and keeps a hold on them (`paused`: the app adds no sample images either), so the
copy on the Hub is never overwritten by a library that started empty. So does a repo not found
while there is no token: a private repo looks missing then, and is not taken for a new one.

Exit: CommitScheduler registers its own atexit push; it is unregistered here, because it
would run before the library's flush (atexit runs the last registered first) and `close`
pushes instead: demo.py registers `close` before `wb.close`, so at exit the library is
flushed, then pushed here in the calling thread (the scheduler's executor is shut down by
then: a push handed to it would never run).
"""
from __future__ import annotations

import atexit
import fcntl
import fnmatch
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, CommitScheduler, HfApi, get_token, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from ..library.disk import JOURNAL_NAME, MANIFEST_NAME, SNAPSHOT_NAME, STORE_DIR
from ..safety.review import REVIEW_NAME
from ..messages import Msg
from ..settings import persistent_root
from .sync_state import (HOLD_CONFLICT, HOLD_RESTORE, HOLD_WRITER, STATE_NAME, SyncState, holds_rows, identity,
                         library_files, stat)

__all__ = ["HubSync", "Storage", "storage", "active", "SYNCED", "SYNC_ENV", "EVERY_ENV", "PUBLIC_ENV", "DEFAULT_EVERY",
           "library_files"]

log = logging.getLogger(__name__)

SYNC_ENV = "CLIP_WB_SYNC_TO_HUB"        # the dataset repo, when --sync-to-hub is not given
EVERY_ENV = "CLIP_WB_SYNC_EVERY"        # minutes between pushes
PUBLIC_ENV = "CLIP_WB_SYNC_PUBLIC"      # 1: pushing to a public dataset is meant (--sync-public)
DEFAULT_EVERY = 5.0
SYNCED = [MANIFEST_NAME, JOURNAL_NAME, SNAPSHOT_NAME, f"{STORE_DIR}/*", "images/*", "staging/*", REVIEW_NAME]
MIRROR_DIR = ".hub-sync"
RESTORE_DIR = ".hub-restore"
REPLACED_DIR = ".hub-restore-replaced"
_COPIED = {MANIFEST_NAME, JOURNAL_NAME, REVIEW_NAME}          # changed in place or tiny: copied, not linked
# the review queue first (a held image is never restored without its hold), store.json last
_MOVE_ORDER = (REVIEW_NAME, "images", "staging", STORE_DIR, JOURNAL_NAME, SNAPSHOT_NAME, MANIFEST_NAME)

_active: dict[Path, "HubSync"] = {}
_active_lock = threading.Lock()


def _reason(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [""])[0].strip()
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _synced(rel: str) -> bool:
    return any(fnmatch.fnmatch(rel, pattern) for pattern in SYNCED)


def _when(created: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(created)) if created is not None else "?"


class _LibraryScheduler(CommitScheduler):
    """A CommitScheduler whose push is one consistent state of a library (see the module docstring)."""

    def __init__(self, owner: "HubSync", **kwargs):
        self.owner = owner          # set before super().__init__: its thread pushes at once
        self.remote: set[str] | None = None   # the repo's synced files, listed (and checked) at a run's first push
        super().__init__(**kwargs)

    def push_to_hub(self):
        owner = self.owner
        try:
            with self.lock:
                files = owner.snapshot(self.folder_path)
                if MANIFEST_NAME not in files:   # no library here (yet): nothing that would open
                    return None
                if owner.state.hold == HOLD_WRITER:   # another copy writes to the repo: never pushed over
                    owner._say(owner._other_writer())
                    return None
                if self.remote is None:
                    if owner.state.pending is not None:   # a commit's answer was lost: did it land?
                        owner._settle_pending(self.api, self.revision)
                    listing = set(self.api.list_repo_files(self.repo_id, repo_type=self.repo_type,
                                                           revision=self.revision))
                    if not owner._check_repo(self.api, listing, files[MANIFEST_NAME], self.revision):
                        return None
                    self.remote = {f for f in listing if _synced(f)}
                sent = owner.state.sent
                stats = {rel: stat(p) for rel, p in files.items()}
                adds = [rel for rel in files if sent.get(rel) != stats[rel] or rel not in self.remote]
                gone = sorted(rel for rel in self.remote if rel in sent and rel not in files)   # ours only
                if not adds and not gone:
                    owner._pushed(None)
                    return None
                if not owner._may_publish(self.api):
                    return None
                operations = ([CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(files[rel])) for rel in adds]
                              + [CommitOperationDelete(path_in_repo=rel) for rel in gone])
                images = sum(rel.startswith("images/") for rel in files)
                owner.state.pending = uuid.uuid4().hex   # found in the head's message if the answer is lost
                owner.state.save()
                try:
                    info = self.api.create_commit(repo_id=self.repo_id, repo_type=self.repo_type,
                                                  operations=operations, revision=self.revision,
                                                  commit_message=f"CLIP Workbench library: {images} images",
                                                  commit_description=f"push {owner.state.pending}",
                                                  parent_commit=owner.state.head)
                except HfHubHTTPError as e:
                    if getattr(e.response, "status_code", None) != 412:
                        raise
                    # The repo's head is not the commit this folder last pushed or restored: another copy
                    # of this library pushed since. Overwriting it would drop that copy's images.
                    owner.state.hold, owner.state.pending = HOLD_WRITER, None
                    owner.state.save()
                    owner._say(owner._other_writer())
                    self.remote = None
                    return None
                owner.state.head, owner.state.pending = getattr(info, "oid", None), None
                for rel in adds:
                    sent[rel] = stats[rel]
                    self.remote.add(rel)
                for rel in gone:
                    self.remote.discard(rel)
                for rel in [rel for rel in sent if rel not in files and rel not in self.remote]:
                    del sent[rel]
                owner.state.save()
            log.info("library pushed to dataset %s: %d file(s) up, %d deleted", self.repo_id, len(adds), len(gone))
            owner._pushed(None)
            return info
        except Exception as e:   # noqa: BLE001  network, auth, a full disk: said in the app, retried next time
            # The commit may have been applied with its answer lost: the next push lists the repo again, so
            # it never deletes a file the repo no longer has (the Hub refuses that, and every push would fail).
            self.remote = None
            owner._pushed(e)
            return None


class HubSync:
    """Back a library folder up to a Hugging Face dataset repo and restore it from there.
    Never raises for hub or network trouble: `problem` (a bilingual Msg, or None) says what went wrong."""

    def __init__(self, root: str | os.PathLike, repo_id: str, every: float = DEFAULT_EVERY, token: str | None = None,
                 private: bool = True, allow_public: bool = False):
        """private: a repo created here is private (a class's photos); an existing repo keeps its setting,
        and is pushed to only while it is private, unless allow_public."""
        self.root = Path(root)
        self.repo_id = repo_id.strip()
        self.every = float(every)
        self.token = token or get_token()
        self.private = private
        self.allow_public = allow_public
        self.state = SyncState.load(self.root / STATE_NAME, self.repo_id)
        self.problem: Msg | None = {HOLD_CONFLICT: self._conflict, HOLD_WRITER: self._other_writer}.get(
            self.state.hold, lambda: None)()
        self.scheduler: _LibraryScheduler | None = None
        self.pushes = 0           # successful pushes (tests, logs)
        self._restore_failed = False
        self._closed = False
        with _active_lock:
            _active[self.root.resolve()] = self

    @property
    def paused(self) -> bool:
        """Pushes wait until the repo has been checked (a restore failed, now or at an earlier start, or the
        repo holds another library): the app adds no sample images meanwhile."""
        return self._restore_failed or self.state.hold is not None

    # ------------------------------------------------------------------ restore

    def restore(self) -> int:
        """Fill the library from the repo when it holds no image (or a restore was cut short). Returns the
        number of images restored (0: nothing to do, a new repo, or a failure; see `problem`)."""
        state = self.state
        if not state.restoring and (rows := holds_rows(self.root)) is not False:
            log.info("library %s %s: kept as it is (not restored from %s)", self.root,
                     "holds images" if rows else "cannot be counted", self.repo_id)
            return 0
        tmp = self.root / RESTORE_DIR
        try:
            shutil.rmtree(tmp, ignore_errors=True)   # a restore interrupted before: only downloaded copies
            tmp.mkdir(parents=True, exist_ok=True)
            head = HfApi(token=self.token).repo_info(self.repo_id, repo_type="dataset").sha
            snapshot_download(self.repo_id, repo_type="dataset", local_dir=str(tmp), token=self.token,
                              allow_patterns=SYNCED, revision=head)
            if not (tmp / MANIFEST_NAME).is_file():
                log.info("dataset %s holds no library yet: starting a new one", self.repo_id)
                return self._settled()
            theirs = identity(tmp / MANIFEST_NAME)
            if state.restoring and (self.root / MANIFEST_NAME).exists() and identity(self.root / MANIFEST_NAME) != theirs:
                # A restore cut short, then a library made here meanwhile (a retry failed, the app went on):
                # not the repo's library, so the usual rules hold (one with images is kept, and checked at push).
                log.info("library %s is not the one a cut-short restore was bringing from %s", self.root, self.repo_id)
                state.restoring = False
                self._save_state()
                if (rows := holds_rows(self.root)) is not False:
                    log.info("library %s %s: kept as it is (not restored from %s)", self.root,
                             "holds images" if rows else "cannot be counted", self.repo_id)
                    return 0
            if not state.restoring and holds_rows(tmp) is False and theirs == identity(self.root / MANIFEST_NAME):
                log.info("dataset %s holds this same library, with no image either: nothing to restore", self.repo_id)
                return self._settled()
            state.restoring = True
            state.save()
            restored = self._move_into_place(tmp)
            state.library, state.sent, state.head = theirs, restored, head
            self._settled()
            images = sum(rel.startswith("images/") for rel in restored)
            log.info("restored the library from dataset %s: %d images", self.repo_id, images)
            return images
        except RepositoryNotFoundError if not self.token else ():
            # Without a token a private repo looks missing: taken for a new one, samples would be seeded and,
            # once HF_TOKEN is set, refused as another library. Hold until a start with a token settles it.
            self._hold_restore(Msg("找不到数据集 {repo}，或者它是私有的而没有提供令牌。读取和备份私有数据集需要一个有读写权限的 "
                                   "Hugging Face 令牌：在 Space 设置中添加 secret HF_TOKEN（或在本机运行 `hf auth login`），"
                                   "然后重启。在此之前图库没有备份，也不会添加示例图片。",
                                   "The dataset {repo} was not found, or it is private and no token was given. Reading and "
                                   "backing up a private dataset needs a Hugging Face token with read/write access: add an "
                                   "HF_TOKEN secret in the Space settings (or run `hf auth login` on this machine), then "
                                   "restart. Until then the library is not backed up and no sample images are added.",
                                   repo=self.repo_id))
            return 0
        except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError):
            log.info("dataset %s does not exist yet: a new library", self.repo_id)
            return self._settled()
        except Exception as e:   # noqa: BLE001  network, auth, disk: the app starts with what it has
            self._hold_restore(Msg("无法从数据集 {repo} 恢复图库（{reason}）。应用使用本地图库启动；为避免覆盖 Hub 上的副本，"
                                   "不会推送，也不会添加示例图片。请检查网络和 HF_TOKEN 后重启 Space：仍然没有图片的图库会在那时恢复。",
                                   "Could not restore the library from the dataset {repo} ({reason}). The app started with the "
                                   "local library; to keep the copy on the Hub from being overwritten, nothing is pushed "
                                   "and no sample images are added. Check the network and HF_TOKEN, then restart the Space: "
                                   "a library that still holds no image is restored then.",
                                   repo=self.repo_id, reason=_reason(e)))
            return 0
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _move_into_place(self, tmp: Path) -> dict[str, tuple[int, int]]:
        """The download in `tmp` becomes the library, store.json last; {rel: stat} of what it brought.
        An image or staged file already here has the same name, so the same content: it is kept. This
        folder's own store.json, journal, snapshot and columns (a library without images, or a restore
        cut short) are moved aside into .hub-restore-replaced/<time>/, never deleted."""
        aside = self.root / REPLACED_DIR / time.strftime("%Y%m%d-%H%M%S")
        for name in (MANIFEST_NAME, JOURNAL_NAME, SNAPSHOT_NAME, STORE_DIR):   # store.json first
            path = self.root / name
            if path.is_file() or (path.is_dir() and any(path.iterdir())):
                aside.mkdir(parents=True, exist_ok=True)
                os.replace(path, aside / name)
        if aside.exists():
            log.info("the library's own files (no image) are kept in %s", aside)
        downloaded = [p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()]
        downloaded = sorted((rel for rel in downloaded if _synced(rel)),
                            key=lambda rel: (_MOVE_ORDER.index(rel.split("/")[0]), rel))
        for rel in downloaded:
            dst = self.root / rel
            if dst.exists():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / rel, dst)
        return {rel: stat(self.root / rel) for rel in downloaded}

    def _settled(self) -> int:
        """The repo holds no library that pushes could overwrite, or this folder now holds it: pushes may go on."""
        state = self.state
        if state.hold is not None or state.restoring:
            state.hold = state.other = None
            state.restoring = False
            self.problem = None
        self._save_state()
        return 0

    def _hold_restore(self, message: Msg) -> None:
        """The repo may hold the class's library and it could not be read: no push this run, none at the next
        start either until a restore or a check settles it; the app adds no sample images meanwhile."""
        self._restore_failed = True
        self.state.hold = HOLD_RESTORE
        self._save_state()
        self._say(message)

    def _save_state(self) -> None:
        try:
            self.state.save()
        except OSError as e:
            log.warning("cannot keep the sync's state in %s: %s", self.state.path, _reason(e))

    # ------------------------------------------------------------------ push

    def start(self) -> bool:
        """Start pushing every `every` minutes (the first push at once). False when it cannot."""
        if self.scheduler is not None or self._restore_failed:
            return self.scheduler is not None
        if not self.token:
            self._say(Msg("要把图库备份到数据集 {repo}，需要一个有写入权限的 Hugging Face 令牌：在 Space 设置中添加 "
                          "secret HF_TOKEN（或在本机运行 `hf auth login`）。图库目前没有备份。",
                          "Backing the library up to the dataset {repo} needs a Hugging Face token with write "
                          "access: add an HF_TOKEN secret in the Space settings (or run `hf auth login` on this "
                          "machine). The library is not backed up for now.", repo=self.repo_id))
            return False
        try:
            self.scheduler = _LibraryScheduler(self, repo_id=self.repo_id, folder_path=self.root / MIRROR_DIR,
                                               every=self.every, repo_type="dataset", private=self.private,
                                               token=self.token, allow_patterns=SYNCED,
                                               hf_api=HfApi(token=self.token))
        except Exception as e:   # noqa: BLE001  create_repo failed: no network, a bad token, a name taken
            self._say(Msg("无法使用数据集 {repo} 备份图库（{reason}）。请检查仓库名和 HF_TOKEN 的写入权限；"
                          "本地图片不受影响。",
                          "Cannot back the library up to the dataset {repo} ({reason}). Check the repo name and "
                          "that HF_TOKEN may write to it; the local images are not affected.",
                          repo=self.repo_id, reason=_reason(e)))
            return False
        atexit.unregister(self.scheduler._push_to_hub)   # it would push before the flush: close() pushes after it
        return True

    def push(self, timeout: float | None = None) -> bool:
        """Push now and wait (the scheduler also does it by itself). True when it worked."""
        if self.scheduler is None:
            return False
        self.scheduler.trigger().result(timeout)
        return self.problem is None

    def close(self) -> None:
        """On exit, after the library's flush: stop the scheduler and push what changed once more, in this
        thread (at exit the scheduler's executor is already shut down). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self.scheduler is not None:
            self.scheduler.stop()             # a push still queued in the executor does nothing
            self.scheduler.push_to_hub()      # waits for one under way (the scheduler's lock); never raises
        with _active_lock:
            if _active.get(self.root.resolve()) is self:
                del _active[self.root.resolve()]

    def snapshot(self, mirror: Path) -> dict[str, Path]:
        """Under the library's lock, make `mirror` an exact copy of the synced files; {rel: mirror path}."""
        mirror.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)   # the lock every library writer holds: no write during the copy
            try:
                files = library_files(self.root)
                for rel, src in files.items():
                    _mirror_file(src, mirror / rel, copy=rel in _COPIED)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        for p in sorted(mirror.rglob("*"), reverse=True):   # what the library no longer has
            rel = p.relative_to(mirror).as_posix()
            if p.is_file() and rel not in files:
                p.unlink()
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        return {rel: mirror / rel for rel in files}

    def _check_repo(self, api: HfApi, listing: set[str], manifest: Path, revision: str | None) -> bool:
        """Before a run's first push (the scheduler's lock held): the repo must hold no library or this one."""
        state, mine = self.state, identity(manifest)
        theirs = mine
        if MANIFEST_NAME in listing:
            with tempfile.TemporaryDirectory() as tmp:
                theirs = identity(Path(api.hf_hub_download(repo_id=self.repo_id, filename=MANIFEST_NAME,
                                                           repo_type="dataset", revision=revision, local_dir=tmp)))
        if theirs != mine:
            state.hold, state.other = HOLD_CONFLICT, theirs
            state.save()
            self._say(self._conflict())
            return False
        if state.hold is not None:
            log.info("dataset %s holds no other library: pushes go on", self.repo_id)
        state.bind(mine)
        state.hold = state.other = None
        state.save()
        return True

    def _settle_pending(self, api: HfApi, revision: str | None) -> None:
        """A commit was sent and its answer lost: if the repo's head is that commit, it is this folder's head."""
        state = self.state
        head = next(iter(api.list_repo_commits(self.repo_id, repo_type="dataset", revision=revision)), None)
        if head is not None and state.pending in f"{head.title}\n{head.message}":
            state.head = head.commit_id
        state.pending = None
        state.save()

    def _other_writer(self) -> Msg:
        return Msg("另一个副本的图库已推送到数据集 {repo}（它的最新提交不是本机上次推送或恢复的那个），因此本机不会推送："
                   "推送会覆盖那个副本添加的图片。每个数据集只能有一个写入者。要继续使用数据集中的图库，请停止本机的应用，"
                   "用一个空的图库文件夹启动，它会从数据集恢复；要备份本机的图库，请改用另一个数据集仓库（--sync-to-hub）。",
                   "Another copy of this library pushed to the dataset {repo} (its head is not the commit this "
                   "machine last pushed or restored), so nothing is pushed from here: a push would overwrite the "
                   "images that copy added. One writer per repo: to go on with the dataset's library, start the "
                   "app with an empty library folder and it is restored; to back this library up, use another "
                   "dataset repo (--sync-to-hub).", repo=self.repo_id)

    def _conflict(self) -> Msg:
        return Msg("数据集 {repo} 中保存的是另一个图库（创建于 {theirs}），不是本机的图库（{root}，创建于 {mine}），"
                   "因此不会推送：推送会替换那个图库。要使用数据集中的图库，请用一个空的图库文件夹启动应用"
                   "（换一个 --library 文件夹，或把 {root} 移到别处），它会从数据集恢复；要备份本机的图库，"
                   "请改用另一个数据集仓库（--sync-to-hub）。",
                   "The dataset {repo} holds another library (created {theirs}) than this one ({root}, created "
                   "{mine}), so nothing is pushed: a push would replace that library. To work with the library in "
                   "the dataset, start the app with an empty library folder (another --library folder, or move "
                   "{root} aside) and it is restored from the dataset; to back this library up, use another "
                   "dataset repo (--sync-to-hub).",
                   repo=self.repo_id, root=str(self.root), theirs=_when(self.state.other),
                   mine=_when(identity(self.root / MANIFEST_NAME)))

    def _may_publish(self, api: HfApi) -> bool:
        """The class's photos go to a private repo only (unless allow_public): checked before every commit."""
        if self.allow_public or api.repo_info(self.repo_id, repo_type="dataset").private is True:
            return True
        self._say(Msg("数据集 {repo} 是公开的：任何人都能下载其中的图片，因此不会推送。请在 Hub 上数据集的 Settings 中"
                      "把它设为私有，或用 --sync-to-hub 换一个私有仓库；"
                      "若确实要备份到公开数据集，请加上 --sync-public（或 {env}=1）启动。",
                      "The dataset {repo} is public: anyone could download the images in it, so nothing is pushed. "
                      "Make it private in the dataset's Settings on the Hub, or use "
                      "another, private repo with --sync-to-hub; to back up to a public dataset on purpose, start "
                      "with --sync-public (or {env}=1).", repo=self.repo_id, env=PUBLIC_ENV))
        return False

    def _pushed(self, error: BaseException | None) -> None:
        if error is None:
            self.pushes += 1
            if self.problem is not None:
                log.info("library backup to %s works again", self.repo_id)
            self.problem = None
            return
        self._say(Msg("图库未能备份到数据集 {repo}（{reason}）。本地图片完好；{every:g} 分钟后会再试。",
                      "The library could not be backed up to the dataset {repo} ({reason}). The local images are "
                      "safe; the next try is in {every:g} minutes.",
                      repo=self.repo_id, reason=_reason(error), every=self.every))

    def _say(self, message: Msg) -> None:
        if message != self.problem:
            log.warning("%s", message)
        self.problem = message


def _mirror_file(src: Path, dst: Path, copy: bool) -> None:
    """dst := src, skipped when already the same; a hard link where the file is never changed in place."""
    st = src.stat()
    try:
        dt = dst.stat()
        if (dt.st_size, dt.st_mtime_ns) == (st.st_size, st.st_mtime_ns) and (copy or dt.st_ino == st.st_ino):
            return
    except FileNotFoundError:
        pass
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    if not copy:
        try:
            os.link(src, tmp)
        except OSError:   # another file system, or links not allowed: a copy
            copy = True
    if copy:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def active(root: str | os.PathLike) -> HubSync | None:
    """The HubSync of the library at `root` (or of the library it lies in, e.g. offline-mini/), if any."""
    path = Path(root).resolve()
    with _active_lock:
        for base, sync in _active.items():
            if path == base or base in path.parents:
                return sync
    return None


# ---------------------------------------------------------------------- where the library lives


@dataclass(frozen=True)
class Storage:
    """Where a library lives and whether it survives a restart (what the app's banner says)."""
    root: Path
    on_space: bool              # running on a Hugging Face Space (SPACE_ID is set)
    persistent: Path | None     # the Space's persistent disk (/data) when one is mounted
    on_persistent: bool         # the library lies on that disk
    sync: HubSync | None        # backed up to a dataset repo (--sync-to-hub)

    @property
    def ephemeral(self) -> bool:
        """On a Space, with nothing that keeps the library over a restart."""
        return self.on_space and not self.on_persistent and self.sync is None

    @property
    def problem(self) -> Msg | None:
        return self.sync.problem if self.sync is not None else None

    @property
    def warning(self) -> Msg | None:
        """What people must be told (both languages), or None."""
        if self.problem is not None:
            return self.problem
        if not self.ephemeral:
            return None
        how = Msg("在 Space 设置（Settings → Persistent storage）中开启持久存储，图库会自动放在 /data/library；"
                  "或用 `--sync-to-hub 用户名/数据集`（或变量 CLIP_WB_SYNC_TO_HUB）把图库定期备份到一个 Hugging Face "
                  "数据集，并在 Space 的 secrets 中添加有写入权限的 HF_TOKEN。",
                  "enable persistent storage in the Space settings (Settings → Persistent storage; the library then "
                  "lives in /data/library), or back it up to a Hugging Face dataset with `--sync-to-hub USER/DATASET` "
                  "(or the variable CLIP_WB_SYNC_TO_HUB) and an HF_TOKEN secret with write access.")
        if self.persistent is not None:
            return Msg("图库（{root}）不在 Space 的持久磁盘（{disk}）上：上传的图片会在 Space 重启时消失。要保留它们，"
                       "去掉 --library / CLIP_WB_LIBRARY 让图库使用 {disk}/library，或者{how}",
                       "The library ({root}) is not on the Space's persistent disk ({disk}): uploaded images "
                       "vanish when the Space restarts. To keep them, drop --library / CLIP_WB_LIBRARY so the "
                       "library lives in {disk}/library, or {how}",
                       root=str(self.root), disk=str(self.persistent), how=how)
        return Msg("此 Space 没有持久存储：上传的图片保存在临时磁盘上，Space 重启时会全部消失。要保留它们，{how}",
                   "This Space has no persistent storage: uploaded images live on its ephemeral disk and vanish "
                   "when the Space restarts. To keep them, {how}", how=how)


def storage(root: str | os.PathLike) -> Storage:
    """Where the library at `root` lives: on a Space, on its persistent disk, backed up to the Hub."""
    path = Path(root).resolve()
    disk = persistent_root()
    disk = disk.resolve() if disk is not None else None
    on_disk = disk is not None and (path == disk or disk in path.parents)
    return Storage(path, bool(os.environ.get("SPACE_ID")), disk, on_disk, active(path))
