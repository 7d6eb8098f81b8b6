"""ZeroGPU: on a Hugging Face ZeroGPU Space the model calls run under `spaces.GPU`; elsewhere nothing changes.

A ZeroGPU Space (SPACES_ZERO_GPU set by the platform, the `spaces` package installed) has no GPU
of its own: a function decorated with `spaces.GPU` gets one for the length of each call, in a
worker process forked from the app (so it has the models) that receives the call's arguments
pickled and sends the result back pickled. `install()` (demo.py calls it first, before a runtime
is picked, a model built or Gradio launched) does three things, in this order:

1. `import spaces`. Importing it patches torch in the app process: `torch.cuda.is_available()` is
   True and CUDA work is recorded, not run, so core.settings.pick_runtime() picks CUDA + fp16 and the
   models are "moved" to a GPU the worker really has. It also hooks Gradio's launch(): at launch it
   packs the weights for the workers and reports the Space's GPU functions to the platform. Imported
   any later (at the first model call, say), pick_runtime would already have chosen the CPU, so every
   "GPU" call would run CPU code in the worker; imported after launch(), the hook would never run.
2. Decorates `device_name` with `spaces.GPU` at once, so the startup report at launch finds a GPU
   function even when no model has run yet: ZeroGPU counts the functions decorated before launch().
3. Wraps the few methods every model call passes through:

    Encoder.encode_pixels, Encoder.encode_texts    every image / text forward pass of every encoder
                                                   (search, classify, ingest, the Learn tab)
    Captioner.caption, Translator._run             caption and translation generate() calls

Each model object gets its own GPU function (made on its first call, a closure over the object, so
its worker is forked once the object and its weights exist), so only the batch crosses to the
worker (pixels, texts, PIL images) and only CPU tensors or strings come back; the model itself is
never pickled. Weights load in the app process first (`prepare`), where ZeroGPU keeps them until a
worker moves them to its GPU. `gpu(fn)` is the same decorator for any other function (an identity
off ZeroGPU). Core never imports `spaces` off ZeroGPU.
"""
from __future__ import annotations

import functools
import importlib
import threading
from typing import Any, Callable, TypeVar

from ..settings import ZERO_GPU_ENV, on_zero_gpu

__all__ = ["enabled", "gpu", "install", "device_name", "TARGETS", "ZERO_GPU_ENV", "DURATION"]

F = TypeVar("F", bound=Callable)

DURATION = 60       # seconds a call may hold the GPU (ZeroGPU's default; a shorter one queues sooner)


def _load_captioner(captioner, images, *_, **__) -> None:
    captioner.load()


def _load_translator(translator, texts, to, *_, **__) -> None:
    translator.load(to)


# (module, class, method, seconds, prepare(obj, *args) run in the app process before the GPU call, or None)
TARGETS = (("core.models.base", "Encoder", "encode_pixels", DURATION, None),
           ("core.models.base", "Encoder", "encode_texts", DURATION, None),
           ("core.language.caption", "Captioner", "caption", 120, _load_captioner),
           ("core.language.translate", "Translator", "_run", DURATION, _load_translator))
_ORIGINAL = "__zerogpu_original__"
_RUNNER = "_zerogpu_run"
_lock = threading.Lock()


def device_name() -> str:
    """The GPU's name (in a ZeroGPU worker: the lent GPU's); "cpu" without one."""
    import torch
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def enabled() -> bool:
    """On a ZeroGPU Space (core.settings.on_zero_gpu, which also sets Runtime.zero_gpu)."""
    return on_zero_gpu()


def gpu(fn: F | None = None, *, duration: int | Callable[..., int] = DURATION):
    """`spaces.GPU(duration=...)(fn)` on ZeroGPU, `fn` itself elsewhere; usable as @gpu or @gpu(duration=...)."""
    def decorate(f: F) -> F:
        if not enabled():
            return f
        import spaces
        return spaces.GPU(duration=duration)(f)
    return decorate(fn) if fn is not None else decorate


def install() -> bool:
    """On ZeroGPU: import `spaces` (so torch shows the lent GPU), make a GPU function for the startup
    report, and route every method in TARGETS through `spaces.GPU` (each once); True when on ZeroGPU.
    Call it first: before a runtime is picked or a model built (pick_runtime must see CUDA, and
    core/batching.py keeps the bound methods it was given) and before Gradio's launch()."""
    if not enabled():
        return False
    importlib.import_module("spaces")   # first of all: patches torch, hooks Gradio's launch()
    gpu(device_name, duration=10)   # kept by spaces (decorated once however often install() runs)
    for module, cls_name, attr, seconds, prepare in TARGETS:
        cls = getattr(importlib.import_module(module), cls_name)
        if not hasattr(cls.__dict__[attr], _ORIGINAL):
            setattr(cls, attr, _method(attr, cls.__dict__[attr], prepare))
    return True


def _method(name: str, original: Callable, prepare: Callable | None) -> Callable:
    @functools.wraps(original)
    def method(self, *args, **kwargs):
        if prepare is not None:
            prepare(self, *args, **kwargs)
        return _runner(self)(name, *args, **kwargs)
    setattr(method, _ORIGINAL, original)
    return method


def _runner(obj: Any) -> Callable:
    """obj's GPU function: run(name, *args) calls the original method `name` on obj in the worker."""
    run = obj.__dict__.get(_RUNNER)
    if run is None:
        with _lock:
            run = obj.__dict__.get(_RUNNER)
            if run is None:
                def call(name: str, *args, **kwargs):
                    return getattr(getattr(type(obj), name), _ORIGINAL)(obj, *args, **kwargs)
                durations = {attr: seconds for _, _, attr, seconds, _ in TARGETS}
                run = gpu(call, duration=lambda name, *a, **k: durations.get(name, DURATION))
                obj.__dict__[_RUNNER] = run
    return run
