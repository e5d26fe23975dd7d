"""The one typed, immutable configuration object, settled once at start-up.

Every setting is declared once, here: its name, type, default and help. The CLI
flags, the `MAB_*` environment variables, `mab serve --help` and the README's
configuration table all come from these declarations (`mab.cli`, `settings()`).
A field's flag is `--` and its name with dashes, unless it says otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

StoreName = Literal["embedded", "vertex-featurestore", "vertex-online", "redis"]
LogFormat = Literal["json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]

# How a value must compare to 0: checked for flags and env vars alike.
Bound = Literal["positive", "non_negative", None]


def setting(
    default: Any = MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    shown: str | None = None,
    bound: Bound = None,
    flag: str | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field that is also a flag: `shown` is how --help and the README
    give a default that depends on the machine (`factory`)."""
    metadata = {"help": help, "shown": shown, "bound": bound, "flag": flag, "metavar": metavar}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, slots=True)
class VertexConfig:
    """Options of the two Vertex AI stores (ignored by the other stores)."""

    entity_type: str | None = setting(
        None,
        "legacy Featurestore entity type: projects/P/locations/L/featurestores/F/entityTypes/E",
        flag="--vertex-entity-type",
    )
    feature_view: str | None = setting(
        None,
        "Feature Store view: projects/P/locations/L/featureOnlineStores/S/featureViews/V",
        flag="--vertex-feature-view",
    )
    endpoint: str | None = setting(
        None,
        "HOST:PORT of the API (default: the regional endpoint of the resource)",
        flag="--vertex-endpoint",
    )
    insecure: bool = setting(
        False,
        "plaintext channel and no credentials (local fakes and emulators)",
        flag="--vertex-insecure",
    )
    streaming: bool = setting(
        True,
        "vertex-online: batch reads with the v1beta1 StreamingFetchFeatureValues "
        "(--no-vertex-streaming: v1 FetchFeatureValues, one call per id)",
        flag="--vertex-streaming",
    )
    success_feature: str = setting("successes", "feature id of success counts")
    failure_feature: str = setting("failures", "feature id of failure counts")
    fetch_chunk: int = setting(100, "ids per concurrent fetch call", bound="positive")
    fetch_deadline: float = setting(
        1.0, "seconds for the whole feature fetch of one request (then 504)", bound="positive"
    )
    cache_ttl: float = setting(
        0.0, "seconds an arm's counts stay cached in a worker (0 = off)", bound="non_negative"
    )
    cache_size: int = setting(100_000, "cached arms per worker", bound="positive")
    unhealthy_after: int = setting(
        5, "consecutive failed fetches before /health reports 503", bound="positive"
    )


@dataclass(frozen=True, slots=True)
class LearningConfig:
    """Online learning: /feedback, the live arm table, its journal and decay."""

    state_dir: Path | None = setting(
        None,
        "directory for the feedback journal and snapshots; without it feedback lives in "
        "memory only",
        metavar="DIR",
    )
    max_arms: int = setting(
        1_000_000,
        "arms the table holds, the catalog's included; feedback for more new ids gets 507",
        bound="positive",
    )
    half_life: float = setting(
        0.0,
        "seconds after which evidence counts half (discounted Thompson sampling; 0 = off)",
        bound="non_negative",
    )
    dedupe_window: float = setting(
        86_400.0,
        "seconds an event_id is remembered, so a retried event is applied once",
        bound="non_negative",
    )
    dedupe_capacity: int = setting(
        1_000_000,
        "event ids remembered at most (24 bytes each, ~32 MB at the default); past it the "
        "oldest are forgotten early",
        bound="positive",
    )
    snapshot_every: float = setting(
        300.0, "seconds between compactions of the journal into a snapshot", bound="positive"
    )
    max_events: int = setting(10_000, "events per /feedback request (then 413)", bound="positive")


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """The redis store: the shared arm state in Redis (or a Redis Cluster), mirrored
    into each replica's live arm table (mab/store/redis.py, mab/state/mirror.py)."""

    url: str | None = setting(
        None,
        "redis://HOST:PORT/DB or rediss://... of the shared arm state (--store redis)",
        flag="--redis-url",
        metavar="URL",
    )
    prefix: str = setting(
        "mab", "key prefix: independent bandits can share one Redis", flag="--redis-prefix"
    )
    cluster: bool = setting(
        False,
        "the URL names a node of a Redis Cluster (detected when not given)",
        flag="--redis-cluster",
    )
    timeout: float = setting(
        0.08,
        "seconds a /feedback may wait for Redis before it answers 503",
        flag="--redis-timeout",
        bound="positive",
    )
    wait_aof: int | None = setting(
        None,
        "also wait until Redis' AOF and this many of its replicas have fsynced each "
        "/feedback (WAITAOF: Redis or Valkey 7.2+, a single Redis)",
        flag="--redis-wait-aof",
        metavar="REPLICAS",
        bound="non_negative",
    )
    stream_maxlen: int = setting(
        10_000,
        "entries (one per batch) each bucket's change stream keeps, about; a mirror "
        "further behind reloads the bucket",
        flag="--redis-stream-maxlen",
        bound="positive",
    )
    stale_after: float = setting(
        3.0,
        "seconds without news from Redis before /health reports degraded",
        flag="--redis-stale-after",
        bound="positive",
    )
    degraded_status: int = setting(
        200,
        "/health status code while degraded (200 keeps the replica behind a load balancer)",
        flag="--redis-degraded-status",
        bound="positive",
    )


