// See table.h.
#include "table.h"

#include <pthread.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <new>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "slots.h"
#include "spans.h"

using mab::Slot;

struct mab_table {
    mab_table_header *h;
    pthread_mutex_t *lock;
    const mab_index *base;
    double *counts;
    double *updated;
    uint64_t *new_ids;  // (offset, length) per added row
    Slot *over;
    char *blob;
    uint64_t *ring;     // (hi, lo, time as bits) per entry
    uint32_t *dedupe;
};

namespace {

// Rescale when the stored counts have grown by 2^64 since t0: far from overflow
// (counts up to ~1e280 stay finite), and rare (every 64 half-lives).
constexpr double kRescaleAfter = 64.0;

// Fixed seeds: event id hashes live in snapshots, so they must not change.
constexpr uint64_t kEventSeedHi = 0x243f6a8885a308d3ULL, kEventSeedLo = 0x13198a2e03707344ULL;

inline uint64_t load(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
inline void publish(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

inline double load_double(const double *p) {
    uint64_t bits = __atomic_load_n(reinterpret_cast<const uint64_t *>(p), __ATOMIC_RELAXED);
    double v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
}

inline void store_double(double *p, double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    __atomic_store_n(reinterpret_cast<uint64_t *>(p), bits, __ATOMIC_RELAXED);
}

int64_t absent(const mab_table &t) { return static_cast<int64_t>(t.h->max_arms); }

// The added arm with this literal text, or absent.
int64_t find_added(const mab_table &t, const char *id, size_t length) {
    if (load(&t.h->n_arms) == t.h->n_base) return absent(t);
    const uint64_t h = mab::hash_id(id, length, t.h->over_seed);
    return mab::probe(t.over, t.h->over_slots - 1, t.blob, id, length, h, absent(t));
}

int64_t find(const mab_table &t, const char *id, size_t length) {
    const int64_t row = mab::index_find(t.base, id, length, absent(t));
    return row == absent(t) ? find_added(t, id, length) : row;
}

// ---------------------------------------------------------------- event ids

struct EventKey {
    uint64_t hi, lo;
    bool operator==(const EventKey &o) const { return hi == o.hi && lo == o.lo; }
};

struct EventKeyHash {
    size_t operator()(const EventKey &k) const { return static_cast<size_t>(k.lo); }
};

EventKey event_key(const char *s, size_t n) {
    return EventKey{mab::hash_bytes(s, n, kEventSeedHi), mab::hash_bytes(s, n, kEventSeedLo)};
}

// The dedupe index: linear probing over ring positions (+ 1), keyed by lo.
struct Dedupe {
    mab_table &t;

    uint64_t *entry(uint64_t pos) const { return t.ring + 3 * pos; }
    size_t mask() const { return t.h->dedupe_slots - 1; }

    // The index slot holding key, or -1.
    ptrdiff_t find(EventKey key) const {
        for (size_t s = key.lo & mask();; s = (s + 1) & mask()) {
            const uint32_t at = t.dedupe[s];
            if (at == 0) return -1;
            const uint64_t *e = entry(at - 1);
            if (e[0] == key.hi && e[1] == key.lo) return static_cast<ptrdiff_t>(s);
        }
    }

    // Removes index slot s, shifting back the entries after it in its run.
    void erase(size_t s) {
        t.dedupe[s] = 0;
        for (size_t next = (s + 1) & mask(); t.dedupe[next] != 0; next = (next + 1) & mask()) {
            const size_t home = entry(t.dedupe[next] - 1)[1] & mask();
            // Move `next` into the hole when its home is not in (s, next].
            if (((next - home) & mask()) >= ((next - s) & mask())) {
                t.dedupe[s] = t.dedupe[next];
                t.dedupe[next] = 0;
                s = next;
            }
        }
    }

    void drop_oldest() {
        const mab_table_header &h = *t.h;
        const uint64_t oldest = (h.ring_head + h.dedupe_cap - h.ring_count) % h.dedupe_cap;
        const uint64_t *e = entry(oldest);
        const ptrdiff_t s = find(EventKey{e[0], e[1]});
        if (s >= 0) erase(static_cast<size_t>(s));
        --t.h->ring_count;
    }

    double oldest_time() const {
        const mab_table_header &h = *t.h;
        const uint64_t oldest = (h.ring_head + h.dedupe_cap - h.ring_count) % h.dedupe_cap;
        double time;
        std::memcpy(&time, &entry(oldest)[2], sizeof time);
        return time;
    }

    // Forgets the ids applied before now - window.
    void expire(double now, double window) {
        while (t.h->ring_count > 0 && oldest_time() < now - window) drop_oldest();
    }

    void insert(EventKey key, double now) {
        if (t.h->ring_count == t.h->dedupe_cap) drop_oldest();  // full: the oldest goes early
        const uint64_t pos = t.h->ring_head;
        uint64_t *e = entry(pos);
        e[0] = key.hi;
        e[1] = key.lo;
        std::memcpy(&e[2], &now, sizeof now);
        size_t s = key.lo & mask();
        while (t.dedupe[s] != 0) s = (s + 1) & mask();
        t.dedupe[s] = static_cast<uint32_t>(pos + 1);
        t.h->ring_head = (pos + 1) % t.h->dedupe_cap;
        ++t.h->ring_count;
    }
};

// ---------------------------------------------------------------- arms

// A new row for an arm not in the table; the caller checked there is room.
int64_t add_arm(mab_table &t, const char *id, size_t length) {
    mab_table_header &h = *t.h;
    const uint64_t row = h.n_arms;
    const uint64_t at = h.blob_used;
    std::memcpy(t.blob + at, id, length);
    h.blob_used = at + length;
    t.new_ids[2 * (row - h.n_base)] = at;
    t.new_ids[2 * (row - h.n_base) + 1] = length;
    const uint64_t hash = mab::hash_id(id, length, h.over_seed);
    mab::place(t.over, h.over_slots - 1, id, length, hash, at, static_cast<uint32_t>(row + 1));
    publish(&h.n_arms, row + 1);  // after the slot: a reader that sees the row finds it
    return static_cast<int64_t>(row);
}

// Multiplies every count by 2^(-(now - t0) / half_life) and makes now the new t0,
// inside the sequence count that readers check.
void rescale(mab_table &t, double now) {
    mab_table_header &h = *t.h;
    const double factor = std::exp2(-(now - h.t0) / h.half_life);
    publish(&h.epoch, h.epoch + 1);  // odd: readers wait
    const uint64_t rows = h.n_arms;
    for (uint64_t i = 0; i < 2 * rows; ++i) store_double(&t.counts[i], t.counts[i] * factor);
    h.t0 = now;
    publish(&h.epoch, h.epoch + 1);
}

// The growth that new evidence at `now` is stored with, rescaling first if due.
double growth(mab_table &t, double now) {
    mab_table_header &h = *t.h;
    if (h.half_life <= 0) return 1.0;
    if ((now - h.t0) / h.half_life > kRescaleAfter) rescale(t, now);
    return std::exp2((now - h.t0) / h.half_life);
}

bool event_spans_in_range(const size_t *spans, size_t n, size_t len) {
    bool bad = false;
    for (size_t i = 0; i < n; ++i) bad |= (spans[2 * i] > spans[2 * i + 1]) | (spans[2 * i + 1] > len);
    return !bad;
}

// Whether the new arms among these ids fit; counts each distinct new id once.
bool room_for(const mab_table &t, const char *src, const size_t *spans, size_t n,
              const uint8_t *skip) {
    std::unordered_set<std::string_view> fresh;
    size_t bytes = 0;
    for (size_t i = 0; i < n; ++i) {
        if (skip != nullptr && skip[i]) continue;
        const char *id = src + spans[2 * i] + 1;
        const size_t length = spans[2 * i + 1] - spans[2 * i] - 2;
        if (find(t, id, length) != absent(t)) continue;
        if (fresh.emplace(id, length).second) bytes += length;
    }
    const mab_table_header &h = *t.h;
    return h.n_arms + fresh.size() <= h.max_arms && h.blob_used + bytes <= h.blob_cap;
}

}  // namespace

extern "C" int mab_table_init_lock(void *region) {
    auto *lock = reinterpret_cast<pthread_mutex_t *>(static_cast<char *>(region) + MAB_TABLE_LOCK_AT);
    pthread_mutexattr_t attr;
    if (pthread_mutexattr_init(&attr) != 0) return MAB_E_NOMEM;
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    const int made = pthread_mutex_init(lock, &attr);
    pthread_mutexattr_destroy(&attr);
    return made == 0 ? MAB_OK : MAB_E_NOMEM;
}

extern "C" int mab_table_attach(void *region, size_t bytes, const mab_index *base,
                                mab_table **out) {
    *out = nullptr;
    auto *h = static_cast<mab_table_header *>(region);
    if (bytes < sizeof *h || h->magic != MAB_TABLE_MAGIC || h->region_bytes != bytes) {
        return MAB_E_RANGE;
    }
    auto *t = new (std::nothrow) mab_table;
    if (t == nullptr) return MAB_E_NOMEM;
    char *r = static_cast<char *>(region);
    t->h = h;
    t->lock = reinterpret_cast<pthread_mutex_t *>(r + MAB_TABLE_LOCK_AT);
    t->base = base;
    t->counts = reinterpret_cast<double *>(r + h->off_counts);
    t->updated = reinterpret_cast<double *>(r + h->off_updated);
    t->new_ids = reinterpret_cast<uint64_t *>(r + h->off_new_ids);
    t->over = reinterpret_cast<Slot *>(r + h->off_over);
    t->blob = r + h->off_blob;
    t->ring = reinterpret_cast<uint64_t *>(r + h->off_ring);
    t->dedupe = reinterpret_cast<uint32_t *>(r + h->off_dedupe);
    *out = t;
    return MAB_OK;
}

extern "C" void mab_table_detach(mab_table *table) { delete table; }

extern "C" int mab_table_lock(mab_table *table) {
    const int locked = pthread_mutex_lock(table->lock);
    if (locked == EOWNERDEAD) {
        pthread_mutex_consistent(table->lock);
        return MAB_RECOVERED;
    }
    return locked == 0 ? MAB_OK : MAB_E_RANGE;
}

extern "C" void mab_table_unlock(mab_table *table) { pthread_mutex_unlock(table->lock); }

extern "C" int mab_table_lookup(const mab_table *table, const char *src, size_t src_len,
                                const size_t *spans, size_t count, int64_t *rows,
                                size_t *unknown) {
    const mab_table &t = *table;
    const int64_t missing = absent(t);
    const int found = mab_index_lookup(t.base, src, src_len, spans, count, missing, rows, unknown);
    if (found != MAB_OK || *unknown == 0 || load(&t.h->n_arms) == t.h->n_base) return found;
    size_t still = 0;
    for (size_t i = 0; i < count; ++i) {
        if (rows[i] != missing) continue;
        rows[i] = find_added(t, src + spans[2 * i] + 1, spans[2 * i + 1] - spans[2 * i] - 2);
        still += rows[i] == missing;
    }
    *unknown = still;
    return MAB_OK;
}

extern "C" int mab_table_apply(mab_table *table, double now, double window, const char *src,
                               size_t src_len, const size_t *spans, size_t n, const double *ds,
                               const double *df, const char *ev_src, size_t ev_len,
                               const size_t *ev_spans, uint8_t *status, size_t *totals) {
    mab_table &t = *table;
    if (!mab::spans_in_range(spans, n, src_len) || !event_spans_in_range(ev_spans, n, ev_len)) {
        return MAB_E_RANGE;
    }
    try {
        Dedupe dedupe{t};
        dedupe.expire(now, window);
        // Which events are duplicates: of an id applied before, or earlier in the batch.
        std::vector<uint8_t> duplicate(n, 0);
        std::vector<EventKey> keys(n);
        std::unordered_set<EventKey, EventKeyHash> seen;
        for (size_t i = 0; i < n; ++i) {
            if (ev_spans[2 * i] == ev_spans[2 * i + 1]) continue;
            keys[i] = event_key(ev_src + ev_spans[2 * i], ev_spans[2 * i + 1] - ev_spans[2 * i]);
            duplicate[i] = dedupe.find(keys[i]) >= 0 || !seen.insert(keys[i]).second;
        }
        if (!room_for(t, src, spans, n, duplicate.data())) return MAB_E_FULL;
        const double g = growth(t, now);
        size_t applied = 0, added = 0, duplicates = 0;
        for (size_t i = 0; i < n; ++i) {
            if (duplicate[i]) {
                status[i] = 1;
                ++duplicates;
                continue;
            }
            if (ev_spans[2 * i] != ev_spans[2 * i + 1]) dedupe.insert(keys[i], now);
            const char *id = src + spans[2 * i] + 1;
            const size_t length = spans[2 * i + 1] - spans[2 * i] - 2;
            int64_t row = find(t, id, length);
            status[i] = 0;
            if (row == absent(t)) {
                row = add_arm(t, id, length);
                status[i] = 2;
                ++added;
            }
            double *c = t.counts + 2 * row;
            store_double(&c[0], c[0] + ds[i] * g);
            store_double(&c[1], c[1] + df[i] * g);
            store_double(&t.updated[row], now);
            ++applied;
        }
        totals[0] = applied;
        totals[1] = added;
        totals[2] = duplicates;
    } catch (const std::bad_alloc &) {
        return MAB_E_NOMEM;
    }
    return MAB_OK;
}

extern "C" int mab_table_set(mab_table *table, const char *src, size_t src_len,
                             const size_t *spans, size_t n, const double *successes,
                             const double *failures, const double *times) {
    mab_table &t = *table;
    if (!mab::spans_in_range(spans, n, src_len)) return MAB_E_RANGE;
    try {
        if (!room_for(t, src, spans, n, nullptr)) return MAB_E_FULL;
    } catch (const std::bad_alloc &) {
        return MAB_E_NOMEM;
    }
    for (size_t i = 0; i < n; ++i) {
        const char *id = src + spans[2 * i] + 1;
        const size_t length = spans[2 * i + 1] - spans[2 * i] - 2;
        int64_t row = find(t, id, length);
        if (row == absent(t)) row = add_arm(t, id, length);
        const double g = growth(t, times[i]);  // counts as of times[i], stored as then
        double *c = t.counts + 2 * row;
        store_double(&c[0], successes[i] * g);
        store_double(&c[1], failures[i] * g);
        store_double(&t.updated[row], times[i]);
    }
    return MAB_OK;
}

extern "C" double mab_table_scale(const mab_table *table, double now) {
    const mab_table_header &h = *table->h;
    for (;;) {
        const uint64_t before = load(&h.epoch);
        if (before & 1) continue;  // being rescaled: a few microseconds, rarely
        const double scale = h.half_life > 0 ? std::exp2(-(now - h.t0) / h.half_life) : 1.0;
        if (load(&h.epoch) == before) return scale;
    }
}

void mab::table_fill(const mab_table *table, double now, const int64_t *rows, size_t n,
                     double prior_alpha, double prior_beta, double *alpha, double *beta) {
    const mab_table_header &h = *table->h;
    for (;;) {
        const uint64_t before = load(&h.epoch);
        if (before & 1) continue;
        const double scale = h.half_life > 0 ? std::exp2(-(now - h.t0) / h.half_life) : 1.0;
        const double *counts = table->counts;
        for (size_t i = 0; i < n; ++i) {
            const double *row = counts + 2 * rows[i];
            alpha[i] = prior_alpha + load_double(&row[0]) * scale;
            beta[i] = prior_beta + load_double(&row[1]) * scale;
        }
        if (load(&h.epoch) == before) return;
    }
}

extern "C" int mab_table_read(const mab_table *table, double now, int64_t row, double *out) {
    if (row < 0 || row >= absent(*table)) return MAB_E_RANGE;
    const int64_t rows[1] = {row};
    double s, f;
    mab::table_fill(table, now, rows, 1, 0.0, 0.0, &s, &f);
    out[0] = s;
    out[1] = f;
    out[2] = load_double(&table->updated[row]);
    return MAB_OK;
}
