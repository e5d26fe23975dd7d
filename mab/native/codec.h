// Response encoding for /predict: ranked {"id", "score"} objects, written straight
// from the request's ids (as one JSON array) and the scores, with no Python objects
// per item.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Bump with any change of the C interface; the Python wrapper refuses a stale build.
#define MAB_CODEC_VERSION 3
int mab_codec_version(void);

// Upper bound of the bytes mab_encode_ranked writes for these inputs.
size_t mab_encode_ranked_bound(size_t ids_json_len, size_t k);

// Writes `[{"id":<ids[order[0]]>,"score":<scores[order[0]]>},...]` for the first `k`
// entries of `order`. `ids_json` is a JSON array of n strings without whitespace
// (as orjson writes it); `scores` has n entries in the same order as the ids.
// Returns the bytes written, or -1 when ids_json is not such an array of n strings
// or an order entry is out of range. `spans` is scratch space for 2 * n offsets.
ptrdiff_t mab_encode_ranked(const char *ids_json, size_t ids_json_len, size_t n,
                            const double *scores, const int64_t *order, size_t k,
                            size_t *spans, char *out, size_t out_cap);

// Like mab_encode_ranked, with the id literals (quotes included, valid JSON strings)
// given as spans into `src`: src[spans[2i], spans[2i+1]) is id i. No bound check of
// its own: `out` needs mab_encode_ranked_bound(src_len, k) bytes, where src_len
// covers every span.
ptrdiff_t mab_encode_ranked_spans(const char *src, const size_t *spans, size_t n,
                                  const double *scores, const int64_t *order, size_t k, char *out,
                                  size_t out_cap);

// order[0..k) = the indices of the k highest of scores[0..n), highest first; equal
// scores in index order. Returns -1 when k > n or memory runs out.
int mab_rank(const double *scores, size_t n, size_t k, int64_t *order);

#ifdef __cplusplus
}
#endif
