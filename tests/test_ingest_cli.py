"""Adding images the way users do (folders, uploads, the CLI), bad input, repair and reindex."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.library.ingest import Upload, ingest, open_library, peek_model, reindex, repair
from core.models import load_encoder
from core.images import load_image, safe_display_name
from core.settings import PROJECT_ROOT, pick_runtime
from core_fixtures import SAMPLES, distinct_pngs, png_bytes
from tiny_models import make_tiny_clip_file


def test_uploads_with_hostile_names_are_stored_under_their_hash(tmp_path, encoder):
    lib = open_library(tmp_path / "lib", encoder)
    report = ingest(lib, encoder, [Upload("../../etc/passwd.png", png_bytes((9, 9, 9))),
                                   Upload("C:\\evil\\..\\x\x00.png", png_bytes((8, 8, 8)))])
    assert len(report.added) == 2
    for e in lib.entries():
        assert e.path.resolve().is_relative_to((tmp_path / "lib" / "images").resolve())
        assert e.sha256 in e.path.name and "/" not in e.name and "\x00" not in e.name
    assert not (tmp_path / "etc").exists()
    assert safe_display_name("../../a/b\\c.png") == "c.png" and safe_display_name("") == "image"


def test_bad_files_are_reported_and_the_rest_is_added(tmp_path, encoder):
    lib = open_library(tmp_path / "lib", encoder)
    ingest(lib, encoder, [SAMPLES / "coffee.jpg"])
    before = lib.features.clone()
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    truncated = tmp_path / "half.jpg"
    truncated.write_bytes((SAMPLES / "clock.jpg").read_bytes()[:3000])
    report = ingest(lib, encoder, [tmp_path / "empty.jpg", tmp_path / "text.png", truncated,
                                   SAMPLES / "rocket.jpg", tmp_path / "missing.jpg"])
    reasons = dict(report.errors)
    assert set(reasons) == {"empty.jpg", "text.png", "half.jpg", "missing.jpg"}
    assert "empty" in reasons["empty.jpg"] and "not an image" in reasons["text.png"]
    assert len(report.added) == 1 and len(lib) == 2
    assert (lib.features[0] == before[0]).all()            # nothing already stored was touched


def test_rerunning_a_folder_adds_and_encodes_nothing(tmp_path, encoder, monkeypatch):
    lib = open_library(tmp_path / "lib", encoder)
    ingest(lib, encoder, [SAMPLES])
    monkeypatch.setattr(encoder, "encode_pixels", lambda *_: pytest.fail("re-encoded a known image"))
    report = ingest(lib, encoder, sorted(SAMPLES.glob("*.jpg")))
    assert report.added == [] and len(report.duplicates) == 14


@pytest.mark.parametrize("slow", ["encode_pixels", "preprocess"])
def test_the_report_names_the_stage_that_bounds_the_rate(tmp_path, encoder, monkeypatch, slow):
    """A slow encoder bounds the rate at 'encode', slow decoding (one worker) at 'decode'."""
    real = getattr(encoder, slow)

    def slowed(*args):
        time.sleep(0.15)
        return real(*args)
    monkeypatch.setattr(encoder, slow, slowed)
    lib = open_library(tmp_path / "lib", encoder)
    report = ingest(lib, encoder, [Upload(f"{i}.png", d) for i, d in enumerate(distinct_pngs(6))], batch_size=2,
                    workers=1)
    assert len(report.added) == 6
    assert report.stages.bound() == {"encode_pixels": "encode", "preprocess": "decode"}[slow]
    assert report.stages.busy(report.stages.bound()) >= 3 * 0.15 and "(1 worker)" in report.stages.describe()
    with pytest.raises(ValueError, match="at least 1"):
        ingest(lib, encoder, [], workers=0)


def test_repair_readds_orphans_and_drops_rows_without_files(tmp_path, encoder):
    lib = open_library(tmp_path / "lib", encoder)
    ingest(lib, encoder, [Upload(f"{i}.png", d) for i, d in enumerate(distinct_pngs(4))])
    lost = lib.entry(0)
    lost.path.unlink()                                      # deleted by hand
    orphan = lib.root / "images" / "zz" / ("a" * 64 + ".png")
    orphan.parent.mkdir()
    orphan.write_bytes(distinct_pngs(1, seed=7)[0])          # an image that lost its row
    result = repair(lib, encoder)
    assert result["rows_removed"] == 1 and result["images_readded"] == 1
    report = lib.verify()
    assert report["healthy"] and len(lib) == 4        # the stray copy went once its bytes were stored


def test_reindex_switches_model_and_keeps_images(tmp_path, encoder):
    lib = open_library(tmp_path / "lib", encoder)
    ingest(lib, encoder, [SAMPLES / "coffee.jpg", SAMPLES / "cat_chelsea.jpg"])
    other = load_encoder(str(make_tiny_clip_file(tmp_path / "other.pt", seed=1)), pick_runtime("cpu"))
    new = reindex(tmp_path / "lib", other)
    assert peek_model(tmp_path / "lib") == (other.model_id, other.dim) and len(new) == 2
    reopened = open_library(tmp_path / "lib", other)
    expected = other.encode_images([load_image(e.path) for e in reopened.entries()])
    assert reopened.features.allclose(expected, atol=1e-5)


def run_cli(*args, env_extra=None, cwd=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True,
                          cwd=cwd or PROJECT_ROOT, env=env, timeout=300)


def test_cli_index_search_classify_library(tmp_path, tiny_clip_path):
    common = ["--model", str(tiny_clip_path), "--library", str(tmp_path / "lib")]
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    out = run_cli("index", str(SAMPLES), str(bad), *common, "--quiet")
    assert out.returncode == 0, out.stderr
    assert "added 14, already present 0, unreadable 1" in out.stdout and "bad.jpg: not an image" in out.stdout
    again = run_cli("index", str(SAMPLES), *common, "--quiet")
    assert "added 0, already present 14" in again.stdout

    found = run_cli("search", "a cat on a sofa", "-k", "5", *common)
    assert found.returncode == 0 and len([l for l in found.stdout.splitlines() if l.strip()[:1].isdigit()]) == 5
    by_image = run_cli("search", "--image", str(SAMPLES / "coffee.jpg"), "-k", "1", *common)
    assert "coffee.jpg" in by_image.stdout and "1.0000" in by_image.stdout
    assert run_cli("search", "beach", "--minus", "people", "-k", "2", *common).returncode == 0

    cls = run_cli("classify", str(SAMPLES / "cat_chelsea.jpg"), "--labels", "cat,dog,小鸟", *common)
    assert cls.returncode == 0 and cls.stdout.count("%") == 3 and "小鸟" in cls.stdout
    zh = run_cli("classify", str(SAMPLES / "cat_chelsea.jpg"), "--labels", "imagenet1k", "--lang", "zh",
                 "--templates", "single", *common)
    assert zh.stdout.count("%") == 5

    stats = json.loads(run_cli("library", "stats", *common).stdout)
    assert stats["images"] == 14 and stats["model_id"].startswith("clip-file:tiny_clip")
    first_id = run_cli("library", "list", "--limit", "1", *common).stdout.split()[1]
    assert "removed 1" in run_cli("library", "remove", first_id, *common).stdout
    assert run_cli("library", "compact", *common).returncode == 0
    verify = run_cli("library", "verify", "--deep", *common)
    assert verify.returncode == 0 and json.loads(verify.stdout)["rows"] == 13


def test_cli_index_progress_shows_the_rate_and_the_stage_that_bounds_it(tmp_path, tiny_clip_path):
    common = ["--model", str(tiny_clip_path), "--library", str(tmp_path / "lib")]
    out = run_cli("index", str(SAMPLES), *common, "--workers", "1", "--batch-size", "4")
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"added 14, already present 0, unreadable 0 in \d+\.\ds; library now holds 14 images",
                        out.stdout.splitlines()[0])
    final = out.stderr.replace("\r", "\n").strip().splitlines()[-1]   # the bar as it was left
    assert re.search(r"14/14 .*\d+\.\d+img/s", final), final
    assert re.search(r"bound by (decode|encode|write); busy: decode \d+% \(1 worker\), encode \d+%, write \d+%", final)
    two = run_cli("index", str(SAMPLES / "coffee.jpg"), str(SAMPLES / "clock.jpg"), "--workers", "2",
                  "--model", str(tiny_clip_path), "--library", str(tmp_path / "lib2"))
    assert two.returncode == 0 and "(2 workers)" in two.stderr and "added 2," in two.stdout
    for bad in ("0", "-3", "many"):
        refused = run_cli("index", str(SAMPLES), *common, "--workers", bad)
        assert refused.returncode == 2 and "at least 1" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.parametrize("args,message", [
    (["search", "   "], "Empty query"),
    (["classify", "SAMPLE", "--labels", "cat"], "at least two"),
    (["classify", "SAMPLE", "--labels", "cat,dog", "--templates", "oops"], "Unknown templates"),
    (["library", "remove", "zzz"], "not an image id"),
])
def test_cli_bad_input_is_one_clear_line(tmp_path, tiny_clip_path, args, message):
    args = [str(SAMPLES / "cat_chelsea.jpg") if a == "SAMPLE" else a for a in args]
    out = run_cli(*args, "--model", str(tiny_clip_path), "--library", str(tmp_path / "lib"))
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_cli_model_mismatch_is_explained(tmp_path, tiny_clip_path):
    lib = str(tmp_path / "lib")
    run_cli("index", str(SAMPLES / "coffee.jpg"), "--model", str(tiny_clip_path), "--library", lib, "--quiet")
    other = make_tiny_clip_file(tmp_path / "other.pt", seed=3)
    out = run_cli("search", "cat", "--model", str(other), "--library", lib)
    assert out.returncode == 2 and "never mixed" in out.stderr and "reindex" in out.stderr


def _bench_ingest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "benchmarks" / "bench_ingest.py"), *args],
                          capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)


def test_bench_ingest_prints_the_json_line_other_tools_read():
    run = _bench_ingest("--device", "cpu", "--images", "12", "--json", "--model", "tiny", "--batch", "4",
                        "--runtimes", "torch", "--workers", "1", "--naive", "0", "--size", "96x64")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["device"] == "cpu" and out["images"] == 12 and out["size"] == "96x64"
    for key in ("encoder_alone_img_s", "dataloader_img_s", "project_img_s"):
        assert out[key] > 0
    assert out["ratio"] == pytest.approx(out["project_img_s"] / out["encoder_alone_img_s"], rel=0.01)
    assert set(out["runtimes"]) == {"torch"} and "naive_img_s" not in out


def test_bench_ingest_on_cuda_without_cuda_says_so():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the benchmark runs there")
    run = _bench_ingest("--device", "cuda", "--images", "4", "--json", "--model", "tiny")
    assert run.returncode == 2 and "CUDA is not available" in run.stderr and "Traceback" not in run.stderr
    assert run.stdout == ""
