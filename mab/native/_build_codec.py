"""cffi build script of `mab.native._codec` (API mode); named in setup.py."""

from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
DEBUG = os.environ.get("MAB_NATIVE_DEBUG") == "1"

ffibuilder = FFI()
ffibuilder.cdef(
    """
    int mab_codec_version(void);
    size_t mab_encode_ranked_bound(size_t ids_json_len, size_t k);
    ptrdiff_t mab_encode_ranked(const char *ids_json, size_t ids_json_len, size_t n,
                                const double *scores, const int64_t *order, size_t k,
                                size_t *spans, char *out, size_t out_cap);
    """
)
ffibuilder.set_source(
    "mab.native._codec",
    '#include "codec.h"',
    sources=[os.path.relpath(HERE / "codec.cpp")],
    include_dirs=[os.path.relpath(HERE)],
    source_extension=".cpp",
    extra_compile_args=["-std=c++17", *(["-O0", "-g", "-UNDEBUG"] if DEBUG else ["-O3"])],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
