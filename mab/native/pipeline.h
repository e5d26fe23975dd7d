// The /predict pipeline in one call each: look the ids up (or take their counts),
// add the prior, draw, rank, encode. Each step is the function the others expose
// (mab_index_lookup, mab_beta_sample[_keyed], mab_rank, mab_encode_ranked): in the
// server the Python calls between separate steps cost more than the steps do.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "index.h"
#include "sample.h"
#include "status.h"
#include "table.h"

#ifdef __cplusplus
extern "C" {
#endif

// The version of the C interface, and a digest of the sources it was built from:
// the gate refuses a build whose digest is not that of the sources beside it.
#define MAB_NATIVE_VERSION 4
int mab_native_version(void);
const char *mab_native_stamp(void);

// Make scratch allocations of more than `bytes` fail (tests of MAB_E_NOMEM).
void mab_fail_allocs_over(size_t bytes);

typedef struct {
    size_t unknown;   // ids without counts, scored from the prior
    size_t written;   // bytes of the items array
    double fetch_s;   // lookup (or gathering the counts) and prior
    double sample_s;  // Beta draws
    double encode_s;  // rank and encode
} mab_score_stats;

// How the scores are drawn: with `keyed`, draw i is keyed by (seed, i) as
// mab_beta_sample_keyed draws it; otherwise it comes from `rng`.
typedef struct {
    double prior_alpha;
    double prior_beta;
    mab_rng *rng;
    int keyed;
    uint64_t seed;
} mab_draw;

// The items array of the n ids at `spans` in src (cut to k), into `out`, which needs
// mab_encode_bound(src_len, k) bytes, from the live table's counts decayed to `now`;
// unknown ids are scored from the prior. Table counts are finite and >= 0 by
// construction, so they are not checked again. Errors as the steps give them.
int mab_score_table(const mab_table *table, double now, const mab_draw *draw, const char *src,
                    size_t src_len, const size_t *spans, size_t n, size_t k, char *out,
                    size_t out_cap, mab_score_stats *stats);

// The same from counts aligned with the ids (a remote store's answer), checked:
// MAB_E_PARAM when prior + count is not finite and > 0.
int mab_score_counts(const double *successes, const double *failures, size_t unknown,
                     const mab_draw *draw, const char *src, size_t src_len, const size_t *spans,
                     size_t n, size_t k, char *out, size_t out_cap, mab_score_stats *stats);

#ifdef __cplusplus
}
#endif
