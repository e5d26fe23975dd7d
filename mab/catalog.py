"""The arm catalog of the embedded store: a CSV `arm_id,successes,failures`.

Loaded once in the parent before the workers fork, so every worker shares the
arrays copy-on-write. Row r of `counts` holds successes and failures of ids[r]
side by side (one cache line for both); row `len(ids)` is a 0 / 0 sentinel that
unknown ids map to, so a lookup never needs a mask.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mab.config import Config
from mab.errors import CatalogError
from mab.store.base import FloatArray

COLUMNS = ("arm_id", "successes", "failures")


@dataclass(frozen=True, slots=True)
class Catalog:
    ids: list[str]
    counts: FloatArray  # (len(ids) + 1, 2): successes, failures; the last row is 0, 0
    source: str  # file path, or "demo" for a generated catalog

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def successes(self) -> FloatArray:
        return self.counts[:, 0]

    @property
    def failures(self) -> FloatArray:
        return self.counts[:, 1]

    @classmethod
    def from_columns(
        cls, ids: list[str], successes: list[float], failures: list[float], source: str
    ) -> Catalog:
        counts = np.zeros((len(ids) + 1, 2), dtype=np.float64)
        counts[:-1, 0] = successes
        counts[:-1, 1] = failures
        return cls(ids=ids, counts=counts, source=source)


def _count(text: str, column: str, path: str, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CatalogError(path, line, f"{column} is not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise CatalogError(path, line, f"{column} must be a finite count >= 0, got {text!r}")
    return value


def load_csv(path: Path | str) -> Catalog:
    """Read and validate a catalog; any problem raises `CatalogError` naming the line."""
    name = str(path)
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise CatalogError(name, 0, f"cannot open: {exc.strerror}") from None
    ids: list[str] = []
    successes: list[float] = []
    failures: list[float] = []
    seen: dict[str, int] = {}
    with handle:
        rows = csv.reader(handle)
        try:
            header = [column.strip() for column in next(rows)]
        except StopIteration:
            raise CatalogError(
                name, 1, "empty file: expected header arm_id,successes,failures"
            ) from None
        missing = [column for column in COLUMNS if column not in header]
        if missing:
            raise CatalogError(
                name, 1, f"missing column(s) {', '.join(missing)} in header {header}"
            )
        at = [header.index(column) for column in COLUMNS]
        width = len(header)
        for row in rows:
            line = rows.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != width:
                raise CatalogError(name, line, f"expected {width} fields, got {len(row)}")
            arm = row[at[0]].strip()
            if not arm:
                raise CatalogError(name, line, "empty arm_id")
            if arm in seen:
                raise CatalogError(
                    name, line, f"duplicate arm_id {arm!r} (first on line {seen[arm]})"
                )
            seen[arm] = line
            ids.append(arm)
            successes.append(_count(row[at[1]], "successes", name, line))
            failures.append(_count(row[at[2]], "failures", name, line))
    return Catalog.from_columns(ids, successes, failures, name)


def demo_catalog(arms: int, seed: int = 42) -> Catalog:
    """A deterministic catalog of click-like counts: ids `item_0000000`, ..."""
    rng = np.random.default_rng(seed)
    trials = rng.integers(500, 50_000, size=arms)
    ctr = rng.beta(2.0, 60.0, size=arms)
    successes = np.floor(trials * ctr)
    ids = [f"item_{i:07d}" for i in range(arms)]
    return Catalog.from_columns(
        ids, successes.tolist(), (trials - successes).astype(np.float64).tolist(), "demo"
    )


def load_catalog(config: Config) -> Catalog:
    if config.catalog is None:
        return demo_catalog(config.demo_arms)
    return load_csv(config.catalog)
