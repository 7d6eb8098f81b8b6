"""What a scale-out job reads: image sources expanded into items, and items cut into parts.

A SOURCE on the command line is one of:

    a folder              every image file under it (recursive, sorted, as `python -m core index`)
    LIST.txt              one path or URL per line (blank lines and lines starting with # skipped)
    LIST.csv / LIST.tsv   a column named image_path, path, url or filepath (else the first column)
    LIST.parquet          the same columns, read with pyarrow
    SHARD.tar             a WebDataset shard: every .jpg/.jpeg/.png/.webp member, keyed by __key__
    an http(s) URL        one remote image (fetched by the decode task)
    an image file         itself

Relative paths in a list file are taken relative to the list file's folder. An `Item` is
one image: (source, offset, size): a tar member is read at its byte offset without
unpacking the shard, so decode tasks on any node read members of one shard in parallel.

The expanded item list is cut into numbered parts of `part_size` consecutive items; each
part has a fingerprint (the hash of its items), written into its shard, so a re-run skips
exactly the parts whose shards are already there for the same items (resume).
"""
from __future__ import annotations

import csv
import hashlib
import os
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import DatasetError, ImageError
from ..images import IMAGE_EXTENSIONS, MAX_BYTES, iter_image_files

__all__ = ["Item", "Part", "expand_sources", "partition", "read_item", "display_name", "is_url",
           "LIST_SUFFIXES", "TAR_SUFFIXES", "URL_TIMEOUT"]

LIST_SUFFIXES = (".txt", ".csv", ".tsv", ".parquet")
TAR_SUFFIXES = (".tar",)
_TAR_MEMBER_EXT = {".jpg", ".jpeg", ".png", ".webp"}
_PATH_COLUMNS = ("image_path", "path", "url", "filepath", "file")   # first found names the images
URL_TIMEOUT = float(os.environ.get("CLIP_WB_URL_TIMEOUT", 20))       # seconds per remote image


@dataclass(frozen=True)
class Item:
    """One image to index. offset >= 0: `size` bytes at `offset` inside the tar `source`."""
    source: str            # absolute file path, or URL
    offset: int = -1
    size: int = -1
    member: str = ""       # tar member name (WebDataset: <__key__>.<ext>)

    @property
    def path(self) -> str:
        """What shards record as the image's path: the file, the URL, or TAR#MEMBER."""
        return f"{self.source}#{self.member}" if self.member else self.source

    @property
    def in_tar(self) -> bool:
        return self.offset >= 0


@dataclass(frozen=True)
class Part:
    number: int            # part-NNNNN in the shard folder
    first: int             # global position of its first item (the shard's id column starts here)
    items: tuple[Item, ...]
    fingerprint: str       # sha256 over the items' paths and tar offsets


def is_url(source: str) -> bool:
    return str(source).startswith(("http://", "https://"))


def display_name(item: Item) -> str:
    """The file name part of an item, for the library's display name (never used as a path)."""
    tail = item.member or item.source.rstrip("/")
    return tail.rsplit("/", 1)[-1].split("?", 1)[0] or "image"


def expand_sources(sources: Iterable[str | os.PathLike]) -> tuple[list[Item], list[str]]:
    """SOURCEs -> (items in a deterministic order, sources that do not exist)."""
    items, missing = [], []
    for src in map(str, sources):
        if is_url(src):
            items.append(Item(src))
            continue
        path = Path(src)
        if not path.exists():
            missing.append(src)
        elif path.is_dir():
            items += [Item(str(p.resolve())) for p in iter_image_files([path])]
        elif path.suffix.lower() in LIST_SUFFIXES:
            items += [Item(s) for s in _read_list(path)]
        elif path.suffix.lower() in TAR_SUFFIXES:
            items += list(_tar_items(path))
        else:
            items.append(Item(str(path.resolve())))
    return items, missing


def _read_list(path: Path) -> list[str]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        rows = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        rows = [r for r in rows if r and not r.startswith("#")]
    elif suffix == ".parquet":
        import pyarrow.parquet as pq
        table = pq.read_table(path)
        rows = [str(v) for v in table.column(_pick_column(table.column_names, path)).to_pylist() if v]
    else:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter="\t" if suffix == ".tsv" else ",")
            header = next(reader, [])
            col = header.index(_pick_column(header, path))
            rows = [r[col].strip() for r in reader if len(r) > col and r[col].strip()]
    base = path.resolve().parent
    return [r if is_url(r) else str((base / r).resolve()) for r in rows]


def _pick_column(names: list[str], path: Path) -> str:
    lower = {n.lower(): n for n in names}
    for want in _PATH_COLUMNS:
        if want in lower:
            return lower[want]
    if not names:
        raise DatasetError(f"{path} is empty: expected a column of image paths or URLs ({', '.join(_PATH_COLUMNS)})")
    return names[0]


def _tar_items(path: Path) -> Iterator[Item]:
    """Image members of a WebDataset shard, in archive order (offsets read from the headers only)."""
    try:
        with tarfile.open(path, "r:") as tar:   # uncompressed only: members must be seekable
            for m in tar:
                if m.isfile() and Path(m.name).suffix.lower() in _TAR_MEMBER_EXT:
                    yield Item(str(path.resolve()), m.offset_data, m.size, m.name)
    except (tarfile.TarError, OSError) as e:
        raise DatasetError(f"{path} is not a readable uncompressed tar shard ({e}); WebDataset shards "
                           "must be plain .tar files (recompress .tar.gz shards without compression)") from None


def partition(items: list[Item], part_size: int) -> list[Part]:
    """Consecutive runs of `part_size` items, numbered from 0, each with its fingerprint."""
    if part_size < 1:
        raise ValueError("part_size must be at least 1")
    parts = []
    for number, first in enumerate(range(0, len(items), part_size)):
        chunk = tuple(items[first:first + part_size])
        h = hashlib.sha256()
        for it in chunk:
            h.update(f"{it.path}\0{it.offset}\0{it.size}\n".encode())
        parts.append(Part(number, first, chunk, h.hexdigest()))
    return parts


def read_item(item: Item) -> bytes:
    """The image's bytes (a file, a tar member at its offset, or a URL), or ImageError."""
    name = display_name(item)
    if is_url(item.source):
        return _fetch(item.source, name)
    try:
        with open(item.source, "rb") as f:
            if item.in_tar:
                size = item.size
                f.seek(item.offset)
            else:
                size = os.fstat(f.fileno()).st_size
            if size > MAX_BYTES:
                raise ImageError(name, f"file is over the {MAX_BYTES / 2**20:.0f} MiB limit")
            data = f.read(size)
    except OSError as e:
        raise ImageError(name, f"cannot read file ({e.strerror or e})") from None
    if len(data) != size:
        raise ImageError(name, f"short read ({len(data)} of {size} bytes): the file changed or is truncated")
    return data


def _fetch(url: str, name: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT) as r:
            data = r.read(MAX_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ImageError(name, f"cannot fetch {url} ({getattr(e, 'reason', None) or e})") from None
    if len(data) > MAX_BYTES:
        raise ImageError(name, f"download is over the {MAX_BYTES / 2**20:.0f} MiB limit")
    return data
