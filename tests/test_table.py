"""The live arm table in-process, on explicit times: dedupe window and capacity, decay
and its rescaling, snapshots; for the native table and its twin."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

from mab.errors import ArmTableFull
from mab.feedback import PackedEvents
from mab.native import gate, twin
from mab.state.records import Event
from mab.state.table import ArmTable


@pytest.fixture(params=["native", "twin"])
def table_class(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[type]:
    """ArmTable on one backend or the other."""
    import mab.native.scoring
    import mab.state.table

    chosen = gate if request.param == "native" else twin
    monkeypatch.setattr(mab.state.table, "backend", chosen)
    monkeypatch.setattr(mab.native.scoring, "backend", chosen)
    yield ArmTable


def _table(cls: type, *, half_life: float = 0.0, dedupe: int = 100, max_arms: int = 10) -> ArmTable:
    counts = np.array([[5.0, 10.0], [1.0, 1.0], [0.0, 0.0]])
    table: ArmTable = cls(
        ["a", "b"],
        counts,
        max_arms=max_arms,
        dedupe_capacity=dedupe,
        half_life=half_life,
        t0=1000.0,
        updated=1000.0,
    )
    return table


def _apply(
    table: ArmTable, now: float, events: list[Event], window: float = 60.0
) -> tuple[int, ...]:
    packed = PackedEvents.of(events)
    with table.locked():
        _, totals = table.apply(
            now,
            window,
            packed.src,
            packed.spans,
            packed.successes,
            packed.failures,
            packed.event_src,
            packed.event_spans,
        )
    return totals


def test_event_ids_are_forgotten_after_the_window(table_class: type) -> None:
    """An event id is a duplicate within the window after it was applied, and applies
    again once the window has passed."""
    table = _table(table_class)
    event = [Event("a", 1.0, 0.0, "e1")]
    assert _apply(table, 1000.0, event) == (1, 0, 0)
    assert _apply(table, 1059.0, event) == (0, 0, 1)
    assert _apply(table, 1061.0, event) == (1, 0, 0)
    assert table.arm("a", 1061.0).successes == 7.0  # type: ignore[union-attr]


def test_dedupe_memory_is_bounded_oldest_first(table_class: type) -> None:
    """With room for 3 event ids, a 4th pushes out the oldest: memory stays bounded, and
    the newer ones are still caught."""
    table = _table(table_class, dedupe=3)
    for n in range(4):
        _apply(table, 1000.0 + n, [Event("a", 1.0, 0.0, f"e{n}")])
    assert _apply(table, 1005.0, [Event("a", 1.0, 0.0, "e0")]) == (1, 0, 0)  # forgotten
    assert _apply(table, 1005.0, [Event("a", 1.0, 0.0, "e3")]) == (0, 0, 1)


def test_decay_follows_the_half_life_and_survives_rescaling(table_class: type) -> None:
    """Evidence halves each half-life; 100 half-lives later (past the rescale at 64) the
    stored counts are rescaled and reads still give the decayed values."""
    table = _table(table_class, half_life=10.0)
    assert table.arm("a", 1010.0).successes == pytest.approx(2.5)  # type: ignore[union-attr]
    _apply(table, 2000.0, [Event("a", 8.0, 0.0, None)])  # 99 half-lives in: a rescale
    counts = table.arm("a", 2010.0)
    assert counts is not None
    assert counts.successes == pytest.approx(4.0 + 5.0 * math.exp2(-101))
    assert counts.failures == pytest.approx(10.0 * math.exp2(-101))
    assert counts.updated_at == 2000.0


def test_export_and_restore_keep_every_bit(table_class: type) -> None:
    """A snapshot restores the same arms, counts, times and remembered event ids."""
    table = _table(table_class, half_life=5.0)
    _apply(table, 1003.0, [Event("a", 1.5, 0.5, "x"), Event("new", 0.25, 0.75, "y")])
    with table.locked():
        payload = table.export(extra={"catalog": "t"})
    restored = table_class.restore(
        payload, max_arms=10, dedupe_capacity=100, half_life=5.0, now=1004.0
    )
    assert restored.ids() == ["a", "b", "new"]
    for name in ("a", "b", "new"):
        assert restored.arm(name, 1004.0) == table.arm(name, 1004.0)
    assert ArmTable.meta_of(payload)["catalog"] == "t"
    assert _apply(restored, 1004.0, [Event("a", 1.0, 0.0, "y")]) == (0, 0, 1)


def test_a_full_table_refuses_the_whole_batch(table_class: type) -> None:
    """Past max_arms a batch with a new id changes nothing; one new id counted once."""
    table = _table(table_class, max_arms=3)
    with pytest.raises(ArmTableFull):
        _apply(table, 1000.0, [Event("a", 1.0, 0.0, None), Event("n1", 1, 0), Event("n2", 1, 0)])
    assert table.arm("a", 1000.0).successes == 5.0  # type: ignore[union-attr]
    assert _apply(table, 1000.0, [Event("n1", 1, 0), Event("n1", 1, 0)]) == (2, 1, 0)
    assert len(table) == 3
