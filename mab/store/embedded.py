"""The default store: counts from a catalog held in memory, in an arm table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mab.catalog import Catalog
from mab.native.scoring import ArmTable
from mab.store.base import StoreHealth

if TYPE_CHECKING:
    from mab.predict import Score
    from mab.runner import Runner


def _no_decay() -> float:
    return 1.0


class EmbeddedStore:
    name = "embedded"

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        # Built here, in the parent: the workers share it copy-on-write.
        self.table = ArmTable(catalog.ids, catalog.counts)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def scorer(self, runner: Runner) -> Score:
        from mab.predict import TableScore

        return TableScore(self.table, runner, _no_decay)

    def health(self) -> StoreHealth:
        return StoreHealth(ok=True, detail={"arms": len(self.catalog)})
