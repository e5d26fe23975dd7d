"""The parent process: bind the sockets, load the store, fork workers, replace the dead.

The parent loads the catalog once and forks, so the workers share it copy-on-write.
It handles only signals: SIGCHLD replaces a dead worker (with a back-off if workers
die right after they start), SIGTERM / SIGINT stop the workers gracefully, SIGHUP
reloads the catalog: the parent loads and validates the new one, forks a new set of
workers on it, and retires the old set, which finish what they have in flight.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from mab import log, metrics
from mab.config import Config
from mab.errors import StartupError
from mab.listener import bind_sockets
from mab.store import FeatureStore, build_store
from mab.worker import RETIRE

_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}

_FAST_DEATH_S = 1.0  # a worker dying sooner than this after its start is crash-looping
_KILL_GRACE_S = 5.0  # after the graceful timeout, how long before SIGKILL


@dataclass(slots=True)
class _Slot:
    index: int
    pid: int = 0
    started: float = 0.0
    fast_deaths: int = 0
    restart_at: float = 0.0


class Supervisor:
    def __init__(self, config: Config, sockets: list[socket.socket], store: FeatureStore) -> None:
        self.config = config
        self.sockets = sockets
        self.store = store
        self.slots = [_Slot(i) for i in range(config.workers)]
        self.log: Any = structlog.get_logger("mab.supervisor")
        self.restarts = metrics.worker_restarts()
        self.catalog = metrics.CatalogMetrics()
        self.catalog.loaded(store)
        self.retiring: set[int] = set()  # workers of an older store, finishing

    def _spawn(self, slot: _Slot) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, set())
                from mab.worker import run_worker

                sock = self.sockets[slot.index % len(self.sockets)]
                for other in self.sockets:  # so closing its own really closes it
                    if other is not sock:
                        other.close()
                code = run_worker(self.config, sock, self.store, slot.index, parent)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                os._exit(code)
        slot.pid, slot.started = pid, time.monotonic()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            metrics.mark_process_dead(pid)
            if pid in self.retiring:
                self.retiring.discard(pid)
                self.log.info("retired worker exited", pid=pid)
                continue
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            lived = time.monotonic() - slot.started
            slot.pid = 0
            slot.fast_deaths = slot.fast_deaths + 1 if lived < _FAST_DEATH_S else 0
            delay = min(0.1 * 2 ** (slot.fast_deaths - 1), 5.0) if slot.fast_deaths else 0.0
            slot.restart_at = time.monotonic() + delay
            self.log.warning(
                "worker exited",
                worker=slot.index,
                pid=pid,
                exit_code=os.waitstatus_to_exitcode(status),
                lived_s=round(lived, 3),
                restart_in_s=delay,
            )

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.pid == 0 and now >= slot.restart_at:
                self._spawn(slot)
                self.restarts.inc()
                self.log.info("worker restarted", worker=slot.index, pid=slot.pid)

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        # Everything loaded so far (the catalog's ids and index dict, the libraries)
        # lives as long as the process: out of the collector's reach, a worker's full
        # collections neither walk it (a pause) nor touch its pages (copy-on-write).
        gc.freeze()
        for slot in self.slots:
            self._spawn(slot)
        self.log.info("workers started", pids=[s.pid for s in self.slots])
        while True:
            info = signal.sigtimedwait(_SIGNALS, 0.25)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                self.log.info("stopping", signal=signal.Signals(info.si_signo).name)
                break
            if info is not None and info.si_signo == signal.SIGHUP:
                self._reload()
            self._reap()
            self._respawn_due()
            self.store.maintain()  # compaction, when due
        return self._stop()

    def _reload(self) -> None:
        """SIGHUP: a new store from the changed catalog, a new set of workers on it,
        and the old set retired. A catalog that fails to load changes nothing."""
        started = time.perf_counter()
        try:
            store = self.store.reloaded(self.config)
        except StartupError as exc:
            self.catalog.reload("rejected")
            self.log.error("reload rejected: the old catalog keeps serving", error=str(exc))
            return
        if store is None:
            self.catalog.reload("unchanged")
            self.log.info("reload: the catalog is unchanged, nothing to do")
            return
        old = [slot.pid for slot in self.slots if slot.pid]
        self.store = store
        for slot in self.slots:  # the new set first: the sockets never lack an acceptor
            if slot.pid:
                self._spawn(slot)
        for pid in old:
            os.kill(pid, RETIRE)
        self.retiring.update(old)
        self.catalog.loaded(store)
        self.catalog.reload("loaded")
        self.log.info(
            "catalog reloaded",
            store=store.name,
            load_s=round(time.perf_counter() - started, 3),
            workers=[slot.pid for slot in self.slots],
            retiring=old,
            **store.health().detail,
        )

    def _stop(self) -> int:
        for sock in self.sockets:  # the workers hold their own copies until they stop accepting
            sock.close()
        running = {slot.pid for slot in self.slots if slot.pid} | self.retiring
        for pid in running:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.config.graceful_timeout + _KILL_GRACE_S
        while running and time.monotonic() < deadline:
            signal.sigtimedwait({signal.SIGCHLD}, 0.1)
            running = {pid for pid in running if os.waitpid(pid, os.WNOHANG)[0] != pid}
        for pid in running:
            self.log.warning("worker killed after graceful timeout", pid=pid)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self.store.stopped()  # no writer is left: the last compaction
        self.log.info("stopped")
        return 0


def serve(config: Config) -> int:
    log.configure(config)
    logger: Any = structlog.get_logger("mab.supervisor")
    if config.metrics_dir is not None:
        metrics.use_directory(config.metrics_dir)
        return _serve(config, logger)
    with tempfile.TemporaryDirectory(prefix="mab-metrics-") as scratch:
        metrics.use_directory(Path(scratch))
        return _serve(config, logger)


def _serve(config: Config, logger: Any) -> int:
    started = time.perf_counter()
    store = build_store(config)
    health = store.health()
    from mab.native import ISA, backend

    logger.info(
        "store loaded",
        store=store.name,
        pipeline=backend.NAME,  # "native", or "twin" with MAB_NO_NATIVE=1
        isa=ISA,
        load_s=round(time.perf_counter() - started, 3),
        **health.detail,
    )
    sockets = bind_sockets(config.host, config.port, config.workers)
    host, port = sockets[0].getsockname()[:2]
    logger.info(
        "listening",
        host=host,
        port=port,
        workers=config.workers,
        sockets=len(sockets),
        config=_public(config),
    )
    return Supervisor(config, sockets, store).run()


def _public(config: Config) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
