// Spans: the [begin, end) of each id's JSON literal (quotes included) in a buffer,
// two size_t per id. Checked once, before anything reads through them.
#pragma once
#include <stddef.h>

namespace mab {

inline bool spans_in_range(const size_t *spans, size_t count, size_t src_len) {
    bool bad = false;  // branch-free: one pass the compiler vectorizes
    for (size_t i = 0; i < count; ++i) {
        const size_t begin = spans[2 * i], end = spans[2 * i + 1];
        bad |= (end > src_len) | (begin + 2 > end);
    }
    return !bad;
}

}  // namespace mab
