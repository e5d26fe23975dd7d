"""Placeholder until the Vertex issue lands: the fake Vertex AI gRPC server."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)


def run(args: argparse.Namespace) -> int:
    raise SystemExit("mab fake-vertex: not built yet")
