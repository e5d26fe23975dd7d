// The /predict pipeline of the embedded store in one call: look the ids up, add the
// prior, draw, rank, encode. Each step is the function the general path calls from
// Python (mab_index_lookup, mab_beta_sample[_keyed], mab_rank,
// mab_encode_ranked_spans), so both paths give the same bytes; this one only skips
// the ~25 Python-level calls between them, which cost more than the steps.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "request.h"
#include "sampler.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    size_t unknown;   // ids not in the index, scored from the prior
    double fetch_s;   // lookup and prior
    double sample_s;  // Beta draws
    double encode_s;  // rank and encode
} mab_score_stats;

// Writes the ranked `[{"id", "score"}, ...]` array of the n ids at `spans` in `body`
// (cut to k) into `out`; returns its length, or -1 when k > n, `out` is too small
// (it needs mab_encode_ranked_bound(body_len, k)) or memory runs out.
// `successes` and `failures` have a row per index id plus the unknown row (0, 0).
// With `keyed`, draw i is keyed by (seed, i) as mab_beta_sample_keyed draws it;
// otherwise it comes from `rng`.
ptrdiff_t mab_score_embedded(const mab_index *index, const double *successes,
                             const double *failures, double prior_alpha, double prior_beta,
                             mab_rng *rng, int keyed, uint64_t seed, const char *body,
                             const size_t *spans, size_t n, size_t k, char *out, size_t out_cap,
                             mab_score_stats *stats);

#ifdef __cplusplus
}
#endif
