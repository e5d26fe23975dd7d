"""The one typed, immutable configuration object, settled once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

StoreName = Literal["embedded", "vertex-featurestore", "vertex-online"]
LogFormat = Literal["json", "console"]


@dataclass(frozen=True, slots=True)
class VertexConfig:
    """Options of the two Vertex AI stores (ignored by the embedded store)."""

    entity_type: str | None = None  # legacy Featurestore: projects/.../entityTypes/ET
    feature_view: str | None = None  # new Feature Store: projects/.../featureViews/V
    endpoint: str | None = None  # HOST:PORT; None = regional endpoint from the resource name
    insecure: bool = False  # plaintext channel, no credentials: local fakes and emulators
    streaming: bool = False  # vertex-online: v1beta1 StreamingFetchFeatureValues batch read
    success_feature: str = "successes"
    failure_feature: str = "failures"
    fetch_chunk: int = 100
    fetch_deadline: float = 1.0  # seconds for the whole fetch of one request
    cache_ttl: float = 0.0  # seconds; 0 = cache off
    cache_size: int = 100_000
    unhealthy_after: int = 5  # consecutive failed fetches before /health says 503


@dataclass(frozen=True, slots=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    samplers: int = 2  # sampler actor threads per worker
    chunk_size: int = 2048  # requests with more items are split across sampler actors
    inline_max: int = 10_000  # requests with at most this many items are sampled inline
    max_queue: int = 256  # sampling jobs waiting per worker before shedding with 503
    max_inflight: int = 1024  # requests in progress per worker before shedding with 503
    store: StoreName = "embedded"
    catalog: Path | None = None
    demo_arms: int = 100_000
    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    max_items: int = 10_000
    max_body_bytes: int = 2 * 1024 * 1024
    read_timeout: float = 10.0  # seconds a client gets to send the body of a request
    log_level: str = "info"
    log_format: LogFormat = "json"
    access_log: bool = True  # one structured log line per request
    graceful_timeout: float = 10.0
    metrics_dir: Path | None = None  # prometheus multiprocess dir; None = a fresh temp dir
    vertex: VertexConfig = field(default_factory=VertexConfig)
