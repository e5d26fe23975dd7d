// See codec.h. Scores are written as the shortest decimal that round-trips
// (std::to_chars, or the same bytes faster for scores in [0.001, 1)), which is what
// Python's repr and orjson write too.
#include "codec.h"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cstring>
#include <new>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace {

constexpr char kOpen[] = "{\"id\":";
constexpr char kScore[] = ",\"score\":";
// Room for a score: to_chars of any double fits in 24 characters, and
// write_unit_fraction writes 21 bytes at most.
constexpr size_t kMaxDouble = 32;

// Finds the [begin, end) of each of the n strings (quotes included) of a JSON array.
bool find_spans(const char *json, size_t len, size_t n, size_t *spans) {
    size_t i = 0;
    if (len < 2 || json[i++] != '[') return false;
    for (size_t item = 0; item < n; ++item) {
        if (item > 0 && (i >= len || json[i++] != ',')) return false;
        if (i >= len || json[i] != '"') return false;
        spans[2 * item] = i++;
        while (i < len && json[i] != '"') i += (json[i] == '\\') ? 2 : 1;
        if (i >= len) return false;
        spans[2 * item + 1] = ++i;
    }
    return i + 1 == len && json[i] == ']';
}

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
// All 16 at once: the four 4-digit groups, each copied to four 16-bit lanes and
// divided there by 1000, 100, 10 and 1; then digit i = lane i - 10 * lane i-1.
// pmulhuw keeps a product's high 16 bits, so lane k gets 4g * scale_k >> 16
// (multiplying by shift_k = 2^s then is a shift right by 16 - s): g * 8389 >> 23,
// g * 5243 >> 19, g * 13108 >> 17, g. ~12 ns a score with this, ~18 with the
// SWAR code below (whose multiplies queue on one port).
inline void write_16_digits(char *p, uint32_t a, uint32_t b) {
    const __m128i halves = _mm_set_epi64x(b, a);
    const __m128i fronts = _mm_srli_epi64(  // x / 10^4 = x * 0xd1b71759 >> 45
        _mm_mul_epu32(halves, _mm_set1_epi32(static_cast<int>(0xd1b71759))), 45);
    const __m128i backs = _mm_sub_epi32(halves, _mm_mul_epu32(fronts, _mm_set1_epi32(10000)));
    const __m128i groups = _mm_or_si128(fronts, _mm_slli_epi64(backs, 16));  // a0 a1 . . b0 b1 . .
    const __m128i a_pairs = _mm_unpacklo_epi16(groups, groups);             // a0 a0 a1 a1 . . . .
    const __m128i b_pairs = _mm_unpackhi_epi16(groups, groups);
    const short two_15 = static_cast<short>(0x8000);
    const __m128i scale = _mm_setr_epi16(8389, 5243, 13108, two_15, 8389, 5243, 13108, two_15);
    const __m128i shift =
        _mm_setr_epi16(1 << 7, 1 << 11, 1 << 13, two_15, 1 << 7, 1 << 11, 1 << 13, two_15);
    __m128i lanes[2] = {_mm_unpacklo_epi32(a_pairs, a_pairs),   // a0 a0 a0 a0 a1 a1 a1 a1
                        _mm_unpacklo_epi32(b_pairs, b_pairs)};
    for (__m128i &v : lanes) {
        v = _mm_mulhi_epu16(_mm_mulhi_epu16(_mm_slli_epi16(v, 2), scale), shift);
        v = _mm_sub_epi16(v, _mm_slli_epi64(_mm_mullo_epi16(v, _mm_set1_epi16(10)), 16));
    }
    const __m128i digits = _mm_add_epi8(_mm_packus_epi16(lanes[0], lanes[1]), _mm_set1_epi8('0'));
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

// What std::to_chars writes for 0.001 <= x < 1, at a fraction of its cost (it was
// the largest single cost of /predict). In this range it always writes "0.ddd"
// with the fewest digits that parse back to x, the nearest to x among those (ties:
// even). Exact integer arithmetic, after Ryu's rules: candidates are D / 10^K, x
// and the bounds of the reals that round to x are fixed-point numbers f / 2^64.
char *write_unit_fraction(char *p, double x) {
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

char *write_score(char *p, double score) {
    if (score >= 0.001 && score < 1) return write_unit_fraction(p, score);  // false for NaN
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

// A key whose unsigned order is the descending order of the double: the IEEE bits
// made monotonic (flip all bits of negatives, the sign bit of the rest), inverted.
// Branch-free, so the loop building the radix items vectorizes (~1 us of 18 at
// 4,000 scores).
inline uint64_t descending_key(double x) {
    uint64_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    const uint64_t flip = static_cast<uint64_t>(static_cast<int64_t>(bits) >> 63) | (1ULL << 63);
    return ~(bits ^ flip);
}

struct Keyed {
    uint64_t key;
    uint64_t index;
    bool operator<(const Keyed &other) const {
        return key < other.key || (key == other.key && index < other.index);
    }
};

inline bool ranks_before(const double *scores, uint64_t a, uint64_t b) {
    return Keyed{descending_key(scores[a]), a} < Keyed{descending_key(scores[b]), b};
}

// How many leading key bits are the same in every score (64: all keys equal). For
// scores in (0, 1) that is the sign and most of the exponent, ~8 bits. The raw bits
// give the same count as the keys: scores of one sign differ in the same bits either
// way, and scores of different signs differ in bit 63 either way.
int constant_key_bits(const double *scores, size_t n) {
    uint64_t first, diff = 0;
    std::memcpy(&first, scores, sizeof first);
    for (size_t i = 0; i < n; ++i) {
        uint64_t bits;
        std::memcpy(&bits, scores + i, sizeof bits);
        diff |= bits ^ first;
    }
    return diff ? __builtin_clzll(diff) : 64;
}

// Exclusive prefix sums over a multiple of 4 buckets, a block of 4 at a time so that
// one add per block is serial, not one per bucket (~1 us of 18 at 4,000 scores).
template <class Count>
void exclusive_sums(Count *counts, size_t size) {
    Count position = 0;
    for (size_t b = 0; b < size; b += 4) {
        const Count c0 = counts[b], c1 = counts[b + 1], c2 = counts[b + 2], c3 = counts[b + 3];
        counts[b] = position;
        counts[b + 1] = position + c0;
        counts[b + 2] = position + c0 + c1;
        counts[b + 3] = position + c0 + c1 + c2;
        position += c0 + c1 + c2 + c3;
    }
}

struct RankScratch {
    std::vector<uint64_t> items, other;
    std::vector<uint32_t> low_counts;
    std::vector<uint64_t> high_counts;
    std::vector<int64_t> out;
    std::vector<uint32_t> ties;
    std::vector<uint8_t> tie_flags;
};

// Sorting 4,000 scores was ~9% of a /predict's CPU. The radix sort moves 8-byte items:
// the key shifted past its constant bits (so the varying bits lead) with the index
// in the low 32 bits, and makes 2 stable LSD passes of kDigit bits each over the top
// 2 * kDigit varying bits (22 for 4,000 scores), a counting pass having found both
// histograms. More passes or fewer varying bits cost more than they save: an item
// is ~10 instructions a pass. The last pass writes the indices straight to the output
// and notes ties: items equal in all sorted bits (~8 a request at 4,000 Beta draws),
// found as an item arriving in a bucket with the same low digit as the one before
// it. Runs of ties are then put in full key order, which makes the result that of
// sorting Keyed. kDigit is a constant so the hot loops keep everything in registers.
template <int kDigit>
void radix_rank(const double *scores, size_t n, size_t k, int64_t *order, RankScratch &s) {
    constexpr size_t kBuckets = size_t(1) << kDigit;
    constexpr int kHighShift = 64 - kDigit, kLowShift = 64 - 2 * kDigit;
    constexpr uint64_t kDigitMask = kBuckets - 1, kIndexMask = 0xffffffff;
    const int constant = constant_key_bits(scores, n);
    if (constant == 64) {  // all equal: index order
        for (size_t r = 0; r < k; ++r) order[r] = static_cast<int64_t>(r);
        return;
    }
    s.items.resize(n);
    s.other.resize(n);
    s.low_counts.assign(kBuckets, 0);
    s.high_counts.assign(kBuckets, 0);
    uint64_t *items = s.items.data(), *other = s.other.data();
    uint32_t *low = s.low_counts.data();
    uint64_t *high = s.high_counts.data();
    for (size_t i = 0; i < n; ++i)
        items[i] = ((descending_key(scores[i]) << constant) & ~kIndexMask) | i;
    // Counting in a loop of its own is faster than in the loop above (~2 us).
    for (size_t i = 0; i < n; ++i) {
        ++low[(items[i] >> kLowShift) & kDigitMask];
        ++high[items[i] >> kHighShift];
    }
    if (low[(items[0] >> kLowShift) & kDigitMask] != n) {  // else all one low digit
        exclusive_sums(low, kBuckets);
        for (size_t i = 0; i < n; ++i)
            other[low[(items[i] >> kLowShift) & kDigitMask]++] = items[i];
        std::swap(items, other);
    }
    // A high bucket's counter: the next position in its low 32 bits, 1 + the low digit
    // of the item last put there above them (0: none yet).
    exclusive_sums(high, kBuckets);
    int64_t *out = order;
    if (k < n) {
        s.out.resize(n);
        out = s.out.data();
    }
    if (s.ties.size() < n) s.ties.resize(n);
    uint32_t *ties = s.ties.data();
    size_t tie_count = 0;
    for (size_t i = 0; i < n; ++i) {
        const uint64_t item = items[i];
        const uint64_t counter = high[item >> kHighShift];
        const uint64_t tag = ((item >> kLowShift) & kDigitMask) + 1;
        const uint32_t p = static_cast<uint32_t>(counter);
        out[p] = static_cast<int64_t>(item & kIndexMask);
        if ((counter >> 32) == tag) ties[tie_count++] = p;  // ties with out[p - 1]
        high[item >> kHighShift] = (tag << 32) | (p + 1);
    }
    if (tie_count <= 64) {
        std::sort(ties, ties + tie_count);
    } else {  // many (few distinct scores): a counting sort, as positions are distinct
        s.tie_flags.assign(n, 0);
        for (size_t t = 0; t < tie_count; ++t) s.tie_flags[ties[t]] = 1;
        tie_count = 0;
        for (size_t p = 0; p < n; ++p)
            if (s.tie_flags[p]) ties[tie_count++] = static_cast<uint32_t>(p);
    }
    for (size_t t = 0; t < tie_count;) {  // each run of ties: out[first, last)
        const size_t first = ties[t] - 1;
        size_t last = ties[t] + 1;
        for (++t; t < tie_count && ties[t] == last; ++t) ++last;
        const auto before = [scores](int64_t a, int64_t b) { return ranks_before(scores, a, b); };
        if (last - first <= 16) {  // the common case: a pair; insertion sort
            for (size_t i = first + 1; i < last; ++i) {
                const int64_t x = out[i];
                size_t j = i;
                for (; j > first && before(x, out[j - 1]); --j) out[j] = out[j - 1];
                out[j] = x;
            }
        } else if (!std::is_sorted(out + first, out + last, before)) {  // e.g. equal scores
            std::sort(out + first, out + last, before);
        }
    }
    if (out != order) std::memcpy(order, out, k * sizeof *order);
}

// A short top-k (e.g. 10 of 4,000): count the top kDigit varying key bits,
// find the bucket where the k-th best falls, and sort only the items in it and before
// it, ~k of them. nth_element over all n was ~25 us at 4,000 scores.
template <int kDigit>
void select_rank(const double *scores, size_t n, size_t k, int64_t *order, RankScratch &s,
                 std::vector<Keyed> &best) {
    constexpr int kShift = 64 - kDigit;
    const int constant = constant_key_bits(scores, n);
    if (constant == 64) {  // all equal: index order
        for (size_t r = 0; r < k; ++r) order[r] = static_cast<int64_t>(r);
        return;
    }
    s.low_counts.assign(size_t(1) << kDigit, 0);
    uint32_t *counts = s.low_counts.data();
    for (size_t i = 0; i < n; ++i) ++counts[(descending_key(scores[i]) << constant) >> kShift];
    uint64_t last = 0;  // the bucket of the k-th best
    size_t candidates = counts[0];
    while (candidates < k) candidates += counts[++last];
    if (candidates <= n / 16) {  // the branch is rarely taken
        best.clear();
        for (size_t i = 0; i < n; ++i) {
            const uint64_t key = descending_key(scores[i]);
            if ((key << constant) >> kShift <= last) best.push_back(Keyed{key, i});
        }
    } else {  // many alike (e.g. equal scores) share the bucket: branch-free
        best.resize(n);
        size_t count = 0;
        for (size_t i = 0; i < n; ++i) {
            const uint64_t key = descending_key(scores[i]);
            best[count] = Keyed{key, i};
            count += (key << constant) >> kShift <= last;
        }
        best.resize(count);
    }
    std::nth_element(best.begin(), best.begin() + k, best.end());
    std::sort(best.begin(), best.begin() + k);
    for (size_t r = 0; r < k; ++r) order[r] = static_cast<int64_t>(best[r].index);
}

}  // namespace

extern "C" int mab_rank(const double *scores, size_t n, size_t k, int64_t *order) {
    if (k > n) return -1;
    if (k == 0) return 0;
    thread_local RankScratch scratch;
    thread_local std::vector<Keyed> items;
    try {
        if (n < 64 || n > 0xffffffff) {  // few (or more than 32-bit indices): sort Keyed
            items.resize(n);
            for (size_t i = 0; i < n; ++i) items[i] = Keyed{descending_key(scores[i]), i};
            if (k < n / 8) {
                std::nth_element(items.begin(), items.begin() + k, items.end());
                std::sort(items.begin(), items.begin() + k);
            } else {
                std::sort(items.begin(), items.end());
            }
            for (size_t r = 0; r < k; ++r) order[r] = static_cast<int64_t>(items[r].index);
        } else if (k < n / 16) {  // a short top-k; past n/16 the radix sort is faster
            if (n < 2048) {
                select_rank<9>(scores, n, k, order, scratch, items);
            } else {
                select_rank<11>(scores, n, k, order, scratch, items);
            }
        } else if (n < 2048) {
            // Each of the 2^digit buckets costs about what an item does, and each tie
            // more: 9-bit digits up to 2,000 scores, 11 to 32,000 (measured).
            radix_rank<9>(scores, n, k, order, scratch);
        } else if (n < 32768) {
            radix_rank<11>(scores, n, k, order, scratch);
        } else {
            radix_rank<13>(scores, n, k, order, scratch);
        }
    } catch (const std::bad_alloc &) {
        return -1;
    }
    return 0;
}

extern "C" int mab_codec_version(void) { return MAB_CODEC_VERSION; }

extern "C" size_t mab_encode_ranked_bound(size_t ids_json_len, size_t k) {
    return ids_json_len + k * (sizeof(kOpen) + sizeof(kScore) + kMaxDouble + 4) + 2;
}

extern "C" ptrdiff_t mab_encode_ranked_spans(const char *src, const size_t *spans, size_t n,
                                             const double *scores, const int64_t *order, size_t k,
                                             char *out, size_t out_cap) {
    if (k > n) return -1;
    char *p = out;
    const char *limit = out + out_cap;
    *p++ = '[';
    for (size_t r = 0; r < k; ++r) {
        const int64_t i = order[r];
        if (i < 0 || static_cast<size_t>(i) >= n) return -1;
        const size_t begin = spans[2 * i], end = spans[2 * i + 1];
        if (static_cast<size_t>(limit - p) < end - begin + sizeof(kOpen) + sizeof(kScore) + kMaxDouble + 4) {
            return -1;
        }
        if (r > 0) *p++ = ',';
        std::memcpy(p, kOpen, sizeof(kOpen) - 1);
        p += sizeof(kOpen) - 1;
        std::memcpy(p, src + begin, end - begin);
        p += end - begin;
        std::memcpy(p, kScore, sizeof(kScore) - 1);
        p += sizeof(kScore) - 1;
        p = write_score(p, scores[i]);
        if (p == nullptr) return -1;
        *p++ = '}';
    }
    if (p >= limit) return -1;
    *p++ = ']';
    return p - out;
}

extern "C" ptrdiff_t mab_encode_ranked(const char *ids_json, size_t ids_json_len, size_t n,
                                       const double *scores, const int64_t *order, size_t k,
                                       size_t *spans, char *out, size_t out_cap) {
    if (k > n || out_cap < mab_encode_ranked_bound(ids_json_len, k)) return -1;
    if (!find_spans(ids_json, ids_json_len, n, spans)) return -1;
    return mab_encode_ranked_spans(ids_json, spans, n, scores, order, k, out, out_cap);
}
