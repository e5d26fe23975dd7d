// See request.h. The parser is deliberately narrow: whatever it is not sure of, it
// hands back (return 1) to the general Python parser, so it can never disagree with
// it; it only has to be right about what it accepts.
#include "parse.h"

#include <cstring>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

namespace {

// ---------------------------------------------------------------- parser

// The '"' that ends a plain string whose text starts at s, or nullptr when a '\\',
// a byte < 0x20 or >= 0x80 (or end) comes first. 16 bytes a step while 16 remain
// (SSE2 is in every x86-64, so no dispatch; 32-byte AVX2 steps were slower
// on 12-byte ids), then one at a time: nothing is read at or past end.
inline const char *closing_quote(const char *s, const char *end) {
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i backslash = _mm_set1_epi8('\\');
    const __m128i space = _mm_set1_epi8(0x20);
    for (; end - s >= 16; s += 16) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i *>(s));
        const unsigned quotes = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, quote)));
        // Signed compare: bytes >= 0x80 are negative, so this flags them too.
        const unsigned others = static_cast<unsigned>(_mm_movemask_epi8(
            _mm_or_si128(_mm_cmpeq_epi8(v, backslash), _mm_cmplt_epi8(v, space))));
        if ((quotes | others) == 0) continue;
        // Plain iff no other special byte before the first quote.
        const unsigned first_quote = quotes & (0u - quotes);
        if (quotes == 0 || (others & (first_quote - 1)) != 0) return nullptr;
        return s + __builtin_ctz(quotes);
    }
#endif
    for (; s < end; ++s) {
        const unsigned char c = static_cast<unsigned char>(*s);
        if (c == '"') return s;
        if (c == '\\' || c < 0x20 || c >= 0x80) return nullptr;
    }
    return nullptr;
}

constexpr int kMaxDepth = 32;

struct Parser {
    const char *begin;
    const char *p;
    const char *end;

    bool at_end() const { return p >= end; }

    void skip_ws() {
        while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) ++p;
    }

    bool eat(char c) {
        if (p < end && *p == c) {
            ++p;
            return true;
        }
        return false;
    }

    bool eat_word(const char *word, size_t n) {
        if (static_cast<size_t>(end - p) < n || std::memcmp(p, word, n) != 0) return false;
        p += n;
        return true;
    }

    // A string of printable ASCII without escapes, p at its opening quote; on
    // success [*from, *to) spans it, quotes included.
    bool plain_string(size_t *from, size_t *to) {
        // A local: `in` lives in memory (value() takes its address), and reloading p
        // would lengthen the chain from one id to the next.
        const char *s = p;
        if (s >= end || *s != '"') return false;
        const char *close = closing_quote(s + 1, end);
        if (close == nullptr) return false;
        p = close + 1;
        *from = static_cast<size_t>(s - begin);
        *to = static_cast<size_t>(p - begin);
        return true;
    }

    // Any JSON string with the simple escapes (no \u, no non-ASCII: those go to
    // the general parser, which knows about surrogates and UTF-8).
    bool any_string() {
        if (!eat('"')) return false;
        for (;;) {
            if (p >= end) return false;
            const unsigned char c = static_cast<unsigned char>(*p++);
            if (c == '"') return true;
            if (c < 0x20 || c >= 0x80) return false;
            if (c == '\\') {
                if (p >= end || std::strchr("\"\\/bfnrt", *p) == nullptr || *p == '\0') return false;
                ++p;
            }
        }
    }

    // -?(0|[1-9][0-9]{0,17})(.[0-9]{1,17})?: plain numbers only (no exponents, no
    // huge values: their handling differs between parsers).
    bool number() {
        eat('-');
        const char *digits = p;
        if (eat('0')) {
        } else {
            while (p < end && *p >= '0' && *p <= '9') ++p;
            if (p == digits || p - digits > 18) return false;
        }
        if (eat('.')) {
            const char *fraction = p;
            while (p < end && *p >= '0' && *p <= '9') ++p;
            if (p == fraction || p - fraction > 17) return false;
        }
        return p >= end || (*p != 'e' && *p != 'E' && !(*p >= '0' && *p <= '9'));
    }

    // An unsigned integer below 2^64 written without sign, fraction or exponent.
    bool unsigned_integer(uint64_t *value) {
        const char *digits = p;
        uint64_t v = 0;
        while (p < end && *p >= '0' && *p <= '9') {
            const uint64_t digit = static_cast<uint64_t>(*p - '0');
            if (v > (UINT64_MAX - digit) / 10) return false;
            v = v * 10 + digit;
            ++p;
        }
        if (p == digits || (*digits == '0' && p - digits > 1)) return false;
        if (p < end && (*p == '.' || *p == 'e' || *p == 'E')) return false;
        *value = v;
        return true;
    }

    bool value(int depth) {
        if (depth > kMaxDepth || p >= end) return false;
        switch (*p) {
            case '"':
                return any_string();
            case '{': {
                ++p;
                skip_ws();
                if (eat('}')) return true;
                for (;;) {
                    skip_ws();
                    if (!any_string()) return false;
                    skip_ws();
                    if (!eat(':')) return false;
                    skip_ws();
                    if (!value(depth + 1)) return false;
                    skip_ws();
                    if (eat('}')) return true;
                    if (!eat(',')) return false;
                }
            }
            case '[': {
                ++p;
                skip_ws();
                if (eat(']')) return true;
                for (;;) {
                    skip_ws();
                    if (!value(depth + 1)) return false;
                    skip_ws();
                    if (eat(']')) return true;
                    if (!eat(',')) return false;
                }
            }
            case 't':
                return eat_word("true", 4);
            case 'f':
                return eat_word("false", 5);
            case 'n':
                return eat_word("null", 4);
            default:
                return number();
        }
    }
};

