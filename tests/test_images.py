"""Safe image loading: every awkward input gives an upright RGB image or a clear ImageError."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from core.errors import ImageError
from core.images import decode_image, from_base64, iter_image_files, load_image
from core_fixtures import SAMPLES


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (60, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6   # rotate 90° clockwise on display
    out = decode_image(encode(img, "JPEG", exif=exif), "rotated.jpg")
    assert out.size == (20, 60)


@pytest.mark.parametrize("mode,color", [("P", 3), ("RGBA", (255, 0, 0, 0)), ("LA", (100, 128)), ("CMYK", (0, 255, 0, 0)),
                                        ("L", 77), ("1", 1), ("I;16", 40000), ("F", 0.5)])
def test_modes_become_rgb(mode, color):
    img = Image.new(mode, (8, 8), color)
    fmt = "TIFF" if mode in ("CMYK", "F") else "PNG"
    out = decode_image(encode(img, fmt), f"x.{fmt.lower()}")
    assert out.mode == "RGB" and out.size == (8, 8)


def test_transparent_pixels_become_white():
    out = decode_image(encode(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), "PNG"), "t.png")
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_is_rescaled_not_clipped():
    arr = np.array([[0, 65535], [30000, 60000]], dtype=np.uint16)
    out = decode_image(encode(Image.fromarray(arr), "PNG"), "deep.png")
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((1, 0)) == (255, 255, 255)
    assert 100 < out.getpixel((0, 1))[0] < 140


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (10, 10), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buf.getvalue(), "anim.gif")
    r, g, b = out.getpixel((5, 5))
    assert r > 200 and b < 50


def test_decompression_bomb_is_refused():
    data = encode(Image.new("L", (4000, 4000)), "PNG")
    with pytest.raises(ImageError, match="pixel limit"):
        decode_image(data, "bomb.png", max_pixels=1_000_000)


def _corrupt_png() -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = bytearray(encode(Image.fromarray(noise), "PNG"))
    data[200:260] = bytes(60)          # damage the compressed pixel data, keep the header
    return bytes(data)


@pytest.mark.parametrize("data,reason", [(b"", "empty"), (b"hello, I am text", "not an image"),
                                         (_corrupt_png(), "corrupt")])
def test_bad_bytes_name_the_file(data, reason):
    with pytest.raises(ImageError, match=reason) as err:
        decode_image(data, "holiday.jpg")
    assert err.value.name == "holiday.jpg" and "holiday.jpg" in str(err.value)


def test_truncated_jpeg_is_reported():
    data = (SAMPLES / "coffee.jpg").read_bytes()
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2], "coffee.jpg")


def test_load_image_paths_and_missing_file(tmp_path):
    assert load_image(SAMPLES / "cat_chelsea.jpg").mode == "RGB"
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(ImageError):
        load_image(tmp_path / "dir.jpg")


def test_iter_image_files_recurses_skips_hidden_and_keeps_explicit_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for p in ["a/x.JPG", "a/b/y.png", "a/notes.txt", ".hidden/z.jpg", "a/.w.png"]:
        (tmp_path / p).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_files([tmp_path])]
    assert found == ["a/x.JPG", "a/b/y.png"]
    assert list(iter_image_files([tmp_path / "a/notes.txt"])) == [tmp_path / "a/notes.txt"]


def test_our_pixel_limit_is_the_one_that_counts():
    # 9500 x 9500 = 90.25 MP: over PIL's default guard (89.5 MP), under ours (100 MP)
    data = encode(Image.new("1", (9500, 9500)), "PNG")
    assert decode_image(data, "big.png").size == (9500, 9500)


def test_base64_images_are_size_checked_before_decoding_and_refused_in_both_languages():
    """The JSON API's and the MCP tools' images: bare base64 or a data: URL; too big by its text's length
    (never decoded), or not base64, an ImageError naming the image in English and Chinese."""
    from core.messages import localize
    data = sorted(SAMPLES.glob("*.jpg"))[0].read_bytes()
    text = base64.b64encode(data).decode()
    assert from_base64(text, "a.jpg") == data
    assert from_base64(f"data:image/jpeg;base64,{text[:40]}\n{text[40:]}", "a.jpg") == data
    with pytest.raises(ImageError) as big:
        from_base64(text, "a.jpg", limit=len(data) - 1)
    with pytest.raises(ImageError) as bad:
        from_base64("not base64!", "b.png")
    assert big.value.name == "a.jpg" and "limit" in localize(big.value.reason, "en") and "上限" in localize(big.value.reason, "zh")
    assert bad.value.name == "b.png" and "base64" in localize(bad.value.reason, "en") and "不是有效的" in localize(bad.value.reason, "zh")
