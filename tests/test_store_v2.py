"""Library format 2: stable row ids, tombstones, mapped columns, the v1 migration, and the
indexes (exact and FAISS) kept in step with adds and removals."""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import time

import numpy as np
import pytest
import torch

from core.library.index import ExactIndex, LibraryANN, index_path, open_index
from core.library.journal import JOURNAL_HEADER, JOURNAL_MAGIC, encode_record
from core.library.store import JOURNAL_NAME, MANIFEST_NAME, SNAPSHOT_NAME, STORE_DIR, Library, NewImage
from core.settings import pick_runtime
from core_fixtures import distinct_pngs

DIM = 8
CPU = pick_runtime("cpu")


def new_image(data: bytes) -> NewImage:
    sha = hashlib.sha256(data).hexdigest()
    vec = torch.nn.functional.normalize(torch.randn(DIM, generator=torch.Generator().manual_seed(int(sha[:8], 16))), dim=0)
    return NewImage(data, sha, ".png", vec, {"name": f"{sha[:6]}.png", "bytes": len(data)})


def test_row_ids_are_permanent_across_removal_and_compaction(tmp_path):
    lib = Library(tmp_path, "m", DIM)
    images = [new_image(d) for d in distinct_pngs(5)]
    lib.add(images)
    assert [e.rowid for e in lib.entries()] == [0, 1, 2, 3, 4]
    lib.remove([images[1].sha256])
    lib.compact()
    lib.add([new_image(distinct_pngs(1, seed=9)[0])])
    reopened = Library(tmp_path, "m", DIM)
    assert [e.rowid for e in reopened.entries()] == [0, 2, 3, 4, 5]     # never reused, never shifted
    assert reopened.entry(3).sha256 == images[3].sha256
    with pytest.raises(KeyError):
        reopened.entry(1)
    assert torch.allclose(reopened.vector(images[4].sha256[:12]), images[4].vector)


def test_removal_writes_one_record_and_moves_nothing(tmp_path):
    lib = Library(tmp_path, "m", DIM)
    images = [new_image(d) for d in distinct_pngs(6)]
    lib.add(images[:4])
    lib.compact()
    columns = {p: p.stat().st_mtime_ns for p in (tmp_path / STORE_DIR).iterdir()}
    manifest = (tmp_path / MANIFEST_NAME).stat().st_mtime_ns
    before = (tmp_path / JOURNAL_NAME).stat().st_size
    lib.remove([images[2].sha256])
    lib.add(images[4:])
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / STORE_DIR).iterdir()} == columns
    assert (tmp_path / MANIFEST_NAME).stat().st_mtime_ns == manifest
    assert (tmp_path / JOURNAL_NAME).stat().st_size - before < 2000   # three records, nothing rewritten
    assert len(lib) == 5 and not lib.contains(images[2].sha256)


def test_flush_makes_the_user_file_hold_every_image(tmp_path):
    lib = Library(tmp_path, "m", DIM)
    lib.add([new_image(d) for d in distinct_pngs(3)])
    assert lib.stale and len(torch.load(tmp_path / SNAPSHOT_NAME, weights_only=True)["files"]) == 0
    assert lib.flush() and not lib.stale and not lib.flush()          # a second flush has nothing to do
    snap = torch.load(tmp_path / SNAPSHOT_NAME, weights_only=True)
    assert snap["features"].shape == (3, DIM) and torch.equal(snap["features"], lib.features)
    assert [tmp_path / f for f in snap["files"]] == [e.path for e in lib.entries()]


def _write_v1_library(root, images, journal_images, removed=()):
    """A library exactly as format 1 wrote it: one pickle plus a journal of id-less records."""
    (root / "images").mkdir(parents=True)
    rows = []
    for img in images + journal_images:
        rel = f"images/{img.sha256[:2]}/{img.sha256}{img.ext}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(img.data)
        rows.append((img, rel))
    snap = {"format_version": 1, "model_id": "m", "dim": DIM,
            "features": torch.stack([i.vector for i in images]), "files": [r for _, r in rows[:len(images)]],
            "sha256": [i.sha256 for i in images], "meta": [i.meta for i in images], "generation": 3,
            "created": 1700000000.0}
    torch.save(snap, root / SNAPSHOT_NAME)
    journal = JOURNAL_HEADER.pack(JOURNAL_MAGIC, 1, 3)
    for img, rel in rows[len(images):]:
        journal += encode_record({"op": "add", "sha": img.sha256, "file": rel, "meta": img.meta}, img.vector)
    for img in removed:
        journal += encode_record({"op": "remove", "sha": img.sha256})
    (root / JOURNAL_NAME).write_bytes(journal)


