// The live arm table: every worker's one copy of the counts, in shared memory made
// before the fork. Rows [0, n_base) are the catalog's, found through the private
// index built with it (index.h); arms added later are found through an index in the
// region itself. Writers (feedback, a mirror) hold the region's lock; readers
// (/predict) take none: a slot is published last, with release, and the decay scale
// is read under a sequence count.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "index.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MAB_E_FULL (-6)    // no room for another arm (max arms, or id bytes)
#define MAB_RECOVERED 2    // the lock's last holder died holding it; the lock is ours now

// The region's first bytes: all 8-byte fields, written by mab/state/table.py when it
// lays the region out, then kept by the writers. The lock lives at MAB_TABLE_LOCK_AT.
typedef struct {
    uint64_t magic;
    uint64_t version;
    uint64_t max_arms;      // rows of arms; row max_arms is the absent row, always 0, 0
    uint64_t n_base;        // rows in the private index
    uint64_t n_arms;        // rows in use
    uint64_t over_slots;    // slots of the region's index (a power of 2)
    uint64_t over_seed;
    uint64_t blob_cap;      // bytes for the ids of added arms
    uint64_t blob_used;
    uint64_t dedupe_cap;    // event ids remembered (a ring)
    uint64_t dedupe_slots;  // slots of their index (a power of 2)
    uint64_t ring_head;     // the next ring entry to write
    uint64_t ring_count;    // entries in the ring
    uint64_t epoch;         // odd while the counts are being rescaled
    double t0;              // counts are stored times 2^((t - t0) / half_life)
    double half_life;       // seconds; 0: no decay
    uint64_t off_counts;    // (max_arms + 1) x (successes, failures), doubles
    uint64_t off_updated;   // max_arms doubles: when each row last changed
    uint64_t off_new_ids;   // (max_arms - n_base) x (blob offset, length) of added arms
    uint64_t off_over;      // over_slots 32-byte slots
    uint64_t off_blob;      // blob_cap bytes
    uint64_t off_ring;      // dedupe_cap x (hash hi, hash lo, time)
    uint64_t off_dedupe;    // dedupe_slots uint32 (ring entry + 1, 0: empty)
    uint64_t region_bytes;
    uint64_t generation;    // bumped when the whole table is replaced
    uint64_t segment;       // the journal segment writers append to
} mab_table_header;

#define MAB_TABLE_LOCK_AT 512
#define MAB_TABLE_MAGIC 0x6d61622d74626c31ULL  // "mab-tbl1"

typedef struct mab_table mab_table;

// Makes the region's lock (process-shared, robust); once, by the process that lays
// the region out, before any other attaches.
int mab_table_init_lock(void *region);

// A view of a laid-out region; `base` indexes rows [0, n_base) and must outlive it.
int mab_table_attach(void *region, size_t bytes, const mab_index *base, mab_table **out);
void mab_table_detach(mab_table *table);

int mab_table_lock(mab_table *table);  // MAB_OK or MAB_RECOVERED
void mab_table_unlock(mab_table *table);

// rows[i] = the row of the id literal at spans[2i..], or max_arms when unknown.
int mab_table_lookup(const mab_table *table, const char *src, size_t src_len,
                     const size_t *spans, size_t count, int64_t *rows, size_t *unknown);

// Applies n events (lock held): event i adds ds[i] and df[i] (times the decay growth
// at `now`) to the arm whose literal is at spans[2i..], adding the arm if new; unless
// its event id (bytes ev_src[ev_spans[2i], ev_spans[2i+1]), empty for none) was
// applied within `window` seconds before `now`. status[i]: 0 applied, 1 duplicate,
// 2 applied to a new arm; totals[0..3) = applied, new arms, duplicates. All or
// nothing: MAB_E_FULL when the new arms do not fit, and then nothing changes.
int mab_table_apply(mab_table *table, double now, double window, const char *src,
                    size_t src_len, const size_t *spans, size_t n, const double *ds,
                    const double *df, const char *ev_src, size_t ev_len,
                    const size_t *ev_spans, uint8_t *status, size_t *totals);

// Sets n arms' counts as of time t[i] (lock held): a mirror of state kept elsewhere,
// decayed from t[i] as the table decays. Adds arms as apply does; MAB_E_FULL.
int mab_table_set(mab_table *table, const char *src, size_t src_len, const size_t *spans,
                  size_t n, const double *successes, const double *failures, const double *t);

// out = successes, failures (decayed to `now`) and when the row last changed.
int mab_table_read(const mab_table *table, double now, int64_t row, double *out);

// The decay scale at `now`, read consistently with the counts under the sequence count.
double mab_table_scale(const mab_table *table, double now);

#ifdef __cplusplus
}

namespace mab {
// Fills alpha[i], beta[i] = prior + counts of rows[i] times the scale at `now`,
// consistently with a rescale in progress (the sequence count).
void table_fill(const mab_table *table, double now, const int64_t *rows, size_t n,
                double prior_alpha, double prior_beta, double *alpha, double *beta);
}  // namespace mab
#endif
