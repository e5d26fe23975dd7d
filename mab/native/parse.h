// Parsing: the fast path for /predict bodies (no Python object per item; ids stay
// spans into the body), and the spans of a JSON array of strings (how the general
// parser's ids, re-encoded by orjson, take the same shape).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

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
// [0, 2^64), any other members being valid JSON. MAB_OK when it did; MAB_DECLINED
// for anything else (invalid JSON, a schema error, escapes, non-ASCII, duplicate
// keys): the caller then parses the body the general way, which also words the
// errors. `spans` has room for spans_cap entries (2 per item).
int mab_parse_predict(const char *body, size_t len, size_t max_items, size_t *spans,
                      size_t spans_cap, mab_predict_request *out);

// spans[2i], spans[2i+1] = [begin, end) of string i (quotes included) of `json`, a
// JSON array of n strings without whitespace (as orjson writes it). MAB_E_RANGE
// when it is not such an array.
int mab_find_spans(const char *json, size_t len, size_t n, size_t *spans);

#ifdef __cplusplus
}
#endif
