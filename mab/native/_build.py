"""cffi build script of `mab.native._sampler` (API mode); named in setup.py.

Build variants come from the environment: MAB_NATIVE_DEBUG=1 compiles with -O0,
assertions and AddressSanitizer / UBSan flags left to CFLAGS.
"""

from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
DEBUG = os.environ.get("MAB_NATIVE_DEBUG") == "1"

# -ffp-contract=off: no fused multiply-adds, so the portable and AVX2 paths round
# alike and a seed gives the same draws everywhere. -fno-math-errno lets sqrt and
# division vectorize. No -ffast-math: the algorithm relies on IEEE semantics.
FLAGS = ["-std=c++17", "-ffp-contract=off", "-fno-math-errno"]

ffibuilder = FFI()
ffibuilder.cdef(
    """
    typedef struct { ...; } mab_rng;  /* layout known to C only */
    int mab_sampler_version(void);
    const char *mab_sampler_isa(void);
    void mab_rng_seed(mab_rng *rng, uint64_t seed);
    ptrdiff_t mab_beta_check(const double *a, size_t a_stride, const double *b,
                             size_t b_stride, size_t n);
    void mab_beta_sample(mab_rng *rng, const double *a, size_t a_stride, const double *b,
                         size_t b_stride, size_t n, double *out);
    void mab_beta_sample_keyed(uint64_t seed, uint64_t first, const double *a,
                               size_t a_stride, const double *b, size_t b_stride, size_t n,
                               double *out);
    """
)
ffibuilder.set_source(
    "mab.native._sampler",
    '#include "sampler.h"',
    sources=[os.path.relpath(HERE / "sampler.cpp")],
    include_dirs=[os.path.relpath(HERE)],
    source_extension=".cpp",
    extra_compile_args=[*FLAGS, *(["-O0", "-g", "-UNDEBUG"] if DEBUG else ["-O3"])],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
