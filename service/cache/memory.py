"""In-process LRU of blobs, bounded by their total size in bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

MAX_ITEM_FRACTION = 2  # one item may take at most 1/2 of the capacity
ETAG_INDEX_SIZE = 65_536  # entries of the key -> ETag index (about 100 bytes each)


@dataclass(frozen=True)
class CacheEntry:
    """A served blob and its ETag. ``blob`` is the predicted buffer itself (a read-only
    memoryview of bytes, no copy) or the bytes Redis returned."""

    etag: str
    blob: bytes | memoryview


class MemoryLRU:
    """``key -> CacheEntry``; evicts least recently used entries above ``capacity`` bytes.

    Also keeps a small ``key -> ETag`` index that outlives evicted blobs, so a conditional
    request can be answered with 304 without the blob.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self._items: OrderedDict[str, CacheEntry] = OrderedDict()
        self._etags: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> CacheEntry | None:
        with self._lock:
            entry = self._items.get(key)
            if entry is not None:
                self._items.move_to_end(key)
            return entry

    def etag(self, key: str) -> str | None:
        with self._lock:
            return self._etags.get(key)

    def put(self, key: str, entry: CacheEntry) -> bool:
        """Stores ``entry``; returns False when it is too large to keep."""
        with self._lock:
            self._etags[key] = entry.etag
            self._etags.move_to_end(key)
            while len(self._etags) > ETAG_INDEX_SIZE:
                self._etags.popitem(last=False)
            if len(entry.blob) * MAX_ITEM_FRACTION > self.capacity:
                return False
            old = self._items.pop(key, None)
            if old is not None:
                self.size -= len(old.blob)
            self._items[key] = entry
            self.size += len(entry.blob)
            while self.size > self.capacity:
                _, evicted = self._items.popitem(last=False)
                self.size -= len(evicted.blob)
            return True

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._etags.clear()
            self.size = 0

    def __len__(self) -> int:
        return len(self._items)
