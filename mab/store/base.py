"""The interface every feature store implements.

A store turns a request's item ids into success / failure counts. The embedded
store answers from memory; the Vertex stores call Google's online serving APIs.
`/predict` only ever sees this interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

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

    async def fetch(self, ids: Sequence[str]) -> Features:
        """Counts for `ids`, in order. Raises `StoreFailed` / `StoreTimeout`."""
        ...

    def health(self) -> StoreHealth: ...
