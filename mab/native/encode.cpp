// See encode.h. Scores are written as the shortest decimal that round-trips
// (std::to_chars, or the same bytes faster for scores in [0.001, 1)), which is what
// Python's repr and orjson write too.
#include "encode.h"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cstring>
#include <new>
#include <vector>

#include "spans.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace {

constexpr char kOpen[] = "{\"id\":";
constexpr char kScore[] = ",\"score\":";
// Room for a score: to_chars of any double fits in 24 characters, and
// write_unit_fraction writes 22 bytes at most.
constexpr size_t kMaxDouble = 32;

constexpr uint64_t kPow10[20] = {  // 10^19 < 2^64
    1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL,
    1000000ULL, 10000000ULL, 100000000ULL, 1000000000ULL, 10000000000ULL,
    100000000000ULL, 1000000000000ULL, 10000000000000ULL, 100000000000000ULL,
    1000000000000000ULL, 10000000000000000ULL, 100000000000000000ULL,
    1000000000000000000ULL, 10000000000000000000ULL,
};

// The digits of a, then of b (a, b < 10^8), 8 each, zero-padded. Divisions by
// constants are multiplies and shifts, exact in these ranges.
#if defined(__SSE2__)
// Quotient and remainder three times: by 10^4 (32-bit lanes: pmuludq keeps whole
// products), by 100 (16-bit lanes: g * 5243 >> 19 with pmulhuw's >> 16), by 10
// (v * 6554 >> 16); each time the remainder goes into the upper half of the lane,
// so the digits come out in order: fewer multiplies than dividing each 4-digit
// group by 1000, 100, 10 and 1 in separate lanes (bench/RESULTS.md, section 0b).
inline void write_16_digits(char *p, uint32_t a, uint32_t b) {
    const __m128i halves = _mm_set_epi64x(b, a);
    const __m128i fronts = _mm_srli_epi64(  // x / 10^4 = x * 0xd1b71759 >> 45
        _mm_mul_epu32(halves, _mm_set1_epi32(static_cast<int>(0xd1b71759))), 45);
    const __m128i backs = _mm_sub_epi32(halves, _mm_mul_epu32(fronts, _mm_set1_epi32(10000)));
    const __m128i groups = _mm_or_si128(fronts, _mm_slli_epi64(backs, 32));
    const __m128i hundreds = _mm_srli_epi16(_mm_mulhi_epu16(groups, _mm_set1_epi16(5243)), 3);
    const __m128i pairs = _mm_or_si128(
        hundreds,
        _mm_slli_epi32(_mm_sub_epi16(groups, _mm_mullo_epi16(hundreds, _mm_set1_epi16(100))), 16));
    const __m128i tens = _mm_mulhi_epu16(pairs, _mm_set1_epi16(6554));
    const __m128i ones = _mm_sub_epi16(pairs, _mm_mullo_epi16(tens, _mm_set1_epi16(10)));
    const __m128i digits =
        _mm_add_epi8(_mm_or_si128(tens, _mm_slli_epi16(ones, 8)), _mm_set1_epi8('0'));
    _mm_storeu_si128(reinterpret_cast<__m128i *>(p), digits);
}
#else
// SWAR: 8 digits in one 64-bit word, split into 32-bit lanes, 16-bit lanes, bytes.
// x / 100 = x * 10486 >> 20 for x < 10^4; x / 10 = x * 103 >> 10 for x < 100.
inline uint64_t ascii_8_digits(uint32_t n) {
    uint64_t lanes = n / 10000 | static_cast<uint64_t>(n % 10000) << 32;
    const uint64_t hundreds = ((lanes * 10486) >> 20) & 0x0000007f0000007fULL;
    lanes = (lanes - hundreds * 100) << 16 | hundreds;
    const uint64_t tens = ((lanes * 103) >> 10) & 0x000f000f000f000fULL;
    lanes = (lanes - tens * 10) << 8 | tens;
    lanes |= 0x3030303030303030ULL;  // the first digit in the lowest byte
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    lanes = __builtin_bswap64(lanes);
#endif
    return lanes;
}

