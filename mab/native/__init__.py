"""Native code: the Beta sampler and the response encoder, compiled with cffi."""

from mab.native.sampler import ISA, MAX_SEED, BetaSampler, sample_keyed

__all__ = ["ISA", "MAX_SEED", "BetaSampler", "sample_keyed"]
