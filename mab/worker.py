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
# Sent by the supervisor to the old set of workers after a reload: finish like
# SIGTERM, but leave the listening socket as it is. The new worker of the slot
# accepts on the very same socket, and SIGTERM's way of stopping (a filter that
# drops new SYNs) would shut it out too.
RETIRE = signal.SIGUSR1
_ACCEPT_DRAIN_S = 0.2  # accepting what is queued or mid-handshake before closing
_KEEP_ALIVE_DRAIN_S = 1.0  # at most, for the clients to close their connections


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


async def _serve(
    config: Config, sock: socket.socket, store: FeatureStore, slot: int, parent: int
) -> None:
    logger = structlog.get_logger("mab.worker")
    stop = asyncio.Event()
    handover = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def retire() -> None:
        handover.set()
        stop.set()

    loop.add_signal_handler(RETIRE, retire)
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
    site = web.SockSite(runner, sock, backlog=1024)
    await site.start()
    samplers = getattr(state.runner, "threads", 0)
    logger.info("worker started", worker=slot, pid=os.getpid(), sampler_threads=samplers)
    await stop.wait()
    logger.info("worker stopping", worker=slot, pid=os.getpid(), retired=handover.is_set())
    state.draining = True
    if not handover.is_set():
        # Closing a listener resets the connections in its accept queue (see
        # mab.listener): drop new SYNs first, accept what is queued, then close.
        refuse_new_connections(sock)
        await asyncio.sleep(_ACCEPT_DRAIN_S)
    await site.stop()  # no new connections
    if os.getppid() == parent:  # an orphan (the parent was killed) stops at once
        await _drain_keep_alive(runner, min(config.graceful_timeout, _KEEP_ALIVE_DRAIN_S))
    # Let in-flight requests finish within the graceful timeout, cancel what is
    # left, then stop the samplers and the store client.
    if detector is not None:
        detector.deactivate()  # stopping blocks on purpose: joins, flushes
    try:
        await runner.cleanup()
    finally:
        await state.close()


async def _drain_keep_alive(runner: web.ServerRunner, seconds: float) -> None:
    """Wait up to `seconds` for the clients to close their keep-alive connections.
    While the worker drains, every answer says Connection: close (mab/app.py), so a
    client closes after its next answer instead of writing a request into a
    connection that the worker is about to close, which loses the request (wrk:
    a read error). A connection left idle for the whole time is closed after."""
    server = runner.server
    deadline = asyncio.get_running_loop().time() + seconds
    while server is not None and server.connections:
        if asyncio.get_running_loop().time() >= deadline:
            return
        await asyncio.sleep(0.01)


def run_worker(
    config: Config, sock: socket.socket, store: FeatureStore, slot: int, parent: int
) -> int:
    """The body of a forked child; returns its exit code."""
    _die_with_parent(parent)
    log.configure(config)
    try:
        uvloop.run(_serve(config, sock, store, slot, parent))
    finally:
        log.flush()
    return 0
