"""The library's journal file format and durable-write helpers (see core/library.py).

journal.log = [header: magic "CWBJ", u16 format version, u64 generation]
              then records [u32 payload length][u32 crc32(payload)][payload],
payload     = JSON header (op, sha, file, meta) + NUL + float32 vector bytes (adds only).

A record whose length runs past the end of the file or whose CRC does not match is a torn
write (a crash mid-append): reading stops there.
"""
from __future__ import annotations

import json
import os
import struct
import threading
import zlib
from pathlib import Path

import torch

__all__ = ["JOURNAL_MAGIC", "JOURNAL_HEADER", "RECORD_HEADER", "encode_record", "read_records",
           "fsync_dir", "write_atomic"]

JOURNAL_MAGIC = b"CWBJ"
JOURNAL_HEADER = struct.Struct("<4sHQ")   # magic, format version, generation
RECORD_HEADER = struct.Struct("<II")      # payload length, crc32(payload)
MAX_RECORD = 1 << 24                      # a length beyond 16 MiB can only be a torn header


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write) -> None:
    """write(f) into a temp file beside `path`, fsync, rename over `path`, fsync the directory."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)   # a failed write (e.g. disk full) leaves nothing behind
    fsync_dir(path.parent)


def encode_record(header: dict, vector: torch.Tensor | None = None) -> bytes:
    payload = json.dumps(header, ensure_ascii=False).encode() + b"\0"
    if vector is not None:
        payload += vector.detach().to(torch.float32).contiguous().numpy().tobytes()
    return RECORD_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_records(data: bytes, start: int):
    """Yield (end_offset, header, vector_bytes) for each intact record from `start`; stop at a torn tail."""
    pos = start
    while pos + RECORD_HEADER.size <= len(data):
        length, crc = RECORD_HEADER.unpack_from(data, pos)
        end = pos + RECORD_HEADER.size + length
        if length > MAX_RECORD or end > len(data):
            return
        payload = data[pos + RECORD_HEADER.size:end]
        if zlib.crc32(payload) != crc:
            return
        head, _, vec = payload.partition(b"\0")
        yield end, json.loads(head), vec
        pos = end
