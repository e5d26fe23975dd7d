// The candidate pass over a block, one kernel per ISA (portable, AVX2, AVX-512).
// Included by sample.cpp only, inside its anonymous namespace.
#pragma once

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