inline void write_16_digits(char *p, uint32_t a, uint32_t b) {
    const uint64_t first = ascii_8_digits(a), second = ascii_8_digits(b);
    std::memcpy(p, &first, 8);
    std::memcpy(p + 8, &second, 8);
}
#endif

// n < 10^17 as 17 digits, zero-padded.
inline void write_17_digits(char *p, uint64_t n) {
    const uint32_t high = static_cast<uint32_t>(n / 100000000);  // < 10^9
    const uint32_t lead = high / 100000000;
    *p = static_cast<char>('0' + lead);
    write_16_digits(p + 1, high - lead * 100000000, static_cast<uint32_t>(n % 100000000));
}

// What std::to_chars writes for 0.001 <= x < 1, the general way (write_unit_fraction
// below is the fast path). In this range it always writes "0.ddd" with the fewest
// digits that parse back to x, the nearest to x among those (ties: even). Exact
// integer arithmetic, after Ryu's rules: candidates are D / 10^K, x and the bounds of
// the reals that round to x are fixed-point numbers f / 2^64.
[[gnu::noinline]] char *write_unit_fraction_general(char *p, double x) {
    using u128 = unsigned __int128;
    uint64_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    const int e = static_cast<int>(bits >> 52);  // biased exponent, 1013..1022 here
    const uint64_t m = (bits & ((1ULL << 52) - 1)) | (1ULL << 52);
    // x = f / 2^64 exactly: x < 1, and its lowest bit is worth 2^-62 or more.
    const uint64_t f = m << (e - 1011);
    // Halfway to the neighbours; below a power of two the gap is half as wide.
    const uint64_t up = 1ULL << (e - 1012);
    const uint64_t down = m == (1ULL << 52) ? up / 2 : up;
    // K such that floor(x * 10^K) has 17 digits. The double 0.1 lies just above 1/10
    // with no double in between, so x >= 0.1 is x >= 1/10; the same for 0.01.
    const int K = x >= 0.1 ? 17 : x >= 0.01 ? 18 : 19;
    const u128 v = u128(f) * kPow10[K];
    const u128 hi = u128(f + up) * kPow10[K];
    const u128 lo = u128(f - down) * kPow10[K];
    // The integers D in [lo, hi] / 2^64: parsing rounds half to even, so x owns the
    // halfway points when m is even; when odd, only the integers strictly inside.
    const uint64_t odd = m & 1;
    uint64_t lo_d = static_cast<uint64_t>(lo >> 64) + (odd | (static_cast<uint64_t>(lo) != 0));
    uint64_t hi_d = static_cast<uint64_t>(hi >> 64) - (odd & (static_cast<uint64_t>(hi) == 0));
    uint64_t t = static_cast<uint64_t>(v >> 64);
    // With 17 digits the range is wider than 1, so it holds an integer.
    assert(t >= kPow10[16] && t < kPow10[17] && lo_d <= hi_d);
    // Fewest digits: the largest j such that [lo_d, hi_d] holds a multiple of 10^j.
    // Divides by 10 step by step: nested floors (ceilings) are one floor (ceiling).
    int j = 0;
    while ((lo_d + 9) / 10 <= hi_d / 10) {
        lo_d = (lo_d + 9) / 10;
        hi_d /= 10;
        t /= 10;
        ++j;
    }
    // Nearest: t or t + 1 (in units of 10^j), then the one in range (that matters
    // only below a power of two, where the range is lopsided).
    const u128 below = v - (u128(t * kPow10[j]) << 64);  // (x 10^K - t 10^j) 2^64
    const u128 half = u128(kPow10[j]) << 63;
    uint64_t d = t + (below > half || (below == half && t % 2 == 1));
    d = std::clamp(d, lo_d, hi_d);
    // "0." and K - j fraction digits: those of d * 10^j (< 10^17), after K - 17
    // zeros. Writes 17 digits whatever j: what lies past the returned end is scratch.
    assert(d * kPow10[j] < kPow10[17]);
    std::memcpy(p, "0.00", 4);
    write_17_digits(p + 2 + (K - 17), d * kPow10[j]);
    return p + 2 + (K - j);
}

