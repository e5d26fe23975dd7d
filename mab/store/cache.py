"""An in-worker cache of arm counts, so hot items skip the network.

`TTLCache` bounds both staleness (entries expire `ttl` seconds after they were
fetched) and memory (least recently used entries go first). `NoCache` is the
stand-in when caching is off, so the fetch path has no `if cache:` checks.
Unknown arms are cached too (as `None`): a hot id missing from the store would
otherwise cost a network call on every request.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

Counts = tuple[float, float]  # (successes, failures)


class ArmCache(Protocol):
    def split(self, ids: Iterable[str]) -> tuple[dict[str, Counts | None], list[str]]:
        """(cached counts by id, ids to fetch) for distinct `ids`."""
        ...

    def put(self, ids: Iterable[str], found: Mapping[str, Counts]) -> None:
        """Remember fetched `ids`: their counts from `found`, or unknown."""
        ...

    def stats(self) -> dict[str, Any]: ...


class NoCache:
    def split(self, ids: Iterable[str]) -> tuple[dict[str, Counts | None], list[str]]:
        return {}, list(ids)

    def put(self, ids: Iterable[str], found: Mapping[str, Counts]) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {"enabled": False}


class TTLCache:
    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        self.hits = 0
        self.misses = 0
        # id -> (expiry on the monotonic clock, counts or None); oldest use first.
        self._entries: OrderedDict[str, tuple[float, Counts | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def split(self, ids: Iterable[str]) -> tuple[dict[str, Counts | None], list[str]]:
        now = time.monotonic()
        entries = self._entries
        get, touch = entries.get, entries.move_to_end
        hits: dict[str, Counts | None] = {}
        missing: list[str] = []
        for arm in ids:
            entry = get(arm)
            if entry is not None and entry[0] > now:
                hits[arm] = entry[1]
                touch(arm)
            else:
                missing.append(arm)  # an expired entry is replaced by put()
        self.hits += len(hits)
        self.misses += len(missing)
        return hits, missing

    def put(self, ids: Iterable[str], found: Mapping[str, Counts]) -> None:
        expires = time.monotonic() + self.ttl
        entries = self._entries
        get, touch = found.get, entries.move_to_end
        for arm in ids:
            entries[arm] = (expires, get(arm))
            touch(arm)
        while len(entries) > self.size:
            entries.popitem(last=False)

    def stats(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "entries": len(self._entries),
            "hits": self.hits,
            "misses": self.misses,
        }


def build_cache(ttl: float, size: int) -> ArmCache:
    return TTLCache(ttl, size) if ttl > 0 else NoCache()