def test_a_version_1_library_is_upgraded_in_place(tmp_path):
    images = [new_image(d) for d in distinct_pngs(6)]
    _write_v1_library(tmp_path, images[:4], images[4:], removed=[images[1]])
    lib = Library(tmp_path, "m", DIM)
    assert [e.sha256 for e in lib.entries()] == [i.sha256 for i in images if i is not images[1]]
    assert [e.rowid for e in lib.entries()] == [0, 2, 3, 4, 5]
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["format_version"] == 2
    assert not (tmp_path / images[1].sha256[:2] / images[1].sha256).exists()
    snap = torch.load(tmp_path / SNAPSHOT_NAME, weights_only=True)
    assert snap["format_version"] == 2 and len(snap["files"]) == 5          # the user file is current
    assert lib.verify(deep=True)["healthy"]
    again = Library(tmp_path, "m", DIM)                                       # no second migration
    assert [e.rowid for e in again.entries()] == [0, 2, 3, 4, 5] and again.stats()["generation"] == 4


def test_exact_index_masks_removed_rows_and_returns_ids(tmp_path):
    lib = Library(tmp_path, "m", DIM)
    images = [new_image(d) for d in distinct_pngs(8)]
    lib.add(images)
    index = ExactIndex(lib, CPU)
    query = images[3].vector[None]
    assert index.search(query, 1)[1].tolist() == [[3]]
    lib.remove([images[3].sha256])
    scores, ids = index.search(query, 20)
    assert 3 not in ids[0].tolist() and ids.shape == (1, 7) and bool((scores[0][:-1] >= scores[0][1:]).all())


def test_resident_copy_follows_adds_removals_and_compaction(tmp_path):
    """The CUDA path's resident copy, run here on the CPU: ranks like the plain scan after adds,
    removals and a compaction, copies only the rows added since the last search, and renews
    nothing while the library is unchanged."""
    from core.library.exact import _Resident
    lib = Library(tmp_path, "m", DIM)
    images = [new_image(d) for d in distinct_pngs(12)]
    lib.add(images[:6])
    lib.compact()
    resident = ExactIndex(lib, CPU)
    resident._on_device, resident._resident = True, _Resident(torch.device("cpu"), torch.float32)
    plain = ExactIndex(lib, CPU)
    queries = torch.stack([im.vector for im in images])

    def same() -> None:
        for a, b in zip(resident.search(queries, 4), plain.search(queries, 4)):
            assert torch.equal(a, b)

    same()
    assert resident._synced == (lib.stats()["generation"], 6)
    slots = resident._current()
    same()
    assert resident._current() is slots                      # unchanged library: nothing renewed
    lib.add(images[6:9])
    same()
    assert resident._synced[1] == 9 and resident._resident.rows == 3   # only the three new rows
    lib.remove([images[1].sha256, images[7].sha256])
    same()
    assert 1 not in resident.search(queries, 12)[1].flatten().tolist()
    lib.compact()
    lib.add(images[9:])
    same()
    assert resident._synced == (lib.stats()["generation"], 10)


def test_float16_snapshot_is_searchable(tmp_path):
    lib = Library(tmp_path, "m", DIM, dtype="float16")
    images = [new_image(d) for d in distinct_pngs(5)]
    lib.add(images)
    lib.compact()
    reopened = Library(tmp_path, "m", DIM)
    assert reopened.view().base.dtype == torch.float16
    assert ExactIndex(reopened, CPU).search(images[2].vector[None], 1)[1].tolist() == [[2]]


def _clustered(n, dim, seed):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(20, dim, generator=g)
    return torch.nn.functional.normalize(centers[torch.randint(0, 20, (n,), generator=g)]
                                         + 0.3 * torch.randn(n, dim, generator=g), dim=-1)


