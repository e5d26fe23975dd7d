"""One call to a Vertex AI online serving API: a chunk of ids in, counts out.

A reader is built in the parent (it only imports the client library, so forked
workers share those pages), opens its client in `open()` inside the worker's
running loop, and turns every upstream error into `StoreFailed` / `StoreTimeout`.

Per-message overhead of the Python client is what limits a fetch, so the readers
call a raw grpc.aio stub made on the library client's own channel with the
protobuf classes behind its proto-plus types: that skips proto-plus wrapping and
api_core's stream wrapper (numbers in bench/RESULTS.md). They send the same
routing and client headers the library's methods send.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Protocol

# gRPC's C core logs routine events (a GOAWAY from Google's frontends) at INFO on
# stderr, outside our JSON logs: keep its errors only, unless the operator set a level.
# It reads this once, when grpc is imported.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
# grpcio >= 1.80 reads sockets on EventEngine threads and hands every message on to
# the completion-queue thread: one more thread hop per streamed message. The older
# client socket layer reads on the queue's own thread: process CPU per 100 ids of
# the legacy stream 8.3-10.7 -> 5.9-6.5 ms (bench/RESULTS.md, section 5). It is an
# experiment flag gRPC will drop in a later release (then ignored, with a log line):
# re-measure when upgrading grpcio. An operator's GRPC_EXPERIMENTS wins.
os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_client")

import grpc
from google.protobuf.message import DecodeError

from mab.config import VertexConfig
from mab.errors import HTTPError, StoreFailed, StoreTimeout
from mab.store.cache import Counts

# Short reconnect backoff: after an outage the store is back within ~1 s, not
# after gRPC's default of up to 120 s.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", -1),
]
_FEATURESTORE = "/google.cloud.aiplatform.v1.FeaturestoreOnlineServingService/"
_ONLINE_STORE = "/google.cloud.aiplatform.v1.FeatureOnlineStoreService/"
_ONLINE_STORE_BETA = "/google.cloud.aiplatform.v1beta1.FeatureOnlineStoreService/"
_KEY_VALUE = 1  # FeatureViewDataFormat.KEY_VALUE
_NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
_STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}  # google.rpc.Code


class Reader(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def read(self, ids: list[str], timeout: float) -> dict[str, Counts]:
        """Counts of the ids the store knows; the others are unknown."""
        ...


def rpc_error(error: grpc.aio.AioRpcError, api: str) -> HTTPError:
    code = error.code()
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return StoreTimeout(f"{api} did not answer in time: {error.details()}")
    return StoreFailed(f"{api} failed: {code.name}: {error.details()}")


def first_error(error: BaseException) -> BaseException:
    """The first leaf of nested exception groups: the failure that cancelled the rest."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _number(value: Any, feature: str) -> float:
    kind = value.WhichOneof("value")
    if kind == "int64_value":
        return float(value.int64_value)
    if kind == "double_value":
        return float(value.double_value)
    raise StoreFailed(f"feature {feature!r} holds a {kind}, not a count")


class _Client:
    """The library's async client of one service. Its channel is built in `open()`,
    inside the running loop of the worker that uses it."""

    def __init__(self, config: VertexConfig, endpoint: str, service: Any, name: str) -> None:
        self.insecure = config.insecure
        self.endpoint = endpoint
        self.client_type = getattr(service.async_client, f"{name}AsyncClient")
        self.transport_type = getattr(service.transports, f"{name}GrpcAsyncIOTransport")
        self.client_info = service.async_client.DEFAULT_CLIENT_INFO
        self.client: Any = None

    def open(self) -> Any:
        """The client's channel, to make stubs on."""
        transport_type = self.transport_type
        if self.insecure:
            # Plaintext and no credentials, for fakes and emulators (as Google's SDK does).
            channel: Any = grpc.aio.insecure_channel(self.endpoint, options=CHANNEL_OPTIONS)
        else:

            def channel(host: str, *, options: Any = (), **kwargs: Any) -> Any:
                # The library resolves Application Default Credentials and TLS.
                return transport_type.create_channel(
                    host, options=[*options, *CHANNEL_OPTIONS], **kwargs
                )

        transport = transport_type(host=self.endpoint, channel=channel)
        self.client = self.client_type(transport=transport)
        return self.client.transport.grpc_channel

    async def close(self) -> None:
        if self.client is not None:
            await self.client.transport.close()
            self.client = None

    def metadata(self, *routing: tuple[str, str]) -> tuple[tuple[str, str], ...]:
        """The routing and client headers the library's own method sends."""
        from google.api_core.gapic_v1 import routing_header

        route = routing_header.to_grpc_metadata(routing)  # type: ignore[no-untyped-call]
        return (route, self.client_info.to_grpc_metadata())


