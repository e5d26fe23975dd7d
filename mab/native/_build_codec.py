"""cffi build script of `mab.native._codec` (API mode); named in setup.py.

The HTTP body codec: the /predict request fast path and id index (request.cpp) and
the response encoder (codec.cpp).
"""

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
    ptrdiff_t mab_encode_ranked_spans(const char *src, const size_t *spans, size_t n,
                                      const double *scores, const int64_t *order, size_t k,
                                      char *out, size_t out_cap);

    int mab_rank(const double *scores, size_t n, size_t k, int64_t *order);

    typedef struct {
        size_t n_items;
        ptrdiff_t user_id[2];
        int64_t top_k;
        uint64_t seed;
        int has_seed;
    } mab_predict_request;
    int mab_parse_predict(const char *body, size_t len, size_t max_items, size_t *spans,
                          size_t spans_cap, mab_predict_request *out);

    typedef struct mab_index mab_index;
    mab_index *mab_index_new(const char *blob, const size_t *offsets, size_t n, uint64_t seed);
    void mab_index_free(mab_index *index);
    size_t mab_index_lookup(const mab_index *index, const char *src, const size_t *spans,
                            size_t count, int64_t *rows);
    """
)
ffibuilder.set_source(
    "mab.native._codec",
    '#include "codec.h"\n#include "request.h"',
    sources=[os.path.relpath(HERE / "codec.cpp"), os.path.relpath(HERE / "request.cpp")],
    include_dirs=[os.path.relpath(HERE)],
    source_extension=".cpp",
    extra_compile_args=["-std=c++17", *(["-O0", "-g", "-UNDEBUG"] if DEBUG else ["-O3"])],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
