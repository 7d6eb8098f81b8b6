"""ZeroGPU start-up order (core/hosting/zerogpu.py, demo.py): `spaces` is imported by install(), before a runtime
is picked, a model built or Gradio launched, so torch already shows ZeroGPU's CUDA device (the runtime is
CUDA fp16, not the CPU) and the launch hook finds a GPU function. The `spaces` here is a stand-in on
sys.path, imported for real, that does what the real one does on import (see its docstring); no GPU, no
network. The calls under spaces.GPU themselves: tests/test_spaces.py."""
from __future__ import annotations

import re
import sys
import types

import pytest
import torch

from core.hosting import zerogpu
from core.settings import PROJECT_ROOT

FAKE_SPACES = '''
"""A stand-in for Hugging Face's `spaces` on a ZeroGPU Space. Importing the real one patches torch (the app
process sees one CUDA device; CUDA work is recorded for the GPU workers, not run) and wraps Gradio's
Blocks.launch so that, at launch, it packs the weights and reports the GPU functions decorated so far (none: no
report, and the platform finds no GPU function). This one records both, and runs a GPU function in place."""
import functools

import gradio as gr
import torch

from _zerogpu_events import events

events.append(("import spaces", None))
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: 1
torch.cuda.get_device_name = lambda *a, **k: "ZeroGPU stand-in"
decorated = {}


def GPU(task=None, *, duration=None, **kwargs):
    if task is None:
        return functools.partial(GPU, duration=duration, **kwargs)
    if task not in decorated:
        decorated[task] = functools.wraps(task)(lambda *a, **k: task(*a, **k))
    return decorated[task]


_launch = gr.Blocks.launch


@functools.wraps(_launch)
def launch(*args, **kwargs):
    events.append(("launch", len(decorated)))
    gr.Blocks.launch = _launch
    return _launch(*args, **kwargs)


gr.Blocks.launch = launch
'''