// For each binade of [0.001, 1) (biased exponent 1013 + i) and whether x lies below
// the 0.1 or 0.01 that cuts it (cut[i], 0 if none): K - 17, m * p8s[.] = x 10^(K-8)
// 2^64 (x = m 2^(e-1075), so p8s = 10^(K-8) 2^(e-1011)), and half a gap times 10^K
// 2^64 as 128 bits: 10^K 2^(e-1012).
struct Scale {
    uint64_t p8s, u_lo, u_hi;
    int64_t k_17;
};
struct Scales {
    uint64_t cut[10];
    Scale s[20];  // [2 i + below the cut]
};
constexpr Scales make_scales() {
    Scales t{};
    for (int i = 0; i < 10; ++i) {
        const int e = 1013 + i;
        const int K = e >= 1019 ? 17 : e >= 1016 ? 18 : 19;  // above the cut
        t.cut[i] = e == 1019 ? 0x3fb999999999999aULL : e == 1016 ? 0x3f847ae147ae147bULL : 0;
        for (int below = 0; below < 2; ++below) {
            const int k = K + (t.cut[i] != 0 && below);
            const unsigned __int128 u = static_cast<unsigned __int128>(kPow10[k]) << (e - 1012);
            t.s[2 * i + below] = Scale{kPow10[k - 8] << (e - 1011), static_cast<uint64_t>(u),
                                       static_cast<uint64_t>(u >> 64), k - 17};
        }
    }
    return t;
}
constexpr Scales kScales = make_scales();

// "000" .. "999" (and a spare byte, for 4-byte copies).
struct Digits3 {
    char s[1000][4];
};
constexpr Digits3 make_digits3() {
    Digits3 t{};
    for (int i = 0; i < 1000; ++i) {
        t.s[i][0] = static_cast<char>('0' + i / 100);
        t.s[i][1] = static_cast<char>('0' + i / 10 % 10);
        t.s[i][2] = static_cast<char>('0' + i % 10);
    }
    return t;
}
constexpr Digits3 kDigits3 = make_digits3();

// x % 10 and x % 100 for x < 1000: loads instead of multiplies on the fast path.
struct Mods {
    uint8_t m[1000][2];
};
constexpr Mods make_mods() {
    Mods t{};
    for (int i = 0; i < 1000; ++i) {
        t.m[i][0] = static_cast<uint8_t>(i % 10);
        t.m[i][1] = static_cast<uint8_t>(i % 100);
    }
    return t;
}
constexpr Mods kMods = make_mods();