enum Member { kItems, kUserId, kTopK, kSeed, kOther };

Member member_of(const char *key, size_t n) {
    // key includes its quotes
    if (n == 7 && std::memcmp(key, "\"items\"", 7) == 0) return kItems;
    if (n == 9 && std::memcmp(key, "\"user_id\"", 9) == 0) return kUserId;
    if (n == 7 && std::memcmp(key, "\"top_k\"", 7) == 0) return kTopK;
    if (n == 6 && std::memcmp(key, "\"seed\"", 6) == 0) return kSeed;
    return kOther;
}

bool parse_items(Parser &in, size_t max_items, size_t *spans, size_t spans_cap, size_t *count) {
    if (!in.eat('[')) return false;
    size_t n = 0;
    in.skip_ws();
    if (in.eat(']')) return false;  // empty: the general parser words the error
    for (;;) {
        if (n >= max_items || 2 * n + 2 > spans_cap) return false;
        if (!in.plain_string(&spans[2 * n], &spans[2 * n + 1])) return false;
        ++n;
        // The usual separators, ", " and ",", straight to the next quote; the
        // rest the long way, which reads these alike.
        const char *q = in.p;
        if (in.end - q >= 3 && q[0] == ',') {
            if (q[1] == '"') {
                in.p = q + 1;
                continue;
            }
            if (q[1] == ' ' && q[2] == '"') {
                in.p = q + 2;
                continue;
            }
        }
        in.skip_ws();
        if (in.eat(']')) break;
        if (!in.eat(',')) return false;
        in.skip_ws();
    }
    *count = n;
    return true;
}

int parse(const char *body, size_t len, size_t max_items, size_t *spans, size_t spans_cap,
          mab_predict_request *out) {
    Parser in{body, body, body + len};
    out->n_items = 0;
    out->user_id[0] = out->user_id[1] = -1;
    out->top_k = -1;
    out->seed = 0;
    out->has_seed = 0;
    bool seen[4] = {false, false, false, false};
    in.skip_ws();
    if (!in.eat('{')) return 1;
    in.skip_ws();
    if (in.eat('}')) return 1;  // no items
    for (;;) {
        in.skip_ws();
        size_t key_from, key_to;
        const char *key = in.p;
        if (!in.plain_string(&key_from, &key_to)) {
            // A key with escapes may still be "items": not for the fast path.
            return 1;
        }
        const Member member = member_of(key, key_to - key_from);
        if (member != kOther) {
            if (seen[member]) return 1;  // duplicate keys: the last one would win
            seen[member] = true;
        }
        in.skip_ws();
        if (!in.eat(':')) return 1;
        in.skip_ws();
        switch (member) {
            case kItems:
                if (!parse_items(in, max_items, spans, spans_cap, &out->n_items)) return 1;
                break;
            case kUserId:
                if (!in.eat_word("null", 4)) {
                    size_t from, to;
                    if (!in.plain_string(&from, &to)) return 1;
                    out->user_id[0] = static_cast<ptrdiff_t>(from);
                    out->user_id[1] = static_cast<ptrdiff_t>(to);
                }
                break;
            case kTopK:
                if (!in.eat_word("null", 4)) {
                    uint64_t k;
                    if (!in.unsigned_integer(&k) || k < 1 || k > (uint64_t(1) << 62)) return 1;
                    out->top_k = static_cast<int64_t>(k);
                }
                break;
            case kSeed:
                if (!in.eat_word("null", 4)) {
                    if (!in.unsigned_integer(&out->seed)) return 1;
                    out->has_seed = 1;
                }
                break;
            case kOther:
                if (!in.value(1)) return 1;
                break;
        }
        in.skip_ws();
        if (in.eat('}')) break;
        if (!in.eat(',')) return 1;
    }
    in.skip_ws();
    if (!in.at_end()) return 1;
    return seen[kItems] ? 0 : 1;
}

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

}  // namespace

extern "C" int mab_parse_predict(const char *body, size_t len, size_t max_items, size_t *spans,
                                 size_t spans_cap, mab_predict_request *out) {
    return parse(body, len, max_items, spans, spans_cap, out) == 0 ? MAB_OK : MAB_DECLINED;
}

extern "C" int mab_find_spans(const char *json, size_t len, size_t n, size_t *spans) {
    return find_spans(json, len, n, spans) ? MAB_OK : MAB_E_RANGE;
}
