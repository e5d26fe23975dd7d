// See request.h. The parser is deliberately narrow: whatever it is not sure of, it
// hands back (return 1) to the general Python parser, so it can never disagree with
// it; it only has to be right about what it accepts.
#include "request.h"

#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include <sys/mman.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

namespace {

// ---------------------------------------------------------------- parser

// The '"' that ends a plain string whose text starts at s, or nullptr when a '\\',
// a byte < 0x20 or >= 0x80 (or end) comes first. 16 bytes a step while 16 remain
// (SSE2 is in every x86-64, so no dispatch; 32-byte AVX2 steps measured 10% slower
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

// ---------------------------------------------------------------- index

inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;
constexpr uint64_t kMul = 0x9fb21c651e98df25ULL;

inline uint64_t load64(const char *s) {
    uint64_t word;
    std::memcpy(&word, s, 8);
    return word;
}

inline uint64_t load32(const char *s) {
    uint32_t word;
    std::memcpy(&word, s, 4);
    return word;
}

// Ids of up to kInline bytes are kept in their slot as two words, read with no loop
// and no byte past the id: its first and last 8 bytes (overlapping when shorter
// than 16), or first and last 4, or 3 single bytes. Given the length, one-to-one.
constexpr size_t kInline = 16;

struct Key {
    uint64_t lo, hi;
};

inline Key short_key(const char *s, size_t n) {
    if (n >= 8) return Key{load64(s), load64(s + n - 8)};
    if (n >= 4) return Key{load32(s) | load32(s + n - 4) << 32, 0};
    if (n == 0) return Key{0, 0};
    const auto byte = [s](size_t i) { return uint64_t(static_cast<unsigned char>(s[i])); };
    return Key{byte(0) | byte(n / 2) << 8 | byte(n - 1) << 16, 0};
}

// Fast hashes keyed by a per-process seed, so a client cannot aim ids at one probe
// chain: a short id's from its key, a longer one's from its bytes, 8 a step.
inline uint64_t hash_key(Key key, size_t n, uint64_t seed) {
    uint64_t h = (seed ^ (n * kGolden) ^ key.lo) * kMul;
    h ^= h >> 29;
    return mix64((h ^ key.hi) * kMul);
}

inline uint64_t hash_bytes(const char *s, size_t n, uint64_t seed) {
    uint64_t h = seed ^ (n * kGolden);
    for (; n >= 8; s += 8, n -= 8) {
        h = (h ^ load64(s)) * kMul;
        h ^= h >> 29;
    }
    if (n > 0) {
        uint64_t word = 0;
        std::memcpy(&word, s, n);
        h = (h ^ word) * kMul;
    }
    return mix64(h);
}

inline uint64_t hash_id(const char *s, size_t n, uint64_t seed) {
    return n <= kInline ? hash_key(short_key(s, n), n, seed) : hash_bytes(s, n, seed);
}

}  // namespace

// Open addressing with linear probing at a load of at most 1/2, two slots to a
// cache line. A short id is compared inside its slot, so finding it costs one cache
// miss; a long one costs a second, in the blob. row_plus_1 = 0 marks an empty slot.
struct alignas(32) Slot {
    uint64_t lo, hi;  // a short id's Key; a long id's offset in the blob, and 0
    uint32_t tag;     // the hash's high half: spares long ids most byte compares
    uint32_t length;
    uint32_t row_plus_1;
    uint32_t unused;
};
static_assert(sizeof(Slot) == 32, "two slots to a cache line");

struct FreeSlots {
    void operator()(Slot *slots) const { std::free(slots); }
};

struct mab_index {
    uint64_t seed;
    size_t n;
    size_t mask;
    std::unique_ptr<Slot[], FreeSlots> slots;
    std::vector<char> blob;  // the ids longer than kInline
};

