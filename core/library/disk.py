"""The growing image library on disk: its format, versions and crash protocol, and the file steps.

A library directory holds:

    store.json                the manifest: format version, model, dim, generation, next id
    store/*.G.*               the snapshot of generation G as memory-mapped columns (core/library/columns.py)
    journal.log               adds/removes since the snapshot, appended and fsync'd per batch (core/library/journal.py)
    features_library.pth      the same library as one plain torch file, for people (format below)
    images/ab/<sha256>.<ext>  the stored images, named by content hash (never by user input)
    thumbs/ab/<sha256>.jpg    gallery thumbnails (derived data, rebuilt when missing)
    staging/                  images written but not yet acknowledged (cleared on open)
    .lock                     inter-process lock (fcntl), held only while writing
    review.json, safety.json  side files of the class's safety policy (core/safety/review.py, policy.py):
                              the images waiting for the teacher, the policy the app serves; the library
                              itself neither reads nor needs them

`torch.load("library/features_library.pth")` gives a dict (format_version 2):

    format_version  int                  2
    model_id        str                  the encoder that made the features, e.g. "ViT-B/32"
    dim             int                  D
    features        float32 [N, D]       L2-normalised; row i belongs to files[i]
    files           list[str] (N)        image paths relative to the library directory
    sha256          list[str] (N)        content hash of each stored image (dedupe key)
    ids             int64 [N]            permanent row ids (never reused; the index keys)
    meta            list[dict] (N)       {"name": original file name (display only), "added": unix time,
                                          "width", "height", "bytes", optional "caption_en", "caption_zh",
                                          optional "ref": the original path of an image stored by
                                          reference (its files[i] is then "../..", relative too)}
    generation      int                  compactions so far
    created         float                unix time the library was created

The program itself never reads that file: it opens store.json + the mapped columns (O(1)
in the number of images) and replays journal.log. `Library.flush()` compacts and rewrites
features_library.pth so it holds every image; the CLI calls it after `index`, the app
after upload batches (throttled) and on shutdown.

Rows have permanent ids. A removal appends a journal record and clears the row's bit in
an alive mask: O(1), nothing moves; compaction sweeps the dead rows and keeps the ids.

Journal records are [u32 length][u32 crc32][payload], the payload a JSON header, a NUL,
then the float32 vector for adds. A torn or corrupt tail (a crash mid-write) fails its
length or CRC check and is dropped: it was never acknowledged.

Crash safety: an add writes the batch's images into staging/ and syncs them with one call
(syncfs on Linux >= 5.8, else an fsync each), appends their records to the journal (one fsync:
this is the acknowledgement), then renames the images into images/ without a sync each (a
rename lost to a power cut leaves the acknowledged copy in staging/, moved on the next open).
Recovery on open finishes those renames and deletes unacknowledged staging files, so no
row lacks its image and no image lacks its row. Compaction writes the new generation's
columns, then store.json (write-then-rename: the switch), then a new empty journal; a
journal older than store.json is recognised by its generation and ignored. Replay is
idempotent (add = if absent, remove = if present).

Versions: 1 = one torch pickle (features_library.pth) as the snapshot, read on every open;
2 = this layout. `read_v1_snapshot` reads a version-1 library, which core/library/store.py
upgrades in place on first open.

Everything here is a step on files; which step runs when, and under which lock, is
core/library/store.py's business, and the rows in memory are core/library/rows.py's.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Callable, Iterable

import torch

from ..errors import LibraryError, ModelMismatchError
from ..messages import Msg
from .columns import Columns, Row, remove_generation, write_columns
from .journal import JOURNAL_HEADER, JOURNAL_MAGIC, JournalFile, encode_record, fsync_dir, sync_files, write_atomic
from .rows import Entry, NewImage, Rows, empty_columns
from .thumbs import thumb_path

__all__ = ["FORMAT_VERSION", "SNAPSHOT_NAME", "MANIFEST_NAME", "JOURNAL_NAME", "STORE_DIR", "SUBDIRS",
           "image_rel", "read_manifest", "write_manifest", "open_columns", "write_generation",
           "open_journal", "journal_generation", "stage", "commit_adds", "finish_move",
           "clear_staging", "recover_files", "delete_image", "migrate_from_pth", "write_snapshot", "read_v1_snapshot", "check_model", "verify", "features_bytes", "disk_error"]

FORMAT_VERSION = 2
SNAPSHOT_NAME = "features_library.pth"
MANIFEST_NAME = "store.json"
JOURNAL_NAME = "journal.log"
STORE_DIR = "store"
SUBDIRS = ("images", "thumbs", "staging", STORE_DIR)


def image_rel(sha: str, ext: str) -> str:
    """Where a stored image lives, relative to the library: named by its content hash."""
    return f"images/{sha[:2]}/{sha}{ext}"


# ---------------------------------------------------------------- problems, said once each

def disk_error(e: OSError, doing: Msg) -> LibraryError:
    """A write that failed (most often ENOSPC: the disk is full) as a message that says what to do."""
    full = e.errno in (errno.ENOSPC, errno.EDQUOT)
    why = Msg("磁盘已满", "the disk is full") if full else (e.strerror or str(e))
    return LibraryError(Msg("无法写入图库（{doing}）：{why}。请释放一些磁盘空间（或请教师删除图片），然后重试。",
                            "Could not write to the library while {doing}: {why}. Free some disk space "
                            "(or ask the teacher to delete images), then try again.", doing=doing, why=why))


def _unreadable(root: Path, path: Path, error: str, aside: str) -> LibraryError:
    """A file of the store that cannot be read: the images are intact, `repair` rebuilds from them."""
    return LibraryError(Msg(
        "{path} 无法读取（{error}）；{images} 中的图片完好无损：把 {aside} 移到别处，"
        "然后运行 `python -m core library repair`，它会根据这些图片重新添加每一张。",
        "{path} is unreadable ({error}); the images in {images} are intact: move {aside} aside, then "
        "`python -m core library repair` re-adds every image from them.",
        path=str(path), error=error, images=str(root / "images"), aside=aside))


def _version_error(path: Path, found, reads: str) -> LibraryError:
    return LibraryError(Msg("{path} 的格式版本是 {found}，本程序读取的是 {reads}。请使用更新版本的工作台。",
                            "{path} has format version {found}; this program reads {reads}. "
                            "Use a newer version of the workbench.", path=str(path), found=found, reads=reads))


def check_model(root: Path, stored: str, model: str) -> None:
    """ModelMismatchError unless the library's features are `model`'s: embeddings never mix."""
    if stored != model:
        raise ModelMismatchError(Msg(
            "图库 {root} 保存的是模型 {stored!r} 的特征，而不是 {model!r} 的；不同模型的嵌入绝不混用。"
            "请使用 --model {stored!r}、换一个 --library 文件夹，或运行 "
            "`python -m core library reindex --model {model}` 重新编码。",
            "Library {root} holds features of model {stored!r}, not {model!r}; "
            "embeddings of different models are never mixed. Use --model {stored!r}, another "
            "--library folder, or `python -m core library reindex --model {model}` to re-encode it.",
            root=str(root), stored=stored, model=model))


# ---------------------------------------------------------------- manifest and columns

def read_manifest(root: Path) -> dict:
    path = root / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        int(manifest["generation"]), manifest["model_id"], int(manifest["dim"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _unreadable(root, path, type(e).__name__, f"{MANIFEST_NAME}, {STORE_DIR}/ and {JOURNAL_NAME}") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise _version_error(path, manifest.get("format_version"), str(FORMAT_VERSION))
    return manifest


def write_manifest(root: Path, model_id: str, dim: int, dtype: str, gen: int, created: float, next_id: int) -> None:
    """Point the library at generation `gen` (write-then-rename: this is the switch)."""
    manifest = {"format_version": FORMAT_VERSION, "model_id": model_id, "dim": dim, "dtype": dtype,
                "generation": gen, "created": created, "next_id": next_id}
    write_atomic(root / MANIFEST_NAME, lambda f: f.write(json.dumps(manifest, indent=1).encode()))


def open_columns(root: Path, gen: int, dim: int) -> Columns:
    try:
        return Columns.open(root / STORE_DIR, gen, dim)
    except (OSError, ValueError) as e:
        raise _unreadable(root, root / STORE_DIR / f"*.{gen}.*", str(e),
                          f"{MANIFEST_NAME}, {STORE_DIR}/ and {JOURNAL_NAME}") from None


def write_generation(root: Path, gen: int, rows: list[Row], vectors: Iterable[torch.Tensor], manifest: dict) -> None:
    """Write generation `gen`'s columns, then store.json naming it: the switch. A failure before
    the switch removes what was written of `gen` and raises LibraryError (the library is unchanged);
    once store.json names `gen` nothing is undone. `manifest`: write_manifest's other fields."""
    try:
        write_columns(root / STORE_DIR, gen, rows, vectors, manifest["dim"], manifest["dtype"])
        write_manifest(root, gen=gen, **manifest)
    except OSError as e:   # e.g. the disk is full
        if int(read_manifest(root)["generation"]) != gen:
            remove_generation(root / STORE_DIR, gen)
            raise disk_error(e, Msg("正在压缩图库，图库保持不变", "compacting the library; it is unchanged")) from None


