"""How the redis store lays the arm state out in Redis, and the bytes of its values.

Arms are spread over N_BUCKETS buckets by crc32(id). Bucket b of prefix P is four keys
sharing the hash tag `{P:b}`, so they sit in one Cluster slot and one script may
touch them all:

- `{P:b}:arms`    hash: arm id -> 24 bytes, successes, failures, t (little-endian
                  doubles; the counts as of time t, decayed to t with --half-life)
- `{P:b}:events`  stream: one entry per applied batch of the bucket, fields `n` (its
                  sequence number), `w` (the writer's wall clock), `ids` (each id as
                  a 4-byte length and its UTF-8) and `v` (per id five doubles: the
                  successes and failures added, then the arm's new successes,
                  failures and t)
- `{P:b}:dedupe`  sorted set: event id -> time applied, pruned past --dedupe-window
- `{P:b}:seq`     the number of the bucket's last stream entry

and `{P}:meta` (a hash: layout version, buckets, half-life) says how they were made.

Why 16 buckets: a /feedback batch runs one script per bucket it touches, and each
replica's mirror follows one stream per bucket, so fewer buckets mean fewer calls;
but a Cluster spreads the state over its masters only by bucket. bench/redis_buckets.py:
a 100-event batch took 0.6 ms of Redis script time in 1 bucket, 1.2 ms in 16 and
1.5 ms in 64; a 1-event batch 34 us in any. 16 slots land on every master of a small
Cluster (the tests check 3).
Changing it changes which bucket an id is in: it is stored in the meta key and a
server refuses a Redis laid out with another number.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from importlib import resources

import numpy as np
import numpy.typing as npt

N_BUCKETS = 16
LAYOUT_VERSION = 1
COUNTS = struct.Struct("<ddd")  # successes, failures, t
VALUE_DOUBLES = 5  # per id of a stream entry: ds, df, s, f, t

# The scripts: one applies a bucket's events of a /feedback batch (dedupe, counts,
# stream); the other sets a bucket's arms to given counts (mab load-catalog).
FEEDBACK_LUA = (resources.files("mab.store") / "redis_feedback.lua").read_text()
SET_LUA = (resources.files("mab.store") / "redis_set.lua").read_text()


def bucket_of(arm: str) -> int:
    return zlib.crc32(arm.encode()) % N_BUCKETS


@dataclass(frozen=True, slots=True)
class BucketKeys:
    arms: str
    events: str
    dedupe: str
    seq: str

    def script_keys(self) -> list[str]:
        """In the order redis_feedback.lua reads KEYS."""
        return [self.arms, self.events, self.dedupe, self.seq]


def bucket_keys(prefix: str, bucket: int) -> BucketKeys:
    tag = f"{{{prefix}:{bucket}}}"
    return BucketKeys(f"{tag}:arms", f"{tag}:events", f"{tag}:dedupe", f"{tag}:seq")


def meta_key(prefix: str) -> str:
    return f"{{{prefix}}}:meta"


def pack_counts(successes: float, failures: float, t: float) -> bytes:
    return COUNTS.pack(successes, failures, t)


def unpack_counts(values: list[bytes]) -> npt.NDArray[np.float64]:
    """(n, 3) successes, failures, t of packed hash values."""
    if not values:
        return np.zeros((0, 3), dtype=np.float64)
    return np.frombuffer(b"".join(values), dtype="<f8").reshape(-1, 3).astype(np.float64)


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One entry of a bucket's stream, as the mirror applies it."""

    seq: int
    wall: float
    ids: list[str]
    values: npt.NDArray[np.float64]  # (len(ids), 5): ds, df, s, f, t

    @classmethod
    def of(cls, fields: dict[bytes, bytes]) -> StreamEntry:
        blob = fields[b"ids"]
        ids: list[str] = []
        at = 0
        while at < len(blob):
            (length,) = struct.unpack_from("<I", blob, at)
            ids.append(blob[at + 4 : at + 4 + length].decode())
            at += 4 + length
        values = np.frombuffer(fields[b"v"], dtype="<f8").reshape(-1, VALUE_DOUBLES)
        return cls(int(fields[b"n"]), float(fields[b"w"]), ids, values.astype(np.float64))

    @classmethod
    def parse(cls, fields: dict[bytes, bytes]) -> StreamEntry | None:
        """The entry, or None when it is not one mab wrote (then the mirror reloads)."""
        try:
            entry = cls.of(fields)
        except (KeyError, ValueError, UnicodeDecodeError, struct.error):
            return None
        return entry if len(entry.ids) == len(entry.values) else None


def stream_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)
