"""The two Vertex AI stores: the legacy Featurestore and the new Feature Store.

Both fetch the same way: distinct ids not in the cache are split into chunks of
`fetch_chunk` (the APIs take at most 100 ids per call), all chunks are read
concurrently, and the first failure cancels the other calls and fails the
request (502, with the upstream status); the deadline covers the whole fetch
(504). Ids the store does not know are scored from the prior and counted.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from mab.config import Config, VertexConfig
from mab.errors import HTTPError, NotSupported, StartupError, StoreTimeout
from mab.store.base import Features, StoreHealth
from mab.store.cache import Counts, build_cache
from mab.store.vertex_readers import (
    FeaturestoreReader,
    OnlineStoreReader,
    OnlineStoreStreamingReader,
    Reader,
    first_error,
)

if TYPE_CHECKING:
    from mab.feedback import Applied
    from mab.predict import Score
    from mab.runner import Runner
    from mab.state.commit import FlushHook
    from mab.state.table import ArmCounts
    from mab.store.base import Learn

_log = structlog.get_logger("mab.store.vertex")
_UNKNOWN = (0.0, 0.0)
# Google shuts the legacy Featurestore's APIs off on this day (the banner on its docs).
FEATURESTORE_SHUTOFF = "2027-02-17"
_LOCATION = re.compile(r"^projects/[^/]+/locations/(?P<location>[^/]+)/")


def regional_endpoint(resource: str) -> str:
    """The API endpoint of the region named in a resource name."""
    match = _LOCATION.match(resource)
    if match is None:
        raise StartupError(f"not a regional Vertex AI resource name: {resource!r}")
    return f"{match['location']}-aiplatform.googleapis.com:443"


def _check_credentials() -> None:
    """Fail start-up in the parent, not in every worker, when there are no credentials.
    (Only finds them; each worker's client resolves its own after the fork.)"""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        google.auth.default()
    except DefaultCredentialsError as exc:
        raise StartupError(
            f"no Google Application Default Credentials ({exc}); "
            "use --vertex-insecure only for local fakes and emulators"
        ) from None


def _check(resource: str | None, pattern: str, flag: str) -> str:
    if not resource or re.fullmatch(pattern, resource) is None:
        shape = pattern.replace("[^/]+", "*")
        raise StartupError(f"{flag} must look like {shape}, got {resource!r}")
    return resource


class VertexStore:
    """The fetch, cache and health logic shared by both Vertex stores."""

    name = "vertex"

    def __init__(
        self,
        config: VertexConfig,
        resource: str,
        reader: Callable[[VertexConfig, str], Reader],
    ) -> None:
        self.resource = resource
        self.endpoint = config.endpoint or regional_endpoint(resource)
        if not config.insecure:
            _check_credentials()
        self._reader = reader(config, self.endpoint)
        self._cache = build_cache(config.cache_ttl, config.cache_size)
        self._chunk = config.fetch_chunk
        self._deadline = config.fetch_deadline
        self._unhealthy_after = config.unhealthy_after
        self._failures = 0  # consecutive failed fetches
        self._last_error = ""

    async def start(self, worker: int = 0) -> None:
        await self._reader.open()

    async def close(self) -> None:
        await self._reader.close()

    def scorer(self, runner: Runner) -> Score:
        from mab.predict import FetchScore

        return FetchScore(self.fetch, runner)

    def learner(self, on_applied: Callable[[Applied], None], on_fsync: FlushHook | None) -> Learn:
        return self._read_only

    async def _read_only(self, body: bytes) -> Applied:
        raise NotSupported(
            f"the {self.name} store is read-only: it takes no feedback (counts come from "
            "Vertex AI; use --store embedded or redis to learn online)"
        )

    def arm(self, arm_id: str) -> ArmCounts | None:
        raise NotSupported(f"the {self.name} store keeps no live arm table to read")

    def maintain(self) -> None:
        pass

    def reloaded(self, config: Config) -> None:
        return None  # the counts live in Vertex: nothing here to load again

    def stopped(self) -> None:
        pass

    async def fetch(self, ids: Sequence[str]) -> Features:
        """Counts for `ids`, in order. Raises `StoreFailed` / `StoreTimeout`."""
        found, missing = self._cache.split(dict.fromkeys(ids))
        if missing:
            fetched = await self._fetch(missing)
            self._cache.put(missing, fetched)
            found.update(fetched)
        rows = list(map(found.get, ids))
        unknown = rows.count(None)
        if unknown:
            rows = [row or _UNKNOWN for row in rows]
        columns = np.array(rows, dtype=np.float64).reshape(len(rows), 2).T.copy()
        return Features(successes=columns[0], failures=columns[1], unknown=unknown)

    async def _fetch(self, ids: list[str]) -> dict[str, Counts]:
        """Counts of the known ids among `ids`, read in concurrent chunks."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline
        read = self._reader.read
        try:
            async with asyncio.timeout_at(deadline):
                async with asyncio.TaskGroup() as group:
                    tasks = [
                        group.create_task(read(ids[at : at + self._chunk], deadline - loop.time()))
                        for at in range(0, len(ids), self._chunk)
                    ]
        except TimeoutError:
            raise self._failed(
                StoreTimeout(f"feature store: no answer within {self._deadline:g} s")
            ) from None
        except BaseExceptionGroup as errors:
            error = first_error(errors)
            if isinstance(error, HTTPError):
                raise self._failed(error) from None
            raise
        self._failures = 0
        found: dict[str, Counts] = {}
        for task in tasks:
            found.update(task.result())
        return found

    def _failed(self, error: HTTPError) -> HTTPError:
        self._failures += 1
        self._last_error = error.message
        return error

    def health(self) -> StoreHealth:
        detail: dict[str, Any] = {
            "resource": self.resource,
            "endpoint": self.endpoint,
            "consecutive_failures": self._failures,
            "cache": self._cache.stats(),
        }
        if self._failures:
            detail["last_error"] = self._last_error
        if self._failures >= self._unhealthy_after:
            reason = f"feature store failing: {self._failures} fetches in a row"
            return StoreHealth(ok=False, reason=reason, detail=detail)
        return StoreHealth(ok=True, detail=detail)


class VertexFeaturestoreStore(VertexStore):
    """Legacy Featurestore, read with `StreamingReadFeatureValues`."""

    name = "vertex-featurestore"

    def __init__(self, config: VertexConfig) -> None:
        resource = _check(
            config.entity_type,
            r"projects/[^/]+/locations/[^/]+/featurestores/[^/]+/entityTypes/[^/]+",
            "--vertex-entity-type",
        )
        super().__init__(config, resource, FeaturestoreReader)
        _log.warning(
            "the legacy Vertex AI Featurestore's online APIs shut off on "
            f"{FEATURESTORE_SHUTOFF}: move to the Vertex AI Feature Store, --store vertex-online",
            shutoff=FEATURESTORE_SHUTOFF,
            replacement="vertex-online",
        )


class VertexOnlineStore(VertexStore):
    """Feature Store: v1 `FetchFeatureValues` per id, or the v1beta1 streaming batch read."""

    name = "vertex-online"

    def __init__(self, config: VertexConfig) -> None:
        resource = _check(
            config.feature_view,
            r"projects/[^/]+/locations/[^/]+/featureOnlineStores/[^/]+/featureViews/[^/]+",
            "--vertex-feature-view",
        )
        reader = OnlineStoreStreamingReader if config.streaming else OnlineStoreReader
        super().__init__(config, resource, reader)
