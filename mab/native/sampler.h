// Thompson sampling's hot core: exact Beta(a, b) draws over arrays.
//
// Beta(a, b) = X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b): Marsaglia-Tsang for
// shape >= 1, the U^(1/a) boost for shape < 1 (in log space, so tiny shapes do not
// underflow to 0/0). Uniforms and normals come from xoshiro256++ (53-bit doubles)
// and a 256-layer ziggurat.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Bump with any change of the C interface; the Python wrapper refuses a stale build.
#define MAB_SAMPLER_VERSION 2
int mab_sampler_version(void);

// One PRNG stream: four interleaved xoshiro256++ generators, so the CPU (and SIMD
// lanes) can run them in parallel, read through a buffer of their output words.
// Not thread-safe: one per thread.
#define MAB_RNG_LANES 4
#define MAB_RNG_BUFFER 256
typedef struct {
    uint64_t s[4][MAB_RNG_LANES];  // s[word][lane]
    uint64_t buffer[MAB_RNG_BUFFER];
    uint32_t next;  // index of the next unread word in buffer
} mab_rng;

// Seeds the stream from one 64-bit seed (expanded with splitmix64).
void mab_rng_seed(mab_rng *rng, uint64_t seed);

// Index of the first invalid parameter (<= 0, NaN or inf) in a[0..n) then
// b[0..n), as i or n + i; -1 when all are valid. A stride of 0 repeats a[0].
ptrdiff_t mab_beta_check(const double *a, size_t a_stride, const double *b, size_t b_stride,
                         size_t n);

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

// Which code path runs on this CPU: "avx2" or "portable" (for logs and benchmarks).
const char *mab_sampler_isa(void);

#ifdef __cplusplus
}
#endif
