"""The growing library: add / dedupe / remove / compact / reopen, crash safety, threads, processes."""
from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from core.library import disk, journal
from core.library.journal import JournalFile
from core.library.store import JOURNAL_NAME, MANIFEST_NAME, SNAPSHOT_NAME, Library, NewImage
from core.errors import LibraryError, ModelMismatchError
from core_fixtures import distinct_pngs

DIM = 8
WORKER = Path(__file__).with_name("library_worker.py")


def new_image(data: bytes) -> NewImage:
    sha = hashlib.sha256(data).hexdigest()
    vec = torch.nn.functional.normalize(torch.randn(DIM, generator=torch.Generator().manual_seed(int(sha[:8], 16))), dim=0)
    return NewImage(data, sha, ".png", vec, {"name": f"{sha[:6]}.png", "bytes": len(data)})


def assert_consistent(lib: Library) -> None:
    report = lib.verify(deep=True)
    assert report["missing_files"] == [] and report["orphan_files"] == [] and report["hash_mismatch"] == []
    assert lib.features.shape == (len(lib), DIM)
    assert not any((lib.root / "staging").iterdir())


def test_snapshot_is_plain_torch_load_with_documented_fields(tmp_path):
    lib = Library(tmp_path, "test-model", DIM)
    lib.add([new_image(d) for d in distinct_pngs(3)])
    assert lib.flush()
    snap = torch.load(tmp_path / SNAPSHOT_NAME, weights_only=True)
    assert snap["format_version"] == 2 and snap["model_id"] == "test-model" and snap["dim"] == DIM
    assert snap["features"].shape == (3, DIM) and snap["ids"].tolist() == [0, 1, 2]
    assert len(snap["files"]) == len(snap["sha256"]) == len(snap["meta"]) == 3
    for f, s, row in zip(snap["files"], snap["sha256"], snap["features"]):
        assert (tmp_path / f).read_bytes().__len__() > 0 and s in f     # file named by its content hash
        assert torch.allclose(row, new_image((tmp_path / f).read_bytes()).vector)  # row i belongs to files[i]


def test_add_dedupe_remove_compact_reopen(tmp_path):
    datas = distinct_pngs(6)
    lib = Library(tmp_path, "test-model", DIM)
    assert lib.add([new_image(d) for d in datas[:4]]) == [True] * 4
    assert lib.add([new_image(datas[0]), new_image(datas[4]), new_image(datas[4])]) == [False, True, False]
    assert len(lib) == 5
    gone = lib.entry(1)
    assert lib.remove([gone.sha256, "f" * 64]) == 1
    assert not gone.path.exists() and len(lib) == 4
    before = lib.features.clone(), [e.sha256 for e in lib.entries()]
    reopened = Library(tmp_path, "test-model", DIM)                  # journal replay
    assert torch.equal(reopened.features, before[0]) and [e.sha256 for e in reopened.entries()] == before[1]
    lib.compact()
    compacted = Library(tmp_path, "test-model", DIM)                 # snapshot only
    assert torch.equal(compacted.features, before[0]) and compacted.stats()["journal_records"] == 0
    assert_consistent(compacted)


def test_add_appends_to_the_journal_and_never_rewrites_the_snapshot(tmp_path):
    lib = Library(tmp_path, "test-model", DIM)
    lib.add([new_image(d) for d in distinct_pngs(50)])
    snap_mtime = os.stat(tmp_path / SNAPSHOT_NAME).st_mtime_ns
    size0 = (tmp_path / JOURNAL_NAME).stat().st_size
    lib.add([new_image(distinct_pngs(1, seed=9)[0])])
    growth = (tmp_path / JOURNAL_NAME).stat().st_size - size0
    assert os.stat(tmp_path / SNAPSHOT_NAME).st_mtime_ns == snap_mtime
    assert growth < 1000     # one record: header + vector, whatever N is


def test_models_are_never_mixed(tmp_path):
    Library(tmp_path, "model-a", DIM)
    with pytest.raises(ModelMismatchError, match="model-a"):
        Library(tmp_path, "model-b", DIM)
    lib = Library(tmp_path, "model-a", DIM)
    with pytest.raises(LibraryError, match="dim"):
        lib.add([NewImage(b"x", "0" * 64, ".png", torch.zeros(DIM + 1))])


