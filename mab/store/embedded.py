"""The default store: counts from a catalog, in the live arm table that /feedback
updates, kept durable in --state-dir (mab/state/)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mab.catalog import load_catalog
from mab.clock import clock
from mab.config import Config
from mab.feedback import Applied, Learner
from mab.state.commit import FlushHook
from mab.state.durable import (
    JournalLog,
    NoLog,
    file_fingerprint,
    open_state,
    worker_log,
)
from mab.state.table import ArmCounts
from mab.store.base import StoreHealth

if TYPE_CHECKING:
    from mab.predict import Score
    from mab.runner import Runner
    from mab.store.base import Learn


class EmbeddedStore:
    name = "embedded"

    def __init__(self, config: Config) -> None:
        self._learning = config.learning
        self._now = clock()
        self._source = _fingerprint(config)  # before the file is read: a change while
        self.catalog = load_catalog(config)  # it loads shows at the next reload
        # Built here, in the parent: the workers share the table (it is shared memory).
        self.table, self.durable = open_state(self.catalog, config.learning, self._now())
        self._log: NoLog | JournalLog = NoLog()

    async def start(self, worker: int = 0) -> None:
        pass

    async def close(self) -> None:
        await self._log.commit()
        self._log.close()

    def scorer(self, runner: Runner) -> Score:
        from mab.predict import TableScore

        return TableScore(self.table, runner, self._now)

    def learner(self, on_applied: Callable[[Applied], None], on_fsync: FlushHook | None) -> Learn:
        self._log = worker_log(self._learning, self.table, on_fsync)
        return Learner(
            self.table,
            self._log,
            self._now,
            self._learning.dedupe_window,
            self._learning.max_events,
            on_applied,
        )

    def arm(self, arm_id: str) -> ArmCounts | None:
        return self.table.arm(arm_id, self._now())

    def maintain(self) -> None:
        if self.durable is not None:
            self.durable.maybe_compact(self._learning.snapshot_every)

    def reloaded(self, config: Config) -> EmbeddedStore | None:
        """A new store when the catalog file changed (size or mtime), else None. Its
        counts supersede what was learned: with --state-dir, the learned state is set
        aside and the journal starts again from the new catalog (mab/state/durable.py)."""
        if config.catalog is None:
            return None  # generated, nothing to read again
        unchanged = self._source is not None and self._source == _fingerprint(config)
        return None if unchanged else EmbeddedStore(config)

    def stopped(self) -> None:
        if self.durable is not None:
            self.durable.compact()

    def health(self) -> StoreHealth:
        return StoreHealth(ok=True, detail={"arms": len(self.table)})


def _fingerprint(config: Config) -> str | None:
    """The catalog file as it is now; None if it cannot be read (loading it says why,
    naming the file)."""
    try:
        return None if config.catalog is None else file_fingerprint(str(config.catalog))
    except OSError:
        return None
