// Scratch buffers of the calling thread, kept between calls, and the one place
// that allocates them: so a test can make allocations fail (mab_fail_allocs_over)
// and see the error reach the client as a JSON 503.
#pragma once
#include <stddef.h>

#include <new>
#include <vector>

namespace mab {

// Allocations of more bytes than this throw std::bad_alloc (tests; default: none).
extern size_t fail_allocs_over;

template <class T>
inline void grow(std::vector<T> &v, size_t n) {
    if (n * sizeof(T) > fail_allocs_over) throw std::bad_alloc();
    v.resize(n);
}

}  // namespace mab
