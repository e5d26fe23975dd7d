"""A local fake of both Vertex AI online serving APIs, serving a CSV catalog.

For tests and for trying the Vertex stores without a cloud project: a plaintext
gRPC server (127.0.0.1 by default) with the legacy Featurestore's
`ReadFeatureValues` / `StreamingReadFeatureValues`, the new Feature Store's v1
`FetchFeatureValues` and its v1beta1 `StreamingFetchFeatureValues`. It answers the
way the service does: unknown entities get empty cells (legacy) or NOT_FOUND (v1),
and a call with more than 100 ids is rejected with INVALID_ARGUMENT.

No servicer base classes ship for these services, so the methods are registered
with generic handlers on the protobuf classes behind the proto-plus types.
Faults (delays, failures, broken streams) can be injected globally or for given
ids, and changed while the fake runs; `FakeVertex` counts the calls it sees.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, NoReturn

MAX_IDS = 100  # documented per-call limit of the online serving APIs
_NOT_FOUND = 5  # google.rpc.Code
_PROTO_STRUCT = 2  # FeatureViewDataFormat
FEATURESTORE = "google.cloud.aiplatform.v1.FeaturestoreOnlineServingService"
ONLINE_STORE = "google.cloud.aiplatform.v1.FeatureOnlineStoreService"
ONLINE_STORE_BETA = "google.cloud.aiplatform.v1beta1.FeatureOnlineStoreService"


@dataclass
class Faults:
    """What the fake does wrong; tests change these while it runs."""

    delay: float = 0.0  # seconds before every call answers
    fail_rate: float = 0.0  # share of calls that fail with UNAVAILABLE
    delay_ids: dict[str, float] = field(default_factory=dict)  # a call with the id waits this long
    fail_ids: dict[str, Any] = field(default_factory=dict)  # id -> grpc.StatusCode (or its name)
    # Streams fail with UNAVAILABLE after sending this many entities (legacy read) or
    # responses (batch read): data arrives, then the error.
    break_after: int | None = None
    shuffle: bool = False  # answer the entities of a stream in random order


@dataclass
class Stats:
    calls: Counter[str] = field(default_factory=Counter)  # method name -> calls received
    ids: int = 0  # entity ids requested, over all calls
    max_ids: int = 0  # most ids in one call (rejected calls included)
    active: int = 0  # calls in progress
    peak_active: int = 0  # most calls in progress at once
    ok: int = 0  # calls answered in full
    failed: int = 0  # calls ended with an error status (injected, or over the limit)
    cancelled: int = 0  # calls the client cancelled before they ended


class _QuietCancellations(logging.Filter):
    """grpc.aio logs every handler the client cancelled as an unhandled error; for the
    fake a cancelled call is routine (tests cancel calls on purpose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, asyncio.CancelledError)


_GRPC_LOG = logging.getLogger("grpc._cython.cygrpc")


