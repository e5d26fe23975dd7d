"""The digest of the native sources: compiled into the extension at build time and
checked by the gate at import, so a build older than its sources is refused.

Loaded by path from `_build.py` (the package cannot be imported before it is built),
so it imports nothing of mab's own.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SOURCE_SUFFIXES = (".cpp", ".h")


def source_stamp(directory: Path) -> str:
    digest = hashlib.sha256()
    # Not cffi's generated _native.cpp: it does not exist yet when the build stamps.
    sources = (p for p in directory.iterdir() if p.suffix in SOURCE_SUFFIXES)
    for path in sorted(p for p in sources if not p.name.startswith("_")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