def test_torn_journal_tail_is_dropped(tmp_path):
    lib = Library(tmp_path, "test-model", DIM)
    lib.add([new_image(d) for d in distinct_pngs(3)])
    journal = tmp_path / JOURNAL_NAME
    good = journal.read_bytes()
    lib.add([new_image(distinct_pngs(1, seed=5)[0])])
    full = journal.read_bytes()
    journal.write_bytes(full[:len(good) + (len(full) - len(good)) // 2])   # a crash mid-append
    reopened = Library(tmp_path, "test-model", DIM)
    assert len(reopened) == 3
    assert journal.read_bytes() == good                                     # tail truncated
    reopened.add([new_image(distinct_pngs(1, seed=6)[0])])                 # and appends work again
    assert len(Library(tmp_path, "test-model", DIM)) == 4


def test_corrupt_last_record_stops_replay_at_the_last_good_record(tmp_path):
    lib = Library(tmp_path, "test-model", DIM)
    lib.add([new_image(d) for d in distinct_pngs(2)])
    journal = tmp_path / JOURNAL_NAME
    data = bytearray(journal.read_bytes())
    data[-5] ^= 0xFF                                                       # flip a byte in the last record
    journal.write_bytes(bytes(data))
    reopened = Library(tmp_path, "test-model", DIM)
    assert len(reopened) == 1
    # Bit rot in an acknowledged record: the row is lost, but the image is kept and reported,
    # so `library repair` can re-add it (tested in test_ingest.py).
    report = reopened.verify()
    assert len(report["orphan_files"]) == 1 and (tmp_path / report["orphan_files"][0]).is_file()


def test_crash_between_staging_and_journal_leaves_no_orphan(tmp_path, monkeypatch):
    lib = Library(tmp_path, "test-model", DIM)
    lib.add([new_image(distinct_pngs(1)[0])])

    def crash(*a, **k):
        raise KeyboardInterrupt("power loss")
    monkeypatch.setattr(JournalFile, "append", crash)
    with pytest.raises(KeyboardInterrupt):
        lib.add([new_image(d) for d in distinct_pngs(3, seed=1)])
    monkeypatch.undo()
    assert any((tmp_path / "staging").iterdir())           # written, never acknowledged
    reopened = Library(tmp_path, "test-model", DIM)
    assert len(reopened) == 1
    assert_consistent(reopened)


def test_crash_after_journal_before_move_completes_on_open(tmp_path, monkeypatch):
    lib = Library(tmp_path, "test-model", DIM)
    monkeypatch.setattr(disk, "finish_move", lambda root, rel, sync=True: None)   # die before the renames
    lib.add([new_image(d) for d in distinct_pngs(3)])
    monkeypatch.undo()
    assert not any((tmp_path / "images").rglob("*.png"))
    reopened = Library(tmp_path, "test-model", DIM)
    assert len(reopened) == 3
    assert_consistent(reopened)


def _count_syncs(monkeypatch) -> dict:
    """Count os.fsync and journal.syncfs calls from now on."""
    calls = {"fsync": 0, "syncfs": 0}
    for module, name in ((os, "fsync"), (journal, "syncfs")):
        real = getattr(module, name)

        def counted(*a, _name=name, _real=real):
            calls[_name] += 1
            return _real(*a)
        monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("syncfs", [True, False], ids=["syncfs", "fsync-each"])
def test_a_batch_costs_one_sync_for_its_images_and_one_for_the_journal(tmp_path, monkeypatch, syncfs):
    if syncfs and journal._SYNCFS is None:
        pytest.skip("no syncfs(2) that reports errors here (Linux >= 5.8): each image is fsync'd")
    if not syncfs:
        monkeypatch.setattr(journal, "_SYNCFS", None)   # what other systems get
    lib = Library(tmp_path, "test-model", DIM)
    lib.add([new_image(distinct_pngs(1)[0])])
    calls = _count_syncs(monkeypatch)
    lib.add([new_image(d) for d in distinct_pngs(10, seed=1)])
    expected = {"fsync": 1, "syncfs": 1} if syncfs else {"fsync": 10 + 1 + 1, "syncfs": 0}   # + staging/, + journal
    assert calls == expected
    monkeypatch.undo()
    reopened = Library(tmp_path, "test-model", DIM)
    assert len(reopened) == 11
    assert_consistent(reopened)


def test_a_rename_lost_after_the_acknowledgement_is_redone_on_open(tmp_path):
    """The renames into images/ are not synced: a power cut may undo one, leaving the acknowledged
    copy in staging/ (what this test puts back); the next open moves it again."""
    lib = Library(tmp_path, "test-model", DIM)
    lib.add([new_image(d) for d in distinct_pngs(3)])
    lost = lib.entry(1).path
    os.replace(lost, tmp_path / "staging" / lost.name)
    reopened = Library(tmp_path, "test-model", DIM)
    assert len(reopened) == 3 and lost.is_file() and not any((tmp_path / "staging").iterdir())
    assert_consistent(reopened)


def test_crash_mid_compaction_keeps_everything(tmp_path, monkeypatch):
    lib = Library(tmp_path, "test-model", DIM)
    lib.add([new_image(d) for d in distinct_pngs(4)])
    monkeypatch.setattr(JournalFile, "start", lambda self, gen: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        lib.compact()            # the new snapshot landed; the old journal (previous generation) is still there
    monkeypatch.undo()
    reopened = Library(tmp_path, "test-model", DIM)
    assert len(reopened) == 4 and reopened.stats()["generation"] == 1
    reopened.add([new_image(distinct_pngs(1, seed=3)[0])])
    assert len(Library(tmp_path, "test-model", DIM)) == 5


def test_threads_adding_overlapping_sets(tmp_path):
    lib = Library(tmp_path, "test-model", DIM)
    datas = distinct_pngs(40)
    errors = []

    def work(offset):
        try:
            for i in range(0, 40, 4):
                lib.add([new_image(d) for d in datas[(i + offset) % 40:(i + offset) % 40 + 4]])
        except Exception as e:   # noqa: BLE001 - collect for the assert below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(o,)) for o in (0, 8, 16, 24)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert len(lib) == 40 and len({e.sha256 for e in lib.entries()}) == 40
    assert_consistent(Library(tmp_path, "test-model", DIM))


def _worker(root, seed, count, batch=1):
    return subprocess.Popen([sys.executable, str(WORKER), str(root), str(seed), str(count), str(batch)],
                            stdout=subprocess.PIPE, text=True)


def test_two_processes_and_a_live_reader(tmp_path):
    reader = Library(tmp_path, "test-model", DIM)
    procs = [_worker(tmp_path, 0, 30, 3), _worker(tmp_path, 0, 30, 2), _worker(tmp_path, 1, 20, 1)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    reader.refresh()                              # the app sees what the CLI processes added
    assert len(reader) == 50                      # seed 0 twice (overlapping) + seed 1
    assert_consistent(Library(tmp_path, "test-model", DIM))


@pytest.mark.slow
def test_kill_9_mid_ingest_keeps_every_acknowledged_add(tmp_path):
    rng = random.Random(0)
    acked = set()
    for round_ in range(6):
        proc = _worker(tmp_path, round_, 200, rng.choice([1, 5]))
        first = proc.stdout.readline()       # the clock starts once the worker writes (imports are slow)
        if first.startswith("ACK"):
            acked.add(first.split()[1])
        deadline = time.time() + rng.uniform(0.05, 1.0)
        while time.time() < deadline:
            line = proc.stdout.readline()
            if line.startswith("ACK"):
                acked.add(line.split()[1])
        proc.send_signal(signal.SIGKILL)
        rest = proc.communicate()[0]
        acked.update(l.split()[1] for l in rest.splitlines() if l.startswith("ACK"))
        lib = Library(tmp_path, "test-model", DIM)   # must open after any crash
        stored = {e.sha256 for e in lib.entries()}
        assert acked <= stored
        assert_consistent(lib)
    assert len(acked) > 0


def test_add_remove_add_again_survives_reopen(tmp_path):
    data = distinct_pngs(1)[0]
    lib = Library(tmp_path, "test-model", DIM)
    lib.add([new_image(data)])
    lib.remove([new_image(data).sha256])
    lib.add([new_image(data)])
    reopened = Library(tmp_path, "test-model", DIM)   # replay must not delete the re-added image
    assert len(reopened) == 1
    assert_consistent(reopened)


def test_a_writer_that_died_mid_append_does_not_hide_later_adds(tmp_path):
    app = Library(tmp_path, "test-model", DIM)           # stays open, like the app
    app.add([new_image(distinct_pngs(1)[0])])
    with open(tmp_path / JOURNAL_NAME, "ab") as f:       # the CLI killed halfway through a record
        f.write(b"\x40\x00\x00\x00garbage")
    app.add([new_image(d) for d in distinct_pngs(2, seed=4)])
    other = Library(tmp_path, "test-model", DIM)
    assert len(other) == 3
    assert_consistent(other)


def test_damaged_journal_header_is_an_error_not_silent_loss(tmp_path):
    lib = Library(tmp_path, "test-model", DIM)
    lib.add([new_image(distinct_pngs(1)[0])])
    journal = tmp_path / JOURNAL_NAME
    journal.write_bytes(b"XXXX" + journal.read_bytes()[4:])
    with pytest.raises(LibraryError, match="damaged"):
        Library(tmp_path, "test-model", DIM)


def test_unreadable_manifest_is_a_clear_error(tmp_path):
    Library(tmp_path, "test-model", DIM)
    (tmp_path / MANIFEST_NAME).write_bytes(b"not json")
    with pytest.raises(LibraryError, match="repair"):
        Library(tmp_path, "test-model", DIM)


def test_the_user_file_is_never_read_so_a_damaged_one_does_no_harm(tmp_path):
    lib = Library(tmp_path, "test-model", DIM)
    lib.add([new_image(d) for d in distinct_pngs(2)])
    (tmp_path / SNAPSHOT_NAME).write_bytes(b"not a torch file")
    assert len(Library(tmp_path, "test-model", DIM)) == 2
    assert lib.flush() and len(torch.load(tmp_path / SNAPSHOT_NAME, weights_only=True)["files"]) == 2


def test_replace_all_refuses_rows_that_changed(tmp_path):
    lib = Library(tmp_path, "test-model", DIM)
    lib.add([new_image(d) for d in distinct_pngs(2)])
    shas = [e.sha256 for e in lib.entries()]
    other = Library(tmp_path, "test-model", DIM)          # another process: remove one, add another
    other.remove([shas[0]])
    other.add([new_image(distinct_pngs(1, seed=8)[0])])
    with pytest.raises(LibraryError, match="changed"):
        lib.replace_all("model-b", torch.zeros(2, DIM), shas)
