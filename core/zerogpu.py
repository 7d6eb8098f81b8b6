"""ZeroGPU: on a Hugging Face ZeroGPU Space the model calls run under `spaces.GPU`; elsewhere nothing changes.

A ZeroGPU Space (SPACES_ZERO_GPU set by the platform, the `spaces` package installed) has no GPU
of its own: a function decorated with `spaces.GPU` gets one for the length of each call, in a
worker process forked from the app (so it has the models) that receives the call's arguments
pickled and sends the result back pickled. The model calls of the workbench all pass through a
few methods, so they are wrapped there, once, at start (`install()`, called by demo.py before any
model is built):

    Encoder.encode_pixels, Encoder.encode_texts    every image / text forward pass of every encoder
                                                   (search, classify, ingest, the Learn tab)
    Captioner.caption, Translator._run             caption and translation generate() calls

Each model object gets its own GPU function (made on its first call, a closure over the object),
so only the batch crosses to the worker (pixels, texts, PIL images) and only CPU tensors or
strings come back; the model itself is never pickled. Weights load in the app process first
(`prepare`), where ZeroGPU keeps them until a worker moves them to its GPU. `gpu(fn)` is the same
decorator for any other function (an identity off ZeroGPU). Core never imports `spaces` off ZeroGPU.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import threading
from typing import Any, Callable, TypeVar

__all__ = ["enabled", "gpu", "install", "TARGETS", "ZERO_GPU_ENV", "DURATION"]

F = TypeVar("F", bound=Callable)

ZERO_GPU_ENV = "SPACES_ZERO_GPU"
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


def enabled() -> bool:
    """On a ZeroGPU Space: SPACES_ZERO_GPU set (not 0/false) and `spaces` importable."""
    flag = os.environ.get(ZERO_GPU_ENV, "").strip().lower()
    if flag in ("", "0", "false", "no"):
        return False
    try:
        return importlib.util.find_spec("spaces") is not None
    except ValueError:   # imported already, without a spec (e.g. made in memory)
        return "spaces" in sys.modules


def gpu(fn: F | None = None, *, duration: int | Callable[..., int] = DURATION):
    """`spaces.GPU(duration=...)(fn)` on ZeroGPU, `fn` itself elsewhere; usable as @gpu or @gpu(duration=...)."""
    def decorate(f: F) -> F:
        if not enabled():
            return f
        import spaces
        return spaces.GPU(duration=duration)(f)
    return decorate(fn) if fn is not None else decorate


def install() -> bool:
    """Route every method in TARGETS through `spaces.GPU` (once); True when on ZeroGPU. Call it
    before encoders are built: core/batching.py keeps the bound methods it was given."""
    if not enabled():
        return False
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
