// The PRNG side of the sampler: splitmix64, xoshiro256++ and the word sources
// (the lanes of mab_rng, and the per-item keyed streams).
// Included by sample.cpp only, inside its anonymous namespace.
#pragma once

// ---------------------------------------------------------------- PRNG

inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;

inline uint64_t splitmix64(uint64_t &state) { return mix64(state += kGolden); }

inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// Doubles from the top 53 bits; through int64, one instruction on any x86-64.
inline double top53(uint64_t word) { return static_cast<double>(static_cast<int64_t>(word >> 11)); }

// 1 + (top 52 bits) 2^-52, in [1, 2): the exponent of 1.0 OR'ed onto 52 random
// mantissa bits. One OR in SIMD too (AVX2 has no int64 -> double conversion).
// u = one_to_two - 1 and 1 - u = 2 - one_to_two are both exact (Sterbenz).
inline double one_to_two(uint64_t word) {
    const uint64_t bits = 0x3ff0000000000000ULL | (word >> 12);
    double x;
    std::memcpy(&x, &bits, sizeof x);
    return x;
}

// The words of a stream, as the rare paths (ziggurat tail and wedges, rejected
// candidates, shapes < 1) consume them.
template <class Derived>
struct Words {
    inline double uniform() { return top53(self().next()) * 0x1.0p-53; }
    inline double uniform_open() { return (top53(self().next()) + 0.5) * 0x1.0p-53; }

  private:
    Derived &self() { return static_cast<Derived &>(*this); }
};

// xoshiro256++ (Blackman and Vigna), one generator: the fix-up stream of
// mab_beta_sample. Rarely used, so scalar.
struct Xoshiro : Words<Xoshiro> {
    uint64_t s[4];

    inline uint64_t next() {
        const uint64_t out = rotl(s[0] + s[3], 23) + s[0];
        const uint64_t t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = rotl(s[3], 45);
        return out;
    }
};

// splitmix64 (Steele, Lea and Flood): the per-item stream of keyed draws.
struct SplitMix : Words<SplitMix> {
    uint64_t state;

    inline uint64_t next() { return splitmix64(state); }
};

// The bulk words of mab_beta_sample: MAB_RNG_LANES xoshiro256++ generators in
// GCC vector types (one zmm, two ymm or four xmm per state word). One step of all
// lanes gives one role (X's normal, X's uniform, Y's normal, Y's uniform) of a
// group of MAB_RNG_LANES items; four steps make the group. A group left partly
// unused by a call is held in mab_rng, so the words of item k of the stream do
// not depend on how the stream is split into calls.
constexpr int kLanes = MAB_RNG_LANES;
constexpr int kRoles = 4;
// The lanes as two halves of 4: a 64-byte GCC vector is split badly into ymm.
constexpr int kHalf = kLanes / 2;
typedef uint64_t HalfWords __attribute__((vector_size(8 * kHalf)));

struct LaneState {
    HalfWords s[4][2];  // s[word][half]

    explicit LaneState(const mab_rng &r) {
        for (int w = 0; w < 4; ++w) {
            for (int h = 0; h < 2; ++h) std::memcpy(&s[w][h], &r.s[w][h * kHalf], sizeof s[w][h]);
        }
    }
    void store(mab_rng &r) const {
        for (int w = 0; w < 4; ++w) {
            for (int h = 0; h < 2; ++h) std::memcpy(&r.s[w][h * kHalf], &s[w][h], sizeof s[w][h]);
        }
    }
    // One step of every lane: out[lane].
    inline __attribute__((always_inline)) void next(uint64_t *out) {
        for (int h = 0; h < 2; ++h) {
            HalfWords &s0 = s[0][h], &s1 = s[1][h], &s2 = s[2][h], &s3 = s[3][h];
            const HalfWords sum = s0 + s3;
            const HalfWords word = ((sum << 23) | (sum >> 41)) + s0;
            std::memcpy(out + h * kHalf, &word, sizeof word);
            const HalfWords t = s1 << 17;
            s2 ^= s0;
            s3 ^= s1;
            s1 ^= s2;
            s0 ^= s3;
            s2 ^= t;
            s3 = (s3 << 45) | (s3 >> 19);
        }
    }
};

// words[role][i] for the items of a block.
struct BlockWords {
    uint64_t *role[kRoles];
};

struct LaneSource {
    mab_rng *r;
    Xoshiro fix_stream;

    explicit LaneSource(mab_rng &rng) : r(&rng) {
        std::memcpy(fix_stream.s, rng.fix, sizeof rng.fix);
    }
    void done() { std::memcpy(r->fix, fix_stream.s, sizeof r->fix); }

    // The words of the next n items.
    inline __attribute__((always_inline)) void fill(uint64_t /*first*/, size_t n, BlockWords w) {
        size_t i = 0;
        for (; i < n && r->held_used < kLanes; ++i, ++r->held_used) {
            for (int q = 0; q < kRoles; ++q) w.role[q][i] = r->held[q][r->held_used];
        }
        if (i == n) return;
        LaneState lanes(*r);
        for (; i + kLanes <= n; i += kLanes) {
            for (int q = 0; q < kRoles; ++q) lanes.next(w.role[q] + i);
        }
        if (i < n) {
            for (int q = 0; q < kRoles; ++q) lanes.next(r->held[q]);
            for (r->held_used = 0; i < n; ++i, ++r->held_used) {
                for (int q = 0; q < kRoles; ++q) w.role[q][i] = r->held[q][r->held_used];
            }
        }
        lanes.store(*r);
    }
    // Where the rare paths of item `index` read more words: one stream for all.
    inline Xoshiro &fix(uint64_t /*index*/) { return fix_stream; }
};

void seed_rng(mab_rng &r, uint64_t seed) {
    uint64_t sm = seed;
    for (int l = 0; l < kLanes; ++l) {
        for (int w = 0; w < 4; ++w) r.s[w][l] = splitmix64(sm);
    }
    for (int w = 0; w < 4; ++w) r.fix[w] = splitmix64(sm);
    r.held_used = kLanes;  // nothing held
}

// The words of mab_beta_sample_keyed: item i reads splitmix64 started at a key of
// (seed, i); its first four words do not depend on each other.
struct KeyedSource {
    uint64_t seed;
    SplitMix fix_stream{};

    inline uint64_t key(uint64_t index) const {
        return mix64(seed ^ (index * 0xd1b54a32d192ed03ULL));
    }
    inline __attribute__((always_inline)) void fill(uint64_t first, size_t n, BlockWords w) {
        for (size_t i = 0; i < n; ++i) {
            const uint64_t k = key(first + i);
            for (int q = 0; q < kRoles; ++q) w.role[q][i] = mix64(k + (q + 1) * kGolden);
        }
    }
    // The item's stream, after its first four words.
    inline SplitMix &fix(uint64_t index) {
        fix_stream.state = key(index) + kRoles * kGolden;
        return fix_stream;
    }
};
