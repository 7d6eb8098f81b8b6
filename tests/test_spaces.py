"""Running on a Hugging Face Space (issue "The first five minutes", item 7): the library and the
model cache on the persistent disk when there is one, an honest bilingual warning when there is
not, --sync-to-hub backing the library up to a dataset repo (the hub stood in for by a local
folder: nothing here touches the network), and the model calls under spaces.GPU on ZeroGPU."""
from __future__ import annotations

import fnmatch
import functools
import hashlib
import pickle
import shutil
import sys
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

from core.hosting import sync as hubsync
from core.library.ingest import Upload, open_library
from core.hosting.sync import HubSync, storage
from core.messages import Msg
from core.settings import PROJECT_ROOT, default_paths, persistent_root
from core_fixtures import distinct_pngs

REPO = "teacher/class-library"


# ---------------------------------------------------------------------- where the library lives

@pytest.fixture
def space(monkeypatch, tmp_path):
    """A Space (SPACE_ID set) whose persistent disk would be tmp_path/data; no explicit paths."""
    monkeypatch.setenv("SPACE_ID", "teacher/clip-workbench")
    monkeypatch.setenv("CLIP_WB_PERSISTENT_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("CLIP_WB_LIBRARY", raising=False)
    monkeypatch.delenv("CLIP_WB_CACHE", raising=False)
    return tmp_path / "data"


def test_a_space_with_a_persistent_disk_keeps_library_and_cache_there(space):
    space.mkdir()
    assert persistent_root() == space
    assert default_paths() == type(default_paths())(library=space / "library", cache=space / "cache")


def test_without_the_disk_or_off_a_space_the_usual_defaults(space, monkeypatch):
    assert persistent_root() is None                         # SPACE_ID set, nothing mounted at the root
    assert default_paths().library == PROJECT_ROOT / "library"
    assert default_paths().cache == Path.home() / ".cache" / "clip-workbench"
    space.mkdir()
    monkeypatch.delenv("SPACE_ID")                            # a /data folder on a laptop is not a Space's disk
    assert persistent_root() is None and default_paths().library == PROJECT_ROOT / "library"


def test_explicit_paths_still_win_on_a_persistent_space(space, monkeypatch, tmp_path):
    space.mkdir()
    monkeypatch.setenv("CLIP_WB_LIBRARY", str(tmp_path / "mine"))
    monkeypatch.setenv("CLIP_WB_CACHE", str(tmp_path / "weights"))
    assert default_paths().library == tmp_path / "mine" and default_paths().cache == tmp_path / "weights"


def test_the_disk_must_be_a_writable_folder(space):
    space.write_text("not a folder")
    assert persistent_root() is None


def _both(msg: Msg) -> tuple[str, str]:
    assert isinstance(msg, Msg)
    return msg.text("zh"), msg.text("en")


def test_an_ephemeral_space_warns_in_both_languages_how_to_keep_images(space, tmp_path):
    where = storage(tmp_path / "library")
    assert where.on_space and where.ephemeral
    zh, en = _both(where.warning)
    assert "重启" in zh and "消失" in zh and "/data" in zh and "--sync-to-hub" in zh and "HF_TOKEN" in zh
    assert "vanish when the Space restarts" in en and "persistent storage" in en and "/data" in en
    assert "--sync-to-hub" in en and "CLIP_WB_SYNC_TO_HUB" in en and "HF_TOKEN" in en


def test_no_warning_on_the_persistent_disk_or_off_a_space(space, monkeypatch, tmp_path):
    space.mkdir()
    on_disk = storage(default_paths().library)
    assert on_disk.on_persistent and not on_disk.ephemeral and on_disk.warning is None
    elsewhere = storage(tmp_path / "elsewhere")               # --library off the disk: it would be lost
    assert elsewhere.ephemeral and str(space) in elsewhere.warning and "persistent disk" in elsewhere.warning
    monkeypatch.delenv("SPACE_ID")
    assert storage(tmp_path / "elsewhere").warning is None   # a laptop's disk is not ephemeral


@pytest.mark.parametrize("lang, words", [("en", "vanish when the Space restarts"), ("zh", "重启时会全部消失")])
def test_the_banner_shows_the_warning(space, tiny_clip_path, tmp_path, lang, words):
    from core.workbench import build_workbench
    from ui import build_app
    wb = build_workbench(str(tiny_clip_path), tmp_path / "lib", "cpu", offline=True, fallback=False)
    by_id = {getattr(b, "elem_id", None): b for b in build_app(wb, lang=lang).blocks.values()}
    assert words in by_id["storage"].value and "--sync-to-hub" in by_id["storage"].value
    space.mkdir()
    wb2 = build_workbench(str(tiny_clip_path), space / "library", "cpu", offline=True, fallback=False)
    by_id = {getattr(b, "elem_id", None): b for b in build_app(wb2, lang=lang).blocks.values()}
    assert words not in by_id["storage"].value and str(space) in by_id["storage"].value   # "on the persistent disk"


def test_demo_takes_the_repo_from_the_flag_or_the_environment(monkeypatch):
    import demo
    assert demo.parse_args(["--sync-to-hub", REPO, "--sync-every", "2"]).sync_to_hub == REPO
    monkeypatch.setenv("CLIP_WB_SYNC_TO_HUB", "other/lib")
    assert demo.parse_args([]).sync_to_hub == "other/lib"
    monkeypatch.delenv("CLIP_WB_SYNC_TO_HUB")
    assert demo.parse_args([]).sync_to_hub is None


# ---------------------------------------------------------------------- the hub, on the local disk

class FakeHub:
    """Dataset repos in a local folder, spoken to the way HfApi and snapshot_download would be."""

    def __init__(self, root: Path):
        self.root = root
        self.commits: list[list] = []
        self.fail_commit: Exception | None = None
        self.lose_answer: Exception | None = None   # the commit is applied, then this is raised (answer lost)
        self.fail_download: Exception | None = None
        self.public: set[str] = set()      # repos made public on the Hub (create_repo makes private ones)
        self.log: dict[str, list[SimpleNamespace]] = {}   # repo -> its commits, the head last
        self.pool = ThreadPoolExecutor(1)   # HfApi.run_as_future: one job at a time, in order

    def repo(self, repo_id: str) -> Path:
        return self.root / repo_id

    def files(self, repo_id: str = REPO) -> set[str]:
        base = self.repo(repo_id)
        return {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()}

    def api(self, token=None):
        hub = self

        class Api:
            def create_repo(self, repo_id, private=None, repo_type=None, exist_ok=False, **_):
                assert repo_type == "dataset" and private is True
                hub.repo(repo_id).mkdir(parents=True, exist_ok=True)
                (hub.repo(repo_id) / ".gitattributes").touch()
                hub.head(repo_id)
                return SimpleNamespace(repo_id=repo_id)

            def list_repo_files(self, repo_id, repo_type=None, revision=None, **_):
                return sorted(hub.files(repo_id))

            def repo_info(self, repo_id, repo_type=None, **_):
                assert repo_type == "dataset"
                if not hub.repo(repo_id).is_dir():
                    raise RepositoryNotFoundError("404 Repository Not Found",
                                                  response=SimpleNamespace(headers={}, request=None))
                return SimpleNamespace(id=repo_id, private=repo_id not in hub.public, sha=hub.head(repo_id))

            def list_repo_commits(self, repo_id, repo_type=None, revision=None, **_):
                hub.head(repo_id)
                return list(reversed(hub.log[repo_id]))

            def hf_hub_download(self, repo_id, filename, repo_type=None, revision=None, local_dir=None, **_):
                assert repo_type == "dataset"
                if hub.fail_download is not None:
                    raise hub.fail_download
                target = Path(local_dir) / filename
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(hub.repo(repo_id) / filename, target)
                return str(target)

            def create_commit(self, repo_id, operations, commit_message, repo_type=None, revision=None,
                              commit_description=None, parent_commit=None, **_):
                if hub.fail_commit is not None:
                    raise hub.fail_commit
                if parent_commit is not None and parent_commit != hub.head(repo_id):
                    raise HfHubHTTPError("412 Precondition Failed: the parent commit is not the head",
                                         response=SimpleNamespace(status_code=412, headers={}, request=None))
                operations = list(operations)
                for op in operations:
                    target = hub.repo(repo_id) / op.path_in_repo
                    if not isinstance(op, CommitOperationAdd):
                        assert isinstance(op, CommitOperationDelete)
                        if not target.is_file():   # the Hub refuses the whole commit
                            raise EntryNotFoundError(f"404 {op.path_in_repo} not found in {repo_id}")
                for op in operations:
                    target = hub.repo(repo_id) / op.path_in_repo
                    if isinstance(op, CommitOperationAdd):
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with op.as_file() as f:
                            target.write_bytes(f.read())
                    else:
                        target.unlink()
                hub.commits.append(operations)
                oid = hashlib.sha1(f"{repo_id} {len(hub.commits)}".encode()).hexdigest()
                hub.log[repo_id].append(SimpleNamespace(commit_id=oid, title=commit_message,
                                                        message=commit_description or ""))
                if hub.lose_answer is not None:
                    raise hub.lose_answer
                return SimpleNamespace(commit_message=commit_message, oid=oid)

            def run_as_future(self, fn, *args, **kwargs):
                return hub.pool.submit(fn, *args, **kwargs)

        return Api()

    def head(self, repo_id: str) -> str:
        """The repo's head commit (a repo made by hand gets its first one here)."""
        if not self.log.get(repo_id):
            self.log[repo_id] = [SimpleNamespace(commit_id=hashlib.sha1(repo_id.encode()).hexdigest(),
                                                 title="initial commit", message="")]
        return self.log[repo_id][-1].commit_id

    def snapshot_download(self, repo_id, repo_type=None, local_dir=None, token=None, allow_patterns=None, **_):
        assert repo_type == "dataset"
        if self.fail_download is not None:
            raise self.fail_download
        base = self.repo(repo_id)
        if not base.is_dir():
            raise RepositoryNotFoundError("404 Repository Not Found", response=SimpleNamespace(headers={}, request=None))
        for rel in sorted(self.files(repo_id)):
            if allow_patterns is None or any(fnmatch.fnmatch(rel, p) for p in allow_patterns):
                (Path(local_dir) / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(base / rel, Path(local_dir) / rel)
        (Path(local_dir) / ".cache" / "huggingface").mkdir(parents=True, exist_ok=True)   # as the real one does
        return str(local_dir)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    fake = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(hubsync, "HfApi", fake.api)
    monkeypatch.setattr(hubsync, "snapshot_download", fake.snapshot_download)
    syncs: list[HubSync] = []
    monkeypatch.setattr(hubsync.HubSync, "__init__", _tracked(hubsync.HubSync.__init__, syncs))
    yield fake
    for s in syncs:   # never leave a scheduler thread pushing after its test
        s.close()
    fake.pool.shutdown(wait=True)


def _tracked(init, syncs):
    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        init(self, *args, **kwargs)
        syncs.append(self)
    return wrapper


def _workbench(tiny_clip_path, root):
    from core.workbench import build_workbench
    return build_workbench(str(tiny_clip_path), root, "cpu", offline=True, fallback=False)


def _add(wb, n: int, seed: int) -> list[str]:
    report = wb.add([Upload(f"photo{seed}-{i}.png", data) for i, data in enumerate(distinct_pngs(n, seed=seed))])
    assert not report.errors
    return report.added


def _state(wb) -> dict[str, bytes]:
    """id -> stored image bytes: what must come back after a restore."""
    return {e.id: e.path.read_bytes() for e in wb.entries()}


def _hub_copy_opens(hub: FakeHub, encoder, where: Path) -> dict:
    """The repo's head as a library of its own: it must open with the real loader and pass verify."""
    shutil.copytree(hub.repo(REPO), where)
    lib = open_library(where, encoder)
    report = lib.verify(deep=True)
    assert report["healthy"], report
    return {e.id: e.path.read_bytes() for e in lib.entries()}


def test_push_wipe_restore_gives_back_the_same_library(hub, tiny_clip_path, tmp_path):
    root = tmp_path / "library"
    wb = _workbench(tiny_clip_path, root)
    sync = HubSync(root, REPO, token="hf_test")
    assert sync.restore() == 0                                   # no repo yet: a new library
    _add(wb, 5, seed=1)
    assert sync.start()
    gone = _add(wb, 3, seed=2)
    wb.remove(gone[:1])                                          # a removal: its file leaves the repo too
    wb.flush()                                                   # a compaction: a new generation of columns
    _add(wb, 2, seed=3)                                          # ... and journal records after it
    assert sync.push(timeout=30) and sync.problem is None
    before = _state(wb)
    assert len(before) == 9

    files = hub.files()
    assert "store.json" in files and "journal.log" in files and "features_library.pth" in files
    assert not any(f.startswith(("thumbs/", ".hub-sync", ".hub-restore")) or f.endswith(".tmp") or f == ".lock"
                   for f in files)
    gen = __import__("json").loads((hub.repo(REPO) / "store.json").read_text())["generation"]
    assert all(f.split(".")[1] == str(gen) for f in files if f.startswith("store/"))   # only the live generation
    assert sum(f.startswith("images/") for f in files) == 9     # the removed image is gone from the head

    sync.close()
    wb.close()
    shutil.rmtree(root)                                           # the Space restarts: its disk is new

    again = HubSync(root, REPO, token="hf_test")
    assert again.restore() == 9 and again.problem is None
    assert not (root / ".hub-restore").exists()
    wb2 = _workbench(tiny_clip_path, root)
    assert wb2.verify(deep=True)["healthy"]
    assert _state(wb2) == before                                  # same ids, same bytes
    commits = len(hub.commits)
    assert again.start() and again.push(timeout=30)
    assert not any(isinstance(op, CommitOperationAdd) and op.path_in_repo.startswith("images/")
                   for ops in hub.commits[commits:] for op in ops)   # restored images are not sent again


def test_every_push_is_a_library_that_opens_even_while_images_arrive(hub, tiny_clip_path, encoder, tmp_path):
    root = tmp_path / "library"
    wb = _workbench(tiny_clip_path, root)
    sync = HubSync(root, REPO, token="hf_test", every=60)
    assert sync.start()
    stop = threading.Event()

    def writer():
        seed = 10
        while not stop.is_set():
            _add(wb, 2, seed=seed)
            if seed % 3 == 0:
                wb.flush()                                       # compactions swap generations under the push
            seed += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for i in range(5):
            time.sleep(0.05)
            assert sync.push(timeout=60)
            _hub_copy_opens(hub, encoder, tmp_path / f"check{i}")
    finally:
        stop.set()
        thread.join()
    assert sync.push(timeout=60)
    assert _hub_copy_opens(hub, encoder, tmp_path / "final") == _state(wb)


def test_a_failed_push_is_said_and_loses_nothing(hub, tiny_clip_path, tmp_path):
    root = tmp_path / "library"
    wb = _workbench(tiny_clip_path, root)
    _add(wb, 4, seed=1)
    sync = HubSync(root, REPO, token="hf_test")
    assert sync.start() and sync.push(timeout=30)
    hub.fail_commit = ConnectionError("network is unreachable")
    _add(wb, 2, seed=2)
    assert not sync.push(timeout=30)
    zh, en = _both(sync.problem)
    assert "could not be backed up" in en and "network is unreachable" in en and "safe" in en
    assert "备份" in zh and "本地图片完好" in zh
    assert storage(root).warning is sync.problem                 # the banner shows it
    assert len(wb) == 6 and wb.verify(deep=True)["healthy"]      # nothing local was touched
    hub.fail_commit = None
    assert sync.push(timeout=30) and sync.problem is None and storage(root).warning is None


def test_a_commit_whose_answer_was_lost_does_not_break_every_later_push(hub, tiny_clip_path, tmp_path):
    """The Hub applied a commit that removed an image, but its answer was lost: the next push must list
    the repo again instead of deleting that image a second time (the Hub refuses a missing path)."""
    root = tmp_path / "library"
    wb = _workbench(tiny_clip_path, root)
    added = _add(wb, 3, seed=1)
    sync = HubSync(root, REPO, token="hf_test")
    assert sync.start() and sync.push(timeout=30)
    wb.remove(added[:1])
    hub.lose_answer = TimeoutError("read timed out")
    assert not sync.push(timeout=30) and "read timed out" in sync.problem
    assert sum(f.startswith("images/") for f in hub.files()) == 2          # applied all the same
    hub.lose_answer = None
    _add(wb, 1, seed=2)
    assert sync.push(timeout=30) and sync.problem is None
    sync.close()
    wb.close()
    assert {f for f in hub.files() if f.startswith("images/")} == {
        e.path.relative_to(root).as_posix() for e in _workbench(tiny_clip_path, root).entries()}


def test_a_failed_restore_keeps_the_hub_copy_and_starts_without_pushing(hub, tiny_clip_path, tmp_path):
    root = tmp_path / "library"
    wb = _workbench(tiny_clip_path, root)
    _add(wb, 3, seed=1)
    first = HubSync(root, REPO, token="hf_test")
    assert first.start() and first.push(timeout=30)
    first.close()
    wb.close()
    on_hub = hub.files()

    fresh = tmp_path / "restarted"
    hub.fail_download = ConnectionError("Temporary failure in name resolution")
    sync = HubSync(fresh, REPO, token="hf_test")
    assert sync.restore() == 0
    zh, en = _both(sync.problem)
    assert "Could not restore" in en and "nothing is pushed" in en and "无法" in zh
    assert not sync.start()                                       # an empty library must not overwrite the class's
    assert not (fresh / ".hub-restore").exists()
    _add(_workbench(tiny_clip_path, fresh), 1, seed=9)            # the app still works, locally
    assert hub.files() == on_hub


def test_a_library_that_holds_images_is_never_replaced_by_a_restore(hub, tiny_clip_path, tmp_path):
    other = tmp_path / "other"
    wb = _workbench(tiny_clip_path, other)
    _add(wb, 2, seed=5)
    pusher = HubSync(other, REPO, token="hf_test")
    assert pusher.start() and pusher.push(timeout=30)
    pusher.close()

    root = tmp_path / "library"
    local = _workbench(tiny_clip_path, root)
    _add(local, 3, seed=1)
    mine = _state(local)
    assert HubSync(root, REPO, token="hf_test").restore() == 0
    assert _state(_workbench(tiny_clip_path, root)) == mine


def test_no_token_no_push_and_a_message_that_says_how(hub, monkeypatch, tiny_clip_path, tmp_path):
    monkeypatch.setattr(hubsync, "get_token", lambda: None)
    root = tmp_path / "library"
    _workbench(tiny_clip_path, root)
    sync = HubSync(root, REPO)
    assert sync.restore() == 0 and not sync.start()
    zh, en = _both(sync.problem)
    assert "HF_TOKEN" in en and "HF_TOKEN" in zh and "not backed up" in en
    assert not hub.repo(REPO).exists()


def test_without_a_token_a_private_repo_is_not_taken_for_a_new_one(hub, monkeypatch, tiny_clip_path, tmp_path):
    """A private repo looks missing without a token: nothing is seeded or pushed, the page says a token is
    needed, and the start with HF_TOKEN restores the class's library (not refused as another one)."""
    school = _class_library(hub, tiny_clip_path, tmp_path / "school")
    real = hub.snapshot_download

    def anonymous(repo_id, token=None, **kwargs):
        if token is None:   # what the Hub answers for a private repo without a token
            raise RepositoryNotFoundError("401 Repository Not Found", response=SimpleNamespace(headers={}, request=None))
        return real(repo_id, token=token, **kwargs)
    monkeypatch.setattr(hubsync, "snapshot_download", anonymous)
    monkeypatch.setattr(hubsync, "get_token", lambda: None)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    root = tmp_path / "home"
    sync = HubSync(root, REPO)
    assert sync.restore() == 0 and sync.paused and not sync.start()
    zh, en = _both(sync.problem)
    assert "HF_TOKEN" in en and "read/write" in en and "not backed up" in en and "no sample images" in en
    assert "HF_TOKEN" in zh and "读写权限" in zh
    sync.close()

    again = HubSync(root, REPO, token="hf_test")                               # the secret is set: restored
    assert again.paused                                                        # the hold outlived the restart
    assert again.restore() == 5 and not again.paused and again.problem is None
    assert _state(_workbench(tiny_clip_path, root)) == school


def test_a_repo_that_cannot_be_created_is_said(hub, monkeypatch, tiny_clip_path, tmp_path):
    def refuse(self, repo_id, **_):
        raise PermissionError("403 Forbidden: you cannot write to teacher/class-library")
    api = hub.api()
    monkeypatch.setattr(hubsync, "HfApi", lambda token=None: api)
    monkeypatch.setattr(type(api), "create_repo", refuse)
    root = tmp_path / "library"
    _workbench(tiny_clip_path, root)
    sync = HubSync(root, REPO, token="hf_test")
    assert not sync.start()
    assert "403 Forbidden" in sync.problem and "HF_TOKEN" in sync.problem.text("zh")


def test_the_demo_restores_before_the_library_opens_and_pushes_after(hub, monkeypatch, tiny_clip_path, tmp_path):
    import demo
    root = tmp_path / "library"
    wb = _workbench(tiny_clip_path, root)
    _add(wb, 3, seed=1)
    pushed = HubSync(root, REPO, token="hf_test")
    assert pushed.start() and pushed.push(timeout=30)
    pushed.close()
    before = _state(wb)
    wb.close()
    shutil.rmtree(root)

    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr(demo.atexit, "register", lambda fn: fn)   # this test closes what it opened
    args = demo.parse_args(["--library", str(root), "--model", str(tiny_clip_path), "--device", "cpu", "--offline",
                            "--no-seed", "--sync-to-hub", REPO])
    sync = demo.hub_sync(args)
    assert sync is not None and hubsync.active(root) is sync
    assert _state(_workbench(tiny_clip_path, root)) == before


def _class_library(hub, tiny_clip_path, where: Path, n: int = 5) -> dict[str, bytes]:
    """The school machine: a library of n images, pushed to REPO; its state."""
    wb = _workbench(tiny_clip_path, where)
    _add(wb, n, seed=1)
    school = HubSync(where, REPO, token="hf_test")
    assert school.restore() == 0 and school.start() and school.push(timeout=30)
    school.close()
    wb.close()
    return _state(wb)


def _start_demo(monkeypatch, tiny_clip_path, root: Path, *flags: str):
    """demo.py's start (restore, open, seed, start the backup), its atexit handlers kept in `exits`."""
    import demo
    exits: list = []
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr(demo.atexit, "register", exits.append)
    args = demo.parse_args(["--library", str(root), "--model", str(tiny_clip_path), "--device", "cpu", "--offline",
                            "--sync-to-hub", REPO, "--sync-every", "60", *flags])
    return demo.open_workbench(args), hubsync.active(root), exits


def _exit(exits: list) -> None:
    for fn in reversed(exits):   # as atexit does: the last registered first
        fn()


def test_a_failed_restore_seeds_nothing_and_the_next_start_restores(hub, monkeypatch, tiny_clip_path, tmp_path):
    """The home machine starts with the network down: no sample images are added (they would be pushed
    over the class's library), and once the network is back the class's library is restored."""
    school = _class_library(hub, tiny_clip_path, tmp_path / "school")
    on_hub, commits = hub.files(), len(hub.commits)
    root = tmp_path / "home"
    hub.fail_download = ConnectionError("Temporary failure in name resolution")
    wb, sync, exits = _start_demo(monkeypatch, tiny_clip_path, root)          # seeding is on
    assert len(wb) == 0 and sync.paused and "Could not restore" in sync.problem
    assert sync.scheduler is None
    _exit(exits)
    assert hub.files() == on_hub and len(hub.commits) == commits

    hub.fail_download = None                                                   # the network is back
    wb, sync, exits = _start_demo(monkeypatch, tiny_clip_path, root)
    assert _state(wb) == school and not sync.paused and sync.problem is None
    assert sync.push(timeout=30)
    _exit(exits)
    assert {f for f in hub.files() if f.startswith("images/")} == {f for f in on_hub if f.startswith("images/")}
    assert not any(isinstance(op, CommitOperationDelete) and op.path_in_repo.startswith("images/")
                   for ops in hub.commits[commits:] for op in ops)


@pytest.mark.parametrize("how", ["seeded before the fix", "made without --sync-to-hub"])
def test_a_library_that_was_not_restored_never_replaces_the_class_library(hub, tiny_clip_path, tmp_path, how):
    """A local library holding other images (the samples seeded after a failed restore, or a library made
    before --sync-to-hub was used) is not restored, and must not be pushed either: its first push used
    to delete every class image from the repo's head."""
    school = _class_library(hub, tiny_clip_path, tmp_path / "school")
    on_hub, commits = hub.files(), len(hub.commits)
    root = tmp_path / "home"
    if how == "seeded before the fix":
        hub.fail_download = ConnectionError("network is unreachable")
        failed = HubSync(root, REPO, token="hf_test")
        assert failed.restore() == 0 and failed.paused and not failed.start()
        hub.fail_download = None
        failed.close()
    wb = _workbench(tiny_clip_path, root)
    _add(wb, 3, seed=7)                                                       # not the class's images
    mine = _state(wb)

    sync = HubSync(root, REPO, token="hf_test")
    assert sync.restore() == 0                                                # it holds images: kept
    assert sync.start() and not sync.push(timeout=30)
    assert hub.files() == on_hub and len(hub.commits) == commits             # nothing deleted, nothing sent
    zh, en = _both(sync.problem)
    assert "holds another library" in en and "nothing is pushed" in en and "empty library folder" in en
    assert "another dataset repo" in en and str(root) in en
    assert "另一个图库" in zh and "不会推送" in zh and "空的图库文件夹" in zh
    assert storage(root).warning is sync.problem and sync.paused
    _add(wb, 1, seed=8)
    assert not sync.push(timeout=30) and hub.files() == on_hub               # checked again: still refused
    sync.close()
    wb.close()
    assert hub.files() == on_hub and _state(_workbench(tiny_clip_path, root)) == {**mine, **_state(wb)}

    again = HubSync(root, REPO, token="hf_test")                             # the hold outlives a restart
    assert again.paused and "holds another library" in again.problem
    assert again.restore() == 0 and again.start() and not again.push(timeout=30)
    assert hub.files() == on_hub
    again.close()

    elsewhere = HubSync(root, "teacher/home-library", token="hf_test")      # the way out: another repo
    assert not elsewhere.paused and elsewhere.start() and elsewhere.push(timeout=30)
    assert sum(f.startswith("images/") for f in hub.files("teacher/home-library")) == 4
    elsewhere.close()

    fresh = tmp_path / "fresh"                                                 # or an empty library folder
    assert HubSync(fresh, REPO, token="hf_test").restore() == 5
    assert _state(_workbench(tiny_clip_path, fresh)) == school


def test_a_push_deletes_only_what_this_library_put_in_the_repo(hub, tiny_clip_path, tmp_path):
    """Files found in the repo are never deleted; files this library pushed are, when it drops them,
    also after a restart (what was pushed is kept in .hub-sync.json)."""
    stranger = hub.repo(REPO) / "images" / "zz" / "uploaded-by-hand.jpg"
    stranger.parent.mkdir(parents=True)
    stranger.write_bytes(b"not ours")
    root = tmp_path / "library"
    wb = _workbench(tiny_clip_path, root)
    added = _add(wb, 3, seed=1)
    sync = HubSync(root, REPO, token="hf_test")
    assert sync.start() and sync.push(timeout=30)
    assert "images/zz/uploaded-by-hand.jpg" in hub.files()
    sync.close()
    first = {f for f in hub.files() if f.startswith("images/")}
    assert len(first) == 4

    wb.remove(added[:1])                                                      # while no sync runs
    again = HubSync(root, REPO, token="hf_test")
    assert again.start() and again.push(timeout=30)
    images = {f for f in hub.files() if f.startswith("images/")}
    assert len(images) == 3 and "images/zz/uploaded-by-hand.jpg" in images   # ours deleted, the stranger kept
    assert not any(isinstance(op, CommitOperationAdd) and op.path_in_repo.startswith("images/")
                   for op in hub.commits[-1])                                 # nothing sent twice after the restart
    again.close()
    wb.close()


@contextmanager
def _power_cut(monkeypatch):
    """The power fails as a restore moves features_library.pth into place: images are in, store.json is not."""
    real = hubsync.os.replace

    def cut(src, dst):
        if Path(dst).name == "features_library.pth":
            raise OSError("power cut")
        return real(src, dst)
    monkeypatch.setattr(hubsync.os, "replace", cut)
    try:
        yield
    finally:
        monkeypatch.setattr(hubsync.os, "replace", real)


def test_a_restore_cut_short_is_finished_at_the_next_start(hub, monkeypatch, tiny_clip_path, tmp_path):
    school = _class_library(hub, tiny_clip_path, tmp_path / "school")
    root = tmp_path / "home"
    with _power_cut(monkeypatch):
        cut = HubSync(root, REPO, token="hf_test")
        assert cut.restore() == 0 and cut.paused
    assert any((root / "images").rglob("*.png")) and not (root / "store.json").exists()   # images, no store.json
    cut.close()

    again = HubSync(root, REPO, token="hf_test")
    assert again.restore() == 5 and not again.paused and again.problem is None
    wb = _workbench(tiny_clip_path, root)
    assert wb.verify(deep=True)["healthy"] and _state(wb) == school
    assert again.start() and again.push(timeout=30)
    assert {f for f in hub.files() if f.startswith("images/")} == {f"{e.path.relative_to(root).as_posix()}"
                                                                   for e in wb.entries()}
    wb.close()


def test_rows_added_after_a_cut_short_restore_and_a_failed_retry_are_kept(hub, monkeypatch, tiny_clip_path, tmp_path):
    """Restore cut short, the retry fails (the network), the app is used: its rows are not thrown away
    by the next start's restore; the repo's library is not pushed over either (another library)."""
    _class_library(hub, tiny_clip_path, tmp_path / "school")
    on_hub = hub.files()
    root = tmp_path / "home"
    with _power_cut(monkeypatch):
        HubSync(root, REPO, token="hf_test").restore()
    hub.fail_download = ConnectionError("network is unreachable")
    retry = HubSync(root, REPO, token="hf_test")
    assert retry.restore() == 0 and retry.paused and retry.state.restoring
    hub.fail_download = None
    wb = _workbench(tiny_clip_path, root)
    _add(wb, 2, seed=7)
    mine = _state(wb)
    wb.close()

    again = HubSync(root, REPO, token="hf_test")
    assert again.restore() == 0 and not again.state.restoring
    assert not (root / hubsync.REPLACED_DIR).exists()                           # nothing moved aside
    assert _state(_workbench(tiny_clip_path, root)) == mine
    assert again.start() and not again.push(timeout=30) and "holds another library" in again.problem
    assert hub.files() == on_hub


def test_two_copies_of_one_library_do_not_overwrite_each_other(hub, tiny_clip_path, tmp_path):
    """Two folders restored from one repo (same library, same `created`): the first to push wins, the
    other is held (one writer per repo) instead of replacing the repo's head with its own images."""
    _class_library(hub, tiny_clip_path, tmp_path / "school")
    a, b = tmp_path / "a", tmp_path / "b"
    sync_a, sync_b = HubSync(a, REPO, token="hf_test"), HubSync(b, REPO, token="hf_test")
    assert sync_a.restore() == 5 and sync_b.restore() == 5
    wb_a, wb_b = _workbench(tiny_clip_path, a), _workbench(tiny_clip_path, b)
    _add(wb_a, 2, seed=3)
    assert sync_a.start() and sync_a.push(timeout=30)
    after_a, commits = hub.files(), len(hub.commits)
    _add(wb_b, 1, seed=4)
    assert sync_b.start() and not sync_b.push(timeout=30)
    zh, en = _both(sync_b.problem)
    assert "Another copy" in en and "One writer per repo" in en and "empty library folder" in en
    assert "另一个副本" in zh and "一个写入者" in zh
    assert sync_b.paused and hub.files() == after_a and len(hub.commits) == commits
    _add(wb_a, 1, seed=5)
    assert sync_a.push(timeout=30)                                             # the first copy goes on
    sync_b.close()
    wb_b.close()
    again = HubSync(b, REPO, token="hf_test")                                  # held over a restart too
    assert again.paused and "Another copy" in again.problem
    assert again.restore() == 0 and again.start() and not again.push(timeout=30)
    assert sum(f.startswith("images/") for f in hub.files()) == 8
    again.close()
    sync_a.close()
    wb_a.close()


def test_a_library_without_a_live_image_is_restored_and_keeps_its_files(hub, tiny_clip_path, tmp_path):
    school = _class_library(hub, tiny_clip_path, tmp_path / "school")
    root = tmp_path / "home"
    wb = _workbench(tiny_clip_path, root)
    wb.remove(_add(wb, 2, seed=9))                                            # every row removed: no live image
    orphan = root / "images" / "zz" / "kept.png"                              # a file no row names
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"mine")
    wb.close()
    assert hubsync.holds_rows(root) is False
    assert HubSync(root, REPO, token="hf_test").restore() == 5
    assert orphan.read_bytes() == b"mine"                                      # nothing local is deleted
    assert list((root / hubsync.REPLACED_DIR).glob("*/store.json"))           # the empty library, moved aside
    assert _state(_workbench(tiny_clip_path, root)) == school


def test_a_public_dataset_gets_no_images_unless_that_is_meant(hub, monkeypatch, tiny_clip_path, tmp_path):
    import demo
    hub.public.add(REPO)
    hub.repo(REPO).mkdir(parents=True)                                       # it exists, made public on the Hub
    root = tmp_path / "library"
    wb = _workbench(tiny_clip_path, root)
    _add(wb, 2, seed=1)
    sync = HubSync(root, REPO, token="hf_test")
    assert sync.start() and not sync.push(timeout=30)
    assert hub.files() == {".gitattributes"} and not hub.commits
    zh, en = _both(sync.problem)
    assert "is public" in en and "private" in en and "--sync-public" in en and "CLIP_WB_SYNC_PUBLIC=1" in en
    assert "公开" in zh and "私有" in zh and "--sync-public" in zh
    hub.public.discard(REPO)                                                 # made private on the Hub: it goes on
    assert sync.push(timeout=30) and sync.problem is None
    sync.close()

    hub.public.add(REPO)
    _add(wb, 1, seed=2)
    meant = HubSync(root, REPO, token="hf_test", allow_public=True)
    assert meant.start() and meant.push(timeout=30)
    assert sum(f.startswith("images/") for f in hub.files()) == 3
    meant.close()
    wb.close()
    assert demo.parse_args(["--sync-to-hub", REPO]).sync_public is False
    assert demo.parse_args(["--sync-to-hub", REPO, "--sync-public"]).sync_public is True
    monkeypatch.setenv("CLIP_WB_SYNC_PUBLIC", "1")
    assert demo.parse_args(["--sync-to-hub", REPO]).sync_public is True


EXIT_SCRIPT = """
import os, sys
from pathlib import Path
sys.path[:0] = [{root!r}, {tests!r}]
from test_spaces import FakeHub, REPO, _add
from core.hosting import sync as hubsync
hub = FakeHub(Path({hub!r}))
hubsync.HfApi, hubsync.snapshot_download = hub.api, hub.snapshot_download
os.environ["HF_TOKEN"] = "hf_test"
import demo
args = demo.parse_args(["--library", {library!r}, "--model", {model!r}, "--device", "cpu", "--offline", "--no-seed",
                        "--sync-to-hub", REPO, "--sync-every", "60"])
wb = demo.open_workbench(args)
assert hubsync.active({library!r}).push(timeout=60)
_add(wb, 2, seed=4)          # then a normal exit: atexit flushes the library, then pushes it
print("added", flush=True)
"""


def test_at_exit_the_flushed_library_is_pushed_without_a_warning(hub, tiny_clip_path, tmp_path):
    """The real atexit order, in a process of its own: demo.py registers sync.close before wb.close, so
    the flush runs first and the last push sends its result; the scheduler's own atexit push (which
    ran before the flush) is gone, and nothing is handed to the executor Python has shut down."""
    import subprocess
    library, repo = tmp_path / "library", tmp_path / "hub"
    script = tmp_path / "run_and_exit.py"
    script.write_text(EXIT_SCRIPT.format(root=str(PROJECT_ROOT), tests=str(Path(__file__).parent), hub=str(repo),
                                         library=str(library), model=str(tiny_clip_path)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0 and "added" in done.stdout, done.stderr
    assert "cannot schedule" not in done.stderr and "did not finish" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "Error" not in done.stderr, done.stderr
    pushed = repo / REPO
    for name in ("store.json", "journal.log", "features_library.pth"):        # the flushed state, to the byte
        assert (pushed / name).read_bytes() == (library / name).read_bytes(), name
    import torch
    assert len(torch.load(pushed / "features_library.pth", weights_only=True)["files"]) == 2


@pytest.mark.parametrize("stop", [None, SystemExit(0)])
def test_main_flushes_and_pushes_when_the_server_stops_not_only_at_exit(monkeypatch, stop):
    """Ctrl-C / close (block_thread returns) and SIGTERM (SystemExit): the closers run in main(), while
    thread pools still work, the last registered first; atexit only finds them done."""
    import demo
    ran: list[str] = []
    monkeypatch.setattr(demo.atexit, "register", lambda fn: fn)
    monkeypatch.setattr(demo, "_closers", [])

    class Demo:
        local_url, share_url = "http://127.0.0.1:7860", None
        def launch(self, **_): pass
        def block_thread(self):
            if stop is not None:
                raise stop

    monkeypatch.setattr(demo, "build", lambda args: (Demo(), {}))
    monkeypatch.setattr(demo, "prepare_space", lambda: None)
    demo._on_exit(lambda: ran.append("sync.close"))
    demo._on_exit(lambda: ran.append("wb.close"))
    if stop is None:
        assert demo.main([]) == 0
    else:
        with pytest.raises(SystemExit):
            demo.main([])
    assert ran == ["wb.close", "sync.close"]
    demo.close_all()
    assert ran == ["wb.close", "sync.close"]                                   # once only


# ---------------------------------------------------------------------- ZeroGPU

@pytest.fixture
def fake_spaces(monkeypatch):
    """A `spaces` module whose GPU decorator records each call (method, seconds) and, as ZeroGPU's
    worker queue does, pickles what crosses: the arguments in, the result out. The patched methods
    are put back after the test."""
    from core.hosting import zerogpu
    from core.models.base import Encoder
    calls: list[tuple[str, int]] = []

    def GPU(fn=None, *, duration=60):
        def decorate(f):
            @functools.wraps(f)
            def run(*args, **kwargs):
                seconds = duration(*args, **kwargs) if callable(duration) else duration
                assert not any(isinstance(a, Encoder) for a in args)    # the model stays where it is
                args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))
                calls.append((args[0], seconds))
                return pickle.loads(pickle.dumps(f(*args, **kwargs)))
            return run
        return decorate(fn) if fn is not None else decorate

    spaces = types.ModuleType("spaces")
    spaces.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", spaces)
    for module, cls, attr, *_ in zerogpu.TARGETS:
        owner = getattr(__import__(module, fromlist=[cls]), cls)
        monkeypatch.setattr(owner, attr, owner.__dict__[attr])
    return calls


def test_off_zerogpu_nothing_is_wrapped(fake_spaces, monkeypatch, encoder):
    from core.hosting import zerogpu
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert not zerogpu.enabled() and not zerogpu.install()
    encoder.encode_texts(["a cat"])
    assert fake_spaces == []
    assert zerogpu.gpu(len) is len


def test_on_zerogpu_every_forward_pass_runs_under_spaces_gpu(fake_spaces, monkeypatch, tiny_clip_path, tmp_path):
    from PIL import Image
    from core.hosting import zerogpu
    from core.library.search import SearchQuery
    from core.models import load_encoder
    from core.settings import pick_runtime
    from core.workbench import build_workbench
    encoder = load_encoder(str(tiny_clip_path), pick_runtime("cpu"))
    plain = encoder.encode_texts(["a cat", "一只狗"])
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert zerogpu.enabled() and zerogpu.install() and zerogpu.install()   # twice: wrapped once
    assert (encoder.encode_texts(["a cat", "一只狗"]) == plain).all()
    assert fake_spaces == [("encode_texts", zerogpu.DURATION)]
    encoder.encode_images([Image.new("RGB", (32, 32), "red")])
    assert fake_spaces[-1] == ("encode_pixels", zerogpu.DURATION)

    fake_spaces.clear()   # the app's path: a background workbench batches requests, then runs the pass
    wb = build_workbench(str(tiny_clip_path), tmp_path / "lib", "cpu", offline=True, fallback=False, background=True)
    _add(wb, 2, seed=1)
    wb.search(SearchQuery(text="a red square", k=2))
    assert {"encode_pixels", "encode_texts"} <= {name for name, _ in fake_spaces}
    wb.close()


def test_captions_and_translations_load_in_the_app_and_generate_on_the_gpu(fake_spaces, monkeypatch):
    from core.hosting import zerogpu
    from core.language.caption import Captioner
    from core.language.translate import Translator
    loaded = []
    monkeypatch.setattr(Captioner, "load", lambda self: loaded.append("captioner"))
    monkeypatch.setattr(Translator, "load", lambda self, to="en": loaded.append(f"translator:{to}"))
    monkeypatch.setattr(Captioner, "caption", lambda self, images: [f"{len(images)} images"])
    monkeypatch.setattr(Translator, "_run", lambda self, texts, to: [t.upper() for t in texts])
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    assert zerogpu.install()
    captioner, translator = Captioner.__new__(Captioner), Translator.__new__(Translator)
    assert captioner.caption(["a", "b"]) == ["2 images"]
    assert translator._run(["一只猫"], "en") == ["一只猫".upper()]
    assert loaded == ["captioner", "translator:en"]
    assert fake_spaces == [("caption", 120), ("_run", zerogpu.DURATION)]
