"""The fast path of /feedback's event check gives what the full check gives: the
same Event, or the same error naming the event."""

from __future__ import annotations

import itertools
from typing import Any

from mab import feedback

_MISSING = object()
ARMS = ["a", "", None, 1, "a" * 256, "a" * 300, "é" * 256, "😀" * 256, "😀" * 257]
REWARDS = [0, 1, 0.5, 1.0, -0.0, True, None, "1", 2, -1, float("nan"), float("inf"), 0.25]
COUNTS = [_MISSING, 1, 2, 0, -1, 2.0, 2.5, True, None, 2**31, 2**31 + 1, "1"]
EVENT_IDS = [_MISSING, None, "e", "", 5, "e" * 256, "😀" * 257]


def _outcome(check: Any, item: Any) -> str:
    try:
        return repr(check(7, item))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def test_the_fast_path_agrees_with_the_full_check() -> None:
    """Every combination of id, reward, count and event_id, valid or not."""
    taken = 0
    for arm, reward, count, event_id in itertools.product(ARMS, REWARDS, COUNTS, EVENT_IDS):
        item: dict[str, Any] = {"id": arm, "reward": reward}
        if count is not _MISSING:
            item["count"] = count
        if event_id is not _MISSING:
            item["event_id"] = event_id
        full = _outcome(feedback._checked_event, item)
        assert _outcome(feedback._event, item) == full, item
        taken += not full.startswith("BadRequest")
    assert taken > 100  # the valid ones were tried too


def test_shapes_the_fast_path_leaves_alone() -> None:
    """Not an object, unknown fields, a missing id: the full check's message."""
    for item in ([], "x", {"id": "a", "reward": 1, "x": 1}, {"reward": 1}):
        assert _outcome(feedback._event, item) == _outcome(feedback._checked_event, item)
        assert _outcome(feedback._event, item).startswith("BadRequest: events[7]")
