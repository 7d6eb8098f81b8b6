"""Embedding shards: what a scale-out job writes, one Parquet file per part of its input.

    SHARDS/part-00000.parquet, part-00001.parquet, ...   (written atomically: temp + fsync + rename)

Columns (one row per image that decoded and encoded):

    id         int64          the image's position in the job's input list (stable for the same inputs)
    sha256     string         hex SHA-256 of the image bytes (the library's dedupe key)
    path       string         absolute file path, URL, or TAR#MEMBER for a WebDataset member
    width      int32          decoded width in pixels (after EXIF orientation)
    height     int32
    embedding  list<float32>  [D] L2-normalised image embedding

The schema metadata key `clip_wb.shard` holds JSON (format version SHARD_FORMAT):
{"format", "model_id", "dim", "part", "fingerprint", "items", "errors": [[name, reason], ...]}.
A shard exists only complete, so "the shard is there with this part's fingerprint and
model" is the whole resume test; unreadable images are listed in "errors" so a re-run does
not retry them forever.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
import numpy as np

from ..errors import LibraryError
from ..library.journal import fsync_dir

__all__ = ["SHARD_FORMAT", "META_KEY", "default_shard_dir", "shard_path", "write_shard", "shard_info", "list_shards", "read_shard",
           "clean_temp"]

SHARD_FORMAT = 1
META_KEY = b"clip_wb.shard"
_PATTERN = "part-*.parquet"


def default_shard_dir(library_root: Path, sources: list[str], model: str) -> Path:
    """library/shards/job-<hash of the sources and model>: the same command resumes in the same folder."""
    key = hashlib.sha256("\0".join([model, *(str(Path(s).resolve()) if "://" not in s else s
                                               for s in sources)]).encode()).hexdigest()[:12]
    return Path(library_root) / "shards" / f"job-{key}"


def shard_path(folder: Path, part: int) -> Path:
    return Path(folder) / f"part-{part:05d}.parquet"


def write_shard(folder: Path, part: int, columns: dict[str, np.ndarray], info: dict) -> Path:
    """Write one part's shard atomically. columns: id [n], sha256 [n], path [n], width [n],
    height [n], embedding float32 [n, D]; info: model_id, dim, fingerprint, items, errors."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    emb = np.ascontiguousarray(columns["embedding"], dtype=np.float32).reshape(len(columns["id"]), int(info["dim"]))
    table = pa.table({
        "id": pa.array(np.asarray(columns["id"], dtype=np.int64)),
        "sha256": pa.array([str(s) for s in columns["sha256"]], pa.string()),
        "path": pa.array([str(p) for p in columns["path"]], pa.string()),
        "width": pa.array(np.asarray(columns["width"], dtype=np.int32)),
        "height": pa.array(np.asarray(columns["height"], dtype=np.int32)),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), int(info["dim"])),
    })
    meta = {"format": SHARD_FORMAT, "part": part, **info}
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, ensure_ascii=False).encode()})
    target = shard_path(folder, part)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)
    fsync_dir(target.parent)
    return target


def shard_info(path: Path) -> dict | None:
    """The shard's metadata, or None when the file is not a readable shard of this format."""
    import pyarrow.parquet as pq
    try:
        raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
        info = json.loads(raw) if raw else None
    except (OSError, ValueError):   # pyarrow's ArrowInvalid is a ValueError: a torn or foreign file
        return None
    return info if info and info.get("format") == SHARD_FORMAT else None


def list_shards(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob(_PATTERN))


def read_shard(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(metadata, columns as numpy: id, sha256, path, width, height, embedding [n, D] float32)."""
    import pyarrow.parquet as pq
    info = shard_info(path)
    if info is None:
        raise LibraryError(f"{path} is not an embedding shard of this workbench (format {SHARD_FORMAT}); "
                           "delete it and run the indexing job again to rewrite it")
    table = pq.read_table(path)
    n, dim = table.num_rows, int(info["dim"])
    flat = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    cols = {name: np.asarray(table.column(name).to_pylist(), dtype=object if name in ("sha256", "path") else None)
            for name in ("id", "sha256", "path", "width", "height")}
    cols["embedding"] = np.array(flat, dtype=np.float32).reshape(n, dim)   # a writable copy
    return info, cols


def clean_temp(folder: Path) -> int:
    """Delete temp files a killed job left mid-write (they were never a shard)."""
    stale = list(Path(folder).glob(".part-*.parquet.*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)