@pytest.fixture
def zero_gpu_space(monkeypatch, tmp_path):
    """A ZeroGPU Space as the app sees it: SPACES_ZERO_GPU set, `spaces` importable (not imported yet);
    Gradio's launch and block_thread stubbed. Returns the list of events, in order. Everything the
    stand-in patches (torch.cuda, Blocks.launch, the wrapped methods) is put back afterwards."""
    import gradio as gr   # first: Gradio's own `import spaces` must not see the stand-in
    events: list[tuple[str, object]] = []
    recorder = types.ModuleType("_zerogpu_events")
    recorder.events = events
    monkeypatch.setitem(sys.modules, "_zerogpu_events", recorder)
    site = tmp_path / "site"
    (site / "spaces").mkdir(parents=True)
    (site / "spaces" / "__init__.py").write_text(FAKE_SPACES)
    monkeypatch.delitem(sys.modules, "spaces", raising=False)
    monkeypatch.syspath_prepend(str(site))
    for name in ("is_available", "device_count", "get_device_name"):
        monkeypatch.setattr(torch.cuda, name, getattr(torch.cuda, name))

    def launch(self, *args, **kwargs):
        events.append(("gradio launch", None))
        self.local_url, self.share_url = "http://127.0.0.1:7860/", None
    monkeypatch.setattr(gr.Blocks, "launch", launch)
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda self: None)
    for module, cls, attr, *_ in zerogpu.TARGETS:
        owner = getattr(__import__(module, fromlist=[cls]), cls)
        monkeypatch.setattr(owner, attr, owner.__dict__[attr])
    for name in ("SPACE_ID", "CLIP_WB_DEVICE", "CLIP_WB_LIBRARY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    yield events
    sys.modules.pop("spaces", None)   # the stand-in, imported during the test


def test_install_imports_spaces_so_the_runtime_is_cuda_fp16(zero_gpu_space):
    from core.settings import pick_runtime
    assert "spaces" not in sys.modules and zerogpu.enabled()
    assert zerogpu.install()
    assert "spaces" in sys.modules and zero_gpu_space[0] == ("import spaces", None)
    runtime = pick_runtime(None, "auto")   # the app's defaults
    assert runtime.device.type == "cuda" and runtime.dtype == torch.float16 and runtime.engine == "torch"
    assert runtime.zero_gpu and not runtime.resident   # CUDA only inside model calls: scans stay on the CPU
    assert len(sys.modules["spaces"].decorated) == 1   # device_name: a GPU function before any model call
    assert zerogpu.install() and len(sys.modules["spaces"].decorated) == 1


def test_off_zerogpu_spaces_is_never_imported(zero_gpu_space, monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU")
    assert not zerogpu.install()
    assert "spaces" not in sys.modules and zero_gpu_space == []


def test_the_demo_imports_spaces_before_it_picks_a_runtime_and_launches(zero_gpu_space, monkeypatch, tiny_clip_path,
                                                                        tmp_path):
    """A filled library or --no-seed: no model call before launch(). The runtime the app picks is recorded, and
    the workbench is then built on the CPU (this machine has no GPU)."""
    import demo
    from core import workbench
    from core.models.base import Encoder
    real = workbench.pick_runtime

    def picked(device=None, runtime=None):
        chosen = real(device, runtime)
        zero_gpu_space.append(("pick_runtime", chosen))
        return real("cpu", "torch")
    monkeypatch.setattr(workbench, "pick_runtime", picked)
    closers = []
    monkeypatch.setattr(demo.atexit, "register", closers.append)
    try:
        assert demo.main(["--model", str(tiny_clip_path), "--library", str(tmp_path / "lib"), "--offline",
                          "--no-seed"]) == 0
    finally:
        for close in reversed(closers):
            close()
    names = [name for name, _ in zero_gpu_space]
    assert names[:2] == ["import spaces", "pick_runtime"], names
    assert names.index("pick_runtime") < names.index("launch") < names.index("gradio launch")
    runtime = dict(zero_gpu_space)["pick_runtime"]
    assert runtime.device.type == "cuda" and runtime.dtype == torch.float16 and runtime.engine == "torch"
    assert runtime.zero_gpu and not runtime.resident   # CUDA only inside model calls: scans stay on the CPU
    assert dict(zero_gpu_space)["launch"] >= 1   # the startup report finds a GPU function
    assert hasattr(Encoder.__dict__["encode_texts"], "__zerogpu_original__")


def test_the_readme_says_what_zerogpu_does():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    paragraph = re.search(r"^- \*\*ZeroGPU\.\*\*(.+?)(?=^- \*\*|^#)", readme, re.S | re.M).group(1)
    seconds = {attr: s for _, _, attr, s, _ in zerogpu.TARGETS}
    for claim in ("SPACES_ZERO_GPU", "`spaces.GPU`", "fp16", "before it picks a runtime",
                  f"up to {seconds['encode_texts']} s", f"a caption up to {seconds['caption']} s",
                  f"最多 {seconds['encode_texts']} 秒", f"描述最多 {seconds['caption']} 秒"):
        assert claim in paragraph, claim



def test_search_on_zerogpu_scans_on_the_cpu(monkeypatch, tmp_path, encoder):
    """A CUDA runtime on ZeroGPU: the exact index scans outside model calls, on the CPU in float32
    (no CUDA here: a scan on the device would fail), with the same hits as a CPU runtime."""
    import torch

    from core import open_library
    from core.library.index import ExactIndex
    from core.library.ingest import ingest, iter_image_files
    from core.settings import Runtime, pick_runtime
    from core_fixtures import SAMPLES

    lib = open_library(tmp_path / "lib", encoder)
    ingest(lib, encoder, list(iter_image_files([SAMPLES])))
    query = encoder.encode_texts(["a cat"])
    on_zerogpu = ExactIndex(lib, Runtime(torch.device("cuda"), torch.float16, zero_gpu=True))
    assert on_zerogpu.search(query, 5)[1].tolist() == ExactIndex(lib, pick_runtime("cpu")).search(query, 5)[1].tolist()


def test_live_training_on_zerogpu_stays_on_the_cpu(monkeypatch, tmp_path):
    import torch

    from core.lab.live import LiveConfig
    from core.settings import Runtime

    zero_gpu = Runtime(torch.device("cuda"), torch.float16, zero_gpu=True)
    assert LiveConfig().train_config(tmp_path, zero_gpu).device == "cpu"
    assert LiveConfig(device="cuda").train_config(tmp_path, zero_gpu).device == "cuda"     # asked for on purpose
    zero_gpu = Runtime(torch.device("cuda"), torch.float16, zero_gpu=False)
    assert LiveConfig().train_config(tmp_path, zero_gpu).device == "auto"
