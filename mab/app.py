"""The HTTP side of one worker: routes, error rendering, request logs.

Built on aiohttp's low-level server (`web.Server`): one handler gets every request
and dispatches on (path, method) itself: the web.Application router and middleware
chain cost a measurable share of a request that /predict does not need
(bench/RESULTS.md, section 1).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from http import HTTPStatus
from importlib import resources
from itertools import count
from typing import Any, cast

import orjson
import structlog
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from scipy.special import betaincinv

from mab import log
from mab.config import Config
from mab.errors import (
    BadRequest,
    HTTPError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from mab.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mab.metrics import FLUSH_S, FeedbackMetrics, Metrics
from mab.predict import Figures, Pipeline, Prediction
from mab.runner import build_runner
from mab.store.base import FeatureStore, Learn

_log = structlog.get_logger("mab.request")


class WorkerState:
    """What the handlers of one worker share; built once per worker."""

    def __init__(self, config: Config, store: FeatureStore, worker: int = 0) -> None:
        self.config = config
        self.store = store
        self.worker = worker
        self.runner = build_runner(config)
        self._pipeline: Pipeline | None = None  # built in start(), with the store's scorer
        self._learn: Learn | None = None  # the store's /feedback, built in start()
        self.metrics = Metrics()
        self.feedback_metrics = FeedbackMetrics(lambda: int(store.health().detail.get("arms", 0)))
        self.inflight = 0
        self.draining = False
        # The 503 for a /predict that would wait over --shed-delay for the CPU.
        self.backlog = Overloaded(
            f"more work is queued than this worker starts within {config.shed_delay:g} s, "
            "retry later",
            "backlog",
        )
        self._ids = count(1)
        self._id_prefix = f"{os.getpid():x}-"
        self._flushing: asyncio.Task[None] | None = None
        self.request_lines: log.Deferred[RequestLine] = log.Deferred(_log_requests)

    def next_request_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):x}"

    def answered(
        self,
        started: float,
        request_id: str,
        method: str,
        path: str,
        label: str,
        status: int,
        prediction: Prediction | None,
    ) -> None:
        """Count an answered request, and queue its log line."""
        elapsed = time.perf_counter() - started
        metrics = self.metrics
        metrics.request(label, status)
        figures = None
        if prediction is not None:
            metrics.prediction(elapsed, prediction.items, prediction.unknown, prediction.queue_s)
            figures = prediction.figures()
        if self.config.access_log:
            self.request_lines.add(
                (time.time(), request_id, method, path, status, elapsed, figures)
            )

    @property
    def pipeline(self) -> Pipeline:
        assert self._pipeline is not None, "start() first"
        return self._pipeline

    @property
    def learn(self) -> Learn:
        assert self._learn is not None, "start() first"
        return self._learn

    async def start(self) -> None:
        """Start the store client, the sampler actors and the metrics flush, in the
        running loop of this worker (after the fork)."""
        await self.store.start(self.worker)
        self.runner.start()
        self._pipeline = Pipeline(self.store.scorer(self.runner), self.config.max_items)
        feedback = self.feedback_metrics
        self._learn = self.store.learner(feedback.applied, feedback.fsynced)
        self._flushing = asyncio.create_task(self._flush_every())

    def flush_metrics(self) -> None:
        self.metrics.flush()
        self.feedback_metrics.flush()

    async def _flush_every(self) -> None:
        """Flush until cancelled (the worker's lifetime)."""
        while True:
            await asyncio.sleep(FLUSH_S)
            self.flush_metrics()

    async def close(self) -> None:
        """Stop what `start` started, in reverse."""
        if self._flushing is not None:
            self._flushing.cancel()
        self.flush_metrics()
        self.request_lines.flush()
        self.runner.close()
        await self.store.close()


Route = Callable[[WorkerState, web.BaseRequest], Awaitable[web.Response]]


def error_body(error: HTTPError) -> bytes:
    return orjson.dumps({"error": {"code": error.code, "message": error.message}})


def error_response(error: HTTPError) -> web.Response:
    body = error_body(error)
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    return web.Response(
        status=error.status, body=body, content_type="application/json", headers=headers
    )


def _from_aiohttp(exc: web.HTTPException) -> HTTPError:
    """aiohttp's own errors (a body over the size limit while reading) in our shape."""
    if exc.status == 413:
        return PayloadTooLarge("request body is over the size limit")
    error = HTTPError(exc.reason)
    error.status, error.code = exc.status, exc.reason.lower().replace(" ", "_")
    return error


async def _read_body(request: web.BaseRequest, limit: int, timeout: float) -> bytes:
    """The body, within `timeout` and `limit` bytes: a client that stalls mid-body
    would otherwise hold its in-flight slot forever, and a chunked body has no
    Content-Length to check up front. Most bodies arrived with their headers and
    need no timer.

    Not `request.read()`: it copies every body twice (into a bytearray, then into
    bytes), 128 KB of copying at 4,000 ids. A body that came in one piece is
    returned as it came."""
    if request.content.is_eof():
        return await _read_chunks(request.content, limit)
    try:
        async with asyncio.timeout(timeout):
            return await _read_chunks(request.content, limit)
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout:g} s") from None


