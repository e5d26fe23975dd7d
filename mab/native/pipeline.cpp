// See pipeline.h.
#include "pipeline.h"

#include <chrono>
#include <new>
#include <vector>

#include "encode.h"
#include "rank.h"
#include "scratch.h"
#include "spans.h"

#ifndef MAB_SOURCE_STAMP
#define MAB_SOURCE_STAMP "unstamped"
#endif

size_t mab::fail_allocs_over = static_cast<size_t>(-1);

namespace {

double seconds_since(std::chrono::steady_clock::time_point &mark) {
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - mark).count();
    mark = now;
    return elapsed;
}

// Scratch of the calling thread (an event loop or a sampler actor), kept between calls.
struct Scratch {
    std::vector<int64_t> rows, order;
    std::vector<double> alpha, beta, scores;
};

// Draw, rank and encode: the steps after the counts are known. `mark` is when the
// counts were; the stats get the times from there.
int draw_rank_encode(Scratch &s, const mab_draw *draw, const char *src, const size_t *spans,
                     size_t n, size_t k, char *out, size_t out_cap, mab_score_stats *stats,
                     std::chrono::steady_clock::time_point mark) {
    if (draw->keyed) {
        mab_beta_sample_keyed(draw->seed, 0, s.alpha.data(), 1, s.beta.data(), 1, n,
                              s.scores.data());
    } else {
        mab_beta_sample(draw->rng, s.alpha.data(), 1, s.beta.data(), 1, n, s.scores.data());
    }
    stats->sample_s = seconds_since(mark);
    const int ranked = mab_rank(s.scores.data(), n, k, s.order.data());
    if (ranked != MAB_OK) return ranked;
    const int encoded = mab::encode_ranked(src, spans, n, s.scores.data(), s.order.data(), k,
                                           out, out_cap, &stats->written);
    stats->encode_s = seconds_since(mark);
    return encoded;
}

Scratch &scratch() {
    thread_local Scratch s;
    return s;
}

int reserve(Scratch &s, size_t n, size_t k) {
    try {
        mab::grow(s.rows, n);
        mab::grow(s.order, k);
        mab::grow(s.alpha, n);
        mab::grow(s.beta, n);
        mab::grow(s.scores, n);
    } catch (const std::bad_alloc &) {
        return MAB_E_NOMEM;
    }
    return MAB_OK;
}

}  // namespace

extern "C" int mab_native_version(void) { return MAB_NATIVE_VERSION; }

extern "C" const char *mab_native_stamp(void) { return MAB_SOURCE_STAMP; }

extern "C" void mab_fail_allocs_over(size_t bytes) { mab::fail_allocs_over = bytes; }

extern "C" int mab_score_table(const mab_table *table, double now, const mab_draw *draw,
                               const char *src, size_t src_len, const size_t *spans, size_t n,
                               size_t k, char *out, size_t out_cap, mab_score_stats *stats) {
    if (k > n) return MAB_E_RANGE;
    Scratch &s = scratch();
    if (const int reserved = reserve(s, n, k); reserved != MAB_OK) return reserved;
    auto mark = std::chrono::steady_clock::now();
    const int found =
        mab_table_lookup(table, src, src_len, spans, n, s.rows.data(), &stats->unknown);
    if (found != MAB_OK) return found;
    mab::table_fill(table, now, s.rows.data(), n, draw->prior_alpha, draw->prior_beta,
                    s.alpha.data(), s.beta.data());
    stats->fetch_s = seconds_since(mark);
    return draw_rank_encode(s, draw, src, spans, n, k, out, out_cap, stats, mark);
}

extern "C" int mab_score_counts(const double *successes, const double *failures, size_t unknown,
                                const mab_draw *draw, const char *src, size_t src_len,
                                const size_t *spans, size_t n, size_t k, char *out,
                                size_t out_cap, mab_score_stats *stats) {
    if (k > n) return MAB_E_RANGE;
    if (!mab::spans_in_range(spans, n, src_len)) return MAB_E_RANGE;
    Scratch &s = scratch();
    if (const int reserved = reserve(s, n, k); reserved != MAB_OK) return reserved;
    auto mark = std::chrono::steady_clock::now();
    for (size_t i = 0; i < n; ++i) {
        s.alpha[i] = draw->prior_alpha + successes[i];
        s.beta[i] = draw->prior_beta + failures[i];
    }
    ptrdiff_t bad;
    if (const int checked = mab_beta_check(s.alpha.data(), 1, s.beta.data(), 1, n, &bad);
        checked != MAB_OK) {
        return checked;
    }
    stats->unknown = unknown;
    stats->fetch_s = seconds_since(mark);
    return draw_rank_encode(s, draw, src, spans, n, k, out, out_cap, stats, mark);
}