// write_unit_fraction_general's bytes at under half its cost (the formatter was the
// largest single cost of /predict: bench/RESULTS.md, section 0b). The scaled bounds
// lie within 9 of t = floor(x 10^K) (17 digits), so when no multiple of 1000 lies
// between them, the answer differs from t in its last 3 digits only and has at most
// 2 fewer digits: the digits of t go out at once while those 3 are decided without a
// branch (j = 1 and j = 2 are coin flips). Anything else takes the general path.
inline char *write_unit_fraction(char *p, double x) {
    using u128 = unsigned __int128;
    uint64_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    const size_t binade = (bits >> 52) - 1013;
    const Scale &sc = kScales.s[2 * binade + (bits < kScales.cut[binade])];
    // t = hi9 10^8 + lo8 and its fraction frac / 2^64, by two exact products: no
    // 64-bit division to split t for the digit writer.
    const u128 v8 = u128((bits & ((1ULL << 52) - 1)) | (1ULL << 52)) * sc.p8s;
    const uint64_t hi9 = static_cast<uint64_t>(v8 >> 64);
    const u128 w = u128(static_cast<uint64_t>(v8)) * 100000000;
    const uint32_t lo8 = static_cast<uint32_t>(w >> 64);
    const uint64_t frac = static_cast<uint64_t>(w);
    // The integers in range are (t - b, t + a]: as in the general path, the halfway
    // points count when m is even, not when odd. (A power of two, whose lower gap is
    // half as wide, has x 10^K an integer: frac == 0 sends it the general way below.)
    const uint64_t half_lo = sc.u_lo - (bits & 1);
    const uint32_t a = static_cast<uint32_t>(sc.u_hi) + (frac + half_lo < frac);
    const uint32_t b = static_cast<uint32_t>(sc.u_hi) + (frac <= half_lo);
    const uint32_t r = lo8 % 1000;
    const uint32_t lo = r - b, hi = r + a;  // the range, relative to t - r
    // A multiple of 1000 in range (j >= 3), or x 10^K with a fraction of 0 or 1/2
    // (ties: never seen in Beta draws; the general path has the rules): general path.
    if (__builtin_expect((lo >= 1000) | (hi >= 1000) | ((frac << 1) == 0), 0)) {
        return write_unit_fraction_general(p, x);
    }
    // j: whether a multiple of 10 (of 100) lies in [lo + 1, hi], i.e. hi % 10 (hi %
    // 100) < hi - lo. The candidates: the nearest integer, the nearest multiple of 10
    // (range wider than 1, so in it), the only multiple of 100 (range narrower than
    // 100). x / 10 = x * 205 >> 11 for x < 1029.
    const uint32_t width = a + b, hi_mod10 = kMods.m[hi][0], hi_mod100 = kMods.m[hi][1];
    const uint32_t j1 = hi_mod10 < width, j2 = hi_mod100 < width;
    const uint32_t c0 = r + static_cast<uint32_t>(frac >> 63), c1 = 10 * (((r + 5) * 205) >> 11);
    // Masks, not ?: (which gcc compiles to jumps here).
    const uint32_t c01 = c0 ^ ((c0 ^ c1) & (0 - j1));
    const uint32_t r3 = c01 ^ ((c01 ^ (hi - hi_mod100)) & (0 - j2));
    assert(r3 < 1000 && r3 + 1 > lo && r3 <= hi);
    // "0." and K - 17 zeros, the 17 digits of t, its last 3 replaced by r3's.
    const uint32_t lead = static_cast<uint32_t>((hi9 * 1441151881) >> 57);  // hi9 / 10^8
    std::memcpy(p, "0.00", 4);
    char *digits = p + 2 + sc.k_17;
    *digits = static_cast<char>('0' + lead);
    write_16_digits(digits + 1, static_cast<uint32_t>(hi9) - lead * 100000000, lo8);
    std::memcpy(digits + 14, kDigits3.s[r3], 4);
    return digits + 17 - (j1 + j2);
}

[[gnu::noinline]] char *write_score_general(char *p, double score) {
    auto [end, ec] = std::to_chars(p, p + kMaxDouble, score);
    if (ec != std::errc()) return nullptr;
    // Keep it a float for JSON readers that distinguish: 0 -> 0.0, 1 -> 1.0. Only
    // such integer-looking output has none of '.', 'e' (exponent) or inf / nan.
    const char *c = p + (*p == '-');
    while (c < end && static_cast<unsigned>(*c - '0') < 10) ++c;
    if (c == end) {
        *end++ = '.';
        *end++ = '0';
    }
    return end;
}

inline char *write_score(char *p, double score) {
    uint64_t bits;
    std::memcpy(&bits, &score, sizeof bits);
    // 0.001 <= score < 1 as one unsigned compare of the bits (false for negatives, NaN).
    constexpr uint64_t kMilli = 0x3f50624dd2f1a9fcULL, kOne = 0x3ff0000000000000ULL;
    if (bits - kMilli < kOne - kMilli) return write_unit_fraction(p, score);
    return write_score_general(p, score);
}

