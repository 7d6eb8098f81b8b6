"""Keeping a library beyond the life of its disk: a Hugging Face dataset repo as its backup, and
what the app should say about where the library lives (a Space's ephemeral disk loses it).

    sync = HubSync("library", "me/class-library")   # --sync-to-hub me/class-library
    sync.restore()        # before the library opens: an empty/missing library is downloaded
    wb = build_workbench(..., "library")
    sync.start()          # a CommitScheduler pushes the library every `every` minutes
    ...
    sync.close()          # on exit: one last push, then stop
    storage("library").warning   # a bilingual Msg when the images would vanish, else None

What is pushed (SYNCED; a restored copy opens and passes `verify`):

    store.json  journal.log  features_library.pth  store/<column>.<G>.*  images/**  staging/*

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
image, a compacted generation) are deleted from the repo in the same commit, so the repo's
head is always a library that opens; older states stay in the dataset's history.

Restore: only when the local library is empty or missing (no store.json, journal.log,
features_library.pth, and no stored file): it is downloaded into `<library>/.hub-restore/`,
checked (store.json present), then moved into place, store.json last. A local library that
holds anything is never replaced, and nothing here ever deletes a local image.

Failures (no token, repo missing or not writable, no network) never raise: they are logged
and kept as `problem`, a bilingual `Msg` the app shows. A restore that failed stops pushes for
this run, so the copy on the Hub (probably the class's images) is never overwritten by a
library that started empty.
"""
from __future__ import annotations

import fcntl
import fnmatch
import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, CommitScheduler, HfApi, get_token, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

from ..messages import Msg
from ..settings import persistent_root
from .columns import COLUMN_FILES
from .store import JOURNAL_NAME, MANIFEST_NAME, SNAPSHOT_NAME, STORE_DIR

__all__ = ["HubSync", "Storage", "storage", "active", "SYNCED", "SYNC_ENV", "EVERY_ENV", "DEFAULT_EVERY"]

log = logging.getLogger(__name__)

SYNC_ENV = "CLIP_WB_SYNC_TO_HUB"        # the dataset repo, when --sync-to-hub is not given
EVERY_ENV = "CLIP_WB_SYNC_EVERY"        # minutes between pushes
DEFAULT_EVERY = 5.0
SYNCED = [MANIFEST_NAME, JOURNAL_NAME, SNAPSHOT_NAME, f"{STORE_DIR}/*", "images/*", "staging/*"]
MIRROR_DIR = ".hub-sync"
RESTORE_DIR = ".hub-restore"
_COPIED = {MANIFEST_NAME, JOURNAL_NAME}                       # changed in place or tiny: copied, not linked
_MOVE_ORDER = ("images", "staging", STORE_DIR, JOURNAL_NAME, SNAPSHOT_NAME, MANIFEST_NAME)   # store.json last
_COLUMN_STEMS = {name.partition(".")[0] for name in COLUMN_FILES}

_active: dict[Path, "HubSync"] = {}
_active_lock = threading.Lock()


def _reason(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [""])[0].strip()
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _synced(rel: str) -> bool:
    return any(fnmatch.fnmatch(rel, pattern) for pattern in SYNCED)


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


def _holds_library(root: Path) -> bool:
    """Anything a restore could overwrite: a manifest, journal, snapshot, or any stored file."""
    if any((root / name).exists() for name in (MANIFEST_NAME, JOURNAL_NAME, SNAPSHOT_NAME)):
        return True
    return any(p.is_file() for sub in ("images", "staging", STORE_DIR) for p in (root / sub).rglob("*"))


class _LibraryScheduler(CommitScheduler):
    """A CommitScheduler whose push is one consistent state of a library (see the module docstring)."""

    def __init__(self, owner: "HubSync", **kwargs):
        self.owner = owner          # set before super().__init__: its thread pushes at once
        self.sent: dict[str, tuple[int, int]] = dict(owner.restored_files)   # rel -> (size, mtime_ns) on the Hub
        self.remote: set[str] | None = set(owner.restored_files) if owner.restored_files else None
        super().__init__(**kwargs)

    def push_to_hub(self):
        owner = self.owner
        try:
            with self.lock:
                files = owner.snapshot(self.folder_path)
                if self.remote is None:   # what the repo holds: files gone from the library are deleted there
                    self.remote = {f for f in self.api.list_repo_files(self.repo_id, repo_type=self.repo_type,
                                                                      revision=self.revision) if _synced(f)}
                stats = {rel: _stat(p) for rel, p in files.items()}
                adds = [rel for rel in files if self.sent.get(rel) != stats[rel] or rel not in self.remote]
                gone = sorted(rel for rel in self.remote if rel not in files)
                if not adds and not gone:
                    owner._pushed(None)
                    return None
                operations = ([CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(files[rel])) for rel in adds]
                              + [CommitOperationDelete(path_in_repo=rel) for rel in gone])
                images = sum(rel.startswith("images/") for rel in files)
                info = self.api.create_commit(repo_id=self.repo_id, repo_type=self.repo_type, operations=operations,
                                              commit_message=f"CLIP Workbench library: {images} images",
                                              revision=self.revision)
                for rel in adds:
                    self.sent[rel] = stats[rel]
                    self.remote.add(rel)
                for rel in gone:
                    self.sent.pop(rel, None)
                    self.remote.discard(rel)
            log.info("library pushed to dataset %s: %d file(s) up, %d deleted", self.repo_id, len(adds), len(gone))
            owner._pushed(None)
            return info
        except Exception as e:   # noqa: BLE001  network, auth, a full disk: said in the app, retried next time
            owner._pushed(e)
            return None


