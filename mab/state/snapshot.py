"""The snapshot: the caller's state as of the end of a journal segment, in
`DIR/snapshot.bin`, replaced atomically.

A 28-byte header, little-endian: magic, version u32, covers_segment u32, payload
length u64, and zlib.crc32 of those fields and the payload; then the payload, whose
format is the caller's. A reader sees the old snapshot or the new one, never a mix:
the new one is written to a temporary file, fsynced, renamed over the old one, and
the rename made durable with an fsync of the directory.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path

from mab.errors import JournalCorrupt
from mab.state.journal import ensure_directory, fsync_directory, segment_path, segments

MAGIC = b"mab-snap"
VERSION = 1
NAME = "snapshot.bin"
_FIELDS = struct.Struct("<8sIIQ")  # magic, version, covers_segment, payload length
_CRC = struct.Struct("<I")
HEADER_SIZE = _FIELDS.size + _CRC.size


def write_snapshot(
    directory: str | os.PathLike[str], covers_segment: int, payload: bytes | memoryview
) -> None:
    """Replace the snapshot with `payload`, covering segments <= covers_segment; durable
    when this returns."""
    path = ensure_directory(directory)
    fields = _FIELDS.pack(MAGIC, VERSION, covers_segment, len(payload))
    crc = zlib.crc32(payload, zlib.crc32(fields))
    fd, tmp = tempfile.mkstemp(prefix="snapshot.", suffix=".tmp", dir=path)
    try:
        try:
            view = memoryview(fields + _CRC.pack(crc))
            for part in (view, memoryview(payload)):
                while part:
                    written = os.write(fd, part)
                    if written == 0:
                        raise OSError(f"write(2) wrote nothing of {len(part)} bytes")
                    part = part[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path / NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path)


def _header(path: Path, head: bytes) -> tuple[int, int, int]:
    """covers_segment, payload length and crc from a snapshot's header."""
    if len(head) < HEADER_SIZE:
        raise JournalCorrupt(str(path), 0, f"snapshot header cut short at {len(head)} bytes")
    magic, version, covers, length = _FIELDS.unpack_from(head)
    if magic != MAGIC:
        raise JournalCorrupt(str(path), 0, "not a snapshot (bad magic)")
    if version != VERSION:
        raise JournalCorrupt(str(path), 8, f"snapshot version {version}, expected {VERSION}")
    (crc,) = _CRC.unpack_from(head, _FIELDS.size)
    return covers, length, crc


def read_snapshot(directory: str | os.PathLike[str]) -> tuple[int, bytes] | None:
    """(covers_segment, payload) of the snapshot, or None if there is none yet.
    JournalCorrupt if its header, length or checksum does not hold."""
    path = Path(directory) / NAME
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return None
    with handle:
        head = handle.read(HEADER_SIZE)
        covers, length, crc = _header(path, head)
        payload = handle.read()
    if len(payload) != length:
        raise JournalCorrupt(
            str(path), HEADER_SIZE, f"payload is {len(payload)} bytes, header says {length}"
        )
    if zlib.crc32(payload, zlib.crc32(head[: _FIELDS.size])) != crc:
        raise JournalCorrupt(str(path), HEADER_SIZE, "snapshot checksum mismatch")
    return covers, payload


def prune(directory: str | os.PathLike[str], through_segment: int) -> int:
    """Delete the journal segments <= through_segment, which the snapshot must cover
    (ValueError otherwise: pruning first would lose their records). Returns how many
    were deleted."""
    path = Path(directory) / NAME
    try:
        with path.open("rb") as handle:
            covers, _, _ = _header(path, handle.read(HEADER_SIZE))
    except FileNotFoundError:
        covers = None
    if covers is None or covers < through_segment:
        raise ValueError(
            f"no snapshot covers segment {through_segment} (the snapshot covers {covers})"
        )
    doomed = [n for n in segments(directory) if n <= through_segment]
    for number in doomed:
        segment_path(directory, number).unlink()
    if doomed:
        fsync_directory(directory)
    return len(doomed)
