"""ViT-B/32 from the Hugging Face hub when OpenAI's URL fails (issue 11, item 2). Both sources are
mocked at their download functions: clip's `_download` (OpenAI's URL) and the hub fetches that
transformers makes (`hf_hub_download` / `snapshot_download`), which here serve a tiny local CLIP
in the hub cache layout. Nothing touches the network."""
from __future__ import annotations

import shutil
import urllib.error
from pathlib import Path

import pytest

from core.errors import ModelUnavailableError
from core.models import load_encoder, openai_clip
from core.settings import pick_runtime
from core.workbench import build_workbench
from tiny_models import make_tiny_clip_file, make_tiny_hf_clip_dir

REVISION = "0" * 40


@pytest.fixture(scope="module")
def tiny_hub_repo(tmp_path_factory) -> Path:
    return make_tiny_hf_clip_dir(tmp_path_factory.mktemp("hub") / "clip-vit-base-patch32")


class FakeHub:
    """transformers' hub fetches, answered from a local folder in the hub cache layout."""

    def __init__(self, repo_dir: Path | None):
        self.repo_dir, self.calls = repo_dir, []

    def fetch(self, repo_id, filename=None, *, cache_dir=None, allow_patterns=None, **_):
        import os
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
        self.calls.append((repo_id, os.environ.get("HF_ENDPOINT")))
        if self.repo_dir is None:
            raise LocalEntryNotFoundError("Connection error: cannot reach the hub")
        repo = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(REVISION)
        snapshot = repo / "snapshots" / REVISION
        snapshot.mkdir(parents=True, exist_ok=True)
        names = [filename] if filename else list(allow_patterns or [])
        for name in names:
            if (self.repo_dir / name).is_file():
                shutil.copy(self.repo_dir / name, snapshot / name)
            elif filename:
                raise EntryNotFoundError(f"{name} not in {repo_id}")
        return str(snapshot / names[0]) if filename else str(snapshot)


def _mock(monkeypatch, openai_ok: bool, hub_dir: Path | None, tmp_path: Path) -> FakeHub:
    import clip
    import transformers.utils.hub as tf_hub

    def openai_download(url, root):
        if not openai_ok:
            raise urllib.error.URLError("[Errno -2] Name or service not known")
        target = Path(root) / Path(url).name
        target.parent.mkdir(parents=True, exist_ok=True)
        return str(make_tiny_clip_file(target))
    monkeypatch.setattr(clip.clip, "_download", openai_download)
    monkeypatch.setattr(openai_clip, "openai_unreachable",   # the probe before the download: answered by the mock
                        lambda url: None if openai_ok else "[Errno -2] Name or service not known")
    hub = FakeHub(hub_dir)
    monkeypatch.setattr(tf_hub, "hf_hub_download", hub.fetch)
    monkeypatch.setattr(tf_hub, "snapshot_download", hub.fetch)
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example")
    return hub


def test_openai_url_first(monkeypatch, tmp_path, tiny_hub_repo):
    hub = _mock(monkeypatch, openai_ok=True, hub_dir=tiny_hub_repo, tmp_path=tmp_path)
    enc = load_encoder("ViT-B/32", "cpu", cache=tmp_path / "cache")
    assert enc.model_id == "ViT-B/32" and enc.source_note is None and not hub.calls


def test_hub_copy_when_openai_fails(monkeypatch, tmp_path, tiny_hub_repo):
    hub = _mock(monkeypatch, openai_ok=False, hub_dir=tiny_hub_repo, tmp_path=tmp_path)
    enc = load_encoder("ViT-B/32", "cpu", cache=tmp_path / "cache")
    assert enc.model_id == "ViT-B/32"      # the same weights: one model id, whichever source served them
    assert hub.calls and all(c == ("openai/clip-vit-base-patch32", "https://hf-mirror.example") for c in hub.calls)
    assert "Hugging Face hub (https://hf-mirror.example" in enc.source_note
    assert enc.encode_texts(["a photo of a cat"]).shape == (1, 24)


def test_workbench_says_which_source_and_is_no_fallback(monkeypatch, tmp_path, tiny_hub_repo):
    _mock(monkeypatch, openai_ok=False, hub_dir=tiny_hub_repo, tmp_path=tmp_path)
    wb = build_workbench("ViT-B/32", tmp_path / "lib", device="cpu", cache=tmp_path / "cache")
    assert not wb.fallback and wb.encoder.model_id == "ViT-B/32"
    assert "loaded from the Hugging Face hub" in wb.notice


def test_a_library_made_from_openais_file_is_reused_with_the_hub_copy(monkeypatch, tmp_path, tiny_hub_repo):
    """A class library indexed while OpenAI's URL worked opens (not "made by another model") when the
    same ViT-B/32 later comes from the hub."""
    _mock(monkeypatch, openai_ok=True, hub_dir=tiny_hub_repo, tmp_path=tmp_path)
    wb = build_workbench("ViT-B/32", tmp_path / "lib", device="cpu", cache=tmp_path / "cache", background=False)
    wb.seed()
    n = len(wb)
    wb.close()
    _mock(monkeypatch, openai_ok=False, hub_dir=tiny_hub_repo, tmp_path=tmp_path / "again")
    wb = build_workbench("ViT-B/32", tmp_path / "lib", device="cpu", cache=tmp_path / "cache2", background=False)
    assert not wb.fallback and len(wb) == n and wb.library.model_id == "ViT-B/32"


def test_both_sources_fail_then_the_mini_model_and_both_reasons(monkeypatch, tmp_path):
    hub = _mock(monkeypatch, openai_ok=False, hub_dir=None, tmp_path=tmp_path)
    with pytest.raises(ModelUnavailableError) as err:
        load_encoder("ViT-B/32", "cpu", cache=tmp_path / "cache")
    assert "openaipublic" in str(err.value) and "openai/clip-vit-base-patch32" in str(err.value)
    assert "https://hf-mirror.example" in str(err.value)
    wb = build_workbench("ViT-B/32", tmp_path / "lib", device="cpu", cache=tmp_path / "cache")
    assert wb.fallback and wb.encoder.domain == "shapes" and "openai/clip-vit-base-patch32" in wb.notice
    assert hub.calls


def test_a_blocked_openai_host_fails_at_once(monkeypatch, tmp_path):
    """A host that refuses (or drops) connections is answered in seconds, before clip's download (which has no
    time limit and would hang the start for minutes), with the way to supply the file."""
    import socket
    import time

    import clip

    with socket.socket() as s:   # a local port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/models/0123/ViT-B-32.pt"
    monkeypatch.setattr(openai_clip, "_model_urls", lambda: {"ViT-B/32": url})
    monkeypatch.setattr(clip.clip, "_download", lambda *a: pytest.fail("downloaded from an unreachable host"))
    started = time.monotonic()
    with pytest.raises(ModelUnavailableError) as err:
        openai_clip.load_clip_named("ViT-B/32", pick_runtime("cpu"), tmp_path, offline=False)
    assert time.monotonic() - started < 3
    assert f"127.0.0.1:{port}" in str(err.value) and "--model" in str(err.value)
    assert openai_clip.openai_unreachable("http://127.0.0.1:1/x")          # refused
