// The /predict fast path: parse a request body without making a Python object per
// item, and look its ids up in a hash index of the catalog.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------- request

typedef struct {
    size_t n_items;          // ids; spans[2i], spans[2i+1] bound id i's literal, quotes included
    ptrdiff_t user_id[2];    // the user_id literal (quotes included), or -1, -1 when null or absent
    int64_t top_k;           // -1 when null or absent
    uint64_t seed;           // valid when has_seed
    int has_seed;
} mab_predict_request;

// Parses the common shape of a /predict body: an object whose "items" is a
// non-empty array of at most max_items plain strings (printable ASCII, no escapes),
// with an optional string "user_id", integer "top_k" >= 1 and integer "seed" in
// [0, 2^64), any other members being valid JSON. Returns 0 when it did, and 1 for
// anything else (invalid JSON, a schema error, escapes, non-ASCII, duplicate keys):
// the caller then parses the body the general way, which also words the errors.
// `spans` has room for spans_cap entries (2 per item).
int mab_parse_predict(const char *body, size_t len, size_t max_items, size_t *spans,
                      size_t spans_cap, mab_predict_request *out);

// ---------------------------------------------------------------- index

typedef struct mab_index mab_index;

// An index of n ids: id r is blob[offsets[r], offsets[r + 1]). Copies what it needs.
// NULL when out of memory or an id repeats.
mab_index *mab_index_new(const char *blob, const size_t *offsets, size_t n, uint64_t seed);
void mab_index_free(mab_index *index);

// rows[i] = the row of the id whose literal is src[spans[2i], spans[2i+1]) (quotes
// included, no escapes), or n (the unknown row) when it is not in the index.
// Returns how many were unknown.
size_t mab_index_lookup(const mab_index *index, const char *src, const size_t *spans,
                        size_t count, int64_t *rows);

#ifdef __cplusplus
}
#endif
