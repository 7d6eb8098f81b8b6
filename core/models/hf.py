"""Loading Hugging Face models: one place for the cache, HF_ENDPOINT / HF_HUB_OFFLINE, and the
error that says where we looked and what to do. Used by the CLIP encoders (core/models/hf_clip.py),
the captioner and the translator. Imports neither torch nor transformers until a model loads.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ModelUnavailableError, UnknownModelError
from ..settings import default_paths

__all__ = ["hub_endpoint", "hub_kwargs", "load_pretrained", "model_type", "is_hub_id", "LazyLoad"]


def hub_endpoint() -> str:
    """The hub address in use: HF_ENDPOINT (a mirror such as https://hf-mirror.com) or the hub itself."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_kwargs(source: str, cache: Path | None, offline: bool) -> dict[str, Any]:
    """from_pretrained keyword arguments: project cache for hub ids, no network when offline."""
    kwargs: dict[str, Any] = {}
    if not Path(source).is_dir():
        kwargs["cache_dir"] = str(Path(cache or default_paths().cache) / "hf")
    if offline or os.environ.get("HF_HUB_OFFLINE") == "1":
        kwargs["local_files_only"] = True
    return kwargs


def load_pretrained(what: str, source: str, loaders: Sequence[Callable[..., Any]],
                    cache: Path | None, offline: bool) -> list[Any]:
    """Call each `loader(source, **hub_kwargs)` (from_pretrained-like); any failure to find the
    files becomes a ModelUnavailableError that says where we looked and what to do.
    `what` names the model for that message, e.g. "captioner 'vit-gpt2' (nlpconnect/...)"."""
    kwargs = hub_kwargs(source, cache, offline)
    try:
        return [load(source, **kwargs) for load in loaders]
    except (OSError, ValueError, KeyError) as e:  # missing/corrupt files, no network, no cache entry
        if Path(source).is_dir():
            where = f"the local directory {source}"
        else:
            where = f"the Hugging Face hub ({hub_endpoint()}) and the cache {kwargs['cache_dir']}"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")
        if "local_files_only" in kwargs and not Path(source).is_dir():
            # transformers words a cache miss as "couldn't connect to huggingface.co": no connection was tried
            raise ModelUnavailableError(
                f"The {what} is not in the cache {kwargs['cache_dir']}, and offline mode (--offline or "
                "HF_HUB_OFFLINE=1) downloads nothing. To supply it: run once online (without offline mode) to "
                f"fill the cache from {hub_endpoint()} (HF_ENDPOINT may name a mirror, e.g. https://hf-mirror.com), "
                "or pass a local directory saved with save_pretrained().") from None
        raise ModelUnavailableError(
            f"Could not load the {what} from {where}: {first}. To supply it: pass a local "
            "directory saved with save_pretrained(), set HF_ENDPOINT to a mirror (e.g. "
            "https://hf-mirror.com), or run once online to fill the cache.") from None


def model_type(source: str, cache: Path | None, offline: bool, what: str) -> str:
    """config.json's model_type of a local directory or hub id, e.g. "blip", "m2m_100"."""
    from transformers import AutoConfig
    return load_pretrained(what, source, [AutoConfig.from_pretrained], cache, offline)[0].model_type


def is_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists()


class LazyLoad:
    """A value built once on first use, under a lock; a failure is remembered and re-raised
    (an unreachable hub costs ~50 s of retries, which must not be paid on every request)."""

    def __init__(self, build: Callable[[], Any]):
        self._build, self._lock = build, threading.Lock()
        self._value: Any = None
        self._error: ModelUnavailableError | UnknownModelError | None = None

    def get(self) -> Any:
        if self._value is None:
            with self._lock:
                if self._value is None and self._error is None:
                    try:
                        self._value = self._build()
                    except (ModelUnavailableError, UnknownModelError) as e:   # both final: never retried
                        self._error = e
                if self._error is not None:
                    raise self._error
        return self._value

    @property
    def loaded(self) -> bool:
        return self._value is not None