async def _read_chunks(content: StreamReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.readany():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)  # of one chunk: that bytes object itself, not a copy


def _admit_json(state: WorkerState, length: int | None, content_type: str) -> None:
    """Shed or refuse a JSON POST before its body is read."""
    config = state.config
    if state.inflight >= config.max_inflight:
        raise Overloaded(
            f"{state.inflight} requests in progress in this worker, retry later", "inflight"
        )
    if length is not None and length > config.max_body_bytes:
        raise PayloadTooLarge(
            f"body of {length} bytes is over the limit of {config.max_body_bytes}"
        )
    if content_type != "application/json":
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {content_type!r}")


def _admit_predict(state: WorkerState, length: int | None, content_type: str) -> None:
    """`_admit_json`, and a /predict that would wait over --shed-delay is shed."""
    _admit_json(state, length, content_type)
    if not state.runner.admits():
        raise state.backlog


async def _predict(state: WorkerState, request: web.BaseRequest) -> web.Response:
    config = state.config
    _admit_predict(state, request.content_length, request.content_type)
    state.inflight += 1
    try:
        body = await _read_body(request, config.max_body_bytes, config.read_timeout)
        prediction = await state.pipeline.predict(body)
    finally:
        state.inflight -= 1
    request[_PREDICTION] = prediction
    return web.Response(body=prediction.body, content_type="application/json")


async def _feedback(state: WorkerState, request: web.BaseRequest) -> web.Response:
    config = state.config
    _admit_json(state, request.content_length, request.content_type)
    state.inflight += 1
    try:
        body = await _read_body(request, config.max_body_bytes, config.read_timeout)
        applied = await state.learn(body)
    finally:
        state.inflight -= 1
    return web.Response(body=orjson.dumps(applied.body()), content_type="application/json")


ARMS_PREFIX = "/arms/"


