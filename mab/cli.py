"""`mab serve` and `mab fake-vertex`: flags, each also read from `MAB_<NAME>`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args

from mab import __version__
from mab.config import Config, LogFormat, StoreName, VertexConfig
from mab.errors import StartupError

_DEFAULTS = Config()
_VERTEX_DEFAULTS = VertexConfig()


def _env_name(flag: str) -> str:
    return "MAB_" + flag.lstrip("-").replace("-", "_").upper()


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _non_negative(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


class _EnvParser:
    """Adds flags whose default comes from `MAB_<NAME>` when that is set."""

    def __init__(
        self, parser: argparse.ArgumentParser, group: argparse._ArgumentGroup | None = None
    ) -> None:
        self.parser = parser  # reports a bad env value
        self.target = group or parser  # holds the flag (a group shows it under a heading)

    def add(self, flag: str, *, default: Any, help: str, **kwargs: Any) -> None:
        env = _env_name(flag)
        raw = os.environ.get(env)
        kind = kwargs.get("type", _bool if "action" in kwargs else None)
        if raw is not None:
            try:
                default = kind(raw) if kind is not None else raw
            except (argparse.ArgumentTypeError, ValueError) as exc:
                self.parser.error(f"{env}={raw!r}: {exc}")
            choices = kwargs.get("choices")
            if choices is not None and default not in choices:
                self.parser.error(f"{env}={raw!r}: choose from {', '.join(map(str, choices))}")
        shown = "" if default is None else f" (default: {default})"
        self.target.add_argument(flag, default=default, help=f"{help}{shown} [env {env}]", **kwargs)

    def switch(self, flag: str, *, default: bool, help: str) -> None:
        """A boolean flag with a --no- twin; the env var takes 1/0, true/false, yes/no."""
        self.add(flag, default=default, help=help, action=argparse.BooleanOptionalAction)


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the prediction server",
        description="Run the Thompson-sampling prediction server: one forked worker per "
        "core, each running aiohttp on uvloop on its own SO_REUSEPORT socket.",
    )
    e = _EnvParser(p)
    d, v = _DEFAULTS, _VERTEX_DEFAULTS
    e.add("--host", default=d.host, help="address to listen on")
    e.add("--port", default=d.port, type=_non_negative(int), help="port to listen on (0 = any)")
    e.add("--workers", default=d.workers, type=_positive(int), help="worker processes")
    e.add("--samplers", default=d.samplers, type=_positive(int), help="sampler threads per worker")
    e.add(
        "--chunk-size",
        default=d.chunk_size,
        type=_positive(int),
        help="items per sampler job when a request is split across sampler threads",
    )
    e.add(
        "--inline-max",
        default=d.inline_max,
        type=_non_negative(int),
        help="requests with at most this many items are sampled on the event loop thread",
    )
    e.add(
        "--max-queue",
        default=d.max_queue,
        type=_positive(int),
        help="sampler jobs waiting per worker before requests are shed with 503",
    )
    e.add(
        "--max-inflight",
        default=d.max_inflight,
        type=_positive(int),
        help="requests in progress per worker before new ones are shed with 503",
    )
    e.add("--store", default=d.store, choices=get_args(StoreName), help="feature store")
    e.add(
        "--catalog",
        default=None,
        type=Path,
        help="CSV arm_id,successes,failures for the embedded store (default: a demo catalog)",
    )
    e.add(
        "--demo-arms",
        default=d.demo_arms,
        type=_positive(int),
        help="arms in the generated demo catalog when no --catalog is given",
    )
    e.add("--prior-alpha", default=d.prior_alpha, type=_positive(float), help="Beta prior alpha")
    e.add("--prior-beta", default=d.prior_beta, type=_positive(float), help="Beta prior beta")
    e.add("--max-items", default=d.max_items, type=_positive(int), help="items per request")
    e.add(
        "--max-body-bytes",
        default=d.max_body_bytes,
        type=_positive(int),
        help="request body size limit",
    )
    e.add(
        "--read-timeout",
        default=d.read_timeout,
        type=_positive(float),
        help="seconds a client gets to send a request body (then 408)",
    )
    e.add(
        "--log-level",
        default=d.log_level,
        choices=["debug", "info", "warning", "error"],
        help="log level",
    )
    e.add("--log-format", default=d.log_format, choices=get_args(LogFormat), help="log format")
    e.switch("--access-log", default=d.access_log, help="log one line per request")
    e.add(
        "--graceful-timeout",
        default=d.graceful_timeout,
        type=_non_negative(float),
        help="seconds in-flight requests get to finish on SIGTERM",
    )
    e.add(
        "--metrics-dir",
        default=None,
        type=Path,
        help="directory for cross-process Prometheus metrics (default: a fresh temp dir)",
    )
    g = p.add_argument_group("Vertex AI stores")
    ge = _EnvParser(p, g)
    ge.add(
        "--vertex-entity-type",
        default=None,
        help="legacy Featurestore entity type: "
        "projects/P/locations/L/featurestores/F/entityTypes/E",
    )
    ge.add(
        "--vertex-feature-view",
        default=None,
        help="Feature Store view: projects/P/locations/L/featureOnlineStores/S/featureViews/V",
    )
    ge.add(
        "--vertex-endpoint",
        default=None,
        help="HOST:PORT of the API (default: the regional endpoint of the resource)",
    )
    ge.switch(
        "--vertex-insecure",
        default=v.insecure,
        help="plaintext channel and no credentials (local fakes and emulators)",
    )
    ge.switch(
        "--vertex-streaming",
        default=v.streaming,
        help="vertex-online: batch reads with the v1beta1 StreamingFetchFeatureValues",
    )
    ge.add("--success-feature", default=v.success_feature, help="feature id of success counts")
    ge.add("--failure-feature", default=v.failure_feature, help="feature id of failure counts")
    ge.add(
        "--fetch-chunk",
        default=v.fetch_chunk,
        type=_positive(int),
        help="ids per concurrent fetch call",
    )
    ge.add(
        "--fetch-deadline",
        default=v.fetch_deadline,
        type=_positive(float),
        help="seconds for the whole feature fetch of one request",
    )
    ge.add(
        "--cache-ttl",
        default=v.cache_ttl,
        type=_non_negative(float),
        help="seconds an arm's counts stay cached in a worker (0 = off)",
    )
    ge.add("--cache-size", default=v.cache_size, type=_positive(int), help="cached arms per worker")
    ge.add(
        "--unhealthy-after",
        default=v.unhealthy_after,
        type=_positive(int),
        help="consecutive failed fetches before /health reports 503",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    vertex = VertexConfig(
        entity_type=args.vertex_entity_type,
        feature_view=args.vertex_feature_view,
        endpoint=args.vertex_endpoint,
        insecure=args.vertex_insecure,
        streaming=args.vertex_streaming,
        success_feature=args.success_feature,
        failure_feature=args.failure_feature,
        fetch_chunk=args.fetch_chunk,
        fetch_deadline=args.fetch_deadline,
        cache_ttl=args.cache_ttl,
        cache_size=args.cache_size,
        unhealthy_after=args.unhealthy_after,
    )
    if args.store == "vertex-featurestore" and not vertex.entity_type:
        raise StartupError("--store vertex-featurestore needs --vertex-entity-type")
    if args.store == "vertex-online" and not vertex.feature_view:
        raise StartupError("--store vertex-online needs --vertex-feature-view")
    return Config(
        host=args.host,
        port=args.port,
        workers=args.workers,
        samplers=args.samplers,
        chunk_size=args.chunk_size,
        inline_max=args.inline_max,
        max_queue=args.max_queue,
        max_inflight=args.max_inflight,
        store=args.store,
        catalog=args.catalog,
        demo_arms=args.demo_arms,
        prior_alpha=args.prior_alpha,
        prior_beta=args.prior_beta,
        max_items=args.max_items,
        max_body_bytes=args.max_body_bytes,
        read_timeout=args.read_timeout,
        log_level=args.log_level,
        log_format=args.log_format,
        access_log=args.access_log,
        graceful_timeout=args.graceful_timeout,
        metrics_dir=args.metrics_dir,
        vertex=vertex,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mab", description="Thompson-sampling prediction server.")
    parser.add_argument("--version", action="version", version=f"mab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve_parser(sub)
    from mab import fake_vertex  # light: imports the Vertex client only when run

    fake = sub.add_parser(
        "fake-vertex",
        help="run a local fake of the Vertex AI online serving APIs",
        description="A local gRPC fake of both Vertex AI online serving APIs, serving a CSV "
        "catalog: for tests, and for trying the Vertex path without a cloud project.",
    )
    fake_vertex.add_arguments(fake)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            from mab.supervisor import serve

            return serve(config_from_args(args))
        from mab import fake_vertex

        return fake_vertex.run(args)
    except StartupError as exc:
        print(f"mab: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
