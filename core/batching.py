"""Encode many users' requests in one forward pass: an encoder wrapper for a shared server.

    encoder = BatchingEncoder(load_encoder("ViT-B/32"))
    # from 20 request threads at once:
    encoder.encode_texts(["一只猫"])     # joins whatever texts are waiting: one forward pass for all

On a CPU a forward pass of 8 images costs ~3x less than 8 passes of one, and a pass of 8
short texts ~2-5x less than 8 of one (benchmarks/RESULTS.md, "A class on one link"). No
timer and no extra thread: the first caller to find the encoder idle runs a pass with every
request waiting at that moment, while later callers queue up for the next pass, so a burst
batches itself and a lone request never waits. A failed pass is retried request by request,
so one bad input never fails its neighbours. The wrapper offers every other attribute of
the wrapped encoder unchanged.
"""
from __future__ import annotations

import threading
from typing import Callable, Sequence

import torch
from PIL import Image

__all__ = ["BatchingEncoder"]

CPU_MAX_IMAGES = 16   # images per shared pass on a CPU: bigger passes barely add throughput, only wait


class _Request:
    def __init__(self, items):
        self.items, self.done = items, threading.Event()
        self.result: torch.Tensor | None = None
        self.error: BaseException | None = None
        self.lead = False    # woken to run the next pass


class _Coalescer:
    """Runs fn(concatenated items) for all requests waiting when the encoder frees up."""

    def __init__(self, fn: Callable, join: Callable, size: Callable, max_items: int):
        self.fn, self.join, self.size, self.max_items = fn, join, size, max_items
        self._lock = threading.Lock()
        self._waiting: list[_Request] = []
        self._busy = False

    def __call__(self, items) -> torch.Tensor:
        request = _Request(items)
        with self._lock:
            self._waiting.append(request)
            lead = not self._busy
            self._busy = True
        if not lead:
            request.done.wait()
            if not request.lead:
                return self._outcome(request)
        self._run_pass()
        return self._outcome(request)

    def _run_pass(self) -> None:
        """Encode the waiting requests (up to max_items), then hand the encoder to the next waiter."""
        with self._lock:
            batch, total = [], 0
            while self._waiting and (not batch or total + self.size(self._waiting[0].items) <= self.max_items):
                batch.append(self._waiting.pop(0))
                total += self.size(batch[-1].items)
        outputs: list = []
        try:
            outputs = self._encode(batch)
        except BaseException as e:  # e.g. KeyboardInterrupt: every waiter hears of it, the encoder moves on
            outputs = [e] * len(batch)
            raise
        finally:
            self._finish(batch, outputs)

    def _encode(self, batch: list[_Request]) -> list:
        try:
            return self._split(self.fn(self.join([r.items for r in batch])), batch)
        except Exception:  # noqa: BLE001  re-run one by one: each request gets its own result or error
            outputs = []
            for r in batch:
                try:
                    outputs.append(self.fn(r.items))
                except Exception as e:  # noqa: BLE001  raised again in that request's own thread
                    outputs.append(e)
            return outputs

    def _finish(self, batch: list[_Request], outputs: list) -> None:
        """Hand each request its result or error, then the encoder to the next waiter."""
        for r, out in zip(batch, outputs):
            if isinstance(out, BaseException):
                r.error = out
            else:
                r.result = out
            r.done.set()
        with self._lock:
            if self._waiting:
                nxt = self._waiting[0]
                nxt.lead = True
                nxt.done.set()   # it runs the next pass in its own thread
            else:
                self._busy = False

    def _split(self, out: torch.Tensor, batch: list[_Request]) -> list[torch.Tensor]:
        sizes = [self.size(r.items) for r in batch]
        return list(torch.split(out, sizes)) if len(batch) > 1 else [out]

    @staticmethod
    def _outcome(request: _Request) -> torch.Tensor:
        if request.error is not None:
            raise request.error
        return request.result


class BatchingEncoder:
    """An Encoder whose encode_pixels / encode_images / encode_texts calls from many threads share
    forward passes. Preprocessing stays in each caller's thread (it runs in parallel)."""

    def __init__(self, encoder, max_images: int | None = None, max_texts: int | None = None):
        self.wrapped = encoder
        if max_images is None:   # on a CPU a pass of 16 images gets most of the gain; a classify waits less
            max_images = encoder.batch_size if encoder.runtime.is_cuda else min(CPU_MAX_IMAGES, encoder.batch_size)
        self._pixels = _Coalescer(encoder.encode_pixels, lambda xs: torch.cat(xs), len, max_images)
        self._texts = _Coalescer(encoder.encode_texts, lambda xs: [t for x in xs for t in x], len,
                                 max_texts or 4 * encoder.batch_size)

    def __getattr__(self, name):
        return getattr(self.wrapped, name)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, D], in one pass with other callers' pixels."""
        return self._pixels(pixels) if len(pixels) else self.wrapped.encode_pixels(pixels)

    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        if not images:
            return torch.empty(0, self.wrapped.dim)
        return self.encode_pixels(torch.stack([self.wrapped.preprocess(im) for im in images]))

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self._texts(list(texts)) if texts else self.wrapped.encode_texts(texts)

    def __repr__(self) -> str:
        return f"BatchingEncoder({self.wrapped!r})"