def _iso(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


async def _arm(state: WorkerState, request: web.BaseRequest) -> web.Response:
    arm_id = request.path[len(ARMS_PREFIX) :]
    counts = state.store.arm(arm_id) if arm_id else None
    if counts is None:
        raise NotFound(f"no arm {arm_id!r} in the table")
    a = state.config.prior_alpha + counts.successes
    b = state.config.prior_beta + counts.failures
    low, high = betaincinv(a, b, [0.025, 0.975]).tolist()
    body = {
        "id": arm_id,
        "successes": counts.successes,
        "failures": counts.failures,
        "mean": a / (a + b),
        "ci95": [low, high],
        "updated_at": _iso(counts.updated_at),
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def _health(state: WorkerState, request: web.BaseRequest) -> web.Response:
    health = state.store.health()
    if state.draining:
        payload: dict[str, Any] = {"status": "unavailable", "reason": "shutting down"}
        status = 503
    elif not health.ok:
        payload = {"status": "unavailable", "reason": health.reason, **health.detail}
        status = 503
    elif health.degraded:  # serving, from state that may be stale: the store says how loud
        payload = {"status": "degraded", "store": state.store.name, "reason": health.reason}
        payload.update(health.detail)
        status = health.status
    else:
        payload = {"status": "ok", "store": state.store.name, **health.detail}
        status = 200
    return web.Response(
        status=status,
        body=orjson.dumps(payload),
        content_type="application/json",
        headers={"Retry-After": "1"} if status >= 500 else None,
    )


# The API's description, checked in beside the code (tests/test_openapi.py holds the
# server to it); read once, at import.
OPENAPI = (resources.files("mab") / "openapi.json").read_bytes()


async def _openapi(state: WorkerState, request: web.BaseRequest) -> web.Response:
    return web.Response(body=OPENAPI, content_type="application/json")


async def _metrics(state: WorkerState, request: web.BaseRequest) -> web.Response:
    state.flush_metrics()  # this worker's counts up to now
    return web.Response(body=Metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})


ROUTES: dict[str, dict[str, Route]] = {
    "/predict": {"POST": _predict},
    "/feedback": {"POST": _feedback},
    ARMS_PREFIX: {"GET": _arm, "HEAD": _arm},  # /arms/{id}
    "/health": {"GET": _health, "HEAD": _health},
    "/metrics": {"GET": _metrics},
    "/openapi.json": {"GET": _openapi},
}
_PREDICTION = "mab.prediction"  # request-local: the Prediction, for its log line


def make_handler(state: WorkerState) -> Callable[[web.BaseRequest], Awaitable[web.Response]]:
    """The one handler of the server: route, render errors as JSON, count, log."""
    metrics = state.metrics

    async def handle(request: web.BaseRequest) -> web.Response:
        started = time.perf_counter()
        request_id = request.headers.get("X-Request-ID") or state.next_request_id()
        path = request.path
        try:
            route_path = ARMS_PREFIX if path.startswith(ARMS_PREFIX) else path
            methods = ROUTES.get(route_path)
            if methods is None:
                raise NotFound(f"no such path: {path}")
            route = methods.get(request.method)
            if route is None:
                raise MethodNotAllowed(f"{request.method} is not allowed on {path}")
            response = await route(state, request)
        except Overloaded as exc:
            metrics.shed(exc.reason)
            response = error_response(exc)
        except HTTPError as exc:
            response = error_response(exc)
        except web.HTTPException as exc:
            response = error_response(_from_aiohttp(exc))
        except Exception:
            _log.exception("unhandled error", request_id=request_id, path=path)
            response = error_response(InternalError("internal server error"))
        response.headers["X-Request-ID"] = request_id
        if state.draining:
            response.force_close()  # Connection: close: the client will not reuse it
        # One label per route, not per arm id: /arms/{id} is one path.
        label = "other" if methods is None else "/arms/{id}" if route_path == ARMS_PREFIX else path
        prediction: Prediction | None = request.get(_PREDICTION)
        method, status = request.method, response.status
        state.answered(started, request_id, method, path, label, status, prediction)
        return response

    return handle


# What a request's log line needs, kept until the line is rendered (log.Deferred):
# when, request id, method, path, status, seconds taken, the /predict figures.
RequestLine = tuple[float, str, str, str, int, float, "Figures | None"]


def _ms(seconds: float) -> float:
    """Milliseconds to 3 decimals: round(x, 3) formats through a string, several
    times the cost of this, five times a line."""
    return int(seconds * 1e6 + 0.5) / 1e3


def _log_requests(lines: list[RequestLine]) -> None:
    json_lines = log.json_lines()
    if json_lines is None:  # the console format, or info lines off
        _log_through_structlog(lines)
        return
    stamper, write = json_lines
    dumps = orjson.dumps
    rendered = []
    # The line structlog's JSON processors would write, rendered here: a line in
    # structlog cost twice this (bench/RESULTS.md, section 10); tests/test_log.py
    # holds the two to the same bytes.
    for logged_at, request_id, method, path, status, elapsed, figures in lines:
        head = b'{"request_id":%s,"method":%s,"path":%s,"status":%d,"latency_ms":%r' % (
            dumps(request_id),
            dumps(method),
            dumps(path),
            status,
            _ms(elapsed),
        )
        if figures is not None:
            items, unknown, queue_s, fetch_s, sample_s, encode_s = figures
            head += (
                b',"items":%d,"unknown":%d,"queue_ms":%r,"fetch_ms":%r,"sample_ms":%r,"encode_ms":%r'
                % (items, unknown, _ms(queue_s), _ms(fetch_s), _ms(sample_s), _ms(encode_s))
            )
        rendered.append(
            b'%s,"event":"request","level":"info","timestamp":"%s"}'
            % (head, stamper.iso(logged_at).encode())
        )
    write(rendered)


def _log_through_structlog(lines: list[RequestLine]) -> None:
    for logged_at, request_id, method, path, status, elapsed, figures in lines:
        fields: dict[str, Any] = {}
        if figures is not None:
            items, unknown, queue_s, fetch_s, sample_s, encode_s = figures
            fields = {
                "items": items,
                "unknown": unknown,
                "queue_ms": _ms(queue_s),
                "fetch_ms": _ms(fetch_s),
                "sample_ms": _ms(sample_s),
                "encode_ms": _ms(encode_s),
            }
        _log.info(
            "request",
            request_id=request_id,
            method=method,
            path=path,
            status=status,
            latency_ms=_ms(elapsed),
            **fields,
            **{log.LOGGED_AT: logged_at},
        )


# The heads of answers written by _Connection._answer, as aiohttp writes them.
_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
_SERVER = SERVER_SOFTWARE.encode()


def _error_head(error: HTTPError) -> bytes:
    head = b"HTTP/1.1 %d %s\r\n" % (error.status, HTTPStatus(error.status).phrase.encode())
    if error.retry_after is not None:
        head += b"Retry-After: %d\r\n" % error.retry_after
    return head + b"Content-Type: application/json\r\n"


# The answer to a connection over --max-connections, written before it is closed: the
# error rendered as every other, in the bytes of a whole response.
_TOO_MANY = Overloaded("too many open connections, retry later", "connections")
_TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
) % (_TOO_MANY.retry_after, len(error_body(_TOO_MANY)), error_body(_TOO_MANY))


