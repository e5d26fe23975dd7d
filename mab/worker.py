"""One worker process: aiohttp on uvloop, serving a socket the parent bound."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import signal
import socket

import structlog
import uvloop
from aiohttp import http_writer, web

from mab import log
from mab.app import WorkerState, build_server
from mab.blocking import detect_blocking
from mab.config import Config
from mab.listener import accept_new_connections, refuse_new_connections
from mab.store.base import FeatureStore

_PR_SET_PDEATHSIG = 1
_ACCEPT_DRAIN_S = 0.2  # accepting what is queued or mid-handshake before closing


def _die_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM if the supervisor dies, so no orphan holds the port."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's SIGTERM still reaches us
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _let_aiohttp_use_writelines(loop: asyncio.AbstractEventLoop) -> None:
    """aiohttp joins each response's headers and body into one bytes before writing
    on Pythons before 3.12.9, to avoid a bug of asyncio's own writelines there: a
    copy of every 200 KB answer at 4,000 ids. uvloop's writelines is its own code
    (one writev), so let aiohttp call it."""
    assert isinstance(loop, uvloop.Loop), "the workers run on uvloop"
    http_writer.SKIP_WRITELINES = False


async def _serve(config: Config, sock: socket.socket, store: FeatureStore, slot: int) -> None:
    logger = structlog.get_logger("mab.worker")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    _let_aiohttp_use_writelines(loop)
    state = WorkerState(config, store, slot)
    await state.start()  # the store client, the sampler actors, the metrics flush
    gc.freeze()  # and what the worker set up: its clients live until it exits
    detector = detect_blocking()  # off unless MAB_DETECT_BLOCKING=1 (the tests)
    runner = web.ServerRunner(
        build_server(state),
        handle_signals=False,
        access_log=None,
        shutdown_timeout=config.graceful_timeout,
    )
    await runner.setup()
    accept_new_connections(sock)
    await web.SockSite(runner, sock, backlog=1024).start()
    samplers = getattr(state.runner, "threads", 0)
    logger.info("worker started", worker=slot, pid=os.getpid(), sampler_threads=samplers)
    await stop.wait()
    logger.info("worker stopping", worker=slot, pid=os.getpid())
    state.draining = True
    # Closing a listener resets the connections in its accept queue (see
    # mab.listener): drop new SYNs first, accept what is queued, then close.
    refuse_new_connections(sock)
    await asyncio.sleep(_ACCEPT_DRAIN_S)
    # Stop accepting, let in-flight requests finish within the graceful timeout,
    # cancel what is left, then stop the samplers and the store client.
    if detector is not None:
        detector.deactivate()  # stopping blocks on purpose: joins, flushes
    try:
        await runner.cleanup()
    finally:
        await state.close()


def run_worker(
    config: Config, sock: socket.socket, store: FeatureStore, slot: int, parent: int
) -> int:
    """The body of a forked child; returns its exit code."""
    _die_with_parent(parent)
    log.configure(config)
    try:
        uvloop.run(_serve(config, sock, store, slot))
    finally:
        log.flush()
    return 0
