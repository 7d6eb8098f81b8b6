"""The library's journal file: its format, where this process has read it up to, and durable writes
(see core/library/disk.py for the whole directory).

journal.log = [header: magic "CWBJ", u16 format version, u64 generation]
              then records [u32 payload length][u32 crc32(payload)][payload],
payload     = JSON header (op, sha, file, meta) + NUL + float32 vector bytes (adds only).

A record whose length runs past the end of the file or whose CRC does not match is a torn
write (a crash mid-append): reading stops there.
"""
from __future__ import annotations

import ctypes
import json
import os
import platform
import re
import struct
import sys
import threading
import zlib
from pathlib import Path

import torch

__all__ = ["JournalFile", "JOURNAL_MAGIC", "JOURNAL_HEADER", "RECORD_HEADER", "encode_record", "read_records",
           "fsync_dir", "sync_files", "write_atomic"]

JOURNAL_MAGIC = b"CWBJ"
JOURNAL_HEADER = struct.Struct("<4sHQ")   # magic, format version, generation
RECORD_HEADER = struct.Struct("<II")      # payload length, crc32(payload)
MAX_RECORD = 1 << 24                      # a length beyond 16 MiB can only be a torn header


def _sync_path(path: Path, sync) -> None:
    """sync(fd) on `path` opened read-only (os.fsync for a file or a folder, syncfs for its file system)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        sync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    _sync_path(path, os.fsync)


def _load_syncfs():
    """libc's syncfs(2) where it reports write-back errors (Linux 5.8 and later), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        major, minor = (int(v) for v in re.match(r"(\d+)\.(\d+)", platform.release()).groups())
        call = ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError, ValueError):
        return None
    return call if (major, minor) >= (5, 8) else None   # earlier kernels drop the errors: fsync each file there


_SYNCFS = _load_syncfs()


def syncfs(fd: int) -> None:
    """syncfs(2): write back every dirty file of the file system holding `fd`; OSError on failure."""
    if _SYNCFS(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def sync_files(folder: Path, files: list[Path]) -> None:
    """Make `files` (written in `folder`, not yet synced) and `folder`'s entries durable with one
    call for all of them: syncfs(2) on Linux >= 5.8, else one fsync per file and one of the folder.
    A batch of images then costs one sync, not one per image (issue 21)."""
    if _SYNCFS is None:
        for path in files:
            _sync_path(path, os.fsync)
        return fsync_dir(folder)
    _sync_path(folder, syncfs)


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


class JournalFile:
    """One library's journal.log as this process knows it: which file (inode) it read, up to
    where, and how many records that was. The caller holds its lock around every call."""

    def __init__(self, path: Path, version: int):
        self.path, self.version = path, version   # version: the format version written in new headers
        self.ino, self.pos, self.records = -1, 0, 0

    def header(self, generation: int) -> bytes:
        return JOURNAL_HEADER.pack(JOURNAL_MAGIC, self.version, generation)

    def start(self, generation: int) -> None:
        """A new, empty journal for `generation` (write-then-rename)."""
        write_atomic(self.path, lambda f: f.write(self.header(generation)))

    def empty_in_place(self, generation: int) -> None:
        """Empty the journal in place for `generation` (needs no new disk space)."""
        with open(self.path, "r+b") as f:
            f.truncate(JOURNAL_HEADER.size)
            f.seek(0)
            f.write(self.header(generation))
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> tuple[bytes, int]:
        """(contents, inode) from one open; (b"", -1) when there is no journal."""
        try:
            with open(self.path, "rb") as f:
                return f.read(), os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            return b"", -1

    def opened(self, ino: int, end: int) -> None:
        """This process has read the file with inode `ino` up to `end` (records counted by the caller)."""
        self.ino, self.pos = ino, end

    def appended_since(self, generation: int) -> bytes | None:
        """Bytes other processes appended since `pos` (b"" when none); None when the file was
        replaced (compacted elsewhere): then everything must be read again."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return b""
        if st.st_ino != self.ino:
            return None
        if st.st_size <= self.pos:
            return b""
        with open(self.path, "rb") as f:
            head = f.read(JOURNAL_HEADER.size)
            # an inode number can be reused by a later compaction's journal: the generation can't
            if (os.fstat(f.fileno()).st_ino != self.ino or len(head) < JOURNAL_HEADER.size
                    or JOURNAL_HEADER.unpack(head)[2] != generation):
                return None
            f.seek(self.pos)
            return f.read()

    def append(self, blob: bytes, records: int) -> None:
        """Append and fsync (the acknowledgement). A failed write (e.g. the disk is full) takes its
        partial record back out."""
        with open(self.path, "ab") as f:
            try:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                f.truncate(self.pos)
                raise
            self.pos = f.tell()
        self.records += records

    def cut(self, end: int | None = None) -> None:
        """Cut the file at `end` (default: where this process has read to) when something lies past
        it: the torn tail of a writer that died."""
        end = self.pos if end is None else end
        if self.path.stat().st_size > end:
            with open(self.path, "r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())
