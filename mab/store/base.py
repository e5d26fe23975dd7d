"""The interface every feature store implements.

A store gives each worker its scorer: how a request's ids become counts and then
an answer (`mab.predict`). The embedded store's scorer reads its arm table in
native code; the Vertex stores' scorers call Google's online serving APIs first.
`/predict` only ever sees this interface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from mab.config import Config
    from mab.feedback import Applied
    from mab.predict import Score
    from mab.runner import Runner
    from mab.state.commit import FlushHook
    from mab.state.table import ArmCounts

FloatArray = npt.NDArray[np.float64]


@dataclass(slots=True)
class Features:
    """Counts aligned with the requested ids; unknown ids carry 0 / 0 and are counted."""

    successes: FloatArray
    failures: FloatArray
    unknown: int


@dataclass(frozen=True, slots=True)
class StoreHealth:
    ok: bool
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    degraded: bool = False  # serving, from state that may be stale
    status: int = 200  # the /health status code while degraded


class Learn(Protocol):
    """A worker's /feedback: a body in, what was applied out (once durable)."""

    async def __call__(self, body: bytes) -> Applied: ...


class FeatureStore(Protocol):
    """Lifecycle: built in the parent (cheap, no sockets; a table is loaded here, so
    workers share it), `start()`ed in each worker inside its running event loop,
    `close()`d on worker shutdown. `maintain` and `stopped` run in the parent."""

    name: str

    async def start(self, worker: int = 0) -> None:
        """`worker` is the worker's slot (0 .. --workers - 1), kept across respawns."""
        ...

    async def close(self) -> None: ...

    def scorer(self, runner: Runner) -> Score:
        """The worker's scorer, built once after `start()`; its CPU work goes to `runner`."""
        ...

    def learner(self, on_applied: Callable[[Applied], None], on_fsync: FlushHook | None) -> Learn:
        """The worker's /feedback, built once after `start()` (NotSupported when called,
        for a read-only store)."""
        ...

    def arm(self, arm_id: str) -> ArmCounts | None:
        """One arm's live counts, None if unknown (NotSupported for a read-only store)."""
        ...

    def maintain(self) -> None:
        """Periodic upkeep in the parent (compaction)."""
        ...

    def reloaded(self, config: Config) -> FeatureStore | None:
        """On SIGHUP, in the parent: a new store built from a changed source, loaded
        and validated whole (a bad source raises StartupError and changes nothing), or
        None when there is nothing new to load."""
        ...

    def stopped(self) -> None:
        """The workers have stopped (the last compaction)."""
        ...

    def health(self) -> StoreHealth: ...
