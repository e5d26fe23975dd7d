"""`mab serve` and `mab fake-vertex`: the flags of `serve` come from the settings
table in `mab.config`, each also read from `MAB_<NAME>`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mab import __version__
from mab.config import Config, Setting, build_config, markdown_table, settings
from mab.errors import StartupError


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def _parser_of(row: Setting) -> Callable[[str], Any]:
    """The function that reads the row's flag or env var, with its bound checked."""
    kind = row.kind
    read: Callable[[str], Any] = _bool if kind is bool else str if row.choices else kind

    def parse(text: str) -> Any:
        value = read(text)
        if row.bound == "positive" and not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
        if row.bound == "non_negative" and not value >= 0:
            raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
        return value

    parse.__name__ = getattr(read, "__name__", "value")  # argparse names it in errors
    return parse


def _add_setting(
    parser: argparse.ArgumentParser, target: Any, row: Setting, environ: Mapping[str, str]
) -> None:
    """The row's flag, its default taken from `MAB_<NAME>` when that is set."""
    parse = _parser_of(row)
    default = row.default
    raw = environ.get(row.env)
    if raw is not None:
        try:
            default = parse(raw)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            parser.error(f"{row.env}={raw!r}: {exc}")
        if row.choices is not None and default not in row.choices:
            parser.error(f"{row.env}={raw!r}: choose from {', '.join(row.choices)}")
    shown = f" (default: {row.shown})" if row.shown else ""
    kwargs: dict[str, Any] = {"default": default, "dest": row.name}
    kwargs["help"] = f"{row.help}{shown} [env {row.env}]"
    if row.kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs["type"] = parse
        kwargs["choices"] = row.choices
        kwargs["metavar"] = row.metavar
    target.add_argument(row.flag, **kwargs)


def _serve_parser(sub: Any, environ: Mapping[str, str]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the prediction server",
        description="Run the Thompson-sampling prediction server: one forked worker per "
        "core, each running aiohttp on uvloop on its own SO_REUSEPORT socket. Every flag "
        "can also be set with the environment variable named after it.",
    )
    headings: dict[str, Any] = {}
    for row in settings():
        target: Any = p
        if row.heading is not None:
            target = headings.get(row.heading) or p.add_argument_group(row.heading)
            headings[row.heading] = target
        _add_setting(p, target, row, environ)


def config_from_args(args: argparse.Namespace) -> Config:
    config = build_config(vars(args))
    if config.store == "vertex-featurestore" and not config.vertex.entity_type:
        raise StartupError("--store vertex-featurestore needs --vertex-entity-type")
    if config.store == "vertex-online" and not config.vertex.feature_view:
        raise StartupError("--store vertex-online needs --vertex-feature-view")
    if config.store == "redis" and not config.redis.url:
        raise StartupError("--store redis needs --redis-url")
    if config.store == "redis" and not 200 <= config.redis.degraded_status <= 599:
        raise StartupError("--redis-degraded-status must be an HTTP status from 200 to 599")
    if config.redis.wait_aof is not None and config.redis.cluster:
        raise StartupError("--redis-wait-aof works with a single Redis, not yet a Cluster")
    if config.store == "redis" and config.learning.state_dir is not None:
        raise StartupError("--store redis keeps its state in Redis: drop --state-dir")
    if config.store == "redis" and config.catalog is not None:
        raise StartupError(
            "--store redis takes its arms from Redis: load a catalog with `mab load-catalog`"
        )
    return config


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mab", description="Thompson-sampling prediction server.")
    parser.add_argument("--version", action="version", version=f"mab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve_parser(sub, os.environ if environ is None else environ)
    sub.add_parser(
        "settings",
        help="print every setting of `mab serve` as a Markdown table",
        description="Every setting of `mab serve`: flag, environment variable, default "
        "and meaning, as the README's configuration table.",
    )
    from mab import load_catalog

    bulk = sub.add_parser(
        "load-catalog",
        help="bulk-load a CSV catalog into the redis store",
        description="Set the arms of a CSV catalog (arm_id,successes,failures) in the Redis "
        "that `mab serve --store redis` shares, with a progress line; running replicas "
        "see the new counts through their mirrors.",
    )
    load_catalog.add_arguments(bulk)
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
        if args.command == "settings":
            print(markdown_table(), end="")
            return 0
        if args.command == "load-catalog":
            from mab import load_catalog

            return load_catalog.run(args)
        from mab import fake_vertex

        return fake_vertex.run(args)
    except StartupError as exc:
        print(f"mab: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
