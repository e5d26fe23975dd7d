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


def test_request_lines_are_rendered_as_structlog_renders_them() -> None:
    """The per-request line, rendered by mab.app itself, is byte for byte the line
    structlog's JSON processors write for it: with and without the /predict figures,
    with ids and paths that need escaping, and with the time of the request."""
    import dataclasses
    import io

    from mab import app
    from mab.config import Config

    lines: list[app.RequestLine] = [
        (
            1_700_000_000.25,
            "4f2a-1",
            "POST",
            "/predict",
            200,
            0.0012345,
            (400, 3, 1e-4, 2e-5, 3.5e-5, 0.0),
        ),
        (1_700_000_001.5, 'q"uo\\te', "GET", "/arms/caf\u00e9\n", 404, 0.5, None),
        (1_700_000_002.0, "\u00e9t\u00e9-\U0001f600", "DELETE", "/x?y=1", 405, 12.0, None),
        (1_700_000_003.999999, "id", "POST", "/predict", 503, 0.0, (1, 1, 0.0, 0.0, 0.0, 0.0)),
    ]
    rendered = []
    try:
        for render in (app._log_requests, app._log_through_structlog):
            log.configure(dataclasses.replace(Config(), log_format="json"))
            assert log._batched is not None
            stream = io.BytesIO()
            log._batched._stream = stream  # type: ignore[assignment]
            render(lines)
            log.flush()
            rendered.append(stream.getvalue())
    finally:
        log.configure(Config())  # this process's logs on stdout again
    ours, structlogs = rendered
    assert ours.count(b"\n") == len(lines)
    assert ours == structlogs
