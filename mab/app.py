"""The aiohttp application of one worker: routes, error rendering, request logs."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from itertools import count
from typing import Any

import orjson
import structlog
from aiohttp import web

from mab.config import Config
from mab.errors import (
    HTTPError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from mab.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mab.metrics import Metrics
from mab.predict import Prediction, Predictor
from mab.request import parse_request
from mab.sampling import SamplerPool
from mab.store.base import FeatureStore

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_log = structlog.get_logger("mab.request")


class WorkerState:
    """What the handlers of one worker share; built once per worker."""

    def __init__(self, config: Config, store: FeatureStore) -> None:
        self.config = config
        self.store = store
        self.samplers = SamplerPool(config)
        self.predictor = Predictor(config, store, self.samplers)
        self.metrics = Metrics()
        self.inflight = 0
        self.draining = False
        self._ids = count(1)
        self._id_prefix = f"{os.getpid():x}-"

    def next_request_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):x}"


STATE = web.AppKey("state", WorkerState)
PREDICTION = "mab.prediction"  # request-local: the Prediction, for the log line


def error_response(error: HTTPError) -> web.Response:
    body = orjson.dumps({"error": {"code": error.code, "message": error.message}})
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    return web.Response(
        status=error.status, body=body, content_type="application/json", headers=headers
    )


def _from_aiohttp(exc: web.HTTPException) -> HTTPError:
    """aiohttp's own errors (routing, body size) rendered in our JSON shape."""
    if exc.status == 404:
        return NotFound("no such path")
    if exc.status == 405:
        return MethodNotAllowed("method not allowed")
    if exc.status == 413:
        return PayloadTooLarge("request body is over the size limit")
    error = HTTPError(exc.reason)
    error.status, error.code = exc.status, exc.reason.lower().replace(" ", "_")
    return error


@web.middleware
async def _errors_and_logs(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    started = time.perf_counter()
    request_id = request.headers.get("X-Request-ID") or state.next_request_id()
    try:
        response = await handler(request)
    except HTTPError as exc:
        response = error_response(exc)
    except web.HTTPException as exc:
        response = error_response(_from_aiohttp(exc))
    except Exception:
        _log.exception("unhandled error", request_id=request_id, path=request.path)
        response = error_response(InternalError("internal server error"))
    response.headers["X-Request-ID"] = request_id
    elapsed = time.perf_counter() - started
    state.metrics.request(request.path, response.status)
    prediction: Prediction | None = request.get(PREDICTION)
    if state.config.access_log:
        fields: dict[str, Any] = {}
        if prediction is not None:
            fields = {
                "items": prediction.items,
                "unknown": prediction.unknown,
                "fetch_ms": round(prediction.fetch_s * 1e3, 3),
                "sample_ms": round(prediction.sample_s * 1e3, 3),
                "encode_ms": round(prediction.encode_s * 1e3, 3),
            }
        _log.info(
            "request",
            request_id=request_id,
            method=request.method,
            path=request.path,
            status=response.status,
            latency_ms=round(elapsed * 1e3, 3),
            **fields,
        )
    return response


async def _predict(request: web.Request) -> web.Response:
    state = request.app[STATE]
    config = state.config
    if state.inflight >= config.max_inflight:
        state.metrics.shed()
        raise Overloaded(f"{state.inflight} requests in progress in this worker, retry later")
    length = request.content_length
    if length is not None and length > config.max_body_bytes:
        raise PayloadTooLarge(
            f"body of {length} bytes is over the limit of {config.max_body_bytes}"
        )
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {request.content_type!r}"
        )
    state.inflight += 1
    started = time.perf_counter()
    try:
        body = await request.read()
        parsed = parse_request(body, config.max_items)
        prediction = await state.predictor.predict(parsed)
    except Overloaded:
        state.metrics.shed()
        raise
    finally:
        state.inflight -= 1
    request[PREDICTION] = prediction
    state.metrics.prediction(time.perf_counter() - started, prediction.items, prediction.unknown)
    return web.Response(body=prediction.body, content_type="application/json")


async def _health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    health = state.store.health()
    if state.draining:
        payload: dict[str, Any] = {"status": "unavailable", "reason": "shutting down"}
    elif not health.ok:
        payload = {"status": "unavailable", "reason": health.reason, **health.detail}
    else:
        payload = {"status": "ok", "store": state.store.name, **health.detail}
    ok = payload["status"] == "ok"
    return web.Response(
        status=200 if ok else 503,
        body=orjson.dumps(payload),
        content_type="application/json",
        headers=None if ok else {"Retry-After": "1"},
    )


async def _metrics(request: web.Request) -> web.Response:
    request.app[STATE].metrics.flush()  # this worker's counts up to now
    return web.Response(body=Metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Start the store, the sampler actors and the metrics flush in this worker;
    stop them in reverse."""
    state = app[STATE]
    await state.store.start()
    state.samplers.start()
    flushing = asyncio.create_task(state.metrics.flush_every())
    try:
        yield
    finally:
        flushing.cancel()
        state.metrics.flush()
        state.samplers.close()
        await state.store.close()


def build_app(config: Config, store: FeatureStore) -> web.Application:
    # The body limit is also enforced here while reading, for chunked bodies.
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[_errors_and_logs])
    app[STATE] = WorkerState(config, store)
    app.cleanup_ctx.append(_lifecycle)
    app.router.add_post("/predict", _predict)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    return app
