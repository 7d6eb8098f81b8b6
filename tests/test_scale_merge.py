"""Merging embedding shards into a library (core/scale/merge.py) and importing clip-retrieval
embeddings: one bulk step, dedupe, model refusal, by-reference entries, and crash safety
(an exception injected at each step, then a re-run). No Ray here: see test_scale_ray.py."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import core.library.disk as disk_mod
import core.library.store as store_mod
import core.scale.merge as merge_mod
from core.errors import LibraryError, ModelMismatchError
from core.library.store import Library, NewImage
from core.scale import import_clip_retrieval, merge_shards
from core.scale.shards import read_shard, write_shard
from core.settings import PROJECT_ROOT
from core_fixtures import distinct_pngs

MODEL, DIM = "test-model", 8


def _vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _make_shards(tmp_path: Path, n: int = 7, per_part: int = 3, dup_of: int | None = None) -> tuple[Path, list[Path]]:
    """n PNG files and their shards (per_part rows each); dup_of repeats image 0 as an extra row."""
    src, out = tmp_path / "src", tmp_path / "shards"
    src.mkdir()
    files = []
    for i, data in enumerate(distinct_pngs(n)):
        (src / f"img{i}.png").write_bytes(data)
        files.append(src / f"img{i}.png")
    rows = [(i, f) for i, f in enumerate(files)] + ([(dup_of, files[dup_of])] if dup_of is not None else [])
    for part, first in enumerate(range(0, len(rows), per_part)):
        chunk = rows[first:first + per_part]
        write_shard(out, part, {"id": np.array([first + j for j in range(len(chunk))]),
                                "sha256": np.array([hashlib.sha256(f.read_bytes()).hexdigest() for _, f in chunk]),
                                "path": np.array([str(f) for _, f in chunk]), "width": np.full(len(chunk), 16),
                                "height": np.full(len(chunk), 16), "embedding": np.stack([_vec(i) for i, _ in chunk])},
                    {"model_id": MODEL, "dim": DIM, "fingerprint": f"fp{part}", "items": len(chunk),
                     "errors": [["bad.jpg", "not an image file"]] if part == 0 else []})
    return out, files


def _shas(lib: Library) -> list[str]:
    return [e.sha256 for e in lib.entries()]


def test_merge_is_one_bulk_step_and_idempotent(tmp_path):
    shards, files = _make_shards(tmp_path, dup_of=0)
    lib = Library(tmp_path / "lib", MODEL, DIM)
    gen = lib.stats()["generation"]
    report = merge_shards(lib, shards)
    assert (len(report.added), len(report.duplicates), report.errors) == (7, 1, [("bad.jpg", "not an image file")])
    stats = lib.stats()
    assert stats["generation"] == gen + 1 and stats["journal_records"] == 0   # one compaction, no journal records
    again = merge_shards(Library(tmp_path / "lib", MODEL, DIM), shards)
    assert (len(again.added), len(again.duplicates)) == (0, 8)
    lib = Library(tmp_path / "lib", MODEL, DIM)
    assert len(lib) == 7 and len(set(_shas(lib))) == 7 and lib.verify(deep=True)["healthy"]
    for i, f in enumerate(files):   # each row holds its own vector and a copy of its own bytes
        e = lib.find(hashlib.sha256(f.read_bytes()).hexdigest())
        assert e.path.read_bytes() == f.read_bytes() and e.path.is_relative_to(lib.root / "images")
        assert torch.allclose(lib.vector(e.id), torch.from_numpy(_vec(i)), atol=1e-6)


def test_merge_dedupes_against_single_process_adds_and_keeps_ids(tmp_path):
    shards, files = _make_shards(tmp_path)
    lib = Library(tmp_path / "lib", MODEL, DIM)
    data = files[2].read_bytes()
    lib.add([NewImage(data, hashlib.sha256(data).hexdigest(), ".png", torch.from_numpy(_vec(2)), {"name": "x"})])
    first_id = lib.entries()[0].rowid
    report = merge_shards(lib, shards)
    assert len(report.added) == 6 and len(report.duplicates) == 1
    assert lib.entries()[0].rowid == first_id and len({e.rowid for e in lib.entries()}) == 7
    lib.add([NewImage(b"x", "f" * 64, ".png", torch.from_numpy(_vec(99)), {})])   # journal adds still work after
    assert len(Library(tmp_path / "lib", MODEL, DIM)) == 8


def test_merge_refuses_another_model_before_writing(tmp_path):
    shards, _ = _make_shards(tmp_path)
    lib = Library(tmp_path / "lib", "other-model", DIM)
    with pytest.raises(ModelMismatchError, match="never mixed"):
        merge_shards(lib, shards)
    assert len(lib) == 0 and not any((lib.root / "images").rglob("*.png"))
    with pytest.raises(LibraryError, match="No embedding shards"):
        merge_shards(lib, tmp_path / "empty")


def _fail_copies_after(n):
    real, count = merge_mod._store_copy, [0]

    def copy(root, sha, data):
        count[0] += 1
        if count[0] > n:
            raise OSError(28, "No space left on device")
        return real(root, sha, data)
    return copy


def _fail_once(real):
    def boom(*a, **k):
        raise OSError(5, "injected crash")
    return boom


@pytest.mark.parametrize("step", ["copy", "columns", "manifest", "after-switch"])
def test_interrupted_merge_can_be_rerun(tmp_path, monkeypatch, step):
    shards, files = _make_shards(tmp_path)
    root = tmp_path / "lib"
    old = distinct_pngs(1, seed=3)[0]
    Library(root, MODEL, DIM).add([NewImage(old, hashlib.sha256(old).hexdigest(), ".png", torch.from_numpy(_vec(50)),
                                            {"name": "old"})])
    with monkeypatch.context() as m:
        if step == "copy":       # mid-way through the copies into images/
            m.setattr(merge_mod, "_store_copy", _fail_copies_after(3))
        elif step == "columns":  # while writing the new generation's columns
            m.setattr(disk_mod, "write_columns", _fail_once(disk_mod.write_columns))
        elif step == "manifest":  # just before the switch
            m.setattr(disk_mod, "write_manifest", _fail_once(disk_mod.write_manifest))
        else:                    # after the switch, before the old generation is deleted
            m.setattr(store_mod, "remove_generation", _fail_once(store_mod.remove_generation))
        with pytest.raises((OSError, LibraryError)):
            merge_shards(Library(root, MODEL, DIM), shards)
    after_crash = Library(root, MODEL, DIM)   # as a new process would open it
    assert len(after_crash) == (8 if step == "after-switch" else 1)
    problems = after_crash.verify()
    assert not problems["missing_files"]      # never a row without its image; orphans are only the copies
    assert all(Path(p).stem in {hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
               for p in problems["orphan_files"])
    report = merge_shards(after_crash, shards)
    lib = Library(root, MODEL, DIM)
    assert len(lib) == 8 and len(set(_shas(lib))) == 8
    assert len(report.added) == (0 if step == "after-switch" else 7)
    assert lib.verify(deep=True)["healthy"]
    assert not list((root / "staging").iterdir())


def test_by_reference_entries_point_at_the_files_and_verify_checks_them(tmp_path):
    shards, files = _make_shards(tmp_path)
    root = tmp_path / "lib"
    report = merge_shards(Library(root, MODEL, DIM), shards, by_reference=True)
    assert len(report.added) == 7 and not any((root / "images").rglob("*.png"))
    lib = Library(root, MODEL, DIM)
    entry = lib.find(hashlib.sha256(files[0].read_bytes()).hexdigest())
    assert entry.path.resolve() == files[0].resolve() and entry.meta["ref"] == str(files[0].resolve())
    assert lib.verify(deep=True)["healthy"]
    lib.compact()   # references survive a compaction and the export
    lib = Library(root, MODEL, DIM)
    assert lib.find(entry.id).path.resolve() == files[0].resolve()
    exported = torch.load(root / "features_library.pth", weights_only=True)
    assert any(f.startswith("../") for f in exported["files"])
    files[1].write_bytes(distinct_pngs(1, seed=7)[0])   # changed behind the library's back
    files[2].unlink()
    report = lib.verify(deep=True)
    assert not report["healthy"] and len(report["hash_mismatch"]) == 1 and len(report["missing_files"]) == 1
    lib.remove([entry.sha256])
    assert files[0].is_file()   # removing a referenced image never deletes the user's file


def _clip_retrieval_dir(tmp_path: Path, files: list[Path], dim: int = DIM) -> Path:
    out = tmp_path / "embeddings"
    (out / "img_emb").mkdir(parents=True)
    (out / "metadata").mkdir()
    halves = [files[:4], files[4:] + [tmp_path / "gone.png"]]
    for k, chunk in enumerate(halves):
        np.save(out / "img_emb" / f"img_emb_{k}.npy",
                np.stack([np.resize(_vec(i + 10 * k), dim) for i in range(len(chunk))]).astype(np.float16))
        pq.write_table(pa.table({"image_path": [str(f) for f in chunk], "caption": ["x"] * len(chunk)}),
                       out / "metadata" / f"metadata_{k}.parquet")
    return out


def test_import_clip_retrieval_embeddings_by_reference(tmp_path):
    _, files = _make_shards(tmp_path)
    emb = _clip_retrieval_dir(tmp_path, files)
    lib = Library(tmp_path / "lib", MODEL, DIM)
    report = import_clip_retrieval(lib, emb)
    assert len(report.added) == 7 and len(report.errors) == 1 and "gone.png" in report.errors[0][1]
    e = lib.find(hashlib.sha256(files[5].read_bytes()).hexdigest())
    expect = torch.nn.functional.normalize(torch.from_numpy(_vec(11).astype(np.float16).astype(np.float32)), dim=0)
    assert torch.allclose(lib.vector(e.id), expect, atol=1e-6) and e.path.resolve() == files[5].resolve()
    assert len(import_clip_retrieval(lib, emb).added) == 0 and lib.verify(deep=True)["healthy"]
    with pytest.raises(LibraryError, match="another model"):
        import_clip_retrieval(Library(tmp_path / "lib16", MODEL, 16), emb)


def test_shard_round_trip(tmp_path):
    shards, _ = _make_shards(tmp_path)
    info, cols = read_shard(shards / "part-00001.parquet")
    assert info["model_id"] == MODEL and cols["embedding"].shape == (3, DIM) and list(cols["id"]) == [3, 4, 5]
    assert pq.read_schema(shards / "part-00001.parquet").names == ["id", "sha256", "path", "width", "height", "embedding"]


_NO_RAY = """
import runpy, sys
class NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("ray is blocked in this test")
sys.meta_path.insert(0, NoRay())
sys.argv = ["core"] + sys.argv[1:]
try:
    runpy.run_module("core", run_name="__main__")
