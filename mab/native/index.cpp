// See index.h.
#include "index.h"

#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include <sys/mman.h>

#include "spans.h"

namespace {

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
// comes after other work also misses the TLB (bench/RESULTS.md, section 0b).
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

extern "C" int mab_index_new(const char *blob, const size_t *offsets, size_t n, uint64_t seed,
                             mab_index **out) {
    *out = nullptr;
    if (n >= UINT32_MAX) return MAB_E_RANGE;
    std::unique_ptr<mab_index> index(new (std::nothrow) mab_index);
    if (index == nullptr) return MAB_E_NOMEM;
    size_t capacity = 16;
    while (capacity < 2 * n) capacity *= 2;
    index->seed = seed;
    index->n = n;
    index->mask = capacity - 1;
    index->slots.reset(new_table(capacity));
    if (index->slots == nullptr) return MAB_E_NOMEM;
    for (size_t r = 0; r < n; ++r) {
        const char *id = blob + offsets[r];
        const size_t length = offsets[r + 1] - offsets[r];
        if (length >= UINT32_MAX) return MAB_E_RANGE;
        const uint64_t h = hash_id(id, length, seed);
        if (probe(*index, id, length, h) != static_cast<int64_t>(n)) return MAB_E_REPEAT;
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
                return MAB_E_NOMEM;
            }
        }
        s.tag = static_cast<uint32_t>(h >> 32);
        s.length = static_cast<uint32_t>(length);
        s.row_plus_1 = static_cast<uint32_t>(r + 1);
    }
    *out = index.release();
    return MAB_OK;
}

extern "C" void mab_index_free(mab_index *index) { delete index; }

// Each id is a cache miss, so lookups are pipelined: while id i is probed, id
// i + kAhead is hashed and its slot prefetched, which keeps kAhead misses in flight
// (more did not help: bench/RESULTS.md). rows[] holds the hashes in the meantime.
extern "C" int mab_index_lookup(const mab_index *index, const char *src, size_t src_len,
                                const size_t *spans, size_t count, int64_t absent,
                                int64_t *rows, size_t *unknown) {
    if (!mab::spans_in_range(spans, count, src_len)) return MAB_E_RANGE;
    constexpr size_t kAhead = 16;
    const auto id_at = [src, spans](size_t i) { return src + spans[2 * i] + 1; };  // in quotes
    const auto length_at = [spans](size_t i) { return spans[2 * i + 1] - spans[2 * i] - 2; };
    const auto hash_ahead = [index, &id_at, &length_at, rows](size_t i) {
        const uint64_t h = hash_id(id_at(i), length_at(i), index->seed);
        __builtin_prefetch(&index->slots[h & index->mask]);
        rows[i] = static_cast<int64_t>(h);
    };
    for (size_t i = 0; i < count && i < kAhead; ++i) hash_ahead(i);
    const int64_t missing = static_cast<int64_t>(index->n);
    size_t absent_count = 0;
    for (size_t i = 0; i < count; ++i) {
        if (i + kAhead < count) hash_ahead(i + kAhead);
        const int64_t row =
            probe(*index, id_at(i), length_at(i), static_cast<uint64_t>(rows[i]));
        const bool is_absent = row == missing;
        rows[i] = is_absent ? absent : row;
        absent_count += is_absent;
    }
    *unknown = absent_count;
    return MAB_OK;
}