class FeaturestoreReader:
    """Legacy Featurestore: `StreamingReadFeatureValues`, one message per entity."""

    api = "Featurestore StreamingReadFeatureValues"

    def __init__(self, config: VertexConfig, endpoint: str) -> None:
        from google.cloud.aiplatform_v1.services import featurestore_online_serving_service
        from google.cloud.aiplatform_v1.types import featurestore_online_service as types

        assert config.entity_type is not None
        self._entity_type = config.entity_type
        self._features = (config.success_feature, config.failure_feature)
        self._request_type = types.StreamingReadFeatureValuesRequest.pb()
        self._response_type = types.ReadFeatureValuesResponse.pb()
        self._selector = {"id_matcher": {"ids": list(self._features)}}
        self._client = _Client(
            config,
            endpoint,
            featurestore_online_serving_service,
            "FeaturestoreOnlineServingService",
        )
        self._metadata = self._client.metadata(("entity_type", self._entity_type))
        self._stream: Any = None

    async def open(self) -> None:
        self._stream = self._client.open().unary_stream(
            _FEATURESTORE + "StreamingReadFeatureValues",
            request_serializer=self._request_type.SerializeToString,
            response_deserializer=None,  # bytes, parsed by `_counts`
        )

    async def close(self) -> None:
        await self._client.close()

    def _columns(self, header: Any) -> tuple[int, int]:
        """Where our two features sit in every entity's cells."""
        ids = [d.id for d in header.header.feature_descriptors]
        missing = [f for f in self._features if f not in ids]
        if missing:
            raise StoreFailed(f"{self.api}: features {missing} not in the response header")
        return ids.index(self._features[0]), ids.index(self._features[1])

    async def read(self, ids: list[str], timeout: float) -> dict[str, Counts]:
        request = self._request_type(
            entity_type=self._entity_type, entity_ids=ids, feature_selector=self._selector
        )
        call = self._stream(request, timeout=timeout, metadata=self._metadata)
        read, eof = call.read, grpc.aio.EOF
        # Messages stay bytes until the stream has ended, then one tight loop parses
        # them: ~10% less CPU per 100 ids than a deserializer called by grpc.aio.
        messages: list[bytes] = []
        try:
            while (message := await read()) is not eof:
                messages.append(message)
        except grpc.aio.AioRpcError as error:
            raise rpc_error(error, self.api) from None
        finally:
            call.cancel()  # a no-op once the call ended; ends it if we leave early
        return self._counts(messages)

    def _counts(self, messages: list[bytes]) -> dict[str, Counts]:
        found: dict[str, Counts] = {}
        if not messages:
            return found
        parse = self._response_type.FromString
        try:
            si, fi = self._columns(parse(messages[0]))  # the first carries only the header
            width = max(si, fi)
            success, failure = self._features
            for message in messages[1:]:
                view = parse(message).entity_view
                cells = view.data
                # An empty cell (unknown entity) has no value, yet reads 0: check presence.
                if len(cells) > width:
                    s, f = cells[si], cells[fi]
                    if s.HasField("value") and f.HasField("value"):
                        found[view.entity_id] = (
                            _number(s.value, success),
                            _number(f.value, failure),
                        )
        except DecodeError as error:
            raise StoreFailed(f"{self.api} sent a message that does not parse: {error}") from None
        return found


def _key_value_counts(response: Any, features: tuple[str, str]) -> Counts | None:
    values: dict[str, Any] = {}
    for pair in response.key_values.features:
        if pair.name in features and pair.HasField("value"):
            values[pair.name] = pair.value
    if len(values) < 2:
        return None  # a missing or empty feature: scored from the prior
    return _number(values[features[0]], features[0]), _number(values[features[1]], features[1])


