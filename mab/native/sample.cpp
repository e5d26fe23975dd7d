// See sample.h. Built with -ffp-contract=off and without -ffast-math, so every
// code path (portable, AVX2, AVX-512) rounds identically and a seed gives the same
// numbers on every machine.
//
// The passes over a block of up to 256 items:
//   1. words:      4 fresh words per item, in bulk (normal and uniform of X, of Y);
//   2. candidates: per gamma, the first Marsaglia-Tsang candidate from its two words
//                  and an "ok" flag: SIMD, no branches; ~98.5% of gammas end here
//                  (1.5% miss the ziggurat's fast path, 0.002% the squeeze);
//   3. fix-up:     the rest, scalar, in item order, reading a second stream;
//   4. ratio:      X / (X + Y), SIMD.
// Step 2 has one kernel per ISA; each does the operations of gamma_candidate in the
// same order, so all give the same bits (exact int -> double conversions, no FMA).
// The AVX2 and AVX-512 builds overlap the long dependency chains (Newton steps,
// gathers) of many gammas instead of filling the out-of-order window with one
// (bench/RESULTS.md, section 3).
#include "sample.h"

#include <cmath>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <cstdlib>
#include <cstring>

namespace {

// The parts, in the order they build on each other (each is included here, in
// this anonymous namespace, and nowhere else).
#include "sample_rng.h"
#include "sample_draws.h"
#include "sample_kernels.h"

// ---------------------------------------------------------------- arrays

// One block of at most kBlock draws.
template <class Source>
inline __attribute__((always_inline)) void beta_block(Source &src, CandidateFn candidates,
                                                      uint64_t first, const double *a,
                                                      size_t a_stride, const double *b,
                                                      size_t b_stride, size_t n, double *out) {
    double fill_a[kBlock], fill_b[kBlock];  // a scalar parameter, repeated
    uint64_t words[kRoles][kBlock];         // X's normal and uniform, Y's normal and uniform
    double gx[kBlock], gy[kBlock];
    uint64_t bad_x[kMaskWords] = {}, bad_y[kMaskWords] = {};
    const double *sa = a, *sb = b;
    if (a_stride == 0) {
        for (size_t i = 0; i < n; ++i) fill_a[i] = a[0];
        sa = fill_a;
    }
    if (b_stride == 0) {
        for (size_t i = 0; i < n; ++i) fill_b[i] = b[0];
        sb = fill_b;
    }
    src.fill(first, n, BlockWords{{words[0], words[1], words[2], words[3]}});
    candidates(sa, words[0], words[1], n, gx, bad_x);
    candidates(sb, words[2], words[3], n, gy, bad_y);

    // Fix-up, in item order, X before Y: the order in which they read the stream.
    // Shapes < 1 (rare: counts plus a prior of 1 are >= 1) leave the item's four
    // words unused and draw in log space; their result goes to gx, marked in `small`.
    uint64_t small[kMaskWords] = {};
    bool any_small = false;
    for (size_t m = 0; m * 64 < n; ++m) {
        for (uint64_t bits = bad_x[m] | bad_y[m]; bits != 0; bits &= bits - 1) {
            const size_t i = m * 64 + static_cast<size_t>(__builtin_ctzll(bits));
            const uint64_t bit = 1ULL << (i % 64);
            auto &rng = src.fix(first + i);
            if (__builtin_expect(sa[i] >= 1.0 && sb[i] >= 1.0, 1)) {
                if (bad_x[m] & bit) gx[i] = gamma_fix(rng, sa[i], words[0][i], words[1][i]);
                if (bad_y[m] & bit) gy[i] = gamma_fix(rng, sb[i], words[2][i], words[3][i]);
            } else {
                gx[i] = beta_small(rng, sa[i], sb[i]);
                small[m] |= bit;
                any_small = true;
            }
        }
    }
    // Vectorized: halves keep the sum finite for shapes near DBL_MAX.
    for (size_t i = 0; i < n; ++i) {
        const double hx = 0.5 * gx[i];
        out[i] = hx / (hx + 0.5 * gy[i]);
    }
    if (__builtin_expect(any_small, 0)) {
        for (size_t i = 0; i < n; ++i) {
            if ((small[i / 64] >> (i % 64)) & 1) out[i] = gx[i];
        }
    }
}

template <class Source>
inline __attribute__((always_inline)) void beta_array(Source &src, CandidateFn candidates,
                                                      uint64_t first, const double *a,
                                                      size_t a_stride, const double *b,
                                                      size_t b_stride, size_t n, double *out) {
    for (size_t lo = 0; lo < n; lo += kBlock) {
        const size_t m = n - lo < kBlock ? n - lo : kBlock;
        beta_block(src, candidates, first + lo, a + lo * a_stride, a_stride, b + lo * b_stride,
                   b_stride, m, out + lo);
    }
}

// Two builds of the same passes, chosen once by what the CPU has: the portable
// one (SSE2 on x86-64, the baseline elsewhere) and, on x86-64, one with AVX2 for
// the word generation and the candidate kernel. No FMA: results must not depend
// on the path.
template <class Source>
using BetaArrayFn = void (*)(Source &, uint64_t, const double *, size_t, const double *, size_t,
                             size_t, double *);

template <class Source>
void beta_array_portable(Source &src, uint64_t first, const double *a, size_t a_stride,
                         const double *b, size_t b_stride, size_t n, double *out) {
    beta_array(src, candidates_portable, first, a, a_stride, b, b_stride, n, out);
}

#ifdef MAB_HAVE_AVX2_PATH
template <class Source>
__attribute__((target("avx2"))) void beta_array_avx2(Source &src, uint64_t first,
                                                     const double *a, size_t a_stride,
                                                     const double *b, size_t b_stride, size_t n,
                                                     double *out) {
    beta_array(src, candidates_avx2, first, a, a_stride, b, b_stride, n, out);
}

// AVX-512VL too: rotates of the xoshiro lanes in one instruction (vprolq).
template <class Source>
__attribute__((target("avx2,avx512f,avx512vl"))) void beta_array_avx512(
    Source &src, uint64_t first, const double *a, size_t a_stride, const double *b,
    size_t b_stride, size_t n, double *out) {
    beta_array(src, candidates_avx512, first, a, a_stride, b, b_stride, n, out);
}
#endif

struct Dispatch {
    BetaArrayFn<LaneSource> plain = beta_array_portable<LaneSource>;
    BetaArrayFn<KeyedSource> keyed = beta_array_portable<KeyedSource>;
    const char *isa = "portable";

