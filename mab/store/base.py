"""The interface every feature store implements.

A store gives each worker its scorer: how a request's ids become counts and then
an answer (`mab.predict`). The embedded store's scorer reads its arm table in
native code; the Vertex stores' scorers call Google's online serving APIs first.
`/predict` only ever sees this interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from mab.predict import Score
    from mab.runner import Runner

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


class FeatureStore(Protocol):
    """Lifecycle: built in the parent (cheap, no sockets), `start()`ed in each
    worker inside its running event loop, `close()`d on worker shutdown."""

    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def scorer(self, runner: Runner) -> Score:
        """The worker's scorer, built once after `start()`; its CPU work goes to `runner`."""
        ...

    def health(self) -> StoreHealth: ...
