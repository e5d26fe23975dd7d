"""The gate refuses a native build older than the sources beside it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import mab

PACKAGE = Path(mab.__file__).resolve().parent


def _import_native(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import mab.native.gate"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_build_of_other_sources_is_refused(tmp_path: Path) -> None:
    """A copy of the package imports as built; once a C++ source changes without a
    rebuild, the import fails and says to rebuild."""
    shutil.copytree(PACKAGE, tmp_path / "mab", ignore=shutil.ignore_patterns("__pycache__"))
    assert _import_native(tmp_path).returncode == 0
    source = tmp_path / "mab" / "native" / "rank.cpp"
    source.write_text(source.read_text() + "\n// an edit the build has not seen\n")
    result = _import_native(tmp_path)
    assert result.returncode != 0
    assert "stale build of mab.native._native" in result.stderr
    assert "make venv" in result.stderr
