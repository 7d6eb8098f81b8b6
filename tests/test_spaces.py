"""Running on a Hugging Face Space (issue "The first five minutes", item 7): the library and the
model cache on the persistent disk when there is one, an honest bilingual warning when there is
not, --sync-to-hub backing the library up to a dataset repo (the hub stood in for by a local
folder: nothing here touches the network), and the model calls under spaces.GPU on ZeroGPU."""
from __future__ import annotations

import fnmatch
import functools
import pickle
import shutil
import sys
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete
from huggingface_hub.errors import RepositoryNotFoundError

from core.library import sync as hubsync
from core.library.ingest import Upload, open_library
from core.library.sync import HubSync, storage
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
        self.fail_download: Exception | None = None
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
                return SimpleNamespace(repo_id=repo_id)

            def list_repo_files(self, repo_id, repo_type=None, revision=None, **_):
                return sorted(hub.files(repo_id))

            def create_commit(self, repo_id, operations, commit_message, repo_type=None, revision=None, **_):
                if hub.fail_commit is not None:
                    raise hub.fail_commit
                operations = list(operations)
                for op in operations:
                    target = hub.repo(repo_id) / op.path_in_repo
                    if isinstance(op, CommitOperationAdd):
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with op.as_file() as f:
                            target.write_bytes(f.read())
                    else:
                        assert isinstance(op, CommitOperationDelete)
                        target.unlink()
                hub.commits.append(operations)
                return SimpleNamespace(commit_message=commit_message)

            def run_as_future(self, fn, *args, **kwargs):
                return hub.pool.submit(fn, *args, **kwargs)

        return Api()

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
        s.close(timeout=30)
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

    sync.close(timeout=30)
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


def test_a_failed_restore_keeps_the_hub_copy_and_starts_without_pushing(hub, tiny_clip_path, tmp_path):
    root = tmp_path / "library"
    wb = _workbench(tiny_clip_path, root)
    _add(wb, 3, seed=1)
    first = HubSync(root, REPO, token="hf_test")
    assert first.start() and first.push(timeout=30)
    first.close(timeout=30)
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
    pusher.close(timeout=30)

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
    pushed.close(timeout=30)
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


# ---------------------------------------------------------------------- ZeroGPU

@pytest.fixture
def fake_spaces(monkeypatch):
    """A `spaces` module whose GPU decorator records each call (method, seconds) and, as ZeroGPU's
    worker queue does, pickles what crosses: the arguments in, the result out. The patched methods
    are put back after the test."""
    from core import zerogpu
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
    from core import zerogpu
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert not zerogpu.enabled() and not zerogpu.install()
    encoder.encode_texts(["a cat"])
    assert fake_spaces == []
    assert zerogpu.gpu(len) is len


def test_on_zerogpu_every_forward_pass_runs_under_spaces_gpu(fake_spaces, monkeypatch, tiny_clip_path, tmp_path):
    from PIL import Image
    from core import zerogpu
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
    from core import zerogpu
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
