// See sampler.h. Built with -ffp-contract=off and without -ffast-math, so every
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
// AVX2 and AVX-512 builds cut the time per draw from ~11 ns (one scalar loop per
// item) to ~7 and ~5.7 ns on Zen 4: the long dependency chains (Newton steps,
// gathers) of many gammas overlap instead of filling the out-of-order window.
#include "sampler.h"

#include <cmath>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <cstdlib>
#include <cstring>

namespace {

// ---------------------------------------------------------------- PRNG

inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;

inline uint64_t splitmix64(uint64_t &state) { return mix64(state += kGolden); }

inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// Doubles from the top 53 bits; through int64, one instruction on any x86-64.
inline double top53(uint64_t word) { return static_cast<double>(static_cast<int64_t>(word >> 11)); }

// 1 + (top 52 bits) 2^-52, in [1, 2): the exponent of 1.0 OR'ed onto 52 random
// mantissa bits. One OR in SIMD too (AVX2 has no int64 -> double conversion).
// u = one_to_two - 1 and 1 - u = 2 - one_to_two are both exact (Sterbenz).
inline double one_to_two(uint64_t word) {
    const uint64_t bits = 0x3ff0000000000000ULL | (word >> 12);
    double x;
    std::memcpy(&x, &bits, sizeof x);
    return x;
}

// The words of a stream, as the rare paths (ziggurat tail and wedges, rejected
// candidates, shapes < 1) consume them.
template <class Derived>
struct Words {
    inline double uniform() { return top53(self().next()) * 0x1.0p-53; }
    inline double uniform_open() { return (top53(self().next()) + 0.5) * 0x1.0p-53; }

  private:
    Derived &self() { return static_cast<Derived &>(*this); }
};

// xoshiro256++ (Blackman and Vigna), one generator: the fix-up stream of
// mab_beta_sample. Rarely used, so scalar.
struct Xoshiro : Words<Xoshiro> {
    uint64_t s[4];

    inline uint64_t next() {
        const uint64_t out = rotl(s[0] + s[3], 23) + s[0];
        const uint64_t t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = rotl(s[3], 45);
        return out;
    }
};

// splitmix64 (Steele, Lea and Flood): the per-item stream of keyed draws.
struct SplitMix : Words<SplitMix> {
    uint64_t state;

    inline uint64_t next() { return splitmix64(state); }
};

// The bulk words of mab_beta_sample: MAB_RNG_LANES xoshiro256++ generators in
// GCC vector types (one zmm, two ymm or four xmm per state word). One step of all
// lanes gives one role (X's normal, X's uniform, Y's normal, Y's uniform) of a
// group of MAB_RNG_LANES items; four steps make the group. A group left partly
// unused by a call is held in mab_rng, so the words of item k of the stream do
// not depend on how the stream is split into calls.
constexpr int kLanes = MAB_RNG_LANES;
constexpr int kRoles = 4;
// The lanes as two halves of 4: a 64-byte GCC vector is split badly into ymm.
constexpr int kHalf = kLanes / 2;
typedef uint64_t HalfWords __attribute__((vector_size(8 * kHalf)));

struct LaneState {
    HalfWords s[4][2];  // s[word][half]

    explicit LaneState(const mab_rng &r) {
        for (int w = 0; w < 4; ++w) {
            for (int h = 0; h < 2; ++h) std::memcpy(&s[w][h], &r.s[w][h * kHalf], sizeof s[w][h]);
        }
    }
    void store(mab_rng &r) const {
        for (int w = 0; w < 4; ++w) {
            for (int h = 0; h < 2; ++h) std::memcpy(&r.s[w][h * kHalf], &s[w][h], sizeof s[w][h]);
        }
    }
    // One step of every lane: out[lane].
    inline __attribute__((always_inline)) void next(uint64_t *out) {
        for (int h = 0; h < 2; ++h) {
            HalfWords &s0 = s[0][h], &s1 = s[1][h], &s2 = s[2][h], &s3 = s[3][h];
            const HalfWords sum = s0 + s3;
            const HalfWords word = ((sum << 23) | (sum >> 41)) + s0;
            std::memcpy(out + h * kHalf, &word, sizeof word);
            const HalfWords t = s1 << 17;
            s2 ^= s0;
            s3 ^= s1;
            s1 ^= s2;
            s0 ^= s3;
            s2 ^= t;
            s3 = (s3 << 45) | (s3 >> 19);
        }
    }
};

// words[role][i] for the items of a block.
struct BlockWords {
    uint64_t *role[kRoles];
};

struct LaneSource {
    mab_rng *r;
    Xoshiro fix_stream;

