"""The tensor decode path (core/models/pixels.py): JPEGs decoded by torchvision to the tower's
normalised pixels, as ingest does on CUDA with nvJPEG. Here it runs on the CPU (libjpeg, the same
code image by image) and is held to the PIL path: the same features, the same neighbours, the same
reasons for the files it cannot read. The CUDA tests at the end skip without a GPU."""
from __future__ import annotations

import importlib
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from core.errors import ImageError
from core.images import decode_image, load_image
from core.library.ingest import ingest, open_library
from core.library.thumbs import THUMB_SIZE, thumb_path
from core.models.pixels import decode_jpegs, tensor_orientation
from core.settings import pick_runtime
from core_fixtures import SAMPLES, png_bytes

ingest_module = importlib.import_module("core.library.ingest")   # core.library's `ingest` is the function
SAMPLE_FILES = sorted(SAMPLES.glob("*.jpg"))


def _jpeg(size=(160, 120), seed=0, orientation=None, **save) -> bytes:
    """A photo-like JPEG: smooth gradients and a few blocks (noise would make every decoder differ)."""
    rng = np.random.default_rng(seed)
    w, h = size
    x, y = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    arr = np.stack([x * 255, y * 255, (1 - x) * 200 + 30], -1)
    for _ in range(4):
        x0, y0 = rng.integers(0, w - w // 4), rng.integers(0, h - h // 4)
        arr[y0:y0 + h // 4, x0:x0 + w // 4] = rng.integers(0, 255, 3)
    buf = io.BytesIO()
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save["exif"] = exif.tobytes()
    Image.fromarray(arr.astype(np.uint8)).save(buf, "JPEG", quality=92, **save)
    return buf.getvalue()


def _huge_header() -> bytes:
    """A small JPEG whose frame header claims 65535 x 65535 pixels (over MAX_PIXELS)."""
    data = bytearray(_jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = b"\xff\xff\xff\xff"
    return bytes(data)


def _cmyk_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("CMYK", (64, 48), (0, 200, 100, 20)).save(buf, "JPEG")
    return buf.getvalue()


def _webp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (50, 40), (10, 120, 200)).save(buf, "WEBP")
    return buf.getvalue()


SYNTHETIC = {"gradient.jpg": _jpeg(), "wide.jpg": _jpeg((300, 90), seed=1), "grey.jpg": _jpeg(seed=2),
             "rotated6.jpg": _jpeg((200, 120), seed=3, orientation=6), "rotated3.jpg": _jpeg(seed=4, orientation=3)}
# Files the tensor decoder is not given (or cannot read): each must come out exactly as the PIL path says.
ODD = {"flat.png": png_bytes(), "pic.webp": _webp(), "empty.jpg": b"", "noise.jpg": bytes(range(256)) * 4,
       "truncated.jpg": _jpeg()[:900], "cmyk.jpg": _cmyk_jpeg(), "huge.jpg": _huge_header(),
       "progressive.jpg": _jpeg(seed=5, progressive=True)}


@pytest.fixture
def device_path_on_cpu(monkeypatch):
    """Ingest as it runs on CUDA (JPEGs screened in the pool, decoded as tensors in the device
    thread), on the CPU."""
    monkeypatch.setattr(ingest_module, "_decode_device",
                        lambda encoder, annotate: torch.device("cpu") if encoder.pixel_recipe and not annotate else None)


def _pil_result(data: bytes, name: str):
    try:
        return decode_image(data, name)
    except ImageError as e:
        return (e.name, e.reason)


def test_the_tensor_path_gives_the_pil_paths_features(encoder):
    files = [(p.name, p.read_bytes()) for p in SAMPLE_FILES] + list(SYNTHETIC.items())
    batch = decode_jpegs(files, encoder.pixel_recipe, encoder.preprocess, "cpu")
    assert batch.rows == list(range(len(files))) and not batch.errors
    assert batch.pixels.shape == (len(files), 3, encoder.image_size, encoder.image_size)
    reference = torch.stack([encoder.preprocess(decode_image(data, name)) for name, data in files])
    assert (batch.pixels - reference).abs().mean() < 0.01        # normalised units: last-bit IDCT/resize differences
    cosine = F.cosine_similarity(encoder.encode_pixels(batch.pixels),
                                 encoder.encode_images([decode_image(data, name) for name, data in files]))
    assert cosine.min() >= 0.99


@pytest.mark.parametrize("backend", ["open_clip", "mini"])
def test_each_backends_recipe_is_its_preprocess(backend, tmp_path):
    """OpenCLIP's "shortest" transform and the bundled (trained) mini model's own resize, as tensors."""
    from core.models import load_encoder
    if backend == "open_clip":
        from tiny_openclip import ARCH, make_tiny_openclip_file
        name = f"open_clip:{ARCH}/{make_tiny_openclip_file(tmp_path / 'tiny.pt')}"
    else:
        name = "mini"
    encoder = load_encoder(name, pick_runtime("cpu"), cache=tmp_path)
    files = [(p.name, p.read_bytes()) for p in SAMPLE_FILES] + list(SYNTHETIC.items())
    batch = decode_jpegs(files, encoder.pixel_recipe, encoder.preprocess, "cpu")
    reference = [decode_image(data, name) for name, data in files]
    assert (batch.pixels - torch.stack([encoder.preprocess(im) for im in reference])).abs().mean() < 0.02
    cosine = F.cosine_similarity(encoder.encode_pixels(batch.pixels), encoder.encode_images(reference))
    assert cosine.min() >= 0.99


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pil_applies_it(orientation):
    data = _jpeg((90, 60), seed=orientation, orientation=orientation)
    assert tensor_orientation(data) == orientation
    batch = decode_jpegs([("o.jpg", data)], _recipe(), None, "cpu", thumb_size=1000)
    assert np.array_equal(np.asarray(batch.images[0]), np.asarray(decode_image(data, "o.jpg")))


def _recipe():
    from core.models.pixels import PixelRecipe
    return PixelRecipe(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_what_the_tensor_decoder_cannot_read_goes_through_pil_with_todays_reasons(encoder):
    assert all(tensor_orientation(data) is None for data in ODD.values())
    files = list(ODD.items())
    batch = decode_jpegs(files, encoder.pixel_recipe, encoder.preprocess, "cpu",
                         orientations=[1] * len(files))   # as if screening had let them all through
    expected = {name: _pil_result(data, name) for name, data in files}
    errors = {name: (name, reason) for _, name, reason in batch.errors}
    assert errors == {n: r for n, r in expected.items() if isinstance(r, tuple)}
    assert {"empty.jpg", "noise.jpg", "truncated.jpg", "huge.jpg"} <= errors.keys()
    read = [files[i][0] for i in batch.rows]
    assert set(read) == {"flat.png", "pic.webp", "cmyk.jpg", "progressive.jpg"}
    reference = torch.stack([encoder.preprocess(expected[n]) for n in read])
    assert torch.allclose(batch.pixels, reference, atol=0.1)


def _folder(tmp_path, files: dict) -> list:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder]


def _ingest(tmp_path, encoder, name, sources):
    library = open_library(tmp_path / name, encoder)
    return library, ingest(library, encoder, sources, batch_size=8, workers=2)


def test_ingest_on_the_device_path_finds_the_same_neighbours_and_reasons(tmp_path, encoder, device_path_on_cpu,
                                                                          monkeypatch):
    sources = _folder(tmp_path, {**{p.name: p.read_bytes() for p in SAMPLE_FILES}, **SYNTHETIC, **ODD})
    tensor_lib, tensor_report = _ingest(tmp_path, encoder, "tensor", sources)
    monkeypatch.setattr(ingest_module, "_decode_device", lambda encoder, annotate: None)
    pil_lib, pil_report = _ingest(tmp_path, encoder, "pil", sources)
    assert sorted(tensor_report.added) == sorted(pil_report.added)
    assert sorted(tensor_report.errors) == sorted(pil_report.errors) and len(tensor_report.errors) == 4
    assert tensor_report.stages.busy("decode") > 0 and "bound by" in tensor_report.stages.describe()
    queries = encoder.encode_images([load_image(p) for p in SAMPLE_FILES])
    for library in (tensor_lib, pil_lib):
        assert {e.sha256 for e in library.entries()} == {e.sha256 for e in pil_lib.entries()}
    tensor_feats, pil_feats = _features_by_sha(tensor_lib), _features_by_sha(pil_lib)
    shas = sorted(pil_feats)
    cosine = F.cosine_similarity(torch.stack([tensor_feats[s] for s in shas]), torch.stack([pil_feats[s] for s in shas]))
    assert cosine.min() >= 0.99
    top = lambda feats: (queries @ torch.stack([feats[s] for s in shas]).T).topk(5).indices  # noqa: E731
    assert torch.equal(top(tensor_feats), top(pil_feats))
    for e in tensor_lib.entries():
        thumb = Image.open(thumb_path(tensor_lib.root, e.sha256))
        assert max(thumb.size) <= THUMB_SIZE
    rotated = next(e for e in tensor_lib.entries() if e.name == "rotated6.jpg")
    assert Image.open(thumb_path(tensor_lib.root, rotated.sha256)).size[0] < Image.open(
        thumb_path(tensor_lib.root, rotated.sha256)).size[1]           # upright: the 200x120 photo stands


def _features_by_sha(library) -> dict:
    feats = library.features
    return {e.sha256: feats[i] for i, e in enumerate(library.entries())}


def test_ingest_keeps_the_pil_path_on_the_cpu_and_for_captions(encoder):
    """No device decoding where there is no resident CUDA runtime, or when captions need full images."""
    assert ingest_module._decode_device(encoder, None) is None
    assert ingest_module._decode_device(encoder, lambda images: [{}] * len(images)) is None


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_nvjpeg_decodes_like_the_cpu(encoder):
    files = [(p.name, p.read_bytes()) for p in SAMPLE_FILES] + list(SYNTHETIC.items()) + list(ODD.items())
    on_cpu = decode_jpegs(files, encoder.pixel_recipe, encoder.preprocess, "cpu")
    on_gpu = decode_jpegs(files, encoder.pixel_recipe, encoder.preprocess, "cuda")
    assert on_gpu.pixels.device.type == "cuda" and on_gpu.rows == on_cpu.rows
    assert [(n, r) for _, n, r in on_gpu.errors] == [(n, r) for _, n, r in on_cpu.errors]
    assert (on_gpu.pixels.cpu() - on_cpu.pixels).abs().mean() < 0.02


@cuda
def test_ingest_on_cuda_decodes_on_the_device(tmp_path, tiny_clip_path):
    from core.models import load_encoder
    gpu = load_encoder(str(tiny_clip_path), pick_runtime("cuda"))
    assert ingest_module._decode_device(gpu, None) is not None
    sources = _folder(tmp_path, {**{p.name: p.read_bytes() for p in SAMPLE_FILES}, **SYNTHETIC, **ODD})
    library, report = _ingest(tmp_path, gpu, "gpu", sources)
    assert len(report.added) == len(SAMPLE_FILES) + len(SYNTHETIC) + 4 and len(report.errors) == 4
    assert all(thumb_path(library.root, e.sha256).is_file() for e in library.entries())
    cpu = load_encoder(str(tiny_clip_path), pick_runtime("cpu"))
    feats = _features_by_sha(library)
    for path in SAMPLE_FILES[:4]:
        e = next(e for e in library.entries() if e.name == path.name)
        assert F.cosine_similarity(feats[e.sha256][None], cpu.encode_images([load_image(path)])).item() >= 0.99
