"""The CUDA + fp16 paths (run on a GPU machine; CI has none, so these skip there)."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from core.models import load_encoder
from core.images import load_image
from core.library.ingest import ingest, open_library
from core.library.search import ExactIndex, Searcher, SearchQuery
from core.settings import pick_runtime
from core_fixtures import SAMPLES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_runtime_is_fp16():
    rt = pick_runtime("auto")
    assert rt.is_cuda and rt.dtype == torch.float16


def test_fp16_clip_matches_fp32_and_returns_cpu_float32(tiny_clip_path):
    cpu = load_encoder(str(tiny_clip_path), pick_runtime("cpu"))
    gpu = load_encoder(str(tiny_clip_path), pick_runtime("cuda"))
    images = [load_image(SAMPLES / n) for n in ("cat_chelsea.jpg", "coffee.jpg")]
    for a, b in ((cpu.encode_images(images), gpu.encode_images(images)),
                 (cpu.encode_texts(["a cat", "一杯咖啡"]), gpu.encode_texts(["a cat", "一杯咖啡"]))):
        assert b.dtype == torch.float32 and b.device.type == "cpu"
        assert torch.nn.functional.cosine_similarity(a, b).min() > 0.99


def test_resident_index_on_cuda_ranks_like_the_cpu(tmp_path, tiny_clip_path):
    gpu = load_encoder(str(tiny_clip_path), pick_runtime("cuda"))
    lib = open_library(tmp_path / "lib", gpu)
    ingest(lib, gpu, [SAMPLES])
    index = ExactIndex(lib, gpu.runtime)
    searcher = Searcher(gpu, lib, index)
    hits = searcher.search(SearchQuery(image=load_image(SAMPLES / "rocket.jpg"), k=3)).hits
    assert hits[0].name == "rocket.jpg"
    q = torch.nn.functional.normalize(torch.randn(4, gpu.dim), dim=-1)
    _, rows_gpu = index.search(q, 5)
    _, rows_cpu = ExactIndex(lib, pick_runtime("cpu")).search(q, 5)
    assert (rows_gpu[:, 0] == rows_cpu[:, 0]).all()
    n_before = index._synced[1]
    Image.new("RGB", (32, 32), (5, 200, 9)).save(tmp_path / "green.png")
    ingest(lib, gpu, [tmp_path / "green.png"])
    index.search(q, 1)
    assert index._synced[1] == n_before + 1                        # only the new row was copied
