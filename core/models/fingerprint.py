"""Content fingerprints of weight files, cached by (path, size, mtime) so a start does not re-hash
a 577 MB checkpoint (~1 s per GB) when the file has not changed.

The cache is one small JSON file in the model cache (`fingerprints.json`):

    {"/abs/path/ViT-B-32.pt": [size, mtime_ns, "sha256 hex prefix"], ...}

A file whose size or mtime differs from its entry is hashed again; a cache that cannot be read
or written only costs that hash.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

__all__ = ["file_fingerprint", "FINGERPRINTS_NAME"]

FINGERPRINTS_NAME = "fingerprints.json"
_DIGITS = 10          # hex digits kept: enough to tell two fine-tunes of one architecture apart
_MAX_ENTRIES = 256    # oldest entries are dropped past this (a cache, not a record)
_lock = threading.Lock()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:_DIGITS]


def file_fingerprint(path: Path, cache: Path | None = None) -> str:
    """Short SHA-256 of the whole file, from the cache when (size, mtime) are unchanged.
    Two fine-tunes of one architecture never share a fingerprint (their features must never mix)."""
    path = Path(path).resolve()
    st = path.stat()
    key, stamp = str(path), [st.st_size, st.st_mtime_ns]
    index_file = Path(cache) / FINGERPRINTS_NAME if cache else None
    with _lock:
        index = _read(index_file)
        hit = index.get(key)
        if hit and hit[:2] == stamp:
            return hit[2]
        digest = _sha256(path)
        if index_file is not None:
            index.pop(key, None)
            index[key] = [*stamp, digest]
            _write(index_file, dict(list(index.items())[-_MAX_ENTRIES:]))
        return digest


def _read(index_file: Path | None) -> dict:
    if index_file is None:
        return {}
    try:
        data = json.loads(index_file.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(index_file: Path, index: dict) -> None:
    tmp = index_file.with_name(f".{index_file.name}.{os.getpid()}.tmp")
    try:
        index_file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(index), encoding="utf-8")
        os.replace(tmp, index_file)   # atomic: another process never reads half a file
    except OSError:
        tmp.unlink(missing_ok=True)   # read-only cache: the next start hashes again