    explicit LaneSource(mab_rng &rng) : r(&rng) {
        std::memcpy(fix_stream.s, rng.fix, sizeof rng.fix);
    }
    void done() { std::memcpy(r->fix, fix_stream.s, sizeof r->fix); }

    // The words of the next n items.
    inline __attribute__((always_inline)) void fill(uint64_t /*first*/, size_t n, BlockWords w) {
        size_t i = 0;
        for (; i < n && r->held_used < kLanes; ++i, ++r->held_used) {
            for (int q = 0; q < kRoles; ++q) w.role[q][i] = r->held[q][r->held_used];
        }
        if (i == n) return;
        LaneState lanes(*r);
        for (; i + kLanes <= n; i += kLanes) {
            for (int q = 0; q < kRoles; ++q) lanes.next(w.role[q] + i);
        }
        if (i < n) {
            for (int q = 0; q < kRoles; ++q) lanes.next(r->held[q]);
            for (r->held_used = 0; i < n; ++i, ++r->held_used) {
                for (int q = 0; q < kRoles; ++q) w.role[q][i] = r->held[q][r->held_used];
            }
        }
        lanes.store(*r);
    }
    // Where the rare paths of item `index` read more words: one stream for all.
    inline Xoshiro &fix(uint64_t /*index*/) { return fix_stream; }
};

void seed_rng(mab_rng &r, uint64_t seed) {
    uint64_t sm = seed;
    for (int l = 0; l < kLanes; ++l) {
        for (int w = 0; w < 4; ++w) r.s[w][l] = splitmix64(sm);
    }
    for (int w = 0; w < 4; ++w) r.fix[w] = splitmix64(sm);
    r.held_used = kLanes;  // nothing held
}

// The words of mab_beta_sample_keyed: item i reads splitmix64 started at a key of
// (seed, i); its first four words do not depend on each other.
struct KeyedSource {
    uint64_t seed;
    SplitMix fix_stream{};

    inline uint64_t key(uint64_t index) const {
        return mix64(seed ^ (index * 0xd1b54a32d192ed03ULL));
    }
    inline __attribute__((always_inline)) void fill(uint64_t first, size_t n, BlockWords w) {
        for (size_t i = 0; i < n; ++i) {
            const uint64_t k = key(first + i);
            for (int q = 0; q < kRoles; ++q) w.role[q][i] = mix64(k + (q + 1) * kGolden);
        }
    }
    // The item's stream, after its first four words.
    inline SplitMix &fix(uint64_t index) {
        fix_stream.state = key(index) + kRoles * kGolden;
        return fix_stream;
    }
};

// ---------------------------------------------------------------- normal

// Ziggurat of Marsaglia and Tsang (2000) with 256 layers; r and the layer area v
// are the 256-layer constants (as in numpy). A word gives the layer (bits 0-7),
// the sign (bit 8) and a 52-bit magnitude (bits 12-63; as numpy), so the magnitude
// converts to double exactly in SIMD with the 2^52 trick.
constexpr int kLayers = 256;
constexpr double kR = 3.6541528853610088;
constexpr double kInvR = 1.0 / kR;
constexpr double kArea = 4.92867323399e-3;
constexpr double kMagnitudes = 0x1.0p52;

inline uint64_t magnitude_of(uint64_t word) { return word >> 12; }

struct Ziggurat {
    uint64_t k[kLayers];  // magnitude below which layer i accepts at once
    double w[kLayers];    // magnitude -> x scale of layer i
    double f[kLayers];    // density exp(-x^2/2) at layer i's edge

