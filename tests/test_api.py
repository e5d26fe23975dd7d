"""The /predict, /health and /metrics contract, over real sockets against 2 workers."""

from __future__ import annotations

import http.client
import json
import re
import time
from datetime import datetime

import pytest

from mab import log
from mab.metrics import FLUSH_S
from tests.support import BACKENDS, Response, ServerProcess, eventually_sync, run_server

KNOWN = [f"item_{i:07d}" for i in range(0, 78_000, 200)]  # 390 ids in the demo catalog
UNKNOWN = [f"new_{i}" for i in range(10)]


JSON = {"Content-Type": "application/json"}


def assert_ranked(items: list[dict[str, object]]) -> list[float]:
    scores = [item["score"] for item in items]
    assert all(isinstance(s, float) and 0.0 < s < 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)
    return scores  # type: ignore[return-value]


def test_predict_scores_every_item_sorted(server: ServerProcess) -> None:
    """400 ids in, 400 ids out, best first, scores in (0, 1), unknown ids counted."""
    response = server.predict({"user_id": "u1", "items": KNOWN + UNKNOWN})
    assert response.status == 200
    assert response.headers["content-type"].startswith("application/json")
    data = response.json()
    assert data["user_id"] == "u1"
    assert data["unknown"] == len(UNKNOWN)
    assert len(data["items"]) == 400
    assert sorted(item["id"] for item in data["items"]) == sorted(KNOWN + UNKNOWN)
    assert all(set(item) == {"id", "score"} for item in data["items"])
    assert_ranked(data["items"])


def test_user_id_is_optional(server: ServerProcess) -> None:
    """Without user_id the response carries null."""
    data = server.predict({"items": ["item_0000001"]}).json()
    assert data["user_id"] is None and len(data["items"]) == 1 and data["unknown"] == 0


def test_scores_follow_the_counts(server: ServerProcess) -> None:
    """Unknown ids are scored from the Beta(1, 1) prior (mean 0.5), known demo arms near
    their click rate (~3%): over 400 items the means separate clearly."""
    data = server.predict({"items": KNOWN[:200] + [f"cold_{i}" for i in range(200)]}).json()
    known = [i["score"] for i in data["items"] if i["id"].startswith("item_")]
    cold = [i["score"] for i in data["items"] if i["id"].startswith("cold_")]
    assert sum(known) / len(known) < 0.1
    assert 0.4 < sum(cold) / len(cold) < 0.6
    assert data["unknown"] == 200


def test_top_k_cuts_to_the_best(server: ServerProcess) -> None:
    """top_k returns the first k of the full ranking (same seed, same draws)."""
    full = server.predict({"items": KNOWN, "seed": 7}).json()["items"]
    top = server.predict({"items": KNOWN, "seed": 7, "top_k": 10}).json()["items"]
    assert top == full[:10]
    assert len(server.predict({"items": KNOWN[:5], "top_k": 50}).json()["items"]) == 5


def test_seed_gives_identical_responses(server: ServerProcess) -> None:
    """20 calls with one seed, on new connections (so both workers serve), are identical."""
    payload = {"items": KNOWN + UNKNOWN, "seed": 12345}
    bodies = {server.predict(payload).body for _ in range(20)}
    assert len(bodies) == 1
    other = server.predict({**payload, "seed": 12346}).body
    assert other not in bodies


def test_unseeded_calls_differ(server: ServerProcess) -> None:
    """Without a seed every call draws afresh."""
    payload = {"items": KNOWN}
    assert server.predict(payload).body != server.predict(payload).body


def test_seeded_request_is_the_same_inline_and_on_actors(server: ServerProcess) -> None:
    """4,000 seeded ids give one answer whether scored inline (the default) or on the
    sampler actors of another server."""
    payload = {"items": [f"item_{i:07d}" for i in range(4000)], "seed": 99}
    inline = server.predict(payload)
    assert inline.status == 200
    assert_ranked(inline.json()["items"])
    assert all(server.predict(payload).body == inline.body for _ in range(3))
    actors_server = run_server(
        "--inline-max", "0", "--max-items", "5000", workers=1, env=server.env
    )
    with actors_server as actors:
        assert all(actors.predict(payload).body == inline.body for _ in range(3))
        started = [e for e in actors.log_events() if e.get("event") == "worker started"]
        assert started and all(e["sampler_threads"] == 2 for e in started)