# ---------------------------------------------------------------- the journal

def open_journal(journal: JournalFile, generation: int, recover: bool) -> bytes | None:
    """The journal's contents to replay on open (marked read from the start), or None when it belongs
    to another generation and `recover` is off (another process is between its manifest and journal
    renames). With `recover`, a stale or missing journal (its records are in the snapshot) is replaced
    by an empty one; a newer one is an error."""
    data, ino = journal.read()   # one open: the bytes and the inode must be the same file's
    found = journal_generation(data, journal.path)
    if found != generation:
        if not recover:
            journal.opened(-1, 0)
            return None
        if found > generation:
            raise _newer(journal.path, MANIFEST_NAME)
        journal.start(generation)
        data, ino = journal.read()
    journal.opened(ino, 0)
    return data


def _newer(path: Path, than: str) -> LibraryError:
    return LibraryError(Msg("{path} 比 {manifest} 更新；存储是不是被手动替换过？",
                            "{path} is newer than {manifest}; was the store replaced by hand?", path=str(path),
                            manifest=than))


def journal_generation(data: bytes, path: Path) -> int:
    """The generation a journal's header names (-1 for an empty file); LibraryError for a damaged header."""
    if not data:
        return -1
    if len(data) < JOURNAL_HEADER.size or data[:4] != JOURNAL_MAGIC:
        raise LibraryError(Msg(
            "{path} 已损坏（文件头无法读取）。把它移到别处后重新打开图库：会恢复到上次压缩时的状态，"
            "再用 `library repair` 重新添加之后的图片。",
            "{path} is damaged (its header is unreadable). Move it aside and open the library "
            "again: you get the state of the last compaction, and `library repair` re-adds the newer images.",
            path=str(path)))
    return JOURNAL_HEADER.unpack_from(data)[2]


