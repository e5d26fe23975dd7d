// See sampler.h. Built with -ffp-contract=off and without -ffast-math, so every
// code path (portable or AVX2) rounds identically and a seed gives the same
// numbers on every machine.
#include "sampler.h"

#include <cmath>
#if defined(__x86_64__)
#include <emmintrin.h>
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

// Doubles from the top 53 bits; through int64, one instruction on any x86-64.
inline double top53(uint64_t word) { return static_cast<double>(static_cast<int64_t>(word >> 11)); }

// The per-thread stream of mab_beta_sample: MAB_RNG_LANES xoshiro256++ generators
// (Blackman and Vigna) refilled a buffer at a time. One generator is a chain of
// dependent operations (~4 cycles a word); independent lanes run in parallel and
// the refill loop vectorizes. Words come out lane-interleaved, the same on every ISA.
struct LaneStream {
    mab_rng *r;
    uint32_t pos;  // a copy of r->next, kept in a register: written back by done()

    explicit LaneStream(mab_rng &rng) : r(&rng), pos(rng.next) {}
    void done() { r->next = pos; }

    void refill();

    inline uint64_t next() {
        if (__builtin_expect(pos >= MAB_RNG_BUFFER, 0)) refill();
        return r->buffer[pos++];
    }

    // The four words of an item's first two candidates: one bounds check, not four.
    inline void start_item(uint64_t /*index*/, uint64_t w[4]) {
        if (__builtin_expect(pos + 4 <= MAB_RNG_BUFFER, 1)) {
            std::memcpy(w, &r->buffer[pos], 4 * sizeof(uint64_t));
            pos += 4;
        } else {
            for (int i = 0; i < 4; ++i) w[i] = next();
        }
    }
    inline double uniform() { return top53(next()) * 0x1.0p-53; }
    inline double uniform_open() { return (top53(next()) + 0.5) * 0x1.0p-53; }
};

// Writes the next MAB_RNG_BUFFER words of the lanes into r.buffer. GCC vector
// types: one ymm register per state word with AVX2, two xmm with SSE2 or NEON.
typedef uint64_t LaneWords __attribute__((vector_size(8 * MAB_RNG_LANES)));

inline __attribute__((always_inline)) void refill_lanes(mab_rng &r) {
    LaneWords s0, s1, s2, s3;
    std::memcpy(&s0, r.s[0], sizeof s0);
    std::memcpy(&s1, r.s[1], sizeof s1);
    std::memcpy(&s2, r.s[2], sizeof s2);
    std::memcpy(&s3, r.s[3], sizeof s3);
    for (int k = 0; k < MAB_RNG_BUFFER; k += MAB_RNG_LANES) {
        const LaneWords sum = s0 + s3;
        const LaneWords out = ((sum << 23) | (sum >> 41)) + s0;
        std::memcpy(&r.buffer[k], &out, sizeof out);
        const LaneWords t = s1 << 17;
        s2 ^= s0;
        s3 ^= s1;
        s1 ^= s2;
        s0 ^= s3;
        s2 ^= t;
        s3 = (s3 << 45) | (s3 >> 19);
    }
    std::memcpy(r.s[0], &s0, sizeof s0);
    std::memcpy(r.s[1], &s1, sizeof s1);
    std::memcpy(r.s[2], &s2, sizeof s2);
    std::memcpy(r.s[3], &s3, sizeof s3);
    r.next = 0;
}

void seed_lanes(mab_rng &r, uint64_t seed) {
    uint64_t sm = seed;
    for (int l = 0; l < MAB_RNG_LANES; ++l) {
        for (int w = 0; w < 4; ++w) r.s[w][l] = splitmix64(sm);
    }
    r.next = MAB_RNG_BUFFER;  // empty: the first draw refills
}

// The stream of mab_beta_sample_keyed: item i reads splitmix64 (Steele, Lea and
// Flood) started at a key of (seed, i). Its words do not depend on each other.
struct KeyedStream {
    uint64_t seed;
    uint64_t state = 0;

