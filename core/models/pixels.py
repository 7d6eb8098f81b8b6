"""JPEG bytes -> an image tower's normalised pixels as tensors, a batch at a time: nvJPEG through
torchvision on CUDA (one batched call), libjpeg through torchvision on the CPU (the same code,
image by image: what the tests prove equal to the PIL path without a GPU).

    orient = tensor_orientation(data)        # EXIF orientation 1..8, or None: the PIL path reads it
    batch = decode_jpegs([(name, data), ...], encoder.pixel_recipe, encoder.preprocess, device)
    batch.pixels    # float32 [K, 3, S, S] on `device`, one row per file that could be read
    batch.rows      # batch.rows[k]: the index in the files of pixels[k]
    batch.images    # RGB PIL images of those rows, at most thumb_size on the long side (thumbnails)
    batch.errors    # (index, name, reason): files neither decoder could read, named as decode_image names them

What the tensor decoder is not given (PNG, WebP, CMYK, progressive or truncated JPEGs, anything over
MAX_PIXELS by its header) or fails on goes, file by file, through core/images.py's decode_image
and the encoder's own preprocess, so each unreadable file keeps today's reason.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ImageError
from ..images import MAX_PIXELS, decode_image
from ..messages import Msg

__all__ = ["PixelRecipe", "DecodedBatch", "tensor_orientation", "decode_jpegs", "to_device"]

_EOI = b"\xff\xd9"   # a complete JPEG ends with its End Of Image marker (a truncated one goes to PIL, which names it)


@dataclass(frozen=True)
class PixelRecipe:
    """What an image tower's preprocess does, for tensors (CLIP's and OpenCLIP's "shortest" transform):
    the shorter side resized to `size` (bicubic, antialiased), a centre crop of size x size, then
    (x / 255 - mean) / std per channel."""
    size: int                              # square input side S of the image tower
    mean: tuple[float, float, float]       # per-channel mean of [0, 1] pixels
    std: tuple[float, float, float]        # per-channel standard deviation of [0, 1] pixels


@dataclass
class DecodedBatch:
    pixels: torch.Tensor                   # float32 [K, 3, S, S] on the device asked for, normalised
    rows: list[int] = field(default_factory=list)        # index in the files of each row of pixels
    images: list[Image.Image] = field(default_factory=list)  # RGB image of each row (thumbnail-sized when tensor-decoded)
    errors: list[tuple[int, str, Msg]] = field(default_factory=list)  # (index, name, reason)


def tensor_orientation(data: bytes, max_pixels: int = MAX_PIXELS) -> int | None:
    """EXIF orientation (1 = upright .. 8) of a JPEG the tensor decoders read: baseline, RGB or
    greyscale, complete (ends with its EOI marker), within `max_pixels` by its header; None for
    anything else. Reads the header only."""
    if len(data) < 4 or data[:2] != b"\xff\xd8" or data.rstrip(b"\0")[-2:] != _EOI:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            head = Image.open(io.BytesIO(data))
            if (head.format != "JPEG" or head.mode not in ("RGB", "L") or head.info.get("progressive")
                    or head.info.get("progression") or head.width * head.height > max_pixels):
                return None
            orientation = head.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        return None
    return orientation if orientation in range(1, 9) else 1


def decode_jpegs(files: Sequence[tuple[str, bytes]], recipe: PixelRecipe, preprocess: Callable[[Image.Image], torch.Tensor],
                 device: torch.device | str = "cpu", thumb_size: int = 256,
                 orientations: Sequence[int | None] | None = None, draft: int | None = None) -> DecodedBatch:
    """(name, bytes) pairs -> DecodedBatch (see the module docstring). `orientations`: the files'
    tensor_orientation when the caller screened them already; `draft`: decode_image's JPEG draft
    size for the PIL path; `preprocess`: the encoder's own (PIL image -> [3, S, S]) for that path.
    Pixels built on the CPU for a CUDA device go there pinned and non-blocking."""
    device = torch.device(device)
    if orientations is None:
        orientations = [tensor_orientation(data) for _, data in files]
    tensor_ix = [i for i, o in enumerate(orientations) if o is not None]
    decoded = _decode(files, tensor_ix, device)
    upright = {i: _orient(image, orientations[i]) for i, image in decoded.items()}
    pixels = {i: _model_pixels(image, recipe) for i, image in upright.items()}
    images = dict(zip(upright, _thumbnails(list(upright.values()), thumb_size)))
    errors, cpu_pixels = [], {}
    for i, (name, data) in enumerate(files):
        if i in decoded:
            continue
        try:
            images[i] = decode_image(data, name, draft=draft)
            cpu_pixels[i] = preprocess(images[i])
        except ImageError as e:
            errors.append((i, e.name, e.reason))
    rows = sorted(pixels.keys() | cpu_pixels.keys())
    out = torch.empty(len(rows), 3, recipe.size, recipe.size, device=device)
    for k, i in enumerate(rows):
        if i in pixels:
            out[k] = pixels[i]
    if cpu_pixels:
        moved = to_device(torch.stack([cpu_pixels[i] for i in rows if i in cpu_pixels]).float(), device)
        out[[k for k, i in enumerate(rows) if i in cpu_pixels]] = moved
    return DecodedBatch(out, rows, [images[i] for i in rows], errors)


def _decode(files: Sequence[tuple[str, bytes]], ix: list[int], device: torch.device) -> dict[int, torch.Tensor]:
    """Index -> uint8 [3, H, W] on `device` for the files at `ix` the tensor decoder reads: one
    batched call; when it fails (it returns nothing then), file by file, skipping the failures."""
    ix = [i for i in ix if files[i][1]]   # an empty file: PIL names it
    if not ix:
        return {}
    from torchvision.io import ImageReadMode, decode_jpeg
    raw = [torch.frombuffer(bytearray(files[i][1]), dtype=torch.uint8) for i in ix]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torchvision 0.29 calls its decoders deprecated (for TorchCodec)
        try:
            return dict(zip(ix, decode_jpeg(raw, mode=ImageReadMode.RGB, device=device)))
        except (RuntimeError, ValueError):
            pass
        out = {}
        for i, data in zip(ix, raw):
            try:
                out[i] = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
            except (RuntimeError, ValueError):
                pass   # the PIL path reads it, or names what is wrong with it
        return out


def _orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """uint8 [3, H, W] as stored -> upright, as PIL's ImageOps.exif_transpose turns it (nvJPEG does not)."""
    turn = {2: lambda x: x.flip(-1), 3: lambda x: x.flip(-2, -1), 4: lambda x: x.flip(-2),
            5: lambda x: x.transpose(-2, -1), 6: lambda x: torch.rot90(x, -1, (-2, -1)),
            7: lambda x: x.transpose(-2, -1).flip(-2, -1), 8: lambda x: torch.rot90(x, 1, (-2, -1))}
    return turn[orientation](image) if orientation in turn else image


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [3, H, W] -> float [3, h, w] in 0..255, bicubic with antialiasing (as PIL resizes), rounded
    and clipped as PIL's 8-bit result is."""
    if tuple(image.shape[-2:]) == size:
        return image.float()
    out = F.interpolate(image[None].float(), size=size, mode="bicubic", antialias=True, align_corners=False)[0]
    return out.round_().clamp_(0, 255)