namespace {

// An empty table of `capacity` (a power of 2) slots. Lookups hit it at random, so
// from 2 MB up it asks for 2 MB pages: with 4 KB ones, each id of a request that
// comes after other work also misses the TLB (-20% fetch time, cold, measured).
Slot *new_table(size_t capacity) {
    constexpr size_t kHugePage = size_t(2) << 20;
    const size_t bytes = capacity * sizeof(Slot);
    void *table = std::aligned_alloc(bytes >= kHugePage ? kHugePage : alignof(Slot), bytes);
    if (table == nullptr) return nullptr;
#ifdef MADV_HUGEPAGE
    if (bytes >= kHugePage) madvise(table, bytes, MADV_HUGEPAGE);  // advice: may be ignored
#endif
    Slot *slots = static_cast<Slot *>(table);
    std::uninitialized_fill_n(slots, capacity, Slot{});
    return slots;
}

// The row of the id [id, id + length) with hash h, or n when absent.
inline int64_t probe(const mab_index &index, const char *id, size_t length, uint64_t h) {
    const Slot *slots = index.slots.get();
    size_t slot = h & index.mask;
    if (length <= kInline) {
        const Key key = short_key(id, length);
        for (;; slot = (slot + 1) & index.mask) {
            const Slot &s = slots[slot];
            if (s.row_plus_1 == 0) return static_cast<int64_t>(index.n);
            if (s.lo == key.lo && s.hi == key.hi && s.length == length) {
                return static_cast<int64_t>(s.row_plus_1) - 1;
            }
        }
    }
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    for (;; slot = (slot + 1) & index.mask) {
        const Slot &s = slots[slot];
        if (s.row_plus_1 == 0) return static_cast<int64_t>(index.n);
        if (s.tag == tag && s.length == length &&
            std::memcmp(index.blob.data() + s.lo, id, length) == 0) {
            return static_cast<int64_t>(s.row_plus_1) - 1;
        }
    }
}

}  // namespace

extern "C" int mab_parse_predict(const char *body, size_t len, size_t max_items, size_t *spans,
                                 size_t spans_cap, mab_predict_request *out) {
    return parse(body, len, max_items, spans, spans_cap, out);
}

extern "C" mab_index *mab_index_new(const char *blob, const size_t *offsets, size_t n,
                                    uint64_t seed) {
    if (n >= UINT32_MAX) return nullptr;
    mab_index *index = new (std::nothrow) mab_index;
    if (index == nullptr) return nullptr;
    size_t capacity = 16;
    while (capacity < 2 * n) capacity *= 2;
    index->seed = seed;
    index->n = n;
    index->mask = capacity - 1;
    index->slots.reset(new_table(capacity));
    if (index->slots == nullptr) {
        delete index;
        return nullptr;
    }
    for (size_t r = 0; r < n; ++r) {
        const char *id = blob + offsets[r];
        const size_t length = offsets[r + 1] - offsets[r];
        if (length >= UINT32_MAX) {
            delete index;
            return nullptr;
        }
        const uint64_t h = hash_id(id, length, seed);
        if (probe(*index, id, length, h) != static_cast<int64_t>(n)) {
            delete index;  // a repeated id
            return nullptr;
        }
        size_t slot = h & index->mask;
        while (index->slots[slot].row_plus_1 != 0) slot = (slot + 1) & index->mask;
        Slot &s = index->slots[slot];
        if (length <= kInline) {
            const Key key = short_key(id, length);
            s.lo = key.lo;
            s.hi = key.hi;
        } else {
            s.lo = index->blob.size();
            try {
                index->blob.insert(index->blob.end(), id, id + length);
            } catch (const std::bad_alloc &) {
                delete index;
                return nullptr;
            }
        }
        s.tag = static_cast<uint32_t>(h >> 32);
        s.length = static_cast<uint32_t>(length);
        s.row_plus_1 = static_cast<uint32_t>(r + 1);
    }
    return index;
}

extern "C" void mab_index_free(mab_index *index) { delete index; }

// Each id is a cache miss, so lookups are pipelined: while id i is probed, id
// i + kAhead is hashed and its slot prefetched, which keeps kAhead misses in flight
// (more did not help, measured). rows[] holds the hashes in the meantime.
extern "C" size_t mab_index_lookup(const mab_index *index, const char *src, const size_t *spans,
                                   size_t count, int64_t *rows) {
    constexpr size_t kAhead = 16;
    const auto id_at = [src, spans](size_t i) { return src + spans[2 * i] + 1; };  // in quotes
    const auto length_at = [spans](size_t i) { return spans[2 * i + 1] - spans[2 * i] - 2; };
    const auto hash_ahead = [index, &id_at, &length_at, rows](size_t i) {
        const uint64_t h = hash_id(id_at(i), length_at(i), index->seed);
        __builtin_prefetch(&index->slots[h & index->mask]);
        rows[i] = static_cast<int64_t>(h);
    };
    for (size_t i = 0; i < count && i < kAhead; ++i) hash_ahead(i);
    size_t unknown = 0;
    for (size_t i = 0; i < count; ++i) {
        if (i + kAhead < count) hash_ahead(i + kAhead);
        const int64_t row =
            probe(*index, id_at(i), length_at(i), static_cast<uint64_t>(rows[i]));
        rows[i] = row;
        unknown += row == static_cast<int64_t>(index->n);
    }
    return unknown;
}
