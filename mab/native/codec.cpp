// See codec.h. Scores are written as the shortest decimal that round-trips
// (std::to_chars), which is what Python's repr and orjson write too.
#include "codec.h"

#include <charconv>
#include <cstring>

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

}  // namespace

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
