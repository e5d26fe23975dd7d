// The slots of an id index and the hashes that place ids in them: shared by the
// private index of the catalog (index.cpp) and the shared table's index of arms
// added later (table.cpp). Included by those two only.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <cstring>

namespace mab {

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

// The row of the id [id, id + length) with hash h in `slots` (mask + 1 of them; long
// ids' bytes in `blob`), or `missing`. row_plus_1 is read with acquire: the shared
// table publishes a slot by storing it last, with release (table.cpp).
inline int64_t probe(const Slot *slots, size_t mask, const char *blob, const char *id,
                     size_t length, uint64_t h, int64_t missing) {
    size_t slot = h & mask;
    if (length <= kInline) {
        const Key key = short_key(id, length);
        for (;; slot = (slot + 1) & mask) {
            const Slot &s = slots[slot];
            const uint32_t row = __atomic_load_n(&s.row_plus_1, __ATOMIC_ACQUIRE);
            if (row == 0) return missing;
            if (s.lo == key.lo && s.hi == key.hi && s.length == length) {
                return static_cast<int64_t>(row) - 1;
            }
        }
    }
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    for (;; slot = (slot + 1) & mask) {
        const Slot &s = slots[slot];
        const uint32_t row = __atomic_load_n(&s.row_plus_1, __ATOMIC_ACQUIRE);
        if (row == 0) return missing;
        if (s.tag == tag && s.length == length && std::memcmp(blob + s.lo, id, length) == 0) {
            return static_cast<int64_t>(row) - 1;
        }
    }
}

// Fills the empty slot for an id that probe() did not find (the caller makes sure
// one is free), its long bytes already at blob offset `at`; publishes it last.
inline void place(Slot *slots, size_t mask, const char *id, size_t length, uint64_t h,
                  uint64_t at, uint32_t row_plus_1) {
    size_t slot = h & mask;
    while (__atomic_load_n(&slots[slot].row_plus_1, __ATOMIC_RELAXED) != 0) {
        slot = (slot + 1) & mask;
    }
    Slot &s = slots[slot];
    if (length <= kInline) {
        const Key key = short_key(id, length);
        s.lo = key.lo;
        s.hi = key.hi;
    } else {
        s.lo = at;
        s.hi = 0;
    }
    s.tag = static_cast<uint32_t>(h >> 32);
    s.length = static_cast<uint32_t>(length);
    __atomic_store_n(&s.row_plus_1, row_plus_1, __ATOMIC_RELEASE);
}

}  // namespace mab
