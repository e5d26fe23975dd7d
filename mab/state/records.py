"""Feedback batches and their binary form, one checksummed record per batch.

A record, all little-endian:

    mark   4 bytes  RECORD_MARK, so a scan can find where records start
    length u32      length of the body
    crc    u32      zlib.crc32 of the length field and the body
    body:
      at     f64    unix seconds, the clock value the batch was applied with
      count  u32    number of events
      count times:
        successes  f64
        failures   f64
        arm_len    u16
        id_len     u16  (NO_EVENT_ID for an event without an id)
        arm        arm_len bytes, UTF-8
        event_id   id_len bytes, UTF-8 (none for NO_EVENT_ID)

Floats are stored as their raw float64 bits, so a replay adds exactly what was added.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import NamedTuple

RECORD_MARK = b"\xa5MBR"
NO_EVENT_ID = 0xFFFF
MAX_ID_BYTES = 0xFFFE
# Larger than any batch we accept, small enough that a damaged length is not trusted.
MAX_BODY_BYTES = 1 << 30

_FRAME = struct.Struct("<4sII")
_LENGTH = struct.Struct("<I")
_BATCH = struct.Struct("<dI")
_EVENT = struct.Struct("<ddHH")
FRAME_SIZE = _FRAME.size


class Event(NamedTuple):  # a NamedTuple: half the cost of a frozen dataclass to build
    arm: str
    successes: float
    failures: float
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class FeedbackBatch:
    at: float
    events: list[Event]


class FrameError(ValueError):
    """The bytes at an offset are not a whole record with a matching checksum."""


def _id_bytes(text: str, what: str) -> bytes:
    raw = text.encode()
    if len(raw) > MAX_ID_BYTES:
        raise ValueError(f"{what} is {len(raw)} bytes of UTF-8, over {MAX_ID_BYTES}")
    return raw


def encode(batch: FeedbackBatch) -> bytes:
    """The whole record of a batch, ready for one `Journal.append`."""
    body = bytearray(_BATCH.pack(batch.at, len(batch.events)))
    for event in batch.events:
        arm = _id_bytes(event.arm, "arm id")
        if event.event_id is None:
            body += _EVENT.pack(event.successes, event.failures, len(arm), NO_EVENT_ID)
            body += arm
        else:
            event_id = _id_bytes(event.event_id, "event id")
            body += _EVENT.pack(event.successes, event.failures, len(arm), len(event_id))
            body += arm
            body += event_id
    length = _LENGTH.pack(len(body))
    crc = zlib.crc32(body, zlib.crc32(length))
    return RECORD_MARK + length + _LENGTH.pack(crc) + body


def frame_at(data: bytes, offset: int) -> int:
    """The end offset of the record at `offset`; FrameError when its frame or checksum
    does not hold (a torn write, or damage)."""
    if len(data) - offset < FRAME_SIZE:
        raise FrameError(f"{len(data) - offset} bytes left, a record header is {FRAME_SIZE}")
    mark: bytes
    length: int
    crc: int
    mark, length, crc = _FRAME.unpack_from(data, offset)
    if mark != RECORD_MARK:
        raise FrameError("no record mark")
    if length < _BATCH.size or length > MAX_BODY_BYTES:
        raise FrameError(f"implausible record length {length}")
    start = offset + FRAME_SIZE
    end = start + length
    if end > len(data):
        raise FrameError(f"record of {length} bytes runs {end - len(data)} bytes past the end")
    length_field = memoryview(data)[offset + 4 : offset + 8]
    if zlib.crc32(memoryview(data)[start:end], zlib.crc32(length_field)) != crc:
        raise FrameError("checksum mismatch")
    return end


def decode(data: bytes, offset: int = 0) -> tuple[FeedbackBatch, int]:
    """The batch of the record at `offset` and the offset after it. FrameError for a
    bad frame; ValueError for a body that passed its checksum and still does not parse
    (a writer bug, never a torn write)."""
    end = frame_at(data, offset)
    pos = offset + FRAME_SIZE
    at, count = _BATCH.unpack_from(data, pos)
    pos += _BATCH.size
    events = []
    try:
        for _ in range(count):
            successes, failures, arm_len, id_len = _EVENT.unpack_from(data, pos)
            pos += _EVENT.size
            arm = data[pos : pos + arm_len].decode()
            pos += arm_len
            event_id = None
            if id_len != NO_EVENT_ID:
                event_id = data[pos : pos + id_len].decode()
                pos += id_len
            events.append(Event(arm, successes, failures, event_id))
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"record body does not parse: {exc}") from exc
    if pos != end:
        raise ValueError(f"record body is {end - pos} bytes longer than its {count} events")
    return FeedbackBatch(at, events), end