ERROR_CASES = [
    # (body, content type, status, code)
    (b"{not json", "application/json", 400, "invalid_json"),
    (b"", "application/json", 400, "invalid_json"),
    (b"[1, 2]", "application/json", 400, "bad_request"),
    (b'{"user_id": "u"}', "application/json", 400, "bad_request"),
    (b'{"items": "item_0000001"}', "application/json", 400, "bad_request"),
    (b'{"items": []}', "application/json", 400, "bad_request"),
    (b'{"items": ["a", 3]}', "application/json", 400, "bad_request"),
    (b'{"items": ["a", null]}', "application/json", 400, "bad_request"),
    (b'{"items": ["a"], "user_id": 5}', "application/json", 400, "bad_request"),
    (b'{"items": ["a"], "top_k": 0}', "application/json", 400, "bad_request"),
    (b'{"items": ["a"], "top_k": -3}', "application/json", 400, "bad_request"),
    (b'{"items": ["a"], "top_k": 2.5}', "application/json", 400, "bad_request"),
    (b'{"items": ["a"], "top_k": "3"}', "application/json", 400, "bad_request"),
    (b'{"items": ["a"], "top_k": true}', "application/json", 400, "bad_request"),
    (b'{"items": ["a"], "seed": -1}', "application/json", 400, "bad_request"),
    (b'{"items": ["a"], "seed": 18446744073709551616}', "application/json", 400, "bad_request"),
    (b'{"items": ["a"], "seed": "x"}', "application/json", 400, "bad_request"),
    (b'{"items": ["a"], "seed": false}', "application/json", 400, "bad_request"),
    (b'{"items": ["a"]}', "text/plain", 415, "unsupported_media_type"),
    (b'{"items": ["a"]}', "", 415, "unsupported_media_type"),
]


@pytest.mark.parametrize(("body", "content_type", "status", "code"), ERROR_CASES)
def test_bad_requests_get_json_errors(
    server: ServerProcess, body: bytes, content_type: str, status: int, code: str
) -> None:
    """Every malformed request gets its status and a JSON error body, never a traceback."""
    headers = {"Content-Type": content_type} if content_type else {}
    response = server.request("POST", "/predict", body, headers)
    assert response.status == status
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.body.decode()


def test_too_many_items_is_413(server: ServerProcess) -> None:
    """More ids than --max-items (5000 here) is 413 with the limit in the message."""
    response = server.predict({"items": [f"x{i}" for i in range(5001)]})
    assert response.status == 413
    assert response.json()["error"]["code"] == "too_many_items"
    assert "5000" in response.json()["error"]["message"]


def test_body_over_limit_is_413(server: ServerProcess) -> None:
    """A body over --max-body-bytes (200,000 here) is 413, by Content-Length or chunked."""
    big = b'{"items": ["' + b"x" * 250_000 + b'"]}'
    response = server.request("POST", "/predict", big, {"Content-Type": "application/json"})
    assert response.status == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/predict",
            iter([big[:100_000], big[100_000:]]),
            {"Content-Type": "application/json"},
            encode_chunked=True,
        )
        raw = conn.getresponse()
        chunked = Response(raw.status, {}, raw.read())
    finally:
        conn.close()
    assert chunked.status == 413
    assert chunked.json()["error"]["code"] == "payload_too_large"


def test_unknown_path_and_method_are_json(server: ServerProcess) -> None:
    """404 and 405 use the same JSON error shape."""
    missing = server.request("GET", "/nope")
    assert missing.status == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = server.request("GET", "/predict")
    assert wrong.status == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_health_reports_the_store(server: ServerProcess) -> None:
    """/health is 200 with the arm count of the demo catalog."""
    response = server.request("GET", "/health")
    assert response.status == 200
    assert response.json() == {"status": "ok", "store": "embedded", "arms": 100_000}