# ---------------------------------------------------------------- images: staged, then moved

def stage(root: Path, img: NewImage) -> tuple[str, Path]:
    """Write an image into staging/ (not yet synced: commit_adds syncs the batch at once); returns
    (its final path relative to root, the staged file)."""
    rel = image_rel(img.sha256, img.ext)
    staged = root / "staging" / Path(rel).name
    try:
        with open(staged, "wb") as f:
            f.write(img.data)
    except OSError:   # e.g. the disk is full: no partial file stays behind
        staged.unlink(missing_ok=True)
        raise
    return rel, staged


def commit_adds(root: Path, journal: JournalFile, images: list[NewImage], first_id: int) -> list[str]:
    """Stage each image, make them all durable with one sync (journal.sync_files), then append one
    journal record per image (ids first_id, first_id + 1, ...) with one fsync: the acknowledgement.
    Returns their final paths relative to root (the caller moves them there, finish_move with
    sync=False). On failure nothing was acknowledged and no staged file stays: LibraryError."""
    records, staged_files = [], []
    try:
        for i, img in enumerate(images):
            rel, staged = stage(root, img)
            staged_files.append(staged)
            records.append((rel, encode_record({"op": "add", "sha": img.sha256, "id": first_id + i, "file": rel,
                                                "meta": img.meta}, img.vector)))
        sync_files(root / "staging", staged_files)
        journal.append(b"".join(r[1] for r in records), len(records))
    except OSError as e:   # e.g. the disk is full
        for staged in staged_files:
            staged.unlink(missing_ok=True)
        raise disk_error(e, Msg("正在存储 {n} 张新图片，均未添加",
                                "storing {n} new image(s); none of them was added", n=len(images))) from None
    return [rel for rel, _ in records]


def finish_move(root: Path, rel: str, sync: bool = True) -> None:
    """Move an acknowledged image from staging/ to `rel` (nothing to do when it is there already).
    sync=False (right after commit_adds) leaves the rename unsynced: the staged copy is durable and
    acknowledged, so if a power cut loses the rename, the next open finds it in staging/ and moves
    it again (clear_staging); a batch then costs no directory fsync per image."""
    target = root / rel
    staged = root / "staging" / target.name
    if staged.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        if sync:
            fsync_dir(target.parent)


def clear_staging(root: Path, acknowledged: Callable[[str], str | None]) -> None:
    """On open: finish the moves of acknowledged images (`acknowledged(sha)` gives their relative
    path), delete the files that were never acknowledged."""
    for p in (root / "staging").iterdir():
        rel = acknowledged(p.stem)
        if rel is not None:   # acknowledged, its move failed (e.g. disk full)
            finish_move(root, rel)
        else:
            p.unlink(missing_ok=True)


def recover_files(root: Path, rows: Rows, added: list[str], removed: list[Entry]) -> None:
    """After replaying the journal on open: finish the moves of the images it acknowledged and delete
    the files of rows it removed, unless a later record added the same image again (add, remove, add)."""
    for rel in added:
        finish_move(root, rel)
    for entry in {e.sha256: e for e in removed}.values():
        if rows.slot_of_sha(entry.sha256) is None:
            delete_image(root, entry.sha256, str(entry.path.relative_to(root)))


