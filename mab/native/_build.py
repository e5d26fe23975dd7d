"""cffi build script of `mab.native._native` (API mode); named in setup.py.

One extension for all native code, so the fused /predict path (score.cpp) can call
the sampler, the index and the encoder directly:
- sampler.cpp: Beta draws (wrapped by sampler.py);
- request.cpp, codec.cpp: the request fast path, id index, rank and response
  encoder (wrapped by codec.py);
- score.cpp: the embedded store's pipeline in one call (wrapped by scoring.py).

Build variants come from the environment: MAB_NATIVE_DEBUG=1 compiles with -O0,
assertions and AddressSanitizer / UBSan flags left to CFLAGS.
"""

from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
DEBUG = os.environ.get("MAB_NATIVE_DEBUG") == "1"
SOURCES = ["sampler.cpp", "request.cpp", "codec.cpp", "score.cpp"]

# -ffp-contract=off: no fused multiply-adds, so the portable and SIMD paths round
# alike and a seed gives the same draws everywhere. -fno-math-errno lets sqrt and
# division vectorize. No -ffast-math: the algorithm relies on IEEE semantics.
FLAGS = ["-std=c++17", "-ffp-contract=off", "-fno-math-errno"]

ffibuilder = FFI()
ffibuilder.cdef(
    """
    /* sampler.h */
    typedef struct { ...; } mab_rng;  /* layout known to C only */
    int mab_sampler_version(void);
    const char *mab_sampler_isa(void);
    void mab_rng_seed(mab_rng *rng, uint64_t seed);
    ptrdiff_t mab_beta_check(const double *a, size_t a_stride, const double *b,
                             size_t b_stride, size_t n);
    void mab_beta_sample(mab_rng *rng, const double *a, size_t a_stride, const double *b,
                         size_t b_stride, size_t n, double *out);
    void mab_beta_sample_keyed(uint64_t seed, uint64_t first, const double *a,
                               size_t a_stride, const double *b, size_t b_stride, size_t n,
                               double *out);

    /* codec.h, request.h */
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

    /* score.h */
    typedef struct {
        size_t unknown;
        double fetch_s;
        double sample_s;
        double encode_s;
    } mab_score_stats;
    ptrdiff_t mab_score_embedded(const mab_index *index, const double *successes,
                                 const double *failures, double prior_alpha, double prior_beta,
                                 mab_rng *rng, int keyed, uint64_t seed, const char *body,
                                 const size_t *spans, size_t n, size_t k, char *out,
                                 size_t out_cap, mab_score_stats *stats);
    """
)
ffibuilder.set_source(
    "mab.native._native",
    '#include "sampler.h"\n#include "codec.h"\n#include "request.h"\n#include "score.h"',
    sources=[os.path.relpath(HERE / source) for source in SOURCES],
    include_dirs=[os.path.relpath(HERE)],
    source_extension=".cpp",
    extra_compile_args=[*FLAGS, *(["-O0", "-g", "-UNDEBUG"] if DEBUG else ["-O3"])],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