class FakeVertex:
    """The fake server; `start()` / `stop()` it inside a running event loop, or use
    `in_thread()` from synchronous code."""

    def __init__(
        self,
        counts: dict[str, tuple[float, float]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        success_feature: str = "successes",
        failure_feature: str = "failures",
        seed: int | None = None,
    ) -> None:
        from google.cloud.aiplatform_v1.types import feature_online_store_service as online
        from google.cloud.aiplatform_v1.types import featurestore_online_service as legacy
        from google.cloud.aiplatform_v1beta1.types import feature_online_store_service as beta

        self.counts = counts
        self.host = host
        self.port = port
        self.faults = faults or Faults()
        self.stats = Stats()
        self.features = (success_feature, failure_feature)
        self._random = random.Random(seed)
        self._legacy = legacy
        self._online = online
        self._beta = beta
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None  # set by in_thread()

    @classmethod
    def from_csv(cls, path: str, **kwargs: Any) -> FakeVertex:
        """Serve a catalog file (`arm_id,successes,failures`), validated as `mab` does."""
        from mab.catalog import load_csv

        catalog = load_csv(path)
        # Not strict: the count arrays end with the catalog's unknown-id sentinel row.
        rows = zip(catalog.ids, catalog.successes.tolist(), catalog.failures.tolist(), strict=False)
        return cls({arm: (s, f) for arm, s, f in rows}, **kwargs)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        import grpc

        legacy, online, beta = self._legacy, self._online, self._beta
        pb = _pb_handler
        handlers = [
            grpc.method_handlers_generic_handler(
                FEATURESTORE,
                {
                    "ReadFeatureValues": pb(
                        grpc.unary_unary_rpc_method_handler,
                        self._read,
                        legacy.ReadFeatureValuesRequest,
                        legacy.ReadFeatureValuesResponse,
                    ),
                    "StreamingReadFeatureValues": pb(
                        grpc.unary_stream_rpc_method_handler,
                        self._streaming_read,
                        legacy.StreamingReadFeatureValuesRequest,
                        legacy.ReadFeatureValuesResponse,
                    ),
                },
            ),
            grpc.method_handlers_generic_handler(
                ONLINE_STORE,
                {
                    "FetchFeatureValues": pb(
                        grpc.unary_unary_rpc_method_handler,
                        self._fetch,
                        online.FetchFeatureValuesRequest,
                        online.FetchFeatureValuesResponse,
                    ),
                },
            ),
            grpc.method_handlers_generic_handler(
                ONLINE_STORE_BETA,
                {
                    "FetchFeatureValues": pb(
                        grpc.unary_unary_rpc_method_handler,
                        self._fetch,
                        beta.FetchFeatureValuesRequest,
                        beta.FetchFeatureValuesResponse,
                    ),
                    "StreamingFetchFeatureValues": pb(
                        grpc.stream_stream_rpc_method_handler,
                        self._streaming_fetch,
                        beta.StreamingFetchFeatureValuesRequest,
                        beta.StreamingFetchFeatureValuesResponse,
                    ),
                },
            ),
        ]
        if not any(isinstance(f, _QuietCancellations) for f in _GRPC_LOG.filters):
            _GRPC_LOG.addFilter(_QuietCancellations())
        self._server = grpc.aio.server(handlers=handlers)
        self.port = self._server.add_insecure_port(f"{self.host}:{self.port}")
        await self._server.start()

    def reset_stats(self) -> None:
        """Count from zero again (tests)."""
        self.stats = Stats()

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving; calls in progress are cancelled (after `grace` seconds)."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def __aenter__(self) -> FakeVertex:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextmanager
    def in_thread(self) -> Iterator[FakeVertex]:
        """Serve from an event loop on a background thread, for synchronous tests."""
        loop = self._loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-vertex", daemon=True)
        thread.start()
        try:
            self.call_in_thread(self.start)
            yield self
        finally:
            self.call_in_thread(self.stop)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
            self._loop = None

    def call_in_thread(self, method: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `start` or `stop` on the loop of `in_thread()` and wait for it."""
        assert self._loop is not None, "not running in_thread()"
        asyncio.run_coroutine_threadsafe(method(), self._loop).result(10)

    # The call envelope: limits, faults and bookkeeping shared by every method.

    @asynccontextmanager
    async def _call(self, method: str, ids: list[str], context: Any) -> AsyncIterator[None]:
        stats, faults = self.stats, self.faults
        stats.calls[method] += 1
        stats.ids += len(ids)
        stats.max_ids = max(stats.max_ids, len(ids))
        stats.active += 1
        stats.peak_active = max(stats.peak_active, stats.active)
        try:
            if not ids:
                await _abort(context, "INVALID_ARGUMENT", "no entity ids")
            if len(ids) > MAX_IDS:
                problem = f"{len(ids)} entity ids in one request; the limit is {MAX_IDS}"
                await _abort(context, "INVALID_ARGUMENT", problem)
            delay = max([faults.delay, *(faults.delay_ids.get(i, 0.0) for i in ids)])
            if delay > 0:
                await asyncio.sleep(delay)
            code = next((faults.fail_ids[i] for i in ids if i in faults.fail_ids), None)
            if code is None and faults.fail_rate and self._random.random() < faults.fail_rate:
                code = "UNAVAILABLE"
            if code is not None:
                await _abort(context, getattr(code, "name", code), "injected failure")
            yield
            stats.ok += 1
        except asyncio.CancelledError:
            stats.cancelled += 1
            raise
        except Exception:
            stats.failed += 1
            raise
        finally:
            stats.active -= 1

    async def _check_break(self, sent: int, context: Any) -> None:
        if self.faults.break_after is not None and sent >= self.faults.break_after:
            await _abort(context, "UNAVAILABLE", f"stream broken after {sent}")

    def _order(self, ids: list[str]) -> list[str]:
        if self.faults.shuffle:
            ids = ids[:]
            self._random.shuffle(ids)
        return ids

    def _set(self, cell: Any, value: float) -> None:
        # Counts are INT64 features; a fractional count is served as DOUBLE.
        if float(value).is_integer():
            cell.int64_value = int(value)
        else:
            cell.double_value = value

    # Legacy Featurestore.

    async def _features(self, selector: Any, context: Any) -> list[str]:
        wanted = list(selector.id_matcher.ids)
        if wanted == ["*"]:
            return list(self.features)
        unknown = [w for w in wanted if w not in self.features]
        if unknown or not wanted:
            await _abort(context, "INVALID_ARGUMENT", f"no such feature(s) {unknown}")
        return wanted

    def _header(self, response: Any, entity_type: str, features: list[str]) -> None:
        response.header.entity_type = entity_type
        for name in features:
            response.header.feature_descriptors.add().id = name

    def _entity_view(self, view: Any, entity: str, features: list[str]) -> None:
        view.entity_id = entity
        row = self.counts.get(entity)
        for name in features:
            cell = view.data.add()
            if row is not None:  # an unknown entity gets empty cells, as the service does
                self._set(cell.value, row[self.features.index(name)])

    async def _read(self, request: Any, context: Any) -> Any:
        async with self._call("ReadFeatureValues", [request.entity_id], context):
            features = await self._features(request.feature_selector, context)
            response = self._legacy.ReadFeatureValuesResponse.pb()()
            self._header(response, request.entity_type, features)
            self._entity_view(response.entity_view, request.entity_id, features)
            return response

    async def _streaming_read(self, request: Any, context: Any) -> AsyncIterator[Any]:
        response_type = self._legacy.ReadFeatureValuesResponse.pb()
        ids = list(request.entity_ids)
        async with self._call("StreamingReadFeatureValues", ids, context):
            features = await self._features(request.feature_selector, context)
            header = response_type()  # the first message carries only the header
            self._header(header, request.entity_type, features)
            yield header
            for sent, entity in enumerate(self._order(ids)):
                await self._check_break(sent, context)
                message = response_type()
                self._entity_view(message.entity_view, entity, features)
                yield message

    # New Feature Store.

    def _key_values(self, response: Any, key: str, row: tuple[float, float]) -> None:
        response.data_key.key = key
        for name, value in zip(self.features, row, strict=True):
            pair = response.key_values.features.add()
            pair.name = name
            self._set(pair.value, value)

    async def _fetch(self, request: Any, context: Any) -> Any:
        key = request.data_key.key
        async with self._call("FetchFeatureValues", [key], context):
            row = self.counts.get(key)
            if row is None:
                await _abort(context, "NOT_FOUND", f"entity {key!r} not found")
            beta = request.DESCRIPTOR.full_name.startswith("google.cloud.aiplatform.v1beta1.")
            response = (self._beta if beta else self._online).FetchFeatureValuesResponse.pb()()
            if request.data_format == _PROTO_STRUCT:  # numbers are doubles there
                for name, value in zip(self.features, row, strict=True):
                    response.proto_struct.fields[name].number_value = value
            else:
                self._key_values(response, key, row)
            return response

    async def _streaming_fetch(self, requests: Any, context: Any) -> AsyncIterator[Any]:
        response_type = self._beta.StreamingFetchFeatureValuesResponse.pb()
        sent = 0
        async for request in requests:
            keys = [k.key for k in request.data_keys]
            async with self._call("StreamingFetchFeatureValues", keys, context):
                response = response_type()
                missing = []
                for key in self._order(keys):
                    row = self.counts.get(key)
                    if row is None:
                        missing.append(key)
                    else:
                        self._key_values(response.data.add(), key, row)
                if missing:  # the error status applies to the listed keys only
                    response.status.code = _NOT_FOUND
                    response.status.message = "entities not found"
                    for key in missing:
                        response.data_keys_with_error.add().key = key
                yield response
                sent += 1
                await self._check_break(sent, context)


async def _abort(context: Any, code: str, message: str) -> NoReturn:
    """End the call with status `code` (a `grpc.StatusCode` name)."""
    import grpc

    await context.abort(getattr(grpc.StatusCode, code), message)
    raise AssertionError("context.abort() returned")


def _pb_handler(kind: Any, behavior: Any, request_type: Any, response_type: Any) -> Any:
    return kind(
        behavior,
        request_deserializer=request_type.pb().FromString,
        response_serializer=response_type.pb().SerializeToString,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", required=True, help="CSV arm_id,successes,failures")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, required=True, help="port to listen on (0 = any)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added to every call")
    parser.add_argument(
        "--fail-rate", type=float, default=0.0, help="share of calls failing with UNAVAILABLE"
    )
    parser.add_argument("--success-feature", default="successes", help="feature id of successes")
    parser.add_argument("--failure-feature", default="failures", help="feature id of failures")
    parser.add_argument("--seed", type=int, default=None, help="seed of the injected failures")


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeVertex.from_csv(
        args.catalog,
        host=args.host,
        port=args.port,
        faults=Faults(delay=args.delay, fail_rate=args.fail_rate),
        success_feature=args.success_feature,
        failure_feature=args.failure_feature,
        seed=args.seed,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with fake:
        print(f"fake-vertex listening on {fake.address} ({len(fake.counts)} arms)", flush=True)
        await stop.wait()


def run(args: argparse.Namespace) -> int:
    with suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0