    inline void start_item(uint64_t index, uint64_t w[4]) {
        const uint64_t key = mix64(seed ^ (index * 0xd1b54a32d192ed03ULL));
        for (int i = 0; i < 4; ++i) w[i] = mix64(key + (i + 1) * kGolden);  // independent
        state = key + 4 * kGolden;
    }
    inline uint64_t next() { return splitmix64(state); }
    inline double uniform() { return top53(next()) * 0x1.0p-53; }
    inline double uniform_open() { return (top53(next()) + 0.5) * 0x1.0p-53; }
};

// ---------------------------------------------------------------- normal

// Ziggurat of Marsaglia and Tsang (2000) with 256 layers and 53-bit magnitudes;
// r and the layer area v are the 256-layer constants (as in numpy).
constexpr int kLayers = 256;
constexpr double kR = 3.6541528853610088;
constexpr double kInvR = 1.0 / kR;
constexpr double kArea = 4.92867323399e-3;

struct Ziggurat {
    uint64_t k[kLayers];  // magnitude below which layer i accepts at once
    double w[kLayers];    // magnitude -> x scale of layer i
    double f[kLayers];    // density exp(-x^2/2) at layer i's edge

    Ziggurat() {
        const double m = 0x1.0p53;
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

// The rare ways out of the ziggurat: the base strip's tail, or a wedge.
template <class Rng>
__attribute__((noinline)) double normal_slow(Rng &rng, unsigned layer, uint64_t magnitude,
                                             bool negative) {
    for (;;) {
        const double x = static_cast<double>(static_cast<int64_t>(magnitude)) * kZig.w[layer];
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
        magnitude = u >> 11;
        if (magnitude < kZig.k[layer]) {
            const double y = static_cast<double>(static_cast<int64_t>(magnitude)) * kZig.w[layer];
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

template <class Rng>
inline double normal_from(Rng &rng, uint64_t u) {
    const unsigned layer = static_cast<unsigned>(u & 0xff);  // bits 0-7; bit 8 is the sign
    const uint64_t magnitude = u >> 11;                      // bits 11-63
    if (__builtin_expect(magnitude < kZig.k[layer], 1)) {
        return with_sign_of_bit8(top53(u) * kZig.w[layer], u);
    }
    return normal_slow(rng, layer, magnitude, (u >> 8) & 1);
}

template <class Rng>
inline double normal(Rng &rng) {
    return normal_from(rng, rng.next());
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
// 0.03% at d = 100. d, c and e are precomputed per shape (they vectorize).
struct GammaShape {
    double d, c, e;
};

// 1 / sqrt(x) for normal x > 0 from IEEE adds and multiplies only: the classic
// bit-level first guess (3.4% off), then four Newton steps (error ~1e-16). Unlike
// sqrt followed by a division it vectorizes on the FP multipliers instead of the
// divider, ~2 ns per item less; and it rounds the same on every ISA.
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

// gamma_shape for 4 shapes at once, in GCC vector types, so the rsqrt's integer
// step vectorizes too (the compiler leaves the scalar loop alone). Same operations
// in the same order as gamma_shape: the same results.
typedef double F64x4 __attribute__((vector_size(32)));
typedef uint64_t U64x4 __attribute__((vector_size(32)));

inline __attribute__((always_inline)) void gamma_shape4(const double *shape, double *d_out,
                                                       double *c_out, double *e_out) {
    F64x4 s;
    std::memcpy(&s, shape, sizeof s);
    const F64x4 d = s - 1.0 / 3.0;
    const U64x4 bits = 0x5fe6eb50c7b537a9ULL - (reinterpret_cast<const U64x4 &>(d) >> 1);
    F64x4 y = reinterpret_cast<const F64x4 &>(bits);
    const F64x4 half_d = 0.5 * d;
    for (int step = 0; step < 4; ++step) y = y * (1.5 - half_d * y * y);
    const F64x4 c = y * (1.0 / 3.0);
    const F64x4 e = c * c * (1.0 / 12.0) * (1.0 + 0x1.0p-40);
    std::memcpy(d_out, &d, sizeof d);
    std::memcpy(c_out, &c, sizeof c);
    std::memcpy(e_out, &e, sizeof e);
}

// min(x, 1) without a branch: its operand's sign is random, so a branch would
// mispredict half the time.
inline double min_one(double x) {
#if defined(__x86_64__)
    return _mm_cvtsd_f64(_mm_min_sd(_mm_set_sd(x), _mm_set_sd(1.0)));
#else
    return std::fmin(x, 1.0);  // one instruction on aarch64
#endif
}

template <class Rng>
inline double gamma_mt(Rng &rng, double d, double c, double e) {
    for (;;) {
        double x, v1;
        do {
            x = normal(rng);
            v1 = 1.0 + c * x;
        } while (__builtin_expect(v1 <= 0.0, 0));
        const double v = v1 * v1 * v1;
        const double u = rng.uniform();
        const double x2 = x * x;
        if (__builtin_expect((1.0 - u) * min_one(v1) > e * x2 * x2, 1)) return d * v;
        if (std::log(u) < 0.5 * x2 + d * (1.0 - v + std::log(v))) return d * v;
    }
}

// Like gamma_mt, with the first candidate made from the words `wn` (normal) and
// `wu` (uniform); the rare rejection goes on with gamma_mt, out of line.
template <class Rng>
__attribute__((noinline)) double gamma_mt_cold(Rng &rng, double d, double c, double e) {
    return gamma_mt(rng, d, c, e);
}

template <class Rng>
inline double gamma_first(Rng &rng, uint64_t wn, uint64_t wu, double d, double c, double e) {
    const double x = normal_from(rng, wn);
    const double v1 = 1.0 + c * x;
    if (__builtin_expect(v1 > 0.0, 1)) {
        const double v = v1 * v1 * v1;
        const double x2 = x * x;
        const double one_minus_u = (top53(wu) + 1.0) * 0x1.0p-53;  // (0, 1]: u is in [0, 1)
        if (__builtin_expect(one_minus_u * min_one(v1) > e * x2 * x2, 1)) return d * v;
        if (std::log(1.0 - one_minus_u) < 0.5 * x2 + d * (1.0 - v + std::log(v))) return d * v;
    }
    return gamma_mt_cold(rng, d, c, e);
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
double beta_from_logs(double lx, double ly) {
    const double t = ly - lx;
    if (t > 0) {
        const double e = std::exp(-t);
        return e / (1.0 + e);
    }
    return 1.0 / (1.0 + std::exp(t));
}

// ---------------------------------------------------------------- arrays

constexpr size_t kBlock = 256;

// One block of at most kBlock draws. Shapes >= 1 (all of them in practice:
// counts plus a prior of 1) take the fast path; the rest go through log space.
template <class Rng>
inline __attribute__((always_inline)) void beta_block(Rng &rng, uint64_t first, const double *a,
                                                      size_t a_stride, const double *b,
                                                      size_t b_stride, size_t n, double *out) {
    double fill_a[kBlock], fill_b[kBlock];  // a scalar parameter, repeated
    double da[kBlock], ca[kBlock], ea[kBlock], db[kBlock], cb[kBlock], eb[kBlock];
    double x[kBlock], y[kBlock];
    const double *sa = a, *sb = b;
    if (a_stride == 0) {
        for (size_t i = 0; i < n; ++i) fill_a[i] = a[0];
        sa = fill_a;
    }
    if (b_stride == 0) {
        for (size_t i = 0; i < n; ++i) fill_b[i] = b[0];
        sb = fill_b;
    }
    // Vectorized. Meaningless for shapes < 1, and unused.
    size_t i4 = 0;
    for (; i4 + 4 <= n; i4 += 4) {
        gamma_shape4(sa + i4, da + i4, ca + i4, ea + i4);
        gamma_shape4(sb + i4, db + i4, cb + i4, eb + i4);
    }
    for (size_t i = i4; i < n; ++i) {
        const GammaShape ga = gamma_shape(sa[i]), gb = gamma_shape(sb[i]);
        da[i] = ga.d;
        ca[i] = ga.c;
        ea[i] = ga.e;
        db[i] = gb.d;
        cb[i] = gb.c;
        eb[i] = gb.e;
    }
    bool any_small = false;
    for (size_t i = 0; i < n; ++i) {
        uint64_t w[4];
        rng.start_item(first + i, w);
        if (__builtin_expect(sa[i] >= 1.0 && sb[i] >= 1.0, 1)) {
            x[i] = gamma_first(rng, w[0], w[1], da[i], ca[i], ea[i]);
            y[i] = gamma_first(rng, w[2], w[3], db[i], cb[i], eb[i]);
        } else {
            // Rare: the words are left unused, so this path stays simple.
            any_small = true;
            const double lx = log_gamma_draw(rng, sa[i]);
            const double ly = log_gamma_draw(rng, sb[i]);
            x[i] = beta_from_logs(lx, ly);
            y[i] = -1.0;  // marks a result already in x
        }
    }
    // Vectorized: halves keep the sum finite for shapes near DBL_MAX.
    for (size_t i = 0; i < n; ++i) {
        const double hx = 0.5 * x[i];
        out[i] = hx / (hx + 0.5 * y[i]);
    }
    if (__builtin_expect(any_small, 0)) {
        for (size_t i = 0; i < n; ++i) {
            if (y[i] < 0.0) out[i] = x[i];
        }
    }
}

template <class Rng>
inline __attribute__((always_inline)) void beta_array(Rng &rng, uint64_t first, const double *a,
                                                      size_t a_stride, const double *b,
                                                      size_t b_stride, size_t n, double *out) {
    Rng local = rng;  // a local copy, so its fields can live in registers
    for (size_t lo = 0; lo < n; lo += kBlock) {
        const size_t m = n - lo < kBlock ? n - lo : kBlock;
        beta_block(local, first + lo, a + lo * a_stride, a_stride, b + lo * b_stride, b_stride, m,
                   out + lo);
    }
    rng = local;
}

// Two builds of the same loops, chosen once by what the CPU has: the portable
// one (SSE2 on x86-64, the baseline elsewhere) and, on x86-64, one with AVX2 for
// the vectorized steps. No FMA: results must not depend on the path.
using RefillFn = void (*)(mab_rng &);

void refill_portable(mab_rng &r) { refill_lanes(r); }

template <class Rng>
using BetaArrayFn = void (*)(Rng &, uint64_t, const double *, size_t, const double *, size_t,
                             size_t, double *);

template <class Rng>
void beta_array_portable(Rng &rng, uint64_t first, const double *a, size_t a_stride,
                         const double *b, size_t b_stride, size_t n, double *out) {
    beta_array(rng, first, a, a_stride, b, b_stride, n, out);
}

#if defined(__x86_64__) && defined(__GNUC__)
#define MAB_HAVE_AVX2_PATH 1
template <class Rng>
__attribute__((target("avx2"))) void beta_array_avx2(Rng &rng, uint64_t first, const double *a,
                                                     size_t a_stride, const double *b,
                                                     size_t b_stride, size_t n, double *out) {
    beta_array(rng, first, a, a_stride, b, b_stride, n, out);
}

__attribute__((target("avx2"))) void refill_avx2(mab_rng &r) { refill_lanes(r); }
#endif

struct Dispatch {
    BetaArrayFn<LaneStream> plain = beta_array_portable<LaneStream>;
    BetaArrayFn<KeyedStream> keyed = beta_array_portable<KeyedStream>;
    RefillFn refill = refill_portable;
    const char *isa = "portable";

    Dispatch() {
#ifdef MAB_HAVE_AVX2_PATH
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && std::getenv("MAB_NATIVE_PORTABLE") == nullptr) {
            plain = beta_array_avx2<LaneStream>;
            keyed = beta_array_avx2<KeyedStream>;
            refill = refill_avx2;
            isa = "avx2";
        }
#endif
    }
};

const Dispatch kDispatch;

void LaneStream::refill() {
    kDispatch.refill(*r);
    pos = 0;
}

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

extern "C" void mab_rng_seed(mab_rng *rng, uint64_t seed) { seed_lanes(*rng, seed); }

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
    LaneStream stream(*rng);
    kDispatch.plain(stream, 0, a, a_stride, b, b_stride, n, out);
    stream.done();
}

extern "C" void mab_beta_sample_keyed(uint64_t seed, uint64_t first, const double *a,
                                      size_t a_stride, const double *b, size_t b_stride, size_t n,
                                      double *out) {
    KeyedStream stream{seed};
    kDispatch.keyed(stream, first, a, a_stride, b, b_stride, n, out);
}