class HubSync:
    """Back a library folder up to a Hugging Face dataset repo and restore it from there.
    Never raises for hub or network trouble: `problem` (a bilingual Msg, or None) says what went wrong."""

    def __init__(self, root: str | os.PathLike, repo_id: str, every: float = DEFAULT_EVERY, token: str | None = None,
                 private: bool = True):
        """private: a repo created here is private (a class's photos); an existing repo keeps its setting."""
        self.root = Path(root)
        self.repo_id = repo_id.strip()
        self.every = float(every)
        self.token = token or get_token()
        self.private = private
        self.problem: Msg | None = None
        self.restored_files: dict[str, tuple[int, int]] = {}   # what restore() brought (already on the Hub)
        self.scheduler: _LibraryScheduler | None = None
        self.paused = False       # a restore failed: pushing could overwrite the copy on the Hub
        self.pushes = 0           # successful pushes (tests, logs)
        self._closed = False
        with _active_lock:
            _active[self.root.resolve()] = self

    # ------------------------------------------------------------------ restore

    def restore(self) -> int:
        """Download the library from the repo when the local one is empty or missing. Returns the
        number of images restored (0: nothing to do, a new repo, or a failure; see `problem`)."""
        if _holds_library(self.root):
            log.info("library %s is not empty: kept as it is (not restored from %s)", self.root, self.repo_id)
            return 0
        tmp = self.root / RESTORE_DIR
        try:
            shutil.rmtree(tmp, ignore_errors=True)   # a restore interrupted before: only downloaded copies
            tmp.mkdir(parents=True, exist_ok=True)
            snapshot_download(self.repo_id, repo_type="dataset", local_dir=str(tmp), token=self.token,
                              allow_patterns=SYNCED)
            if not (tmp / MANIFEST_NAME).is_file():
                log.info("dataset %s holds no library yet: starting a new one", self.repo_id)
                return 0
            restored = {p.relative_to(tmp).as_posix() for p in tmp.rglob("*")
                        if p.is_file() and not p.relative_to(tmp).as_posix().startswith(".cache/")}
            for name in _MOVE_ORDER:
                src, dst = tmp / name, self.root / name
                if not src.exists():
                    continue
                if dst.is_dir():   # an empty folder (checked above: no stored file anywhere)
                    shutil.rmtree(dst)
                os.replace(src, dst)
            self.restored_files = {rel: _stat(self.root / rel) for rel in restored if (self.root / rel).is_file()}
            images = sum(rel.startswith("images/") for rel in self.restored_files)
            log.info("restored the library from dataset %s: %d images", self.repo_id, images)
            return images
        except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError):
            log.info("dataset %s does not exist yet (or is private and no token was given): a new library", self.repo_id)
            return 0
        except Exception as e:   # noqa: BLE001  network, auth, disk: the app starts with what it has
            self.paused = True
            self._say(Msg("无法从数据集 {repo} 恢复图库（{reason}）。应用使用本地图库启动；为避免覆盖 Hub 上的副本，"
                          "本次运行不会推送。请检查网络和 HF_TOKEN 后重启 Space。",
                          "Could not restore the library from the dataset {repo} ({reason}). The app started with the "
                          "local library; to keep the copy on the Hub from being overwritten, nothing is pushed "
                          "during this run. Check the network and HF_TOKEN, then restart the Space.",
                          repo=self.repo_id, reason=_reason(e)))
            return 0
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------------ push

    def start(self) -> bool:
        """Start pushing every `every` minutes (the first push at once). False when it cannot."""
        if self.scheduler is not None or self.paused:
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
        return True

    def push(self, timeout: float | None = None) -> bool:
        """Push now and wait (the scheduler also does it by itself). True when it worked."""
        if self.scheduler is None:
            return False
        self.scheduler.trigger().result(timeout)
        return self.problem is None

    def close(self, timeout: float | None = 120) -> None:
        """On exit: one last push of what changed, then stop the scheduler (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        if self.scheduler is not None:
            try:
                self.push(timeout)
            except Exception as e:   # noqa: BLE001  a timeout at exit: the last periodic push stands
                log.warning("last push of the library to %s did not finish: %s", self.repo_id, _reason(e))
            self.scheduler.stop()
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
        self.problem = message
        log.warning("%s", message)


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
