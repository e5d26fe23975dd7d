"""cffi build script of `mab.native._native` (API mode); named in setup.py.

One extension for all native code, one C++ unit per job, so the pipeline can call
the steps directly: parse.cpp, index.cpp, sample.cpp, rank.cpp, encode.cpp, and
pipeline.cpp that chains them. Only `mab/native/gate.py` touches the compiled module.

Build variants come from the environment: MAB_NATIVE_DEBUG=1 compiles with -O0,
assertions and AddressSanitizer / UBSan flags left to CFLAGS.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
DEBUG = os.environ.get("MAB_NATIVE_DEBUG") == "1"
SOURCES = [
    "parse.cpp",
    "index.cpp",
    "table.cpp",
    "sample.cpp",
    "rank.cpp",
    "encode.cpp",
    "pipeline.cpp",
]
HEADERS = [
    "status.h",
    "parse.h",
    "index.h",
    "table.h",
    "sample.h",
    "rank.h",
    "encode.h",
    "pipeline.h",
]


def _stamp() -> str:
    spec = importlib.util.spec_from_file_location("_mab_stamp", HERE / "_stamp.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stamp: str = module.source_stamp(HERE)
    return stamp


# -ffp-contract=off: no fused multiply-adds, so the portable and SIMD paths round
# alike and a seed gives the same draws everywhere. -fno-math-errno lets sqrt and
# division vectorize. No -ffast-math: the algorithm relies on IEEE semantics.
FLAGS = ["-std=c++17", "-ffp-contract=off", "-fno-math-errno"]

CDEF = """
    #define MAB_OK 0
    #define MAB_DECLINED 1
    #define MAB_E_NOMEM -1
    #define MAB_E_RANGE -2
    #define MAB_E_PARAM -3
    #define MAB_E_SPACE -4
    #define MAB_E_REPEAT -5
    #define MAB_E_FULL -6
    #define MAB_RECOVERED 2

    /* parse.h */
    typedef struct {
        size_t n_items;
        ptrdiff_t user_id[2];
        int64_t top_k;
        uint64_t seed;
        int has_seed;
    } mab_predict_request;
    int mab_parse_predict(const char *body, size_t len, size_t max_items, size_t *spans,
                          size_t spans_cap, mab_predict_request *out);
    int mab_find_spans(const char *json, size_t len, size_t n, size_t *spans);

    /* index.h */
    typedef struct mab_index mab_index;
    int mab_index_new(const char *blob, const size_t *offsets, size_t n, uint64_t seed,
                      mab_index **out);
    void mab_index_free(mab_index *index);
    int mab_index_lookup(const mab_index *index, const char *src, size_t src_len,
                         const size_t *spans, size_t count, int64_t absent, int64_t *rows,
                         size_t *unknown);

    /* table.h */
    typedef struct {
        uint64_t magic;
        uint64_t version;
        uint64_t max_arms;
        uint64_t n_base;
        uint64_t n_arms;
        uint64_t over_slots;
        uint64_t over_seed;
        uint64_t blob_cap;
        uint64_t blob_used;
        uint64_t dedupe_cap;
        uint64_t dedupe_slots;
        uint64_t ring_head;
        uint64_t ring_count;
        uint64_t epoch;
        double t0;
        double half_life;
        uint64_t off_counts;
        uint64_t off_updated;
        uint64_t off_new_ids;
        uint64_t off_over;
        uint64_t off_blob;
        uint64_t off_ring;
        uint64_t off_dedupe;
        uint64_t region_bytes;
        uint64_t generation;
        uint64_t segment;
    } mab_table_header;
    typedef struct mab_table mab_table;
    int mab_table_init_lock(void *region);
    int mab_table_attach(void *region, size_t bytes, const mab_index *base, mab_table **out);
    void mab_table_detach(mab_table *table);
    int mab_table_lock(mab_table *table);
    void mab_table_unlock(mab_table *table);
    int mab_table_lookup(const mab_table *table, const char *src, size_t src_len,
                         const size_t *spans, size_t count, int64_t *rows, size_t *unknown);
    int mab_table_apply(mab_table *table, double now, double window, const char *src,
                        size_t src_len, const size_t *spans, size_t n, const double *ds,
                        const double *df, const char *ev_src, size_t ev_len,
                        const size_t *ev_spans, uint8_t *status, size_t *totals);
    int mab_table_set(mab_table *table, const char *src, size_t src_len, const size_t *spans,
                      size_t n, const double *successes, const double *failures,
                      const double *t);
    int mab_table_read(const mab_table *table, double now, int64_t row, double *out);
    double mab_table_scale(const mab_table *table, double now);

    /* sample.h */
    typedef struct { ...; } mab_rng;  /* layout known to C only */
    const char *mab_sampler_isa(void);
    void mab_rng_seed(mab_rng *rng, uint64_t seed);
    int mab_beta_check(const double *a, size_t a_stride, const double *b, size_t b_stride,
                       size_t n, ptrdiff_t *bad);
    void mab_beta_sample(mab_rng *rng, const double *a, size_t a_stride, const double *b,
                         size_t b_stride, size_t n, double *out);
    void mab_beta_sample_keyed(uint64_t seed, uint64_t first, const double *a,
                               size_t a_stride, const double *b, size_t b_stride, size_t n,
                               double *out);

    /* rank.h */
    int mab_rank(const double *scores, size_t n, size_t k, int64_t *order);

    /* encode.h */
    size_t mab_encode_bound(size_t src_len, size_t k);
    int mab_encode_ranked(const char *src, size_t src_len, const size_t *spans, size_t n,
                          const double *scores, const int64_t *order, size_t k, char *out,
                          size_t out_cap, size_t *written);

    /* pipeline.h */
    int mab_native_version(void);
    const char *mab_native_stamp(void);
    void mab_fail_allocs_over(size_t bytes);
    typedef struct {
        size_t unknown;
        size_t written;
        double fetch_s;
        double sample_s;
        double encode_s;
    } mab_score_stats;
    typedef struct {
        double prior_alpha;
        double prior_beta;
        mab_rng *rng;
        int keyed;
        uint64_t seed;
    } mab_draw;
    int mab_score_table(const mab_table *table, double now, const mab_draw *draw,
                        const char *src, size_t src_len, const size_t *spans, size_t n,
                        size_t k, char *out, size_t out_cap, mab_score_stats *stats);
    int mab_score_counts(const double *successes, const double *failures, size_t unknown,
                         const mab_draw *draw, const char *src, size_t src_len,
                         const size_t *spans, size_t n, size_t k, char *out, size_t out_cap,
                         mab_score_stats *stats);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "mab.native._native",
    "".join(f'#include "{header}"\n' for header in HEADERS),
    sources=[os.path.relpath(HERE / source) for source in SOURCES],
    include_dirs=[os.path.relpath(HERE)],
    source_extension=".cpp",
    define_macros=[("MAB_SOURCE_STAMP", f'"{_stamp()}"')],
    extra_compile_args=[*FLAGS, *(["-O0", "-g", "-UNDEBUG"] if DEBUG else ["-O3"])],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
