"""log.Deferred: request lines are handled in batches at the end of a loop iteration."""

from __future__ import annotations

import asyncio

from mab import log


def test_deferred_outside_a_loop_is_handled_at_once() -> None:
    """With no running loop, each item goes to the handler as it is added."""
    batches: list[list[int]] = []
    deferred = log.Deferred(batches.append)
    deferred.add(1)
    deferred.add(2)
    assert batches == [[1], [2]]


def test_deferred_in_a_loop_hands_one_iteration_over_together() -> None:
    """Items of one loop iteration reach the handler as one batch after it; flush
    hands over the rest and never an empty batch."""
    batches: list[list[int]] = []

    async def main() -> list[list[int]]:
        deferred = log.Deferred(batches.append)
        deferred.add(1)
        deferred.add(2)
        assert batches == []  # not before the iteration ends
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        deferred.add(3)
        deferred.flush()  # what is left, as at shutdown
        deferred.flush()  # nothing left: no empty batch
        await asyncio.sleep(0)
        return batches

    assert asyncio.run(main()) == [[1, 2], [3]]


def test_logged_at_sets_the_timestamp() -> None:
    """An event's LOGGED_AT becomes its timestamp and leaves the event; without it, now."""
    stamp = log.IsoTimeStamper()
    event = stamp(None, "info", {"event": "x", log.LOGGED_AT: 1_700_000_000.25})
    assert event == {"event": "x", "timestamp": "2023-11-14T22:13:20.250000Z"}
    now = stamp(None, "info", {"event": "y"})
    assert now["timestamp"].startswith("20") and log.LOGGED_AT not in now
