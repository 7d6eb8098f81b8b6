"""SafeImage: Gradio's image input without Gradio's decoding, so core's safe loader is the only reader.

gr.Image's own preprocessing opens every upload with PIL before the callback runs: an empty file or
a text file named .png then fails as a bare "Error" with a traceback in the log, a 12k x 12k PNG is
decoded before any limit (a memory bomb any student can throw), 16-bit greyscale is clipped to
white. SafeImage hands the callback the uploaded file's path untouched; `core.images.load_image`
decodes it with its limits and one clear, bilingual reason for every bad file.

It is a class, not an override on one instance: Gradio serves a session whose component properties
were updated (the language switch, a sample click) from a copy built with `type(block)(**kwargs)`,
and an instance override does not survive that copy.
"""
from __future__ import annotations

import base64
import binascii
import tempfile
from pathlib import Path

import gradio as gr

__all__ = ["SafeImage"]

_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif",
             "image/bmp": ".bmp"}


class SafeImage(gr.Image):
    """gr.Image(type="filepath") whose value reaches the callback as the uploaded file's path, never
    decoded by Gradio. A pasted image that arrives as a data: URL is written to a file as it came."""

    is_template = True   # the browser renders Gradio's own Image component (its name decides which)
    # No __init__ of its own: Gradio reads a component's properties from its __init__'s signature.
    # Create it with type="filepath" (what the API schema says); the value is a path whatever the type.

    def preprocess(self, payload):
        if payload is None:
            return None
        if (payload.url or "").startswith("data:"):
            return _data_url_to_file(payload.url, self.GRADIO_CACHE)
        return None if payload.path is None else str(payload.path)


def _data_url_to_file(url: str, cache_dir: str) -> str:
    """The bytes of a data: URL in a new file (not decoded as an image: the loader does that). What
    is not valid base64 is written empty, so the loader names it as an unreadable file."""
    head, _, body = url.partition(",")
    mime = head[len("data:"):].split(";")[0].lower()
    try:
        data = base64.b64decode(body, validate=True) if head.endswith(";base64") else body.encode()
    except (binascii.Error, ValueError):
        data = b""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="pasted-", dir=cache_dir))
    path = folder / f"pasted{_SUFFIXES.get(mime, '.png')}"
    path.write_bytes(data)
    return str(path)