def delete_image(root: Path, sha: str, rel: str, owned: bool = True) -> None:
    """Delete a removed row's image and thumbnail; an image stored by reference (meta "ref") is the
    user's own file and stays."""
    if owned and str(rel).startswith("images/"):
        (root / rel).unlink(missing_ok=True)
    thumb_path(root, sha).unlink(missing_ok=True)


# ---------------------------------------------------------------- features_library.pth

def write_snapshot(root: Path, entries: list[Entry], features: torch.Tensor, manifest: dict) -> None:
    """Rewrite features_library.pth (format above) with these entries and their [N, D] features."""
    snap = {"format_version": FORMAT_VERSION, "model_id": manifest["model_id"], "dim": manifest["dim"],
            "features": features.contiguous(), "files": [str(e.path.relative_to(root)) for e in entries],
            "sha256": [e.sha256 for e in entries], "ids": torch.tensor([e.rowid for e in entries], dtype=torch.int64),
            "meta": [e.meta for e in entries], "generation": manifest["generation"], "created": manifest["created"]}
    try:
        write_atomic(root / SNAPSHOT_NAME, lambda f: torch.save(snap, f))
    except OSError as e:
        raise disk_error(e, Msg("正在重写 {file}，图库本身完好", "rewriting {file}; the library itself is intact",
                                file=SNAPSHOT_NAME)) from None


def read_v1_snapshot(root: Path, model_id: str) -> dict:
    """features_library.pth of a version-1 library (or a version-2 one whose store.json was lost),
    checked to be a readable version this program knows, of `model_id`."""
    path = root / SNAPSHOT_NAME
    try:
        snap = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise _unreadable(root, path, type(e).__name__, f"{SNAPSHOT_NAME} and {JOURNAL_NAME}") from None
    if snap.get("format_version") not in (1, FORMAT_VERSION):
        raise _version_error(path, snap.get("format_version"), f"1 and {FORMAT_VERSION}")
    check_model(root, snap["model_id"], model_id)
    return snap


def migrate_from_pth(root: Path, model_id: str, dim: int, dtype: str, journal: JournalFile) -> None:
    """Version 1 -> 2 (or a version-2 library whose store.json was lost): the pickle's rows plus its
    journal (records without ids get the next ids in order) written as generation g+1 in columns.
    The old journal and snapshot stay valid until store.json lands, so a crash mid-way starts again."""
    snap = read_v1_snapshot(root, model_id)
    gen = int(snap["generation"])
    rows = Rows(root, empty_columns(dim), dim, 0)
    ids = snap["ids"].tolist() if "ids" in snap else [None] * len(snap["files"])
    for i, (rel, sha, meta, rowid) in enumerate(zip(snap["files"], snap["sha256"], snap["meta"], ids)):
        rows.add(sha, rel, meta, snap["features"][i].float(), rowid)
    data, _ = journal.read()
    found = journal_generation(data, journal.path)
    if found > gen:
        raise _newer(journal.path, SNAPSHOT_NAME)
    if found == gen:   # an older journal's records are in the snapshot already
        end, _, added, removed = rows.replay(data, JOURNAL_HEADER.size)
        journal.cut(end)
        recover_files(root, rows, added, removed)
    columns, vectors = rows.to_write()
    write_generation(root, gen + 1, columns, vectors, {"model_id": model_id, "dim": dim, "dtype": dtype,
                                                        "created": float(snap["created"]), "next_id": rows.next_id})
    journal.start(gen + 1)


# ---------------------------------------------------------------- verify

def verify(root: Path, rows: dict[Path, str], finite: bool, deep: bool) -> dict:
    """Library.verify's report: the rows whose file is missing, the image files without a row, the files
    whose hash is not their row's (read only when `deep`), as paths relative to root; healthy when
    there are none and every feature is `finite`."""
    missing = sorted(str(p.relative_to(root)) for p in rows if not p.is_file())
    on_disk = {p for p in (root / "images").rglob("*") if p.is_file()}
    orphans = sorted(str(p.relative_to(root)) for p in on_disk - rows.keys())
    corrupt = []
    if deep:
        corrupt = sorted(str(p.relative_to(root)) for p, s in rows.items()
                         if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() != s)
    return {"healthy": not (missing or orphans or corrupt) and finite, "rows": len(rows), "missing_files": missing,
            "orphan_files": orphans, "hash_mismatch": corrupt, "features_finite": finite}


def features_bytes(root: Path, gen: int) -> int:
    """Disk used by generation `gen`'s columns and the journal."""
    store = sum(p.stat().st_size for p in (root / STORE_DIR).glob(f"*.{gen}.*"))
    return store + (root / JOURNAL_NAME).stat().st_size