    Ziggurat() {
        const double m = kMagnitudes;
        double dn = kR, tn = kR;
        const double q = kArea / std::exp(-0.5 * dn * dn);
        k[0] = static_cast<uint64_t>((dn / q) * m);
        k[1] = 0;
        w[0] = q / m;
        w[kLayers - 1] = dn / m;
        f[0] = 1.0;
        f[kLayers - 1] = std::exp(-0.5 * dn * dn);
        for (int i = kLayers - 2; i >= 1; --i) {
            dn = std::sqrt(-2.0 * std::log(kArea / dn + std::exp(-0.5 * dn * dn)));
            k[i + 1] = static_cast<uint64_t>((dn / tn) * m);
            tn = dn;
            f[i] = std::exp(-0.5 * dn * dn);
            w[i] = dn / m;
        }
    }
};

const Ziggurat kZig;

inline double magnitude_to_double(uint64_t magnitude) {
    return static_cast<double>(static_cast<int64_t>(magnitude));  // exact: < 2^52
}

// The rare ways out of the ziggurat: the base strip's tail, or a wedge.
template <class Rng>
__attribute__((noinline)) double normal_slow(Rng &rng, unsigned layer, uint64_t magnitude,
                                             bool negative) {
    for (;;) {
        const double x = magnitude_to_double(magnitude) * kZig.w[layer];
        if (layer == 0) {
            double xx, yy;
            do {
                xx = -std::log(rng.uniform_open()) * kInvR;
                yy = -std::log(rng.uniform_open());
            } while (yy + yy < xx * xx);
            return negative ? -(kR + xx) : kR + xx;
        }
        if (kZig.f[layer] + rng.uniform() * (kZig.f[layer - 1] - kZig.f[layer]) <
            std::exp(-0.5 * x * x)) {
            return negative ? -x : x;
        }
        const uint64_t u = rng.next();
        layer = static_cast<unsigned>(u & 0xff);
        negative = (u >> 8) & 1;
        magnitude = magnitude_of(u);
        if (magnitude < kZig.k[layer]) {
            const double y = magnitude_to_double(magnitude) * kZig.w[layer];
            return negative ? -y : y;
        }
    }
}

// Bit 8 of the word as the sign: an XOR, not a branch (a random branch
// mispredicts half the time, ~15 cycles each).
inline double with_sign_of_bit8(double x, uint64_t word) {
    uint64_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    bits ^= (word << 55) & 0x8000000000000000ULL;
    std::memcpy(&x, &bits, sizeof x);
    return x;
}

// The ziggurat's fast path: x, valid when the magnitude is below k[layer].
inline double normal_fast(uint64_t u) {
    const unsigned layer = static_cast<unsigned>(u & 0xff);
    return with_sign_of_bit8(magnitude_to_double(magnitude_of(u)) * kZig.w[layer], u);
}

template <class Rng>
inline double normal_from(Rng &rng, uint64_t u) {
    const unsigned layer = static_cast<unsigned>(u & 0xff);  // bits 0-7; bit 8 is the sign
    const uint64_t magnitude = magnitude_of(u);
    if (__builtin_expect(magnitude < kZig.k[layer], 1)) return normal_fast(u);
    return normal_slow(rng, layer, magnitude, (u >> 8) & 1);
}

// ---------------------------------------------------------------- gamma

// Marsaglia-Tsang (2000) for shape >= 1: x ~ N(0, 1), v = (1 + c x)^3 with
// d = shape - 1/3, c = 1 / sqrt(9 d); accept d v when ln u < h = x^2/2 + d (1 - v + ln v).
//
// The paper's squeeze u < 1 - 0.0331 x^4 sends ~10% of candidates to the two logs.
// A tighter one that depends on d: with t = c x, h = 3 d (ln(1 + t) - t + t^2/2 - t^3/3)
// >= -0.75 d t^4 / min(1, 1 + t) (alternating series for t >= 0, geometric bound for
// t < 0), and ln u <= u - 1; so (1 - u) min(1, 1 + t) > e x^4 with e = 1 / (108 d)
// accepts exactly when the bound allows: ~1.4% of candidates reach the logs at d = 1,
// 0.03% at d = 100. The squeeze also rejects v1 = 1 + t <= 0 (then its left side
// is <= 0 <= e x^4), which the method must reject: no separate test.
struct GammaShape {
    double d, c, e;
};

// 1 / sqrt(x) for normal x > 0 from IEEE adds and multiplies only: the classic
// bit-level first guess (3.4% off), then four Newton steps (error ~1e-16). Unlike
// sqrt followed by a division it vectorizes on the FP multipliers instead of the
// divider; and it rounds the same on every ISA.
inline double rsqrt(double x) {
    uint64_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    bits = 0x5fe6eb50c7b537a9ULL - (bits >> 1);
    double y;
    std::memcpy(&y, &bits, sizeof y);
    const double half_x = 0.5 * x;
    for (int step = 0; step < 4; ++step) y = y * (1.5 - half_x * y * y);
    return y;
}

inline GammaShape gamma_shape(double shape) {
    const double d = shape - 1.0 / 3.0;
    const double c = rsqrt(d) * (1.0 / 3.0);
    // e = 1 / (108 d) = c^2 / 12 without a division; the factor keeps e above its
    // exact value whatever the rounding, so the squeeze stays a bound.
    return {d, c, c * c * (1.0 / 12.0) * (1.0 + 0x1.0p-40)};
}

// min(x, 1) without a branch: its operand's sign is random, so a branch would
// mispredict half the time.
inline double min_one(double x) {
#if defined(__x86_64__)
    return _mm_cvtsd_f64(_mm_min_sd(_mm_set_sd(x), _mm_set_sd(1.0)));
#else
    return std::fmin(x, 1.0);  // one instruction on aarch64; no NaN reaches it
#endif
}

// The first candidate of a gamma from its words wn (normal) and wu (uniform):
// g = d v, and whether it is accepted by the ziggurat's fast path and the squeeze
// (and shape >= 1). The reference for the SIMD kernels: same operations, same order.
inline bool gamma_candidate(double shape, uint64_t wn, uint64_t wu, double &g) {
    const GammaShape s = gamma_shape(shape);
    const unsigned layer = static_cast<unsigned>(wn & 0xff);
    const double x = normal_fast(wn);
    const double v1 = 1.0 + s.c * x;
    const double x2 = x * x;
    const double one_minus_u = 2.0 - one_to_two(wu);  // (0, 1]
    g = s.d * (v1 * v1 * v1);
    return (magnitude_of(wn) < kZig.k[layer]) & (one_minus_u * min_one(v1) > s.e * x2 * x2) &
           (shape >= 1.0);
}

template <class Rng>
double gamma_mt(Rng &rng, double d, double c, double e) {
    for (;;) {
        double x, v1;
        do {
            x = normal_from(rng, rng.next());
            v1 = 1.0 + c * x;
        } while (v1 <= 0.0);
        const double v = v1 * v1 * v1;
        const double u = rng.uniform();
        const double x2 = x * x;
        if ((1.0 - u) * min_one(v1) > e * x2 * x2) return d * v;
        if (std::log(u) < 0.5 * x2 + d * (1.0 - v + std::log(v))) return d * v;
    }
}

// A gamma whose first candidate failed gamma_candidate (shape >= 1): the same
// candidate taken through the whole method (the ziggurat's slow path continuing
// from `rng`, the exact log test), then fresh candidates from `rng`.
template <class Rng>
__attribute__((noinline)) double gamma_fix(Rng &rng, double shape, uint64_t wn, uint64_t wu) {
    const GammaShape s = gamma_shape(shape);
    const double x = normal_from(rng, wn);
    const double v1 = 1.0 + s.c * x;
    if (v1 > 0.0) {
        const double v = v1 * v1 * v1;
        const double x2 = x * x;
        const double u1 = one_to_two(wu);
        if ((2.0 - u1) * min_one(v1) > s.e * x2 * x2) return s.d * v;
        if (std::log(u1 - 1.0) < 0.5 * x2 + s.d * (1.0 - v + std::log(v))) return s.d * v;
    }
    return gamma_mt(rng, s.d, s.c, s.e);
}

// log of a Gamma(shape) draw, any shape > 0. Below 1, Gamma(a) = Gamma(a + 1) *
// U^(1/a): kept in log space, since for tiny shapes U^(1/a) underflows to 0.
template <class Rng>
double log_gamma_draw(Rng &rng, double shape) {
    const double boosted = shape < 1.0 ? shape + 1.0 : shape;
    const GammaShape g_shape = gamma_shape(boosted);
    const double g = std::log(gamma_mt(rng, g_shape.d, g_shape.c, g_shape.e));
    return shape < 1.0 ? g + std::log(rng.uniform_open()) / shape : g;
}

// Beta from two log-gammas: X / (X + Y) = 1 / (1 + exp(ly - lx)), no 0/0.
template <class Rng>
__attribute__((noinline)) double beta_small(Rng &rng, double a, double b) {
    const double lx = log_gamma_draw(rng, a);
    const double ly = log_gamma_draw(rng, b);
    const double t = ly - lx;
    if (t > 0) {
        const double e = std::exp(-t);
        return e / (1.0 + e);
    }
    return 1.0 / (1.0 + std::exp(t));
}

// ---------------------------------------------------------------- kernels

constexpr size_t kBlock = 256;
constexpr size_t kMaskWords = kBlock / 64;

// Candidate pass over n <= kBlock gammas: g[i], and bit i of `bad` set when the
// candidate needs the fix-up (bad must start zeroed).
using CandidateFn = void (*)(const double *shape, const uint64_t *wn, const uint64_t *wu,
                             size_t n, double *g, uint64_t *bad);

inline __attribute__((always_inline)) void candidates_scalar(const double *shape,
                                                            const uint64_t *wn,
                                                            const uint64_t *wu, size_t lo,
                                                            size_t n, double *g, uint64_t *bad) {
    for (size_t i = lo; i < n; ++i) {
        const bool ok = gamma_candidate(shape[i], wn[i], wu[i], g[i]);
        bad[i / 64] |= static_cast<uint64_t>(!ok) << (i % 64);
    }
}

// The portable kernel: gamma_candidate for 4 gammas at a time in GCC vector types
// (two xmm with SSE2, two q registers with NEON), table lookups one by one.
typedef double F64x4 __attribute__((vector_size(32)));
typedef uint64_t U64x4 __attribute__((vector_size(32)));

// A type pun by copy; by reference, since a 32-byte vector returned by value
// would change the ABI without AVX (and GCC warns).
template <class To, class From>
inline void bit_copy(To &to, const From &from) {
    static_assert(sizeof(To) == sizeof(From), "same size");
    std::memcpy(&to, &from, sizeof to);
}

void candidates_portable(const double *shape, const uint64_t *wn, const uint64_t *wu, size_t n,
                         double *g, uint64_t *bad) {
    size_t i = 0;
    uint64_t not_ok_bits = 0;
    for (; i + 4 <= n; i += 4) {
        F64x4 s;
        std::memcpy(&s, shape + i, sizeof s);
        const F64x4 d = s - 1.0 / 3.0;
        U64x4 bits;
        bit_copy(bits, d);
        bits = 0x5fe6eb50c7b537a9ULL - (bits >> 1);
        F64x4 y;
        bit_copy(y, bits);
        const F64x4 half_d = 0.5 * d;
        for (int step = 0; step < 4; ++step) y = y * (1.5 - half_d * y * y);
        const F64x4 c = y * (1.0 / 3.0);
        const F64x4 e = c * c * (1.0 / 12.0) * (1.0 + 0x1.0p-40);
        U64x4 u, wu4;
        std::memcpy(&u, wn + i, sizeof u);
        std::memcpy(&wu4, wu + i, sizeof wu4);
        const U64x4 layer = u & 0xff;
        const F64x4 w = {kZig.w[layer[0]], kZig.w[layer[1]], kZig.w[layer[2]], kZig.w[layer[3]]};
        const U64x4 k = {kZig.k[layer[0]], kZig.k[layer[1]], kZig.k[layer[2]], kZig.k[layer[3]]};
        const U64x4 magnitude = u >> 12;
        F64x4 m, x, u1;
        bit_copy(m, magnitude | 0x4330000000000000ULL);  // 2^52 + magnitude
        m -= 0x1.0p52;                                     // exact
        bit_copy(bits, m * w);
        bit_copy(x, bits ^ ((u << 55) & 0x8000000000000000ULL));
        bit_copy(u1, (wu4 >> 12) | 0x3ff0000000000000ULL);
        const F64x4 v1 = 1.0 + c * x;
        const F64x4 x2 = x * x;
        const F64x4 one_minus_u = 2.0 - u1;
        const F64x4 min_v1_one = v1 < 1.0 ? v1 : 1.0;
        const F64x4 v = v1 * v1 * v1;
        const F64x4 gs = d * v;
        std::memcpy(g + i, &gs, sizeof gs);
        const auto ok = (magnitude < k) & (one_minus_u * min_v1_one > e * x2 * x2) & (s >= 1.0);
        for (int j = 0; j < 4; ++j) {
            not_ok_bits |= static_cast<uint64_t>(ok[j] == 0) << ((i + j) % 64);
        }
        if (i % 64 == 60) {
            bad[i / 64] = not_ok_bits;
            not_ok_bits = 0;
        }
    }
    if (i % 64 != 0) bad[i / 64] = not_ok_bits;
    candidates_scalar(shape, wn, wu, i, n, g, bad);
}

#if defined(__x86_64__) && defined(__GNUC__)
#define MAB_HAVE_AVX2_PATH 1
// gamma_candidate for 4 gammas at a time; the table lookups are gathers.
__attribute__((target("avx2"))) void candidates_avx2(const double *shape, const uint64_t *wn,
                                                     const uint64_t *wu, size_t n, double *g,
                                                     uint64_t *bad) {
    const __m256d one = _mm256_set1_pd(1.0);
    const __m256i low8 = _mm256_set1_epi64x(0xff);
    const __m256i sign = _mm256_set1_epi64x(static_cast<long long>(0x8000000000000000ULL));
    const __m256i exp52 = _mm256_set1_epi64x(0x4330000000000000LL);  // 2^52 as a double
    const __m256i exp1 = _mm256_set1_epi64x(0x3ff0000000000000LL);   // 1.0
    const __m256d two52 = _mm256_set1_pd(0x1.0p52);
    size_t i = 0;
    uint64_t not_ok_bits = 0;  // of bad[i / 64]: in a register, not a store-to-load chain
    for (; i + 4 <= n; i += 4) {
        // gamma_shape: d, and the rsqrt's guess and Newton steps.
        const __m256d s = _mm256_loadu_pd(shape + i);
        const __m256d d = _mm256_sub_pd(s, _mm256_set1_pd(1.0 / 3.0));
        __m256d y = _mm256_castsi256_pd(
            _mm256_sub_epi64(_mm256_set1_epi64x(0x5fe6eb50c7b537a9LL),
                             _mm256_srli_epi64(_mm256_castpd_si256(d), 1)));
        const __m256d half_d = _mm256_mul_pd(_mm256_set1_pd(0.5), d);
        for (int step = 0; step < 4; ++step) {
            y = _mm256_mul_pd(
                y, _mm256_sub_pd(_mm256_set1_pd(1.5), _mm256_mul_pd(_mm256_mul_pd(half_d, y), y)));
        }
        const __m256d c = _mm256_mul_pd(y, _mm256_set1_pd(1.0 / 3.0));
        const __m256d e = _mm256_mul_pd(
            _mm256_mul_pd(_mm256_mul_pd(c, c), _mm256_set1_pd(1.0 / 12.0)),
            _mm256_set1_pd(1.0 + 0x1.0p-40));
        // normal_fast, and the ziggurat's test.
        const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(wn + i));
        const __m256i layer = _mm256_and_si256(u, low8);
        const __m256i k = _mm256_i64gather_epi64(reinterpret_cast<const long long *>(kZig.k),
                                                 layer, 8);
        const __m256d w = _mm256_i64gather_pd(kZig.w, layer, 8);
        const __m256i magnitude = _mm256_srli_epi64(u, 12);
        const __m256i zig_ok = _mm256_cmpgt_epi64(k, magnitude);  // both < 2^63
        const __m256d m = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(magnitude, exp52)),
                                        two52);
        const __m256i sign_bits = _mm256_and_si256(_mm256_slli_epi64(u, 55), sign);
        const __m256d x = _mm256_xor_pd(_mm256_mul_pd(m, w), _mm256_castsi256_pd(sign_bits));
        // The candidate and the squeeze.
        const __m256d v1 = _mm256_add_pd(one, _mm256_mul_pd(c, x));
        const __m256d x2 = _mm256_mul_pd(x, x);
        const __m256i wu4 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(wu + i));
        const __m256d u1 = _mm256_castsi256_pd(_mm256_or_si256(_mm256_srli_epi64(wu4, 12), exp1));
        const __m256d one_minus_u = _mm256_sub_pd(_mm256_set1_pd(2.0), u1);
        const __m256d lhs = _mm256_mul_pd(one_minus_u, _mm256_min_pd(v1, one));
        const __m256d rhs = _mm256_mul_pd(_mm256_mul_pd(e, x2), x2);
        const __m256d v = _mm256_mul_pd(_mm256_mul_pd(v1, v1), v1);
        _mm256_storeu_pd(g + i, _mm256_mul_pd(d, v));
        const __m256d ok = _mm256_and_pd(
            _mm256_and_pd(_mm256_cmp_pd(lhs, rhs, _CMP_GT_OQ), _mm256_castsi256_pd(zig_ok)),
            _mm256_cmp_pd(s, one, _CMP_GE_OQ));
        const uint64_t not_ok = static_cast<uint64_t>(~_mm256_movemask_pd(ok) & 0xf);
        not_ok_bits |= not_ok << (i % 64);  // i % 4 == 0: the 4 bits stay in one word
        if (i % 64 == 60) {
            bad[i / 64] = not_ok_bits;
            not_ok_bits = 0;
        }
    }
    if (i % 64 != 0) bad[i / 64] = not_ok_bits;
    candidates_scalar(shape, wn, wu, i, n, g, bad);
}

// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// The same for 8 gammas at a time. On Zen 4 a 512-bit op is one entry in the
// schedulers for 8 lanes: twice the independent work in flight to hide the long
// chains (Newton steps, gathers) for the same resources.
__attribute__((target("avx512f"))) void candidates_avx512(const double *shape,
                                                         const uint64_t *wn, const uint64_t *wu,
                                                         size_t n, double *g, uint64_t *bad) {
    const __m512d one = _mm512_set1_pd(1.0);
    const __m512i low8 = _mm512_set1_epi64(0xff);
    const __m512i sign = _mm512_set1_epi64(static_cast<long long>(0x8000000000000000ULL));
    const __m512i exp52 = _mm512_set1_epi64(0x4330000000000000LL);  // 2^52 as a double
    const __m512i exp1 = _mm512_set1_epi64(0x3ff0000000000000LL);   // 1.0
    const __m512d two52 = _mm512_set1_pd(0x1.0p52);
    size_t i = 0;
    uint64_t not_ok_bits = 0;
    for (; i + 8 <= n; i += 8) {
        const __m512d s = _mm512_loadu_pd(shape + i);
        const __m512d d = _mm512_sub_pd(s, _mm512_set1_pd(1.0 / 3.0));
        __m512d y = _mm512_castsi512_pd(
            _mm512_sub_epi64(_mm512_set1_epi64(0x5fe6eb50c7b537a9LL),
                             _mm512_srli_epi64(_mm512_castpd_si512(d), 1)));
        const __m512d half_d = _mm512_mul_pd(_mm512_set1_pd(0.5), d);
        for (int step = 0; step < 4; ++step) {
            y = _mm512_mul_pd(
                y, _mm512_sub_pd(_mm512_set1_pd(1.5), _mm512_mul_pd(_mm512_mul_pd(half_d, y), y)));
        }
        const __m512d c = _mm512_mul_pd(y, _mm512_set1_pd(1.0 / 3.0));
        const __m512d e = _mm512_mul_pd(
            _mm512_mul_pd(_mm512_mul_pd(c, c), _mm512_set1_pd(1.0 / 12.0)),
            _mm512_set1_pd(1.0 + 0x1.0p-40));
        const __m512i u = _mm512_loadu_si512(wn + i);
        const __m512i layer = _mm512_and_si512(u, low8);
        const __m512i k = _mm512_i64gather_epi64(layer, kZig.k, 8);
        const __m512d w = _mm512_i64gather_pd(layer, kZig.w, 8);
        const __m512i magnitude = _mm512_srli_epi64(u, 12);
        const __mmask8 zig_ok = _mm512_cmplt_epu64_mask(magnitude, k);
        const __m512d m = _mm512_sub_pd(_mm512_castsi512_pd(_mm512_or_si512(magnitude, exp52)),
                                        two52);
        const __m512d x = _mm512_castsi512_pd(
            _mm512_xor_si512(_mm512_castpd_si512(_mm512_mul_pd(m, w)),
                             _mm512_and_si512(_mm512_slli_epi64(u, 55), sign)));
        const __m512d v1 = _mm512_add_pd(one, _mm512_mul_pd(c, x));
        const __m512d x2 = _mm512_mul_pd(x, x);
        const __m512i wu8 = _mm512_loadu_si512(wu + i);
        const __m512d u1 = _mm512_castsi512_pd(_mm512_or_si512(_mm512_srli_epi64(wu8, 12), exp1));
        const __m512d one_minus_u = _mm512_sub_pd(_mm512_set1_pd(2.0), u1);
        const __m512d lhs = _mm512_mul_pd(one_minus_u, _mm512_min_pd(v1, one));
        const __m512d rhs = _mm512_mul_pd(_mm512_mul_pd(e, x2), x2);
        const __m512d v = _mm512_mul_pd(_mm512_mul_pd(v1, v1), v1);
        _mm512_storeu_pd(g + i, _mm512_mul_pd(d, v));
        const __mmask8 ok = _mm512_cmp_pd_mask(lhs, rhs, _CMP_GT_OQ) & zig_ok &
                            _mm512_cmp_pd_mask(s, one, _CMP_GE_OQ);
        not_ok_bits |= static_cast<uint64_t>(static_cast<uint8_t>(~ok)) << (i % 64);
        if (i % 64 == 56) {
            bad[i / 64] = not_ok_bits;
            not_ok_bits = 0;
        }
    }
    if (i % 64 != 0) bad[i / 64] = not_ok_bits;
    candidates_scalar(shape, wn, wu, i, n, g, bad);
}
#pragma GCC diagnostic pop
#endif

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

extern "C" int mab_sampler_version(void) { return MAB_SAMPLER_VERSION; }

extern "C" const char *mab_sampler_isa(void) { return kDispatch.isa; }

extern "C" void mab_rng_seed(mab_rng *rng, uint64_t seed) { seed_rng(*rng, seed); }

extern "C" ptrdiff_t mab_beta_check(const double *a, size_t a_stride, const double *b,
                                    size_t b_stride, size_t n) {
    const ptrdiff_t bad_a = first_invalid(a, a_stride, n);
    if (bad_a >= 0) return bad_a;
    const ptrdiff_t bad_b = first_invalid(b, b_stride, n);
    if (bad_b >= 0) return static_cast<ptrdiff_t>(n) + bad_b;
    return -1;
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
