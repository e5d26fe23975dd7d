// See index.h.
#include "index.h"

#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include <sys/mman.h>

#include "slots.h"
#include "spans.h"

using mab::Slot;

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

inline int64_t probe(const mab_index &index, const char *id, size_t length, uint64_t h) {
    return mab::probe(index.slots.get(), index.mask, index.blob.data(), id, length, h,
                      static_cast<int64_t>(index.n));
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
        const uint64_t h = mab::hash_id(id, length, seed);
        if (probe(*index, id, length, h) != static_cast<int64_t>(n)) return MAB_E_REPEAT;
        const uint64_t at = index->blob.size();
        if (length > mab::kInline) {
            try {
                index->blob.insert(index->blob.end(), id, id + length);
            } catch (const std::bad_alloc &) {
                return MAB_E_NOMEM;
            }
        }
        mab::place(index->slots.get(), index->mask, id, length, h, at,
                   static_cast<uint32_t>(r + 1));
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
        const uint64_t h = mab::hash_id(id_at(i), length_at(i), index->seed);
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

int64_t mab::index_find(const mab_index *index, const char *id, size_t length, int64_t absent) {
    const int64_t row = ::probe(*index, id, length, hash_id(id, length, index->seed));
    return row == static_cast<int64_t>(index->n) ? absent : row;
}