@dataclass(frozen=True, slots=True)
class Config:
    """Everything `mab serve` is told: built once by `mab.cli`, passed down, never changed."""

    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(8080, "port to listen on (0 = any)", bound="non_negative")
    workers: int = setting(
        help="worker processes",
        factory=lambda: os.cpu_count() or 1,
        shown="number of cores",
        bound="positive",
    )
    samplers: int = setting(
        2,
        "sampler threads per worker, for requests over --inline-max items "
        "(none start when --inline-max >= --max-items)",
        bound="positive",
    )
    inline_max: int = setting(
        10_000,
        "requests with at most this many items are scored on the event loop thread",
        bound="non_negative",
    )
    max_queue: int = setting(
        256, "requests waiting for a sampler thread before new ones get 503", bound="positive"
    )
    max_inflight: int = setting(
        1024, "requests in progress per worker before new ones get 503", bound="positive"
    )
    max_wait: float = setting(
        1.0,
        "seconds a /predict may wait for the CPU (the inline lane); then it gets 503",
        bound="positive",
    )
    shed_delay: float = setting(
        0.03,
        "seconds of work a worker may have queued for its lane: past it, a new /predict "
        "gets 503 before its body is parsed (0 = off)",
        bound="non_negative",
    )
    shed_hold: float = setting(
        0.25,
        "seconds a 503 for --shed-delay is held before it is sent, so that clients "
        "retrying at once do not spend the CPU the admitted requests need (0 = at once)",
        bound="non_negative",
    )
    store: StoreName = setting("embedded", "where the counts come from")
    catalog: Path | None = setting(
        None,
        "CSV arm_id,successes,failures for the embedded store (default: a demo catalog)",
        metavar="PATH",
    )
    demo_arms: int = setting(
        100_000, "arms in the generated demo catalog when no --catalog is given", bound="positive"
    )
    prior_alpha: float = setting(1.0, "Beta prior alpha", bound="positive")
    prior_beta: float = setting(1.0, "Beta prior beta", bound="positive")
    max_items: int = setting(10_000, "item ids per /predict request (then 413)", bound="positive")
    max_body_bytes: int = setting(
        2 * 1024 * 1024, "request body size limit (then 413)", bound="positive"
    )
    read_timeout: float = setting(
        10.0, "seconds a client gets to send a request body (then 408)", bound="positive"
    )
    header_timeout: float = setting(
        10.0,
        "seconds a client gets to send a request's headers once it has begun (then the "
        "connection is closed)",
        bound="positive",
    )
    keepalive_timeout: float = setting(
        75.0, "seconds an idle keep-alive connection stays open", bound="positive"
    )
    max_connections: int = setting(
        10_000,
        "open connections per worker; past it a new connection gets 503 and is closed",
        bound="positive",
    )
    log_level: LogLevel = setting("info", "log level")
    log_format: LogFormat = setting("json", "structlog JSON lines on stdout, or a console view")
    access_log: bool = setting(True, "log one line per request")
    graceful_timeout: float = setting(
        10.0, "seconds in-flight requests get to finish on SIGTERM", bound="non_negative"
    )
    metrics_dir: Path | None = setting(
        None,
        "directory for cross-process Prometheus metrics (default: a fresh temp dir)",
        metavar="DIR",
    )
    learning: LearningConfig = field(
        default_factory=LearningConfig, metadata={"group": "Online learning"}
    )
    vertex: VertexConfig = field(
        default_factory=VertexConfig, metadata={"group": "Vertex AI stores"}
    )
    redis: RedisConfig = field(default_factory=RedisConfig, metadata={"group": "Redis store"})


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of the settings table: a field of Config or of one of its groups."""

    name: str  # the field name
    group: str | None  # the Config field of the group it is in, e.g. "vertex"
    heading: str | None  # the group's heading in --help
    flag: str
    env: str
    kind: Any  # the type: int, float, str, bool, Path, or a Literal of choices
    optional: bool  # None allowed (a default of None)
    default: Any
    shown: str  # the default, as --help and the README give it
    help: str
    bound: Bound
    metavar: str  # the value's name in --help

    @property
    def choices(self) -> tuple[str, ...] | None:
        return get_args(self.kind) if getattr(self.kind, "__origin__", None) is Literal else None


def env_name(flag: str) -> str:
    return "MAB_" + flag.lstrip("-").replace("-", "_").upper()


def _kind(annotation: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of `X` or `X | None`."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if getattr(annotation, "__origin__", None) is not Literal and len(args) == 1:
        return args[0], True
    return annotation, False


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int) and value >= 10_000:
        return f"{value:,}"
    return str(value)


def _rows(cls: type, group: str | None, heading: str | None) -> Iterator[Setting]:
    hints = get_type_hints(cls)
    for f in fields(cls):
        if "group" in f.metadata:
            yield from _rows(hints[f.name], f.name, f.metadata["group"])
            continue
        kind, optional = _kind(hints[f.name])
        default = f.default if f.default_factory is MISSING else f.default_factory()
        flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        yield Setting(
            name=f.name,
            group=group,
            heading=heading,
            flag=flag,
            env=env_name(flag),
            kind=kind,
            optional=optional,
            default=default,
            shown=f.metadata["shown"] or _shown(default),
            help=f.metadata["help"],
            bound=f.metadata["bound"],
            metavar=f.metadata["metavar"] or flag[2:].upper().replace("-", "_"),
        )


def settings() -> list[Setting]:
    """The settings table, in declaration order."""
    return list(_rows(Config, None, None))


def build_config(values: dict[str, Any]) -> Config:
    """A Config from {setting name: value}, the names of group fields included
    (`entity_type` goes to `Config.vertex`)."""
    top: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    for row in settings():
        if row.name not in values:
            continue
        target = top if row.group is None else groups.setdefault(row.group, {})
        target[row.name] = values[row.name]
    hints = get_type_hints(Config)
    for group, kwargs in groups.items():
        top[group] = hints[group](**kwargs)
    return Config(**top)


def markdown_table() -> str:
    """The settings as the README's configuration table (a test keeps them equal)."""
    lines = ["| flag | env | default | meaning |", "|------|-----|---------|---------|"]
    heading = None
    for row in settings():
        if row.heading != heading:
            heading = row.heading
            lines.append(f"| **{heading}** | | | |")
        if row.kind is bool:
            flag = f"{row.flag}, --no-{row.flag[2:]}"
        else:
            flag = f"{row.flag} {row.metavar}"
        meaning = row.help if row.choices is None else f"{row.help}: {', '.join(row.choices)}"
        lines.append(f"| `{flag}` | `{row.env}` | {row.shown} | {meaning} |")
    return "\n".join(lines) + "\n"
