"""Indexing through Ray Data on a real local Ray instance (2 CPUs, the tiny CLIP): the same
features as the single-process ingest for a folder and a WebDataset shard, resume after a
killed job, the command line against a running cluster (--ray-address), and encoder actors
that honour --device and --runtime (issue 21, item 4). One Ray instance serves the module;
no Ray process outlives it."""
from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.library.ingest import Upload, ingest, open_library
from core.library.store import Library
from core.messages import localize
from core.models import load_encoder
from core.scale import merge_shards
from core.scale.shards import list_shards, read_shard
from core.settings import ASSETS_DIR, PROJECT_ROOT, pick_runtime
from core_fixtures import distinct_pngs

ray = pytest.importorskip("ray")
import core.scale.ray_job as ray_job  # noqa: E402
from core.scale.ray_job import RayOptions, index_with_ray  # noqa: E402

pytestmark = pytest.mark.timeout(600)


def _session_processes(session: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if session in cmd:
            found.append(f"{pid}: {cmd[:120]}")
    return found


@pytest.fixture(scope="module")
def ray_address():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    session = Path(ray._private.worker._global_node.get_session_dir_path()).name
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    deadline = time.monotonic() + 20
    while _session_processes(session) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _session_processes(session), "Ray processes outlived the test module"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder (5 PNGs, 2 sample JPEGs, 1 broken file) and a WebDataset shard (2 images, a
    caption member, 1 broken image)."""
    root = tmp_path_factory.mktemp("inputs")
    folder = root / "photos"
    (folder / "sub").mkdir(parents=True)
    for i, data in enumerate(distinct_pngs(5)):
        (folder / ("sub" if i % 2 else "") / f"p{i}.png").write_bytes(data)
    for name in ("cat_chelsea.jpg", "coffee.jpg"):
        (folder / name).write_bytes((ASSETS_DIR / "samples" / name).read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    members = {"000000.jpg": (ASSETS_DIR / "samples" / "astronaut.jpg").read_bytes(), "000000.json": b'{"caption": "x"}',
               "000001.png": distinct_pngs(1, seed=9)[0], "000002.jpg": b"broken"}
    tar = root / "shard-000000.tar"
    with tarfile.open(tar, "w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return folder, tar, members


def test_ray_index_matches_single_process_for_folder_and_webdataset(ray_address, inputs, encoder, tiny_clip_path,
                                                                    tmp_path):
    folder, tar, members = inputs
    out = tmp_path / "shards"
    report = index_with_ray([str(folder), str(tar)], out, str(tiny_clip_path), RayOptions(part_size=4, batch_size=3))
    assert (report.parts, report.parts_written, report.encoded, len(report.errors)) == (3, 3, 9, 2)
    assert report.model_id == encoder.model_id and report.dim == encoder.dim
    single = open_library(tmp_path / "single", encoder)
    uploads = [Upload(n, d) for n, d in members.items() if not n.endswith(".json")]
    ingest(single, encoder, [folder, *uploads])
    assert len(single) == 9
    rows = 0
    for shard in list_shards(out):
        _, cols = read_shard(shard)
        for sha, path, emb in zip(cols["sha256"], cols["path"], cols["embedding"]):
            assert torch.allclose(single.vector(sha), torch.from_numpy(emb), atol=1e-5), path
            rows += 1
    assert rows == 9 and any("#000001.png" in p for p in read_shard(list_shards(out)[-1])[1]["path"])
    merged = Library(tmp_path / "merged", report.model_id, report.dim)
    result = merge_shards(merged, out)
    assert len(result.added) == 9 and {n for n, _ in result.errors} == {"broken.jpg", "000002.jpg"}
    assert torch.allclose(merged.features[torch.argsort(torch.tensor([int(e.sha256[:8], 16) for e in merged.entries()]))],
                          single.features[torch.argsort(torch.tensor([int(e.sha256[:8], 16) for e in single.entries()]))],
                          atol=1e-5)
    assert merged.verify(deep=True)["healthy"]
    astro = merged.find(__import__("hashlib").sha256(members["000000.jpg"]).hexdigest())
    assert astro.name == "000000.jpg" and astro.path.read_bytes() == members["000000.jpg"]


def test_killed_job_resumes_from_written_shards(ray_address, inputs, tiny_clip_path, tmp_path):
    folder, _, _ = inputs
    out = tmp_path / "shards"
    first = index_with_ray([str(folder)], out, str(tiny_clip_path), RayOptions(part_size=3, batch_size=3))
    assert (first.parts, first.parts_written) == (3, 3)
    # as if killed while part 1 was in flight: its shard never landed, a torn temp file did
    (out / "part-00001.parquet").unlink()
    (out / ".part-00001.parquet.4242.tmp").write_bytes(b"PAR1 torn")
    before = {p.name: p.stat().st_mtime_ns for p in list_shards(out)}
    done = []
    again = index_with_ray([str(folder)], out, str(tiny_clip_path), RayOptions(part_size=3, batch_size=3),
                           on_total=done.append)
    assert (again.parts_skipped, again.parts_written, again.encoded) == (2, 1, 3) and done == [3]
    assert {p.name: p.stat().st_mtime_ns for p in list_shards(out) if p.name in before} == before
    assert not list(out.glob(".*.tmp")) and len(list_shards(out)) == 3
    idle = index_with_ray([str(folder)], out, str(tiny_clip_path), RayOptions(part_size=3))
    assert (idle.parts_skipped, idle.parts_written) == (3, 0)


def test_cli_index_on_a_running_cluster_then_idempotent(ray_address, inputs, tiny_clip_path, tmp_path):
    folder, tar, _ = inputs
    lib = tmp_path / "lib"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    cmd = [sys.executable, "-m", "core", "index", str(folder), str(tar), "--engine", "ray", "--ray-address",
           ray_address, "--model", str(tiny_clip_path), "--library", str(lib), "--quiet", "--offline", "--part-size", "4",
           "--device", "cpu", "--runtime", "auto", "--workers", "1"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # --runtime auto on the CPU: the actors chose what one machine chooses (ONNX Runtime when installed)
    assert f"encoder: {pick_runtime('cpu', 'auto').engine} on cpu (float32)" in first.stderr, first.stderr[-3000:]
    assert "added 9, already present 0, unreadable 2 in" in first.stdout
    assert "library now holds 9 images" in first.stdout
    second = subprocess.run(cmd + ["--by-reference"], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert second.returncode == 0 and "added 0, already present 9" in second.stdout, second.stderr[-3000:]
    assert "3 of 3 part(s) already done" in second.stderr
    verify = subprocess.run([sys.executable, "-m", "core", "library", "verify", "--deep", "--library", str(lib),
                             "--model", str(tiny_clip_path), "--offline"], capture_output=True, text=True, env=env)
    assert verify.returncode == 0, verify.stdout


def _embeddings(out: Path) -> tuple[list[dict], dict[str, np.ndarray]]:
    infos, by_sha = [], {}
    for shard in list_shards(out):
        info, cols = read_shard(shard)
        infos.append(info)
        by_sha.update(zip(cols["sha256"], cols["embedding"]))
    return infos, by_sha


def test_actors_use_the_runtime_asked_for_and_match_one_machine(ray_address, inputs, tiny_clip_path, tmp_path):
    """--runtime onnx on the Ray path: the actors run ONNX Runtime (each shard and the summary say
    so) and give the features the single-process path gives with the same runtime; --workers 1
    runs one decode task at a time."""
    folder, _, _ = inputs
    cache = tmp_path / "cache"
    onnx = load_encoder(str(tiny_clip_path), "cpu", "onnx", cache=cache)   # exports the towers once, here
    single = open_library(tmp_path / "single", onnx)
    ingest(single, onnx, [folder])
    out = tmp_path / "shards"
    report = index_with_ray([str(folder)], out, str(tiny_clip_path),
                            RayOptions(part_size=4, batch_size=3, device="cpu", runtime="onnx", workers=1), cache=cache)
    used = {"engine": "onnx", "device": "cpu", "dtype": "float32"}
    assert (report.encoded, report.runtimes) == (7, [used])
    assert "encoder: onnx on cpu (float32)" in report.summary()
    infos, got = _embeddings(out)
    assert len(infos) == 2 and all(info["encoder_runtime"] == [used] for info in infos)
    assert len(got) == len(single) == 7
    for sha, emb in got.items():
        assert torch.allclose(single.vector(sha), torch.from_numpy(emb), atol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused_before_ray_starts(inputs, tiny_clip_path, tmp_path, monkeypatch):
    folder, _, _ = inputs
    with pytest.raises(ValueError) as one_machine:
        pick_runtime("cuda", "auto")
    # a local instance is this machine: refused before Ray starts and before the model loads
    monkeypatch.setattr(ray_job.ray, "is_initialized", lambda: False)
    for stage in ("connect", "load_encoder"):
        monkeypatch.setattr(ray_job, stage, lambda *a, **k: pytest.fail("got past the device check"))
    with pytest.raises(ValueError) as on_ray:
        index_with_ray([str(folder)], tmp_path / "shards", str(tiny_clip_path), RayOptions(device="cuda"))
    assert str(on_ray.value) == str(one_machine.value) == ("Device 'cuda' requested but CUDA is not available; "
                                                           "use --device cpu or auto")
    assert "CUDA 不可用" in localize(on_ray.value, "zh")
    with pytest.raises(ValueError) as one_gpu:   # Ray picks each actor's GPU
        index_with_ray([str(folder)], tmp_path / "shards", str(tiny_clip_path), RayOptions(device="cuda:1"))
    assert "use --device cuda" in str(one_gpu.value) and "--device cuda" in localize(one_gpu.value, "zh")
    assert not (tmp_path / "shards").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cli_cuda_without_cuda_says_what_one_machine_says(ray_address, inputs, tiny_clip_path, tmp_path):
    """On a local instance and against a running cluster without GPUs: the single-process message, exit 2."""
    folder, _, _ = inputs
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    base = [sys.executable, "-m", "core", "index", str(folder), "--model", str(tiny_clip_path), "--library",
            str(tmp_path / "lib"), "--quiet", "--offline", "--device", "cuda"]
    runs = [subprocess.run(base + extra, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
            for extra in (["--engine", "ray"], ["--engine", "ray", "--ray-address", ray_address])]
    for run in runs:
        assert run.returncode == 2 and run.stderr.strip().splitlines()[-1] == (
            "error: Device 'cuda' requested but CUDA is not available; use --device cpu or auto"), run.stderr[-2000:]
    assert not list((tmp_path / "lib").glob("shards/*/part-*.parquet"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_actors_encode_in_fp16_on_the_gpu(ray_address, inputs, tiny_clip_path, tmp_path):
    folder, _, _ = inputs
    gpu = load_encoder(str(tiny_clip_path), pick_runtime("cuda", "auto"))
    single = open_library(tmp_path / "single", gpu)
    ingest(single, gpu, [folder])
    report = index_with_ray([str(folder)], tmp_path / "shards", str(tiny_clip_path),
                            RayOptions(part_size=4, batch_size=3, device="cuda", runtime="auto"))
    assert report.runtimes == [{"engine": "torch", "device": "cuda", "dtype": "float16"}] and report.encoded == 7
    _, got = _embeddings(tmp_path / "shards")
    for sha, emb in got.items():
        assert torch.nn.functional.cosine_similarity(single.vector(sha), torch.from_numpy(emb), dim=0) > 0.999
