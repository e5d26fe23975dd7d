"""The listening socket: bound once by the supervisor, shared by every worker.

Stopping without failing a request needs care: closing a listener resets the
connections in its accept queue, and a client whose handshake completed a moment
before counts that as a failed request. So a stopping worker first attaches a
socket filter that drops new SYNs (clients retry in ~1 s and then find the port
closed), accepts what is queued or mid-handshake for a short while, and only then
closes.
"""

from __future__ import annotations

import ctypes
import socket
import struct

from mab.errors import StartupError

_SO_ATTACH_FILTER = 26  # Linux, asm-generic/socket.h

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


def bind_socket(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """One non-blocking listening socket that every worker accepts on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
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
