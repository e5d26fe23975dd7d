"""The listening sockets: bound once by the supervisor, one per worker.

Each worker accepts on its own SO_REUSEPORT socket, and the kernel spreads new
connections over the sockets by a hash of their addresses. With one shared socket
the worker that wakes first takes a burst of connections: under wrk's 64 the two
workers held 12 and 52 (`ss -tnp`), and the busier one set the tail latency. The
supervisor keeps every socket open, so connections that arrive for a dead worker
wait in its socket's queue for the replacement instead of being refused. Without
SO_REUSEPORT (not Linux or BSD) the workers share one socket.

Stopping without failing a request needs care: closing a listener resets the
connections in its accept queue, and a client whose handshake completed a moment
before counts that as a failed request. So a stopping worker first attaches a
socket filter that drops new SYNs (clients retry in ~1 s and then find the port
closed), accepts what is queued or mid-handshake for a short while, and only then
closes. Its replacement, if any, removes the filter before it accepts.
"""

from __future__ import annotations

import ctypes
import socket
import struct

from mab.errors import StartupError

_SO_ATTACH_FILTER = 26  # Linux, asm-generic/socket.h
_SO_DETACH_FILTER = 27

# Classic BPF, run on each packet for the listener with the TCP header at offset 0:
#   ldb [13]             the TCP flags byte
#   jset #0x02, 0, 1     SYN set? fall through to drop, else skip to accept
#   ret #0               drop
#   ret #0xffffffff      accept the whole packet
_DROP_SYN = [
    (0x30, 0, 0, 13),
    (0x45, 0, 1, 0x02),
    (0x06, 0, 0, 0),
    (0x06, 0, 0, 0xFFFFFFFF),
]


def bind_sockets(host: str, port: int, count: int, backlog: int = 1024) -> list[socket.socket]:
    """`count` non-blocking listening sockets on one port, one per worker, or a
    single shared one when there is one worker or no SO_REUSEPORT."""
    if count < 2 or not hasattr(socket, "SO_REUSEPORT"):
        return [_listen(_bind(host, port, reuse_port=False), backlog)]
    # SO_REUSEPORT would also let a second server bind this port and silently take
    # half its connections: claim the port without it first, so that is an error.
    # Bound only, never listening: no client can be accepted, then reset, by it.
    probe = _bind(host, port, reuse_port=False)
    port = probe.getsockname()[1]  # the port the kernel chose, for port 0
    probe.close()
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(_listen(_bind(host, port, reuse_port=True), backlog))
    except StartupError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def _listen(sock: socket.socket, backlog: int) -> socket.socket:
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def refuse_new_connections(sock: socket.socket) -> bool:
    """Drop new SYNs on `sock`; handshakes under way still complete. False if the
    platform has no socket filters (then the backlog shrinks to 0 instead)."""
    program = b"".join(struct.pack("HBBI", *insn) for insn in _DROP_SYN)
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HxxxxxxQ", len(_DROP_SYN), ctypes.addressof(buffer))
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
        return True
    except OSError:
        sock.listen(0)
        return False


def accept_new_connections(sock: socket.socket) -> None:
    """Undo `refuse_new_connections`, left behind by a worker that stopped alone
    (the backlog is set again when the next worker starts serving)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_DETACH_FILTER, 0)
    except OSError:  # no filter attached, or no socket filters at all
        pass
