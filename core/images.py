"""Safe image loading in one place.

`load_image` turns a path or bytes into an upright RGB `PIL.Image`, or raises
`ImageError` naming the file and the reason. Ingest (core/library/ingest.py) and the jobs past
one machine (core/scale/) share the rest: display names, stored file extensions, header sizes. It handles EXIF orientation,
palette / RGBA / LA / CMYK / 16-bit / float modes, animated files (first frame),
decompression bombs (a pixel limit), truncated or corrupt data, non-images with
image extensions and zero-byte files.
"""
from __future__ import annotations

import base64
import binascii
import io
import os
import re
import unicodedata
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .messages import Msg

__all__ = ["load_image", "decode_image", "read_file", "check_size", "iter_image_files", "require_regular_file", "safe_display_name", "stored_ext",
           "upright_size", "draft_size", "from_base64", "IMAGE_EXTENSIONS", "MAX_PIXELS", "MAX_BYTES", "NOT_A_FILE"]

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
MAX_PIXELS = int(os.environ.get("CLIP_WB_MAX_PIXELS", 100_000_000))  # 100 MP: bigger is almost surely a bomb
NOT_A_FILE = Msg("不是普通文件（只是名字像图片的文件夹、管道或设备），已跳过",
                 "not a regular file (a folder, pipe or device with an image-like name); skipped")
MAX_BYTES = int(os.environ.get("CLIP_WB_MAX_BYTES", 100 * 1024 * 1024))  # 100 MiB per file

# A stored image's extension comes from its decoded format, never from the user's file name.
_FORMAT_EXT = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif", "MPO": ".jpg"}

# Never let PIL quietly decode half a file: a truncated JPEG must be reported, not embedded.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# PIL's own bomb guard (89.5 MP) would pre-empt ours with a false message; ours is the limit.
Image.MAX_IMAGE_PIXELS = max(MAX_PIXELS, Image.MAX_IMAGE_PIXELS or 0)


def safe_display_name(name: str, limit: int = 120) -> str:
    """The file name part only, control characters removed, length-limited: for display, never for paths."""
    base = re.split(r"[\\/]", str(name))[-1]
    base = "".join(c for c in unicodedata.normalize("NFC", base) if unicodedata.category(c)[0] != "C")
    return base.strip()[:limit] or "image"


def stored_ext(fmt: str | None) -> str:
    """The extension a stored image gets for PIL's format name (".img" for one without a usual extension)."""
    return _FORMAT_EXT.get(fmt, ".img")


def upright_size(data: bytes) -> tuple[str | None, tuple[int, int]]:
    """(format, (width, height) after EXIF rotation) from the header alone."""
    head = Image.open(io.BytesIO(data))
    w, h = head.size
    try:
        if head.getexif().get(0x0112) in (5, 6, 7, 8):   # rotated a quarter turn
            w, h = h, w
    except (OSError, SyntaxError, ValueError):
        pass
    return head.format, (w, h)


def draft_size(model_size: int | None, thumb_size: int) -> int | None:
    """Smallest JPEG decode size that loses nothing for an image tower of `model_size` pixels and a
    `thumb_size` thumbnail (see decode_image's `draft`); None (decode in full) without a model size."""
    return max(int(model_size), thumb_size) if model_size else None


