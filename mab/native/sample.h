// Thompson sampling's hot core: exact Beta(a, b) draws over arrays.
//
// Beta(a, b) = X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b): Marsaglia-Tsang for
// shape >= 1, the U^(1/a) boost for shape < 1 (in log space, so tiny shapes do not
// underflow to 0/0). Uniforms and normals come from xoshiro256++ (52-bit
// mantissas) and a 256-layer ziggurat.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

// One PRNG stream. Not thread-safe: one per thread. Item k of the stream takes
// four words (X's normal and uniform, Y's normal and uniform) from MAB_RNG_LANES
// interleaved xoshiro256++ generators, run in SIMD lanes: one step of all lanes
// gives one of those words for a group of MAB_RNG_LANES items. The few draws
// that need more words (rejections, shapes < 1) read a separate xoshiro256++
// stream, in item order. So the draws do not depend on how the items are split
// into calls: a group a call leaves partly unused is held for the next call.
#define MAB_RNG_LANES 8
typedef struct {
    uint64_t s[4][MAB_RNG_LANES];     // the lanes' states: s[word][lane]
    uint64_t fix[4];                  // the state of the stream for the rare paths
    uint64_t held[4][MAB_RNG_LANES];  // the words of the last group: held[role][lane]
    uint32_t held_used;               // its items already drawn (MAB_RNG_LANES: none left)
} mab_rng;

// Seeds the stream from one 64-bit seed (expanded with splitmix64).
void mab_rng_seed(mab_rng *rng, uint64_t seed);

// MAB_OK when every parameter is finite and > 0; else MAB_E_PARAM with *bad the
// index of the first invalid one in a[0..n) then b[0..n), as i or n + i. A stride
// of 0 repeats a[0].
int mab_beta_check(const double *a, size_t a_stride, const double *b, size_t b_stride, size_t n,
                   ptrdiff_t *bad);

// out[i] ~ Beta(a[i * a_stride], b[i * b_stride]) for i < n, from `rng`.
// Parameters must have passed mab_beta_check.
void mab_beta_sample(mab_rng *rng, const double *a, size_t a_stride, const double *b,
                     size_t b_stride, size_t n, double *out);

// Like mab_beta_sample, but draw i uses its own splitmix64 stream keyed by
// (seed, first + i):
// the result for an item depends only on the seed and its position, not on how
// the array is split into calls or which thread makes them.
void mab_beta_sample_keyed(uint64_t seed, uint64_t first, const double *a, size_t a_stride,
                           const double *b, size_t b_stride, size_t n, double *out);

// Which code path runs on this CPU: "avx512", "avx2" or "portable" (for logs and
// benchmarks). All give the same draws.
const char *mab_sampler_isa(void);

#ifdef __cplusplus
}
#endif
