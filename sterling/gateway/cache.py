"""Rendered responses of index queries, reused until the index moves.

Every write to the index happens in the same transaction as the move of its cursor (see
:mod:`oracle.indexer`), so the cursor versions the whole index: a response rendered at
``(rollbacks, block)`` is exactly what the same query gives until the cursor leaves it (a
reorganisation's rollback may bring the block back to a height seen before, but counts one more
rollback). Keys therefore start with that pair, and a hit costs one primary-key read instead of
the query, the ORM objects and the JSON rendering.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from sqlalchemy.orm import Session

from oracle.index_db import Cursor


class ResponseCache:
    """A small thread-safe LRU of rendered JSON bodies."""

    def __init__(self, *, max_entries: int = 512) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be positive, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> bytes | None:
        """The body cached under ``key``, or ``None`` (a miss is counted by :meth:`get_or_render`)."""
        with self._lock:
            body = self._entries.get(key)
            if body is not None:
                self._entries.move_to_end(key)
                self.hits += 1
            return body

    def get_or_render(self, key: Hashable, render: Callable[[], bytes]) -> bytes:
        """The body cached under ``key``, or ``render()``'s (then cached)."""
        body = self.get(key)
        if body is not None:
            return body
        with self._lock:
            self.misses += 1
        body = render()
        with self._lock:
            self._entries[key] = body
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return body


    def clear(self) -> None:
        """Forget every body: something they were rendered from changed outside the index (a datasheet arrived)."""
        with self._lock:
            self._entries.clear()


def index_version(session: Session, cursor_key: str) -> tuple[int, int]:
    """The index's ``(rollbacks, last indexed block)`` (``(0, -1)`` before the first poll): its version for caching."""
    cursor = session.get(Cursor, cursor_key)
    return (0, -1) if cursor is None else (int(cursor.rollbacks), int(cursor.last_block))
