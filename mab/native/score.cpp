// See score.h.
#include "score.h"

#include <chrono>
#include <new>
#include <vector>

#include "codec.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point &mark) {
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - mark).count();
    mark = now;
    return elapsed;
}

}  // namespace

extern "C" ptrdiff_t mab_score_embedded(const mab_index *index, const double *successes,
                                        const double *failures, double prior_alpha,
                                        double prior_beta, mab_rng *rng, int keyed,
                                        uint64_t seed, const char *body, const size_t *spans,
                                        size_t n, size_t k, char *out, size_t out_cap,
                                        mab_score_stats *stats) {
    if (k > n) return -1;
    // Scratch of the calling thread (the worker's event loop), kept between calls.
    thread_local std::vector<int64_t> rows, order;
    thread_local std::vector<double> alpha, beta, scores;
    try {
        rows.resize(n);
        order.resize(k);
        alpha.resize(n);
        beta.resize(n);
        scores.resize(n);
    } catch (const std::bad_alloc &) {
        return -1;
    }
    auto mark = std::chrono::steady_clock::now();
    stats->unknown = mab_index_lookup(index, body, spans, n, rows.data());
    for (size_t i = 0; i < n; ++i) {
        alpha[i] = prior_alpha + successes[rows[i]];
        beta[i] = prior_beta + failures[rows[i]];
    }
    stats->fetch_s = seconds_since(mark);
    if (mab_beta_check(alpha.data(), 1, beta.data(), 1, n) >= 0) return -1;
    if (keyed) {
        mab_beta_sample_keyed(seed, 0, alpha.data(), 1, beta.data(), 1, n, scores.data());
    } else {
        mab_beta_sample(rng, alpha.data(), 1, beta.data(), 1, n, scores.data());
    }
    stats->sample_s = seconds_since(mark);
    if (mab_rank(scores.data(), n, k, order.data()) != 0) return -1;
    const ptrdiff_t written =
        mab_encode_ranked_spans(body, spans, n, scores.data(), order.data(), k, out, out_cap);
    stats->encode_s = seconds_since(mark);
    return written;
}