def _grey_scale(mode: str, arr: np.ndarray) -> float:
    """Factor to 0..255 for wide greyscale: 16-bit full range, float in [0, 1] (or already 0..255)."""
    if mode.startswith("I;16"):
        return 255 / 65535
    peak = float(arr.max()) if arr.size else 0.0
    if mode == "F" and peak <= 1.0:
        return 255.0
    return 1.0 if peak <= 255 else 255 / 65535   # "I": 8-bit values kept, else a 16-bit range (PNG 16-bit)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / 32-bit / float greyscale -> 8 bits on the type's own scale (not clipped to white,
        # not stretched: a uniform mid-grey stays mid-grey, a dark photo stays dark)
        arr = np.asarray(img, dtype=np.float32)
        img = Image.fromarray(np.clip(np.rint(arr * _grey_scale(img.mode, arr)), 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparent -> white, as viewers show it
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(source: str | os.PathLike | bytes, name: str | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode `source` (a path or raw bytes) to an upright RGB image, or raise ImageError."""
    if isinstance(source, (bytes, bytearray)):
        name, data = name or "<upload>", bytes(source)
    else:
        name = name or Path(source).name
        data = read_file(source, name)
    return decode_image(data, name, max_pixels)


def read_file(path: str | os.PathLike, name: str) -> bytes:
    """The bytes of one image file, or ImageError naming `name`: not a regular file, over MAX_BYTES
    (checked before reading), unreadable."""
    path = Path(path)
    require_regular_file(path, name)   # a folder named x.jpg, a pipe (reading it would block)
    try:
        check_size(path.stat().st_size, name)
        return path.read_bytes()
    except OSError as e:
        raise ImageError(name, Msg("无法读取文件（{error}）", "cannot read file ({error})",
                                    error=str(e.strerror or e))) from None


def check_size(size: int, name: str, limit: int = MAX_BYTES) -> None:
    """ImageError when a file of `size` bytes is over `limit` (MAX_BYTES unless a server sets its own)."""
    if size > limit:
        raise ImageError(name, Msg("文件大小 {size:.0f} MiB，超过 {limit:.0f} MiB 的上限",
                                    "file is {size:.0f} MiB, over the {limit:.0f} MiB limit",
                                    size=size / 2**20, limit=limit / 2**20))


def from_base64(text: str, name: str, limit: int = MAX_BYTES) -> bytes:
    """The bytes of an image sent as base64 text (bare, or a data: URL), its size checked before it is
    decoded; ImageError naming `name` otherwise. The JSON API's and the MCP tools' images come so."""
    text = (text or "").strip()
    payload = re.sub(r"\s+", "", text.split(",", 1)[-1] if text[:5].lower() == "data:" else text)
    check_size(len(payload) * 3 // 4, name, limit)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(name, Msg("不是有效的 base64 数据：请发送图片文件的 base64 编码，或 data:image/...;base64,... 形式的数据",
                                    "not valid base64 data: send the image file's bytes as base64, or a "
                                    "data:image/...;base64,... URL")) from None


def require_regular_file(path: Path, name: str) -> None:
    """ImageError(NOT_A_FILE) for a folder named x.jpg, a pipe or a device: never read (a pipe blocks).
    A path that does not exist passes: reading it reports that."""
    if path.exists() and not path.is_file():
        raise ImageError(name, NOT_A_FILE)


def decode_image(data: bytes, name: str, max_pixels: int = MAX_PIXELS, draft: int | None = None) -> Image.Image:
    """`draft`: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (DCT scaling, several times faster)
    as long as both sides stay >= draft pixels — for a consumer that shrinks it anyway."""
    if not data:
        raise ImageError(name, Msg("文件为空（0 字节）", "file is empty (0 bytes)"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > max_pixels:
                raise ImageError(name, Msg("图片为 {width}x{height} 像素，超过 {limit:,} 像素的上限",
                                            "image is {width}x{height} pixels, over the {limit:,} pixel limit",
                                            width=img.width, height=img.height, limit=max_pixels))
            img.seek(0)  # animated GIF/WebP/APNG: first frame
            if draft and img.format in ("JPEG", "MPO"):
                img.draft("RGB", (draft, draft))
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(name, Msg("不是图片文件（无法识别的格式）", "not an image file (unrecognised format)")) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(name, Msg("图片太大（超过 {limit:,} 像素的上限）", "image is too large (over the {limit:,} pixel limit)",
                                    limit=max_pixels)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(name, Msg("图片已损坏或不完整（{error}）", "corrupt or truncated image ({error})",
                                    error=_decoder_reason(str(e)))) from None


def _decoder_reason(text: str) -> Msg | str:
    """What PIL's decoder said, in both languages where we know its wording (a Chinese page should
    not quote English); anything else verbatim."""
    truncated = re.fullmatch(r"image file is truncated \((\d+) bytes not processed\)", text)
    if truncated:
        return Msg("文件被截断，还有 {n} 字节未处理", "image file is truncated ({n} bytes not processed)",
                   n=int(truncated.group(1)))
    known = {"image file is truncated": Msg("文件被截断", "image file is truncated"),
             "Truncated File Read": Msg("文件在读取途中就结束了", "the file ends before its data does"),
             "broken data stream when reading image file": Msg("读取时数据流已损坏", "broken data stream"),
             "could not create decoder object": Msg("无法为这种编码创建解码器", "no decoder for this encoding")}
    return known.get(text, text)


def iter_image_files(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Expand files and folders (recursively, sorted, hidden entries skipped) into image file paths.

    Files given explicitly are yielded whatever their extension, so a wrong-type file gets a
    clear error later instead of being silently ignored; folders yield only image extensions,
    including entries that only look like images (a folder named x.jpg, a pipe, a broken link):
    the reader then names each with its reason instead of skipping it silently. A folder named
    like an image file is never walked, so it is reported the same way however it was reached.
    """
    for p in map(Path, paths):
        if p.is_dir() and p.suffix.lower() not in IMAGE_EXTENSIONS:
            for root, dirs, files in os.walk(p):
                looks_like_images = [d for d in dirs if Path(d).suffix.lower() in IMAGE_EXTENSIONS]
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in looks_like_images)
                for f in sorted(files + looks_like_images):
                    if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS:
                        yield Path(root) / f
        else:
            yield p

