"""The one bounded cache of the data layer.

Everything the data layer keeps in memory between calls (decoded image splits, tokenized text
splits, corrupted rows, epoch permutations, tokenizers) lives in a `BoundedCache` made once at
module level. Each registers under its name, so `stats()` shows what a process keeps and how
often it was reused.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple


class CacheStats(NamedTuple):
    entries: int
    hits: int
    misses: int


class BoundedCache:
    """At most `max_entries` values by key; storing one more drops the least recently used."""

    def __init__(self, name: str, max_entries: int):
        if max_entries < 1:
            raise ValueError(f"cache {name!r}: max_entries must be >= 1, got {max_entries}")
        self.name = name
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._values: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()
        # Loaders may call from grain worker threads; the lock guards the bookkeeping only.
        self._lock = threading.Lock()
        _REGISTRY[name] = self

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The value stored under `key`, or `make()` stored there now."""
        with self._lock:
            if key in self._values:
                self.hits += 1
                self._values.move_to_end(key)
                return self._values[key]
            self.misses += 1
        # Made outside the lock: `make` may use another cache. Two threads missing the same key
        # both make it; values are pure functions of their keys, so either one may stay.
        value = make()
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.max_entries:
                self._values.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._values)


_REGISTRY: dict[str, BoundedCache] = {}


def stats() -> dict[str, CacheStats]:
    """Entries, hits and misses of every data cache of this process, by name."""
    return {name: CacheStats(len(c), c.hits, c.misses) for name, c in _REGISTRY.items()}