    // MAB_NATIVE_PORTABLE=1 forces the portable path, MAB_NATIVE_AVX512=0 the AVX2
    // one on an AVX-512 CPU (to compare them).
    Dispatch() {
#ifdef MAB_HAVE_AVX2_PATH
        __builtin_cpu_init();
        if (std::getenv("MAB_NATIVE_PORTABLE") != nullptr) return;
        const char *avx512 = std::getenv("MAB_NATIVE_AVX512");
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
            !(avx512 && std::strcmp(avx512, "0") == 0)) {
            plain = beta_array_avx512<LaneSource>;
            keyed = beta_array_avx512<KeyedSource>;
            isa = "avx512";
        } else if (__builtin_cpu_supports("avx2")) {
            plain = beta_array_avx2<LaneSource>;
            keyed = beta_array_avx2<KeyedSource>;
            isa = "avx2";
        }
#endif
    }
};

const Dispatch kDispatch;

ptrdiff_t first_invalid(const double *v, size_t stride, size_t n) {
    const size_t count = stride == 0 ? (n > 0 ? 1 : 0) : n;
    for (size_t i = 0; i < count; ++i) {
        const double s = v[i * stride];
        // NaN fails both comparisons; inf fails the second.
        if (!(s > 0.0) || !(s <= 1.7976931348623157e308)) return static_cast<ptrdiff_t>(i);
    }
    return -1;
}

}  // namespace

extern "C" const char *mab_sampler_isa(void) { return kDispatch.isa; }

extern "C" void mab_rng_seed(mab_rng *rng, uint64_t seed) { seed_rng(*rng, seed); }

extern "C" int mab_beta_check(const double *a, size_t a_stride, const double *b, size_t b_stride,
                              size_t n, ptrdiff_t *bad) {
    const ptrdiff_t bad_a = first_invalid(a, a_stride, n);
    const ptrdiff_t bad_b = bad_a >= 0 ? -1 : first_invalid(b, b_stride, n);
    *bad = bad_a >= 0 ? bad_a : bad_b >= 0 ? static_cast<ptrdiff_t>(n) + bad_b : -1;
    return *bad >= 0 ? MAB_E_PARAM : MAB_OK;
}

extern "C" void mab_beta_sample(mab_rng *rng, const double *a, size_t a_stride, const double *b,
                                size_t b_stride, size_t n, double *out) {
    LaneSource src(*rng);
    kDispatch.plain(src, 0, a, a_stride, b, b_stride, n, out);
    src.done();
}

extern "C" void mab_beta_sample_keyed(uint64_t seed, uint64_t first, const double *a,
                                      size_t a_stride, const double *b, size_t b_stride, size_t n,
                                      double *out) {
    KeyedSource src{seed};
    kDispatch.keyed(src, first, a, a_stride, b, b_stride, n, out);
}
