"""Native code: the /predict pipeline and the Beta sampler in C++ through cffi, or
their pure numpy / Python twin when MAB_NO_NATIVE=1 (both give the same bytes for
seeded requests; the tests hold one to the other).

`backend` is the one chosen, for this process, at import.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, cast

from mab.native.api import MAX_SEED, Backend

NO_NATIVE = os.environ.get("MAB_NO_NATIVE") == "1"
backend = cast(
    Backend, importlib.import_module("mab.native.twin" if NO_NATIVE else "mab.native.gate")
)
ISA = backend.ISA

if TYPE_CHECKING:  # mypy holds both modules to the one surface
    from mab.native import gate, twin

    _gate: Backend = gate
    _twin: Backend = twin

from mab.native.sampler import BetaSampler, sample_keyed  # noqa: E402  (needs backend)

__all__ = ["ISA", "MAX_SEED", "NO_NATIVE", "BetaSampler", "backend", "sample_keyed"]