class _Connection(RequestHandler):
    """One client connection. On top of aiohttp's: the connection limit, a timeout
    for the headers of a request once they have begun (aiohttp's own keep-alive timer
    also closes a connection whose request never completes, but only after the
    keep-alive timeout), and aiohttp's answers to requests it cannot parse (a bad
    request line, headers too long, a broken chunk) in the JSON error shape."""

    def __init__(self, manager: _Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._server = manager
        self._header_timer: asyncio.TimerHandle | None = None
        self._counted = False
        # A /predict of _predict's waiting for the lane, or its 503 being held.
        self._waiting: asyncio.Future[Prediction] | asyncio.TimerHandle | None = None
        self._looping = False  # aiohttp's request loop (start) has begun

    async def start(self) -> None:
        self._looping = True
        await super().start()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        metrics = self._server.state.metrics
        if metrics.connections >= self._server.state.config.max_connections:
            metrics.shed(_TOO_MANY.reason)
            cast(asyncio.Transport, transport).write(_TOO_MANY_CONNECTIONS)
            self.force_close()
            return
        metrics.connections += 1
        self._counted = True

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._counted:
            self._server.state.metrics.connections -= 1
            self._counted = False
        self._stop_header_timer()
        if self._waiting is not None:
            self._waiting.cancel()  # the lane skips it, or the 503 is not sent
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not data:  # aiohttp resuming its parser (reading a body calls it): no bytes
            super().data_received(data)
            return
        requests = self._request_count
        waiter = self._waiter
        # aiohttp's request loop is idle when it waits for a request, or has not run
        # yet (a connection's first request often comes before it does).
        if (self._looping and (waiter is None or waiter.done())) or self._messages:
            super().data_received(data)
        else:
            # Parse without waking the loop, and answer a /predict from here if it is
            # an ordinary one.
            self._waiter = None
            try:
                super().data_received(data)
            finally:
                self._waiter = waiter
            messages = self._messages
            if messages and not (len(messages) == 1 and self._predict(*messages[0])):
                if waiter is not None:
                    waiter.set_result(None)
        if self._request_count != requests:  # a request's headers are complete
            self._stop_header_timer()
        elif (
            self._header_timer is None
            and not self._messages
            and not self._request_in_progress  # else: body bytes, --read-timeout's
        ):
            self._header_timer = self._loop.call_later(
                self._server.state.config.header_timeout, self._headers_timed_out
            )

    def _predict(self, message: Any, payload: StreamReader) -> bool:
        """Take an ordinary /predict (its whole body here, keep-alive, JSON) past
        aiohttp's request, task and response objects, into the same pipeline: a
        share of a 400-id request's CPU (bench/RESULTS.md, section 10). False:
        aiohttp's request loop takes it (make_handler). It uses RequestHandler's
        internals (_messages, _waiter, _request_in_progress, the keep-alive timer),
        hence aiohttp pinned to 3.14 in setup.cfg; tests/test_protocol.py checks."""
        state = self._server.state
        if not (
            type(message) is RawRequestMessage  # not a parse error
            and message.path == "/predict"
            and message.method == "POST"
            and not message.should_close
            and message.version == HttpVersion11  # answered as HTTP/1.1, as aiohttp would
            and not message.chunked
            and payload.is_eof()
            and not state.draining
            and message.headers.get("Content-Type") == "application/json"
        ):
            return False
        request_id = message.headers.get("X-Request-ID")
        if request_id is not None and not (request_id.isascii() and request_id.isprintable()):
            return False
        started = time.perf_counter()
        self._messages.popleft()
        assert self._parser is not None
        self._parser.message_consumed()
        self._server.requests_count += 1
        request_id = request_id or state.next_request_id()
        body = payload.read_nowait(-1)
        config = state.config
        try:
            _admit_predict(state, len(body), "application/json")  # its Content-Type, checked
            answer = asyncio.ensure_future(state.pipeline.predict(body))
        except Exception as error:
            if isinstance(error, Overloaded) and config.shed_hold:
                # Held, not queued: no work is done for it (--shed-hold).
                self._wait(
                    self._loop.call_later(
                        config.shed_hold, self._answer, started, request_id, None, error
                    )
                )
            else:
                self._answer(started, request_id, error=error)
            return True
        if answer.done():  # scored at once, in this turn of the lane
            self._answer(started, request_id, answer)
            return True
        # Wait for the lane, as a request in aiohttp's loop would.
        state.inflight += 1
        self._wait(answer)
        answer.add_done_callback(lambda done: self._answer(started, request_id, done))
        return True

    def _wait(self, waiting: asyncio.Future[Prediction] | asyncio.TimerHandle) -> None:
        """A request of this connection waits for its answer: read no more of the
        connection until it is written, so that its answers go out in order."""
        self._request_in_progress = True
        self._waiting = waiting
        assert self.transport is not None
        self.transport.pause_reading()

    def _answer(
        self,
        started: float,
        request_id: str,
        done: asyncio.Future[Prediction] | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Write the answer to a request `_predict` took, count it and log it."""
        state = self._server.state
        if self._waiting is not None:  # it waited: end that
            self._waiting = None
            if done is not None:  # for the lane, not a held 503
                state.inflight -= 1
            self._request_in_progress = False
            if self._handler_waiter is not None:  # a shutdown waits for it
                self._handler_waiter.set_result(None)
            if done is not None and done.cancelled():  # the connection went away
                return
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.resume_reading()
        prediction: Prediction | None = None
        if done is not None:
            error = done.exception()
            if error is None:
                prediction = done.result()
        answer: bytes | bytearray
        if prediction is not None:
            status, head, answer = 200, _OK, prediction.body
        else:
            if not isinstance(error, HTTPError):
                _log.error(
                    "unhandled error", request_id=request_id, path="/predict", error=repr(error)
                )
                error = InternalError("internal server error")
            elif isinstance(error, Overloaded):
                state.metrics.shed(error.reason)
            status, head, answer = error.status, _error_head(error), error_body(error)
        state.answered(started, request_id, "POST", "/predict", "/predict", status, prediction)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.writelines(
                (
                    head,
                    b"X-Request-ID: %s\r\nContent-Length: %d\r\nDate: %s\r\nServer: %s\r\n\r\n"
                    % (request_id.encode(), len(answer), rfc822_formatted_time().encode(), _SERVER),
                    answer,
                )
            )
            self._keep_alive()

    def _keep_alive(self) -> None:
        """What aiohttp's request loop does after an answer: (re)start the idle timer."""
        self._keepalive = True
        loop = self._loop
        close_time = loop.time() + self._keepalive_timeout
        self._next_keepalive_close_time = close_time
        if self._keepalive_handle is None:
            self._keepalive_handle = loop.call_at(close_time, self._process_keepalive)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if not self._messages and not self._request_in_progress:
            self._server.state.metrics.header_timeout()
            self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: the answer is already going out
            raise ConnectionError("response is sent already, cannot send an error")
        if status >= 500:
            _log.error("unhandled error in the HTTP layer", error=repr(exc))
            error: HTTPError = InternalError("internal server error")
        else:
            error = BadRequest(f"malformed HTTP request: {message or exc!r}")
            error.status = status
        response = error_response(error)
        response.force_close()
        return response


class _Server(web.Server):
    def __init__(self, state: WorkerState, **kwargs: Any) -> None:
        super().__init__(make_handler(state), **kwargs)
        self.state = state

    def __call__(self) -> RequestHandler:
        return _Connection(self, loop=self._loop, **self._kwargs)


def build_server(state: WorkerState) -> web.Server:
    """The low-level aiohttp server of one worker; call inside its running loop."""
    loop = asyncio.get_running_loop()
    max_body = state.config.max_body_bytes

    def make_request(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        # /predict reads with its own limit (_read_body); this one is for request.read().
        return web.BaseRequest(
            message, payload, protocol, writer, task, loop, client_max_size=max_body
        )

    return _Server(
        state, request_factory=make_request, keepalive_timeout=state.config.keepalive_timeout
    )
