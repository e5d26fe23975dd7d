"""The default store: counts from a catalog held in memory."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat

import numpy as np

from mab.catalog import Catalog
from mab.native.codec import IdIndex
from mab.native.scoring import EmbeddedScorer
from mab.request import ItemIds
from mab.store.base import Features, StoreHealth


class EmbeddedStore:
    name = "embedded"

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._get = catalog.index.get
        self._unknown_row = len(catalog)
        self._successes = catalog.successes
        self._failures = catalog.failures
        # Built here, in the parent: the workers share it copy-on-write.
        self._index = IdIndex(catalog.ids)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def fetch(self, ids: Sequence[str]) -> Features:
        if isinstance(ids, ItemIds) and ids.spans is not None:
            rows, unknown = self._index.lookup(ids.body, ids.spans)
            return Features(self._successes[rows], self._failures[rows], unknown)
        unknown_row = self._unknown_row
        # map() with two iterables keeps the loop in C: 18 us for 400 ids vs 22 for a listcomp.
        rows = np.fromiter(map(self._get, ids, repeat(unknown_row)), dtype=np.intp, count=len(ids))
        return Features(
            successes=self._successes[rows],
            failures=self._failures[rows],
            unknown=int(np.count_nonzero(rows == unknown_row)),
        )

    def scorer(self, prior_alpha: float, prior_beta: float) -> EmbeddedScorer:
        """The fused native pipeline over this catalog (one per worker, after the fork)."""
        return EmbeddedScorer(self._index, self._successes, self._failures, prior_alpha, prior_beta)

    def health(self) -> StoreHealth:
        return StoreHealth(ok=True, detail={"arms": len(self.catalog)})