def _fill(lib, n, seed):
    vecs = _clustered(n, lib.dim, seed)
    news = []
    for i, v in enumerate(vecs):
        data = f"{seed}-{i}".encode()
        news.append(NewImage(data, hashlib.sha256(data).hexdigest(), ".bin", v, {"name": f"{i}"}))
    lib.add(news)
    return news


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "ivfpq", "ivfsq"])
def test_ann_index_stays_in_step_with_the_library(tmp_path, kind):
    lib = Library(tmp_path, "m", 32)
    first = _fill(lib, 3000, seed=1)
    ann = LibraryANN.build(lib, kind)
    later = _fill(lib, 50, seed=2)                                       # added after the build
    assert ann.search(later[7].vector[None], 1)[1].tolist() == [[3000 + 7]]
    lib.remove([first[5].sha256, later[7].sha256])                      # removed after the build
    for vec in (first[5].vector, later[7].vector):
        ids = ann.search(vec[None], 10)[1][0].tolist()
        assert 5 not in ids and 3007 not in ids and len(ids) == 10
    ann.save()
    lib.remove([first[6].sha256])                                        # removed while no index was open
    lib.flush()
    reopened = Library(tmp_path, "m", 32)
    loaded = open_index(reopened, CPU, kind)
    assert isinstance(loaded, LibraryANN) and index_path(reopened, kind).is_file()
    assert 6 not in loaded.search(first[6].vector[None], 10)[1][0].tolist()
    assert loaded.search(first[100].vector[None], 1)[1].tolist() == [[100]]


def test_a_saved_index_of_another_model_is_rebuilt(tmp_path):
    lib = Library(tmp_path, "m", 32)
    _fill(lib, 2000, seed=3)
    ann = LibraryANN.build(lib, "ivf")
    ann.save()
    meta_path = index_path(lib, "ivf")
    other = Library(tmp_path / "other", "m2", 32)
    news = _fill(other, 2000, seed=4)
    os.replace(meta_path, index_path(other, "ivf"))                     # a stray index from another library
    loaded = LibraryANN.open(other, "ivf")
    assert loaded.search(news[9].vector[None], 1)[1].tolist() == [[9]]


def test_opening_does_not_read_the_whole_library(tmp_path, monkeypatch):
    """Opening maps the columns: the cost must not grow with the library (no per-row Python work)."""
    lib = Library(tmp_path, "m", DIM)
    lib.add([new_image(d) for d in distinct_pngs(40)])
    lib.compact()
    calls = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(AssertionError()))
    start = time.perf_counter()
    assert len(Library(tmp_path, "m", DIM)) == 40
    assert not calls and time.perf_counter() - start < 1.0
    opened = Library(tmp_path, "m", DIM)
    mapped = pathlib.Path("/proc/self/maps").read_text()
    assert str(tmp_path / STORE_DIR / f"features.{opened.stats()['generation']}.npy") in mapped   # mapped, not read


def test_a_view_keeps_its_rows_after_the_library_compacts(tmp_path):
    """An index built from a view (in the app, while uploads compact) must pair each id with its vector."""
    from core.library.rows import view_vectors
    lib = Library(tmp_path, "m", DIM)
    images = [new_image(d) for d in distinct_pngs(8)]
    lib.add(images[:6])
    lib.compact()
    lib.add(images[6:])
    view = lib.view()
    lib.remove([images[0].sha256, images[1].sha256])
    lib.compact()                                     # slots move under the view
    slots = np.flatnonzero(view.alive)
    for rowid, vec in zip(view.ids[slots], view_vectors(view, slots)):
        assert torch.allclose(vec, images[int(rowid)].vector)


def test_background_flushes_coalesce(monkeypatch):
    """Writes during a flush lead to one more flush after it, not one per write."""
    import threading

    from core.library.flusher import Flusher as _Flusher
    calls, gate = [], threading.Event()

    def slow_flush():
        calls.append(time.monotonic())
        gate.wait(2)
    monkeypatch.setattr(_Flusher, "MIN_GAP", 0.0)
    flusher = _Flusher(slow_flush)
    flusher.poke()
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(5):
        flusher.poke()                               # during the running flush
    gate.set()
    time.sleep(2.0)   # the second flush waits 10x the first one's (short) duration
    assert len(calls) == 2
