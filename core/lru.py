"""The one small thread-safe least-recently-used map of the project: query embeddings (core/library/search.py),
zero-shot class matrices (core/zeroshot.py), Learn tab projections (core/lab/learn.py), translations
remembered, the UI's per-session languages."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Hashable

__all__ = ["LRU"]


class LRU:
    """At most `size` entries; the one used longest ago goes first. size <= 0 remembers nothing."""

    def __init__(self, size: int):
        self.size, self._data, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key: Hashable, value: Any) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    __setitem__ = put

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        return len(self._data)
