// One draw at a time: the ziggurat normal, Marsaglia-Tsang gamma candidates and
// their exact rejection, the log-space path for shapes < 1. The scalar reference
// that every kernel of sample_kernels.h must match bit for bit.
// Included by sample.cpp only, inside its anonymous namespace.
#pragma once

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
