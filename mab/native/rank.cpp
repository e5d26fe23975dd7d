// See rank.h.
#include "rank.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <vector>

namespace {

// A key whose unsigned order is the descending order of the double: the IEEE bits
// made monotonic (flip all bits of negatives, the sign bit of the rest), inverted.
// Branch-free, so the loop building the radix items vectorizes.
inline uint64_t descending_key(double x) {
    uint64_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    const uint64_t flip = static_cast<uint64_t>(static_cast<int64_t>(bits) >> 63) | (1ULL << 63);
    return ~(bits ^ flip);
}

struct Keyed {
    uint64_t key;
    uint64_t index;
    bool operator<(const Keyed &other) const {
        return key < other.key || (key == other.key && index < other.index);
    }
};

inline bool ranks_before(const double *scores, uint64_t a, uint64_t b) {
    return Keyed{descending_key(scores[a]), a} < Keyed{descending_key(scores[b]), b};
}

// How many leading key bits are the same in every score (64: all keys equal). For
// scores in (0, 1) that is the sign and most of the exponent, ~8 bits. The raw bits
// give the same count as the keys: scores of one sign differ in the same bits either
// way, and scores of different signs differ in bit 63 either way.
int constant_key_bits(const double *scores, size_t n) {
    uint64_t first, diff = 0;
    std::memcpy(&first, scores, sizeof first);
    for (size_t i = 0; i < n; ++i) {
        uint64_t bits;
        std::memcpy(&bits, scores + i, sizeof bits);
        diff |= bits ^ first;
    }
    return diff ? __builtin_clzll(diff) : 64;
}

// Exclusive prefix sums over a multiple of 4 buckets, a block of 4 at a time so that
// one add per block is serial, not one per bucket.
template <class Count>
void exclusive_sums(Count *counts, size_t size) {
    Count position = 0;
    for (size_t b = 0; b < size; b += 4) {
        const Count c0 = counts[b], c1 = counts[b + 1], c2 = counts[b + 2], c3 = counts[b + 3];
        counts[b] = position;
        counts[b + 1] = position + c0;
        counts[b + 2] = position + c0 + c1;
        counts[b + 3] = position + c0 + c1 + c2;
        position += c0 + c1 + c2 + c3;
    }
}

struct RankScratch {
    std::vector<uint64_t> items, other;
    std::vector<uint32_t> low_counts;
    std::vector<uint64_t> high_counts;
    std::vector<int64_t> out;
    std::vector<uint32_t> ties;
    std::vector<uint8_t> tie_flags;
};

// A radix sort, as sorting was a real share of a /predict (bench/RESULTS.md, section
// 0b). It moves 8-byte items:
// the key shifted past its constant bits (so the varying bits lead) with the index
// in the low 32 bits, and makes 2 stable LSD passes of kDigit bits each over the top
// 2 * kDigit varying bits (22 for 4,000 scores), a counting pass having found both
// histograms. More passes or fewer varying bits cost more than they save: an item
// is ~10 instructions a pass. The last pass writes the indices straight to the output
// and notes ties: items equal in all sorted bits (~8 a request at 4,000 Beta draws),
// found as an item arriving in a bucket with the same low digit as the one before
// it. Runs of ties are then put in full key order, which makes the result that of
// sorting Keyed. kDigit is a constant so the hot loops keep everything in registers.
// `constant` is constant_key_bits(scores, n), under 64.
template <int kDigit>
void radix_rank(const double *scores, size_t n, size_t k, int constant, int64_t *order,
                RankScratch &s) {
    constexpr size_t kBuckets = size_t(1) << kDigit;
    constexpr int kHighShift = 64 - kDigit, kLowShift = 64 - 2 * kDigit;
    constexpr uint64_t kDigitMask = kBuckets - 1, kIndexMask = 0xffffffff;
    s.items.resize(n);
    s.other.resize(n);
    s.low_counts.assign(kBuckets, 0);
    s.high_counts.assign(kBuckets, 0);
    uint64_t *items = s.items.data(), *other = s.other.data();
    uint32_t *low = s.low_counts.data();
    uint64_t *high = s.high_counts.data();
    for (size_t i = 0; i < n; ++i)
        items[i] = ((descending_key(scores[i]) << constant) & ~kIndexMask) | i;
    // Counting in a loop of its own is faster than in the loop above.
    for (size_t i = 0; i < n; ++i) {
        ++low[(items[i] >> kLowShift) & kDigitMask];
        ++high[items[i] >> kHighShift];
    }
    if (low[(items[0] >> kLowShift) & kDigitMask] != n) {  // else all one low digit
        exclusive_sums(low, kBuckets);
        for (size_t i = 0; i < n; ++i)
            other[low[(items[i] >> kLowShift) & kDigitMask]++] = items[i];
        std::swap(items, other);
    }
    // A high bucket's counter: the next position in its low 32 bits, 1 + the low digit
    // of the item last put there above them (0: none yet).
    exclusive_sums(high, kBuckets);
    int64_t *out = order;
    if (k < n) {
        s.out.resize(n);
        out = s.out.data();
    }
    if (s.ties.size() < n) s.ties.resize(n);
    uint32_t *ties = s.ties.data();
    size_t tie_count = 0;
    for (size_t i = 0; i < n; ++i) {
        const uint64_t item = items[i];
        const uint64_t counter = high[item >> kHighShift];
        const uint64_t tag = ((item >> kLowShift) & kDigitMask) + 1;
        const uint32_t p = static_cast<uint32_t>(counter);
        out[p] = static_cast<int64_t>(item & kIndexMask);
        if ((counter >> 32) == tag) ties[tie_count++] = p;  // ties with out[p - 1]
        high[item >> kHighShift] = (tag << 32) | (p + 1);
    }
    if (tie_count <= 64) {
        std::sort(ties, ties + tie_count);
    } else {  // many (few distinct scores): a counting sort, as positions are distinct
        s.tie_flags.assign(n, 0);
        for (size_t t = 0; t < tie_count; ++t) s.tie_flags[ties[t]] = 1;
        tie_count = 0;
        for (size_t p = 0; p < n; ++p)
            if (s.tie_flags[p]) ties[tie_count++] = static_cast<uint32_t>(p);
    }
    for (size_t t = 0; t < tie_count;) {  // each run of ties: out[first, last)
        const size_t first = ties[t] - 1;
        size_t last = ties[t] + 1;
        for (++t; t < tie_count && ties[t] == last; ++t) ++last;
        const auto before = [scores](int64_t a, int64_t b) { return ranks_before(scores, a, b); };
        if (last - first <= 16) {  // the common case: a pair; insertion sort
            for (size_t i = first + 1; i < last; ++i) {
                const int64_t x = out[i];
                size_t j = i;
                for (; j > first && before(x, out[j - 1]); --j) out[j] = out[j - 1];
                out[j] = x;
            }
        } else if (!std::is_sorted(out + first, out + last, before)) {  // e.g. equal scores
            std::sort(out + first, out + last, before);
        }
    }
    if (out != order) std::memcpy(order, out, k * sizeof *order);
}

// A short top-k (e.g. 10 of 4,000): count the top kDigit varying key bits,
// find the bucket where the k-th best falls, and sort only the items in it and before
// it, ~k of them: cheaper than nth_element over all n. `constant` as
// for radix_rank.
template <int kDigit>
void select_rank(const double *scores, size_t n, size_t k, int constant, int64_t *order,
                 RankScratch &s, std::vector<Keyed> &best) {
    constexpr int kShift = 64 - kDigit;
    s.low_counts.assign(size_t(1) << kDigit, 0);
    uint32_t *counts = s.low_counts.data();
    for (size_t i = 0; i < n; ++i) ++counts[(descending_key(scores[i]) << constant) >> kShift];
    uint64_t last = 0;  // the bucket of the k-th best
    size_t candidates = counts[0];
    while (candidates < k) candidates += counts[++last];
    if (candidates <= n / 16) {  // the branch is rarely taken
        best.clear();
        for (size_t i = 0; i < n; ++i) {
            const uint64_t key = descending_key(scores[i]);
            if ((key << constant) >> kShift <= last) best.push_back(Keyed{key, i});
        }
    } else {  // many alike (e.g. equal scores) share the bucket: branch-free
        best.resize(n);
        size_t count = 0;
        for (size_t i = 0; i < n; ++i) {
            const uint64_t key = descending_key(scores[i]);
            best[count] = Keyed{key, i};
            count += (key << constant) >> kShift <= last;
        }
        best.resize(count);
    }
    std::nth_element(best.begin(), best.begin() + k, best.end());
    std::sort(best.begin(), best.begin() + k);
    for (size_t r = 0; r < k; ++r) order[r] = static_cast<int64_t>(best[r].index);
}

}  // namespace