def _model_pixels(image: torch.Tensor, recipe: PixelRecipe) -> torch.Tensor:
    """uint8 [3, H, W] upright -> float32 [3, S, S] normalised, as CLIP's preprocess: the shorter side
    to S (the longer one truncated, as torchvision's Resize computes it), centre crop, mean/std."""
    h, w = image.shape[-2:]
    s = recipe.size
    size = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
    image = _resize(image, size)
    top, left = int(round((size[0] - s) / 2.0)), int(round((size[1] - s) / 2.0))
    image = image[:, top:top + s, left:left + s]
    mean = torch.tensor(recipe.mean, device=image.device).view(3, 1, 1)
    std = torch.tensor(recipe.std, device=image.device).view(3, 1, 1)
    return (image / 255 - mean) / std


def _thumbnails(images: list[torch.Tensor], limit: int) -> list[Image.Image]:
    """uint8 [3, H, W] images -> RGB PIL images at most `limit` px on the long side: the gallery
    thumbnails, made from the pixels already decoded (no second JPEG decode on the CPU), brought
    back in one copy (one wait for the device per batch, not one per image)."""
    if not images:
        return []
    small = []
    for image in images:
        h, w = image.shape[-2:]
        scale = min(1.0, limit / max(h, w))
        small.append(_resize(image, (max(1, round(h * scale)), max(1, round(w * scale)))).to(torch.uint8))
    canvas = torch.zeros(len(small), max(t.shape[1] for t in small), max(t.shape[2] for t in small), 3,
                         dtype=torch.uint8, device=small[0].device)
    for k, t in enumerate(small):
        canvas[k, :t.shape[1], :t.shape[2]] = t.permute(1, 2, 0)
    canvas = canvas.cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(canvas[k, :t.shape[1], :t.shape[2]]), "RGB") for k, t in enumerate(small)]


def to_device(pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    """CPU pixels -> `device`: pinned and non-blocking for a GPU (the copy overlaps the work queued before it)."""
    if device.type == "cpu":
        return pixels
    return pixels.pin_memory().to(device, non_blocking=True)
