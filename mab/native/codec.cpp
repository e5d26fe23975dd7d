// See codec.h. Scores are written as the shortest decimal that round-trips
// (std::to_chars), which is what Python's repr and orjson write too.
#include "codec.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <new>
#include <vector>

namespace {

constexpr char kOpen[] = "{\"id\":";
constexpr char kScore[] = ",\"score\":";
constexpr size_t kMaxDouble = 32;  // to_chars of any double fits in 24 characters

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

char *write_score(char *p, double score) {
    auto [end, ec] = std::to_chars(p, p + kMaxDouble, score);
    if (ec != std::errc()) return nullptr;
    // Keep it a float for JSON readers that distinguish: 0 -> 0.0, 1 -> 1.0.
    if (std::memchr(p, '.', end - p) == nullptr && std::memchr(p, 'e', end - p) == nullptr &&
        std::memchr(p, 'n', end - p) == nullptr) {
        *end++ = '.';
        *end++ = '0';
    }
    return end;
}

// A key whose unsigned order is the descending order of the double: the IEEE bits
// made monotonic (flip all bits of negatives, the sign bit of the rest), inverted.
inline uint64_t descending_key(double x) {
    uint64_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    const uint64_t monotonic = (bits >> 63) ? ~bits : bits | 0x8000000000000000ULL;
    return ~monotonic;
}

struct Keyed {
    uint64_t key;
    uint64_t index;
    bool operator<(const Keyed &other) const {
        return key < other.key || (key == other.key && index < other.index);
    }
};

// LSD radix sort on 8-bit digits, stable, so equal keys keep index order. One
// pass counts every digit; digits that are the same in every key (the sign and
// most exponent bits of scores in (0, 1)) are skipped: ~5 passes instead of 8.
void radix_sort(std::vector<Keyed> &items, std::vector<Keyed> &scratch) {
    const size_t n = items.size();
    scratch.resize(n);
    size_t counts[8][256] = {};
    for (const Keyed &item : items) {
        for (int d = 0; d < 8; ++d) ++counts[d][(item.key >> (8 * d)) & 0xff];
    }
    for (int d = 0; d < 8; ++d) {
        const int shift = 8 * d;
        if (counts[d][(items[0].key >> shift) & 0xff] == n) continue;  // one digit value
        size_t position = 0;
        for (size_t &count : counts[d]) {
            const size_t c = count;
            count = position;
            position += c;
        }
        for (const Keyed &item : items) scratch[counts[d][(item.key >> shift) & 0xff]++] = item;
        items.swap(scratch);
    }
}

}  // namespace

extern "C" int mab_rank(const double *scores, size_t n, size_t k, int64_t *order) {
    if (k > n) return -1;
    thread_local std::vector<Keyed> items, scratch;
    try {
        items.resize(n);
    } catch (const std::bad_alloc &) {
        return -1;
    }
    for (size_t i = 0; i < n; ++i) items[i] = Keyed{descending_key(scores[i]), i};
    if (k < n / 8) {  // a short top-k: select, then sort only those
        std::nth_element(items.begin(), items.begin() + k, items.end());
        std::sort(items.begin(), items.begin() + k);
    } else if (n < 64) {
        std::sort(items.begin(), items.end());
    } else {
        try {
            radix_sort(items, scratch);
        } catch (const std::bad_alloc &) {
            return -1;
        }
    }
    for (size_t r = 0; r < k; ++r) order[r] = static_cast<int64_t>(items[r].index);
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
