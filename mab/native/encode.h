// Encoding: the ranked `[{"id", "score"}, ...]` array of a /predict answer, written
// straight from the ids' JSON literals and the scores, with no Python object per item.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

// Bytes mab_encode_ranked may need for k items whose literals lie in a src_len buffer.
size_t mab_encode_bound(size_t src_len, size_t k);

// Writes `[{"id":<literal of order[0]>,"score":<scores[order[0]]>},...]` for the first
// k entries of `order`; the literal of id i is src[spans[2i], spans[2i+1]) (quotes
// included, a valid JSON string). *written = its length. MAB_E_RANGE when k > n, an
// order entry or a span is out of range; MAB_E_SPACE when out_cap is too small.
int mab_encode_ranked(const char *src, size_t src_len, const size_t *spans, size_t n,
                      const double *scores, const int64_t *order, size_t k, char *out,
                      size_t out_cap, size_t *written);

#ifdef __cplusplus
}

namespace mab {
// mab_encode_ranked for spans already checked (the pipeline's lookup checks them).
int encode_ranked(const char *src, const size_t *spans, size_t n, const double *scores,
                  const int64_t *order, size_t k, char *out, size_t out_cap, size_t *written);
}  // namespace mab
#endif