except SystemExit as e:
    assert "ray" not in sys.modules
    raise
"""


def test_plain_index_and_merge_never_import_ray(tmp_path, tiny_clip_path):
    shards, files = _make_shards(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    run = lambda *a: subprocess.run([sys.executable, "-c", _NO_RAY, *a, "--model", str(tiny_clip_path),  # noqa: E731
                                     "--quiet", "--offline", "--device", "cpu"],
                                    capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    plain = run("index", str(files[0].parent), "--library", str(tmp_path / "a"))
    assert plain.returncode == 0, plain.stderr
    assert "added 7, already present 0, unreadable 0 in" in plain.stdout and "library now holds 7 images" in plain.stdout
    with pytest.raises(ModelMismatchError):   # shards of another model: refused by the CLI too
        merge_shards(Library(tmp_path / "b", "clip-file:tiny", DIM), shards)
    emb = _clip_retrieval_dir(tmp_path, files, dim=Library(tmp_path / "a", *_peek(tmp_path / "a")).dim)
    imported = run("index", "--from-embeddings", str(emb), "--library", str(tmp_path / "c"))
    assert imported.returncode == 0, imported.stderr
    assert "added 7, already present 0, unreadable 1 in" in imported.stdout


def _peek(root: Path) -> tuple[str, int]:
    from core.library.ingest import peek_model
    return peek_model(root)