extern "C" int mab_rank(const double *scores, size_t n, size_t k, int64_t *order) {
    if (k > n) return MAB_E_RANGE;
    if (k == 0) return MAB_OK;
    thread_local RankScratch scratch;
    thread_local std::vector<Keyed> items;
    try {
        if (n < 64 || n > 0xffffffff) {  // few (or more than 32-bit indices): sort Keyed
            items.resize(n);
            for (size_t i = 0; i < n; ++i) items[i] = Keyed{descending_key(scores[i]), i};
            if (k < n / 8) {
                std::nth_element(items.begin(), items.begin() + k, items.end());
                std::sort(items.begin(), items.begin() + k);
            } else {
                std::sort(items.begin(), items.end());
            }
            for (size_t r = 0; r < k; ++r) order[r] = static_cast<int64_t>(items[r].index);
        } else if (const int constant = constant_key_bits(scores, n); constant == 64) {
            // All the same double: index order.
            for (size_t r = 0; r < k; ++r) order[r] = static_cast<int64_t>(r);
        } else if (k < n / 16) {  // a short top-k; past n/16 the radix sort is faster
            if (n < 2048) {
                select_rank<9>(scores, n, k, constant, order, scratch, items);
            } else {
                select_rank<11>(scores, n, k, constant, order, scratch, items);
            }
        } else if (n < 2048) {
            // Each of the 2^digit buckets costs about what an item does, and each tie
            // more: 9-bit digits up to 2,000 scores, 11 to 32,000 (measured).
            radix_rank<9>(scores, n, k, constant, order, scratch);
        } else if (n < 32768) {
            radix_rank<11>(scores, n, k, constant, order, scratch);
        } else {
            radix_rank<13>(scores, n, k, constant, order, scratch);
        }
    } catch (const std::bad_alloc &) {
        return MAB_E_NOMEM;
    }
    return MAB_OK;
}
