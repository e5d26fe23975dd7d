from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import ServerProcess, run_server


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """A 2-worker server on the default demo catalog, shared by a test module."""
    with run_server("--max-items", "5000", "--max-body-bytes", "200000") as running:
        yield running