class OnlineStoreReader:
    """Feature Store (v1): `FetchFeatureValues`, one unary call per id."""

    api = "FeatureOnlineStore FetchFeatureValues"

    def __init__(self, config: VertexConfig, endpoint: str) -> None:
        from google.cloud.aiplatform_v1.services import feature_online_store_service
        from google.cloud.aiplatform_v1.types import feature_online_store_service as types

        assert config.feature_view is not None
        self._view = config.feature_view
        self._features = (config.success_feature, config.failure_feature)
        self._request_type = types.FetchFeatureValuesRequest.pb()
        self._response_type = types.FetchFeatureValuesResponse.pb()
        self._client = _Client(
            config, endpoint, feature_online_store_service, "FeatureOnlineStoreService"
        )
        self._metadata = self._client.metadata(("feature_view", self._view))
        self._fetch: Any = None

    async def open(self) -> None:
        self._fetch = self._client.open().unary_unary(
            _ONLINE_STORE + "FetchFeatureValues",
            request_serializer=self._request_type.SerializeToString,
            response_deserializer=self._response_type.FromString,
        )

    async def close(self) -> None:
        await self._client.close()

    async def _one(self, key: str, timeout: float) -> Counts | None:
        request = self._request_type(
            feature_view=self._view, data_key={"key": key}, data_format=_KEY_VALUE
        )
        try:
            response = await self._fetch(request, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                return None  # the store has no such entity
            raise rpc_error(error, self.api) from None
        return _key_value_counts(response, self._features)

    async def read(self, ids: list[str], timeout: float) -> dict[str, Counts]:
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._one(key, timeout)) for key in ids]
        except BaseExceptionGroup as errors:
            raise first_error(errors) from None
        found: dict[str, Counts] = {}
        for key, task in zip(ids, tasks, strict=True):
            counts = task.result()
            if counts is not None:
                found[key] = counts
        return found


class OnlineStoreStreamingReader:
    """Feature Store (v1beta1): `StreamingFetchFeatureValues`, all ids of a chunk in one
    request; the error status of a response applies only to its listed keys."""

    api = "FeatureOnlineStore StreamingFetchFeatureValues"

    def __init__(self, config: VertexConfig, endpoint: str) -> None:
        from google.cloud.aiplatform_v1beta1.services import feature_online_store_service
        from google.cloud.aiplatform_v1beta1.types import feature_online_store_service as types

        assert config.feature_view is not None
        self._view = config.feature_view
        self._features = (config.success_feature, config.failure_feature)
        self._request_type = types.StreamingFetchFeatureValuesRequest.pb()
        self._response_type = types.StreamingFetchFeatureValuesResponse.pb()
        self._client = _Client(
            config, endpoint, feature_online_store_service, "FeatureOnlineStoreService"
        )
        # An empty routing header, as the library sends on this bidi method (it cannot
        # read a request before the call starts).
        self._metadata = self._client.metadata()
        self._stream: Any = None

    async def open(self) -> None:
        self._stream = self._client.open().stream_stream(
            _ONLINE_STORE_BETA + "StreamingFetchFeatureValues",
            request_serializer=self._request_type.SerializeToString,
            response_deserializer=self._response_type.FromString,
        )

    async def close(self) -> None:
        await self._client.close()

    async def read(self, ids: list[str], timeout: float) -> dict[str, Counts]:
        found: dict[str, Counts] = {}
        features = self._features
        request = self._request_type(
            feature_view=self._view, data_keys=[{"key": k} for k in ids], data_format=_KEY_VALUE
        )
        call = self._stream(timeout=timeout, metadata=self._metadata)
        eof = grpc.aio.EOF
        try:
            await call.write(request)
            await call.done_writing()
            while (message := await call.read()) is not eof:
                status = message.status
                if status.code not in (0, _NOT_FOUND):  # NOT_FOUND: its keys are unknown
                    name = _STATUS_NAMES.get(status.code, str(status.code))
                    raise StoreFailed(f"{self.api} failed: {name}: {status.message}")
                for item in message.data:
                    counts = _key_value_counts(item, features)
                    if counts is not None:
                        found[item.data_key.key] = counts
        except grpc.aio.AioRpcError as error:
            raise rpc_error(error, self.api) from None
        finally:
            call.cancel()
        return found
