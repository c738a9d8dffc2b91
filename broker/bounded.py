"""A mapping that keeps at most ``limit`` entries, the oldest going first when a new one comes.

For what a process keeps to avoid repeating work, never for what it must not forget: the notes
of messages signed here (``broker.signed_here``), settlement's opened order accounts
(``broker.sealed_box.Opened``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Bounded(Generic[K, V]):
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        if key not in self._entries and len(self._entries) >= self._limit:
            self._entries.popitem(last=False)
        self._entries[key] = value

    def pop(self, key: K) -> V | None:
        return self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