// memcpy(dst, src, n) for an id literal (n >= 2: quotes included) without the libc
// call (a measurable share of an item: bench/RESULTS.md, section 0b): two overlapping copies of 8 or 16 bytes cover
// 8..32 bytes and read only [src, src + n), as the id may end where the request
// body does.
inline void copy_id(char *dst, const char *src, size_t n) {
    if (n >= 8 && n <= 32) {
        if (n <= 16) {
            uint64_t head, tail;
            std::memcpy(&head, src, 8);
            std::memcpy(&tail, src + n - 8, 8);
            std::memcpy(dst, &head, 8);
            std::memcpy(dst + n - 8, &tail, 8);
        } else {
            char head[16], tail[16];
            std::memcpy(head, src, 16);
            std::memcpy(tail, src + n - 16, 16);
            std::memcpy(dst, head, 16);
            std::memcpy(dst + n - 16, tail, 16);
        }
    } else {
        std::memcpy(dst, src, n);
    }
}

}  // namespace

extern "C" size_t mab_encode_bound(size_t src_len, size_t k) {
    return src_len + k * (sizeof(kOpen) + sizeof(kScore) + kMaxDouble + 4) + 2;
}

int mab::encode_ranked(const char *src, const size_t *spans, size_t n, const double *scores,
                       const int64_t *order, size_t k, char *out, size_t out_cap,
                       size_t *written) {
    if (k > n) return MAB_E_RANGE;
    char *p = out;
    const char *limit = out + out_cap;
    // The constant parts as whole-word stores: `},{"id":` (`[{"id":` first) before
    // each id, 16 bytes from `,"score":` after it (the score overwrites the rest).
    char first[8], next[8], score_key[16] = {};
    std::memcpy(first, "[{\"id\":", 8);
    std::memcpy(next, "},{\"id\":", 8);
    std::memcpy(score_key, kScore, sizeof(kScore) - 1);
    if (k == 0) {
        if (limit - p < 2) return MAB_E_SPACE;
        std::memcpy(p, "[]", 2);
        *written = 2;
        return MAB_OK;
    }
    // Items go out in rank order, so spans, ids and scores are read at random, and in
    // the server they are rarely still in the caches: an item's span is fetched 16
    // items ahead, then its id and score 8 ahead (bench/RESULTS.md, section 0b). (The
    // id prefetch reads spans: only for order entries in range.)
    constexpr size_t kSpanAhead = 16, kItemAhead = 8;
    for (size_t r = 0; r < k; ++r) {
        if (r + kSpanAhead < k) {
            const uint64_t j = static_cast<uint64_t>(order[r + kSpanAhead]);
            if (j < n) __builtin_prefetch(&spans[2 * j]);
        }
        if (r + kItemAhead < k) {
            const uint64_t j = static_cast<uint64_t>(order[r + kItemAhead]);
            if (j < n) {
                __builtin_prefetch(src + spans[2 * j]);
                __builtin_prefetch(&scores[j]);
            }
        }
        const int64_t i = order[r];
        if (i < 0 || static_cast<size_t>(i) >= n) return MAB_E_RANGE;
        const size_t begin = spans[2 * i], end = spans[2 * i + 1];
        constexpr size_t kItemRoom = sizeof(kOpen) + sizeof(kScore) + kMaxDouble + 4;
        if (static_cast<size_t>(limit - p) < end - begin + kItemRoom) return MAB_E_SPACE;
        std::memcpy(p, r > 0 ? next : first, 8);
        p += r > 0 ? 8 : 7;
        copy_id(p, src + begin, end - begin);
        p += end - begin;
        std::memcpy(p, score_key, 16);
        p += sizeof(kScore) - 1;
        p = write_score(p, scores[i]);
        if (p == nullptr) return MAB_E_SPACE;
    }
    if (limit - p < 2) return MAB_E_SPACE;
    std::memcpy(p, "}]", 2);
    *written = static_cast<size_t>(p + 2 - out);
    return MAB_OK;
}

extern "C" int mab_encode_ranked(const char *src, size_t src_len, const size_t *spans, size_t n,
                                 const double *scores, const int64_t *order, size_t k, char *out,
                                 size_t out_cap, size_t *written) {
    if (!mab::spans_in_range(spans, n, src_len)) return MAB_E_RANGE;
    return mab::encode_ranked(src, spans, n, scores, order, k, out, out_cap, written);
}
