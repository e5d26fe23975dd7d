"""The Vertex stores against the fake gRPC server, through the real
google-cloud-aiplatform clients and channels: values, chunking, failures, deadlines,
recovery, health and the cache. (HTTP-level tests: test_vertex_http.py.)"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import structlog.testing

from mab.config import VertexConfig
from mab.errors import StartupError, StoreFailed, StoreTimeout
from mab.fake_vertex import FakeVertex, Faults
from mab.store.vertex import VertexFeaturestoreStore, VertexOnlineStore, regional_endpoint
from mab.store.vertex_readers import FeaturestoreReader
from tests.vertex_support import (
    ARMS,
    ENTITY_TYPE,
    KINDS,
    KNOWN,
    async_test,
    eventually,
    fake_process,
    open_store,
    run,
    vertex_config,
    write_catalog,
)

CHUNK_CALL = {
    "featurestore": "StreamingReadFeatureValues",
    "online": "FetchFeatureValues",
    "online-streaming": "StreamingFetchFeatureValues",
}


def expected(ids: list[str]) -> tuple[list[float], list[float]]:
    return [ARMS.get(i, (0.0, 0.0))[0] for i in ids], [ARMS.get(i, (0.0, 0.0))[1] for i in ids]


@pytest.mark.parametrize("kind", KINDS)
@async_test
async def test_counts_and_unknown_ids(kind: str) -> None:
    """Counts come back aligned with the request (duplicates included), INT64 and DOUBLE
    cells alike; ids the store lacks (empty cells / NOT_FOUND) get 0 / 0 and are counted."""
    ids = [*KNOWN[:150], "new_1", KNOWN[3], "new_2", KNOWN[7], "new_1"]
    async with FakeVertex(ARMS) as fake:
        async with open_store(kind, fake.address) as store:
            features = await store.fetch(ids)
    successes, failures = expected(ids)
    assert features.successes.tolist() == successes
    assert features.failures.tolist() == failures
    assert features.successes[7] == 7.5  # served as a DOUBLE
    assert features.unknown == 3
    assert fake.stats.ids == 152  # distinct ids only


@pytest.mark.parametrize("kind", ["featurestore", "online-streaming"])
@async_test
async def test_streams_in_any_order(kind: str) -> None:
    """Entities answered out of order still land on the right ids."""
    ids = KNOWN[:300]
    async with FakeVertex(ARMS, faults=Faults(shuffle=True), seed=3) as fake:
        async with open_store(kind, fake.address) as store:
            features = await store.fetch(ids)
    assert features.successes.tolist() == expected(ids)[0]
    assert features.unknown == 0


@pytest.mark.parametrize("kind", ["featurestore", "online-streaming"])
@async_test
async def test_chunks_of_100(kind: str) -> None:
    """1,000 ids go out as 10 calls of 100; a chunk over 100 is refused by the fake
    (INVALID_ARGUMENT, as the service does) and the fetch fails with that status."""
    async with FakeVertex(ARMS) as fake:
        async with open_store(kind, fake.address) as store:
            features = await store.fetch(KNOWN[:1000])
        assert fake.stats.calls[CHUNK_CALL[kind]] == 10
        assert fake.stats.max_ids == 100
        assert features.unknown == 0

        async with open_store(kind, fake.address, fetch_chunk=101) as store:
            with pytest.raises(StoreFailed, match="INVALID_ARGUMENT: 101 entity ids"):
                await store.fetch(KNOWN[:202])


# The failing chunk fails 30 ms in, when all calls are under way. The unary API makes
# one call per id: with the fake in the same thread, only 2 chunks of 100 calls fit in
# 100 ms, and they fail at once.
@pytest.mark.parametrize(
    ("kind", "size", "fail_after"),
    [("featurestore", 1000, 0.03), ("online-streaming", 1000, 0.03), ("online", 200, 0.0)],
)
@async_test
async def test_one_failed_chunk_cancels_the_rest(kind: str, size: int, fail_after: float) -> None:
    """One chunk failing fails the fetch at once although the other chunks are delayed
    by 30 s (waiting for them would end in the 1 s deadline's StoreTimeout instead); the
    message carries the upstream status; every call still running is cancelled: none
    outlives the fetch."""
    ids = KNOWN[:size]
    faults = Faults(
        fail_ids={ids[42]: grpc.StatusCode.UNAVAILABLE},
        delay_ids={ids[42]: fail_after, **dict.fromkeys(ids[100:], 30.0)},
    )
    async with FakeVertex(ARMS, faults=faults) as fake:
        async with open_store(kind, fake.address) as store:
            with pytest.raises(StoreFailed, match="UNAVAILABLE: injected failure") as failed:
                await store.fetch(ids)
            await eventually(lambda: fake.stats.active == 0)
    stats = fake.stats
    assert failed.value.status == 502
    assert stats.failed == 1
    assert stats.calls.total() == stats.ok + stats.failed + stats.cancelled
    if kind == "online":  # only the failed chunk's other ids could be answered
        assert stats.ok <= 99
    else:
        assert stats.ok == 0 and stats.cancelled == size // 100 - 1


@pytest.mark.parametrize("kind", KINDS)
@async_test
async def test_deadline_gives_timeout(kind: str) -> None:
    """A store slower than --fetch-deadline fails the fetch at the deadline with 504,
    and the calls in flight are cancelled: none of them was answered."""
    ids = KNOWN[: 150 if kind == "online" else 250]
    async with FakeVertex(ARMS, faults=Faults(delay=30.0)) as fake:
        async with open_store(kind, fake.address, fetch_deadline=0.2) as store:
            with pytest.raises(StoreTimeout) as timed_out:
                await store.fetch(ids)
            await eventually(lambda: fake.stats.active == 0)
    assert timed_out.value.status == 504
    assert fake.stats.ok == 0
    assert fake.stats.cancelled == fake.stats.calls.total()


@pytest.mark.parametrize("kind", ["featurestore", "online-streaming"])
@async_test
async def test_cancelled_request_cancels_its_calls(kind: str) -> None:
    """A request abandoned mid-fetch (client gone, worker shutting down) leaves no call
    running at the store."""
    async with FakeVertex(ARMS, faults=Faults(delay=0.5)) as fake:
        async with open_store(kind, fake.address) as store:
            fetch = asyncio.create_task(store.fetch(KNOWN[:300]))
            await eventually(lambda: fake.stats.active == 3)
            fetch.cancel()
            with pytest.raises(asyncio.CancelledError):
                await fetch
            await eventually(lambda: fake.stats.active == 0)
    assert fake.stats.cancelled == 3 and fake.stats.ok == 0
    assert store.health().detail["consecutive_failures"] == 0  # not the store's fault


@pytest.mark.parametrize("kind", ["featurestore", "online-streaming"])
@async_test
async def test_stream_breaking_midway_fails_the_fetch(kind: str) -> None:
    """A stream that errors after some entities arrived fails the whole fetch (no
    partial answer scored as unknown), and the next fetch works again."""
    async with FakeVertex(ARMS, faults=Faults(break_after=1)) as fake:
        async with open_store(kind, fake.address) as store:
            with pytest.raises(StoreFailed, match="UNAVAILABLE: stream broken after 1"):
                await store.fetch(KNOWN[:250])
            fake.faults.break_after = None
            features = await store.fetch(KNOWN[:250])
    assert features.unknown == 0 and features.failures[-1] == ARMS[KNOWN[249]][1]


@async_test
async def test_health_turns_and_recovers() -> None:
    """/health's source: unhealthy after `unhealthy_after` failed fetches in a row,
    healthy again after one success; the reason names the last error."""
    async with FakeVertex(ARMS, faults=Faults(fail_rate=1.0)) as fake:
        async with open_store("featurestore", fake.address, unhealthy_after=3) as store:
            assert store.health().ok
            for failures in range(1, 4):
                with pytest.raises(StoreFailed):
                    await store.fetch(KNOWN[:10])
                assert store.health().ok == (failures < 3)
            health = store.health()
            assert "3 fetches in a row" in health.reason
            assert "UNAVAILABLE" in health.detail["last_error"]
            fake.faults.fail_rate = 0.0
            await store.fetch(KNOWN[:10])
            assert store.health().ok
            assert store.health().detail["consecutive_failures"] == 0


@pytest.mark.parametrize("kind", KINDS)
@async_test
async def test_recovers_when_the_store_comes_back(kind: str) -> None:
    """With the server gone, fetches fail with 502 (UNAVAILABLE) instead of hanging;
    once it listens again on the same port, fetches succeed within about a second."""
    fake = FakeVertex(ARMS)
    await fake.start()
    async with open_store(kind, fake.address) as store:
        assert (await store.fetch(KNOWN[:5])).unknown == 0
        await fake.stop()
        with pytest.raises(StoreFailed, match="UNAVAILABLE"):
            await store.fetch(KNOWN[:5])
        await fake.start()  # same port
        started = time.monotonic()
        while True:
            try:
                features = await store.fetch(KNOWN[:5])
                break
            except StoreFailed:
                assert time.monotonic() - started < 3, "no recovery in 3 s"
                await asyncio.sleep(0.05)
        assert features.unknown == 0
        await fake.stop()


@pytest.mark.parametrize("kind", ["featurestore", "online"])
@async_test
async def test_cache_hits_make_no_calls(kind: str) -> None:
    """With --cache-ttl, ids seen (known or unknown) are answered without calls; only
    the missing ids of a request are fetched; entries expire after the TTL."""
    first = [*KNOWN[:120], "new_1"]
    async with FakeVertex(ARMS) as fake:
        async with open_store(kind, fake.address, cache_ttl=0.3, cache_size=1000) as store:
            await store.fetch(first)
            calls, ids = fake.stats.calls.total(), fake.stats.ids
            again = await store.fetch(first[::-1])
            assert fake.stats.calls.total() == calls, "a cached fetch made calls"
            assert again.unknown == 1
            assert again.successes.tolist() == expected(first[::-1])[0]

            await store.fetch([*KNOWN[100:130], "new_2"])  # 10 new known, 1 new unknown
            assert fake.stats.ids == ids + 11
            assert store.health().detail["cache"]["hits"] == 121 + 20

            await asyncio.sleep(0.35)
            await store.fetch(first)
            assert fake.stats.ids == ids + 11 + len(first)


@async_test
async def test_cache_is_bounded_lru() -> None:
    """The cache holds at most --cache-size arms, dropping the least recently used."""
    async with FakeVertex(ARMS) as fake:
        async with open_store("featurestore", fake.address, cache_ttl=60, cache_size=100) as store:
            await store.fetch(KNOWN[:100])
            await store.fetch(KNOWN[:10])  # touch the first 10
            await store.fetch(KNOWN[100:150])  # evicts 50: KNOWN[10:60]
            ids = fake.stats.ids
            await store.fetch(KNOWN[:10] + KNOWN[60:150])
            assert fake.stats.ids == ids, "recently used arms were evicted"
            await store.fetch(KNOWN[10:60])
            assert fake.stats.ids == ids + 50
            assert store.health().detail["cache"]["entries"] == 100


@async_test
async def test_chunks_are_fetched_concurrently() -> None:
    """1,000 ids go out as 10 calls of 100 that are all in progress at once (the fake
    holds each call 100 ms): the fan-out waits for one round trip, not ten. Its latency
    is measured in bench/vertex_fetch.py."""
    async with FakeVertex(ARMS, faults=Faults(delay=0.1)) as fake:
        async with open_store("featurestore", fake.address) as store:
            await store.fetch(KNOWN[:1000])
    assert fake.stats.calls.total() == 10 and fake.stats.max_ids == 100
    assert fake.stats.peak_active == 10


def test_fake_cli_serves_the_catalog(tmp_path: Path) -> None:
    """`mab fake-vertex --catalog` serves the CSV; --fail-rate fails that share of calls."""
    catalog = write_catalog(tmp_path / "arms.csv")

    async def fetch(address: str) -> list[str]:
        outcomes = []
        async with open_store("featurestore", address) as store:
            for _ in range(20):
                try:
                    features = await store.fetch([KNOWN[5], "nope"])
                except StoreFailed as exc:
                    outcomes.append(exc.message)
                else:
                    assert features.successes.tolist() == [5.0, 0.0]
                    assert features.unknown == 1
                    outcomes.append("ok")
        return outcomes

    with fake_process(catalog, "--fail-rate", "0.5", "--seed", "7") as address:
        outcomes = run(fetch(address))
    failed = [o for o in outcomes if o != "ok"]
    assert 3 <= len(failed) <= 17, outcomes
    assert all("UNAVAILABLE: injected failure" in o for o in failed)


def test_resource_names_are_checked_at_startup() -> None:
    """Malformed resource names stop start-up; the default endpoint is regional."""
    assert regional_endpoint(ENTITY_TYPE) == "us-central1-aiplatform.googleapis.com:443"
    with pytest.raises(StartupError, match="--vertex-entity-type must look like"):
        VertexFeaturestoreStore(vertex_config("featurestore", "x:1", entity_type="arms"))
    with pytest.raises(StartupError, match="--vertex-feature-view must look like"):
        VertexOnlineStore(vertex_config("online", "x:1", feature_view=ENTITY_TYPE))


def test_the_legacy_featurestore_warns_of_its_shutoff() -> None:
    """--store vertex-featurestore warns at start-up of the day Google shuts its online
    APIs off, naming the store to move to; vertex-online does not warn, and reads in
    batches (v1beta1 StreamingFetchFeatureValues) unless told otherwise."""
    with structlog.testing.capture_logs() as logs:
        VertexFeaturestoreStore(vertex_config("featurestore", "x:1"))
        VertexOnlineStore(vertex_config("online", "x:1"))
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1, logs
    assert warnings[0]["shutoff"] == "2027-02-17" and "2027-02-17" in warnings[0]["event"]
    assert warnings[0]["replacement"] == "vertex-online"
    assert VertexConfig().streaming


def test_missing_credentials_stop_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --vertex-insecure the store needs Application Default Credentials, and
    says so in the parent instead of every worker crashing."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")
    with pytest.raises(StartupError, match="Application Default Credentials"):
        VertexFeaturestoreStore(vertex_config("featurestore", "x:1", insecure=False))


def test_secure_channel_uses_tls_and_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --vertex-insecure the library's transport builds a TLS channel with the
    Application Default Credentials (here a made-up service account): against the
    plaintext fake the TLS handshake fails, which surfaces as a 502 UNAVAILABLE."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    account = {
        "type": "service_account",
        "project_id": "test",
        "private_key_id": "k1",
        "private_key": pem.decode(),
        "client_email": "mab@test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.invalid/token",
    }
    (tmp_path / "key.json").write_text(json.dumps(account))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "key.json"))

    async def fetch() -> None:
        async with FakeVertex(ARMS) as fake:
            async with open_store("featurestore", fake.address, insecure=False) as store:
                with pytest.raises(StoreFailed, match=r"UNAVAILABLE.*(SSL|TLS|handshake)"):
                    await store.fetch(KNOWN[:5])
        assert fake.stats.calls.total() == 0

    run(fetch())


def test_import_costs_stay_apart() -> None:
    """The embedded store never pays for the Vertex client import (~0.45 s), and the
    Vertex stores and the fake do not need the native code."""
    embedded = (
        "import sys\n"
        "from mab.config import Config\n"
        "from mab.store import build_store\n"
        "build_store(Config(demo_arms=10))\n"
        "assert 'google.cloud.aiplatform_v1' not in sys.modules\n"
    )
    vertex = (
        "import sys\n"
        "import mab.store.vertex, mab.fake_vertex\n"
        "assert 'mab.native' not in sys.modules\n"
    )
    for code in (embedded, vertex):
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_features_are_contiguous_float_arrays() -> None:
    """The arrays handed to the sampler are plain contiguous float64."""

    async def fetch() -> None:
        async with FakeVertex(ARMS) as fake:
            async with open_store("featurestore", fake.address) as store:
                features = await store.fetch(KNOWN[:3])
        for array in (features.successes, features.failures):
            assert array.dtype == np.float64 and array.flags.c_contiguous

    run(fetch())


def test_a_message_that_does_not_parse_fails_the_fetch() -> None:
    """The legacy reader parses its messages after the stream: bytes that are not a
    ReadFeatureValuesResponse are an upstream failure (502), not an internal error."""
    config = vertex_config("featurestore", "127.0.0.1:1")
    reader = FeaturestoreReader(config, "127.0.0.1:1")
    with pytest.raises(StoreFailed, match="does not parse"):
        reader._counts([b"\x0a\xff\xff"])  # field 1, a length past the end
