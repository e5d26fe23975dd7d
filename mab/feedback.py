"""POST /feedback: validate -> apply atomically to the shared counts -> make durable
-> acknowledge.

A batch is all or nothing: every event is checked before any is applied, and the
table applies the batch under its lock or refuses it whole (no room for its new
arms). The applied events go to the journal in the same lock hold, so the journal's
order is the table's; the 200 waits for the fsync that covers them (group commit).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

from mab.errors import BadRequest, InvalidJSON, TooManyEvents
from mab.native import backend
from mab.native.api import FloatArray, Spans
from mab.request import as_int
from mab.state.records import Event, FeedbackBatch, encode
from mab.state.table import ArmTable

MAX_ID_BYTES = 1024  # arm ids and event ids, as UTF-8
MAX_COUNT = 2**31
_FIELDS = {"id", "reward", "count", "event_id"}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# A str of n characters is at most 4n bytes of UTF-8: ids this short need no encoding
# to check their length.
_SHORT_ID = MAX_ID_BYTES // 4


def _event(index: int, item: Any) -> Event:
    """One event, checked. The common shape (an object of known fields with a short
    id, a finite reward, an int count) takes a few type checks; anything else goes
    through `_checked_event`, which gives the same Event or names the problem. About
    half the CPU of a /feedback batch was here (bench/RESULTS.md, section 8)."""
    if type(item) is dict and item.keys() <= _FIELDS:
        arm = item.get("id")
        reward = item.get("reward")
        count = item.get("count", 1)
        event_id = item.get("event_id")
        if (
            type(arm) is str
            and 0 < len(arm) <= _SHORT_ID
            and (type(reward) is int or type(reward) is float)
            and 0 <= reward <= 1  # False for NaN
            and type(count) is int
            and 1 <= count <= MAX_COUNT
            and (event_id is None or (type(event_id) is str and 0 < len(event_id) <= _SHORT_ID))
        ):
            return Event(arm, float(reward) * count, (1.0 - float(reward)) * count, event_id)
    return _checked_event(index, item)


def _checked_event(index: int, item: Any) -> Event:
    where = f"events[{index}]"
    if not isinstance(item, dict):
        raise BadRequest(f"{where} must be an object")
    unknown = set(item) - _FIELDS
    if unknown:
        raise BadRequest(f"{where} has unknown field(s) {', '.join(sorted(unknown))}")
    arm = item.get("id")
    if not isinstance(arm, str) or not arm:
        raise BadRequest(f'{where}: "id" is required and must be a non-empty string')
    if len(arm.encode()) > MAX_ID_BYTES:
        raise BadRequest(f'{where}: "id" is over {MAX_ID_BYTES} bytes')
    reward: Any = item.get("reward")
    if not _number(reward) or not math.isfinite(reward) or not 0 <= reward <= 1:
        raise BadRequest(f'{where}: "reward" is required and must be a number in [0, 1]')
    count = as_int(item.get("count", 1))
    if count is None or not 1 <= count <= MAX_COUNT:
        raise BadRequest(f'{where}: "count" must be an integer in [1, {MAX_COUNT}]')
    event_id = item.get("event_id")
    if event_id is not None:
        if not isinstance(event_id, str) or not event_id:
            raise BadRequest(f'{where}: "event_id" must be a non-empty string')
        if len(event_id.encode()) > MAX_ID_BYTES:
            raise BadRequest(f'{where}: "event_id" is over {MAX_ID_BYTES} bytes')
    return Event(arm, float(reward) * count, (1.0 - float(reward)) * count, event_id)


def parse_feedback(body: bytes, max_events: int) -> list[Event]:
    """The events of a /feedback body; any problem is a 400 naming the event (413 for
    too many), before anything is applied."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    if set(data) - {"events"}:
        raise BadRequest(f"unknown field(s) {', '.join(sorted(set(data) - {'events'}))}")
    events = data.get("events")
    if not isinstance(events, list):
        raise BadRequest('"events" is required and must be a list')
    if not events:
        raise BadRequest('"events" must not be empty')
    if len(events) > max_events:
        raise TooManyEvents(f'"events" has {len(events)} events; the limit is {max_events}')
    return [_event(i, item) for i, item in enumerate(events)]


@dataclass(frozen=True, slots=True)
class PackedEvents:
    """Events as the table applies them: arm literals as spans, counts as arrays."""

    src: bytes
    spans: Spans
    successes: FloatArray
    failures: FloatArray
    event_src: bytes
    event_spans: Spans

    @classmethod
    def of(cls, events: list[Event]) -> PackedEvents:
        src = orjson.dumps([event.arm for event in events])
        ids = [(event.event_id or "").encode() for event in events]
        ends = np.cumsum([len(raw) for raw in ids], dtype=np.uint64)
        event_spans = np.empty(2 * len(events), dtype=np.uint64)
        event_spans[1::2] = ends
        event_spans[0::2] = ends - np.array([len(raw) for raw in ids], dtype=np.uint64)
        return cls(
            src=src,
            spans=backend.find_spans(src, len(events)),
            successes=np.array([event.successes for event in events], dtype=np.float64),
            failures=np.array([event.failures for event in events], dtype=np.float64),
            event_src=b"".join(ids),
            event_spans=event_spans,
        )


@dataclass(frozen=True, slots=True)
class Applied:
    applied: int
    new_arms: int
    duplicates: int

    def body(self) -> dict[str, int]:
        return {"applied": self.applied, "new_arms": self.new_arms, "duplicates": self.duplicates}


class Log(Protocol):
    """Where applied batches go to be durable: the journal, or nowhere (no --state-dir)."""

    def follow(self, segment: int) -> None: ...
    def append(self, record: bytes) -> None: ...
    async def commit(self) -> None: ...


def apply_batch(
    table: ArmTable, log: Log, at: float, window: float, events: list[Event]
) -> Applied:
    """Apply one batch under the table's lock, and append what was applied to `log`
    in the same hold; ArmTableFull (nothing applied) when its new arms do not fit."""
    packed = PackedEvents.of(events)
    with table.locked():
        status, (applied, new_arms, duplicates) = table.apply(
            at,
            window,
            packed.src,
            packed.spans,
            packed.successes,
            packed.failures,
            packed.event_src,
            packed.event_spans,
        )
        if applied:
            kept = [e for e, s in zip(events, status, strict=True) if s != 1]
            log.follow(table.segment)
            log.append(encode(FeedbackBatch(at, kept)))
    return Applied(applied, new_arms, duplicates)


class Learner:
    """/feedback of one worker, on the live table."""

    def __init__(
        self,
        table: ArmTable,
        log: Log,
        now: Callable[[], float],
        window: float,
        max_events: int,
        on_applied: Callable[[Applied], None],
    ) -> None:
        self._table, self._log, self._now = table, log, now
        self._window, self._max_events = window, max_events
        self._on_applied = on_applied

    async def __call__(self, body: bytes) -> Applied:
        events = parse_feedback(body, self._max_events)  # validate
        applied = apply_batch(self._table, self._log, self._now(), self._window, events)
        await self._log.commit()  # durable
        self._on_applied(applied)
        return applied  # acknowledge
