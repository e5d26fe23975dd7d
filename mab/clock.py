"""The time the arm table's evidence is stamped and decayed with.

Unix seconds (`time.time`), so a restart continues the decay where it stopped. For
tests, MAB_FAKE_CLOCK=PATH reads the time from a file instead, on every call: a test
moves it by writing the file, and every worker of a server sees the same time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

ENV = "MAB_FAKE_CLOCK"


def _from_file(path: Path) -> Callable[[], float]:
    def now() -> float:
        return float(path.read_text())

    return now


def clock() -> Callable[[], float]:
    """The clock of this process: time.time, or the file named by MAB_FAKE_CLOCK."""
    path = os.environ.get(ENV)
    return time.time if path is None else _from_file(Path(path))
