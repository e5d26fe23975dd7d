// The id index: id literal -> row of the arm table, in native memory.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mab_index mab_index;

// An index of n ids: id r is blob[offsets[r], offsets[r + 1]), the text of its JSON
// literal without the quotes (as orjson escapes it). Copies what it needs.
// MAB_E_NOMEM, or MAB_E_REPEAT when an id repeats.
int mab_index_new(const char *blob, const size_t *offsets, size_t n, uint64_t seed,
                  mab_index **out);
void mab_index_free(mab_index *index);

// rows[i] = the row of the id whose literal is src[spans[2i], spans[2i+1]), or
// `absent` when it is not in the index; *unknown = how many were absent.
// MAB_E_RANGE when a span is not a literal inside src[0, src_len).
int mab_index_lookup(const mab_index *index, const char *src, size_t src_len,
                     const size_t *spans, size_t count, int64_t absent, int64_t *rows,
                     size_t *unknown);

#ifdef __cplusplus
}

namespace mab {
// The row of one id, given its text (no quotes), or `absent`.
int64_t index_find(const mab_index *index, const char *id, size_t length, int64_t absent);
}  // namespace mab
#endif