def test_request_ids_are_echoed(server: ServerProcess) -> None:
    """A client's X-Request-ID comes back; without one the server makes one up."""
    sent = server.predict({"items": ["a"]}, headers={"X-Request-ID": "abc-123"})
    assert sent.headers["x-request-id"] == "abc-123"
    made = server.predict({"items": ["a"]})
    assert re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", made.headers["x-request-id"])


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def test_metrics_add_up_across_workers(server: ServerProcess) -> None:
    """Counters in /metrics sum every worker's requests, whichever worker answers: they
    reach exactly what was sent (each worker moves its counts into the shared values
    every FLUSH_S, so the test polls; a wrong sum never matches)."""
    with run_server(env=server.env) as fresh:
        for _ in range(10):  # new connections: both workers take some
            assert fresh.predict({"items": KNOWN[:7]}).status == 200

        def predictions() -> float:
            text = fresh.request("GET", "/metrics").body.decode()
            return _metric(text, "mab_predictions_total")

        eventually_sync(lambda: predictions() == 70, timeout=10 * FLUSH_S)
        text = fresh.request("GET", "/metrics").body.decode()
    assert 'mab_requests_total{path="/predict",status="200"} 10.0' in text
    assert "mab_request_duration_seconds_bucket" in text


def test_one_log_line_per_request(server: ServerProcess) -> None:
    """Each /predict writes one JSON log line with its id, counts and stage timings,
    stamped with the time of the request (lines are rendered later, in batches)."""
    before = time.time()
    server.predict({"items": [*KNOWN[:3], "zz"]}, headers={"X-Request-ID": "log-check-1"})
    after = time.time()
    lines = server.wait_for_log("request_id", "log-check-1")
    assert len(lines) == 1
    line = lines[0]
    assert line["event"] == "request" and line["status"] == 200
    stamped = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()
    assert before <= stamped <= after
    assert log.LOGGED_AT not in line
    assert line["items"] == 4 and line["unknown"] == 1
    for stage in ("queue_ms", "fetch_ms", "sample_ms", "encode_ms", "latency_ms"):
        assert isinstance(line[stage], float) and line[stage] >= 0


# Seeded bodies the fast parser takes, and ones it leaves to the general parser
# (escapes, odd whitespace), with and without top_k.
SEEDED_BODIES = [
    b'{"user_id": "u1", "items": ["item_0000001", "item_0000002", "zz"], "seed": 7}',
    b'{"items":["item_0000005","item_0000009","new"],"top_k":2,"seed":18446744073709551615}',
    b'{"user_id": "u\\u0031", "items": ["item_000000\\u0031", "a\\"b", "caf\xc3\xa9"], "seed": 3}',
    b'\n { "items" :\t[ "item_0000001" ,"item_0000003" ] ,\r\n "top_k" : 1 , "seed" : 0 }\n',
    json.dumps({"items": [f"item_{i:07d}" for i in range(0, 8000, 2)], "seed": 5}).encode(),
    json.dumps({"items": [f"\u00e9_{i}" for i in range(300)], "top_k": 10, "seed": 9}).encode(),
]


def test_native_and_twin_servers_answer_seeded_requests_byte_for_byte() -> None:
    """A server on the native pipeline and one on its twin give identical bodies for
    seeded requests, whichever parser takes them, with and without top_k."""
    args = ("--max-items", "5000", "--max-body-bytes", "200000")
    with run_server(*args, workers=1, env=BACKENDS["native"]) as native:
        native_bodies = [
            native.request("POST", "/predict", body, JSON).body for body in SEEDED_BODIES
        ]
    with run_server(*args, workers=1, env=BACKENDS["twin"]) as twin:
        twin_bodies = [twin.request("POST", "/predict", body, JSON).body for body in SEEDED_BODIES]
        loaded = next(e for e in twin.log_events() if e.get("event") == "store loaded")
        assert loaded["pipeline"] == "twin" and loaded["isa"] == "twin"
    for body, one, other in zip(SEEDED_BODIES, native_bodies, twin_bodies, strict=True):
        assert json.loads(one)["items"], one  # a real answer, not an error
        assert one == other, body


def test_native_out_of_memory_is_a_json_503() -> None:
    """When the native pipeline cannot allocate its scratch (made to fail for requests
    over 1,000 ids here), the client gets a JSON 503 with Retry-After, not a traceback,
    and smaller requests are still served."""
    env = {**BACKENDS["native"], "MAB_NATIVE_FAIL_ALLOCS_OVER": "8000"}  # 1,000 x 8 bytes
    with run_server("--max-items", "5000", workers=1, env=env) as server:
        assert server.predict({"items": KNOWN[:10]}).status == 200
        response = server.predict({"items": [f"item_{i:07d}" for i in range(2000)]})
        assert response.status == 503, response.body
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "out_of_memory"
        assert server.predict({"items": KNOWN[:10]}).status == 200
        assert "Traceback" not in server.output()
