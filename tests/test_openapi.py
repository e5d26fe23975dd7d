"""GET /openapi.json is the checked-in document, and what the server answers, status
by status, is what the document says: its schemas, its error codes, its headers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema_rs
import pytest

from tests.support import Response, ServerProcess, run_server

DOCUMENT = Path(__file__).resolve().parent.parent / "mab" / "openapi.json"
SPEC = json.loads(DOCUMENT.read_text())
JSON = {"Content-Type": "application/json"}


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema with the document's components beside it, so $refs resolve."""
    return {**schema, "components": SPEC["components"]}


def _operation(path: str, method: str) -> dict[str, Any]:
    template = "/arms/{id}" if path.startswith("/arms/") else path
    operation: dict[str, Any] = SPEC["paths"][template][method.lower()]
    return operation


def check(path: str, method: str, response: Response) -> None:
    """The response's status is documented for the operation, and its body and headers
    are as documented."""
    documented = _operation(path, method)["responses"]
    assert str(response.status) in documented, (path, method, response.status, response.body)
    entry = documented[str(response.status)]
    for header in entry.get("headers", {}):
        assert header.lower() in response.headers, (path, response.status, header)
    media = entry["content"]
    kind = next(iter(media))
    assert response.headers["content-type"].startswith(kind)
    if kind == "application/json":
        body = response.json()
        jsonschema_rs.validator_for(_resolve(media[kind]["schema"])).validate(body)
        if "x-codes" in media[kind]:
            assert body["error"]["code"] in media[kind]["x-codes"], body


def test_the_document_is_openapi_3_1_with_valid_schemas() -> None:
    """Every schema in the document compiles as JSON Schema 2020-12 (OpenAPI 3.1's)."""
    assert SPEC["openapi"].startswith("3.1")
    for schema in SPEC["components"]["schemas"].values():
        jsonschema_rs.Draft202012Validator(_resolve(schema))
    for path, methods in SPEC["paths"].items():
        for method, operation in methods.items():
            assert operation["responses"], (path, method)


@pytest.fixture(scope="module")
def api() -> Any:
    with run_server("--demo-arms", "1000", "--max-arms", "1003", "--max-items", "500") as server:
        yield server


def test_the_server_serves_the_document(api: ServerProcess) -> None:
    """GET /openapi.json answers the checked-in file, byte for byte."""
    response = api.request("GET", "/openapi.json")
    check("/openapi.json", "GET", response)
    assert response.body == DOCUMENT.read_bytes()


def _post(api: ServerProcess, path: str, body: bytes, headers: dict[str, str] = JSON) -> Response:
    response = api.request("POST", path, body, headers)
    check(path, "POST", response)
    return response


def test_predict_answers_as_documented(api: ServerProcess) -> None:
    """200 and each error /predict can give here, against the document."""
    ok = _post(api, "/predict", b'{"user_id": "u", "items": ["item_0000001", "zz"], "top_k": 1}')
    assert ok.status == 200
    assert _post(api, "/predict", b'{"items": [1]}').status == 400
    assert _post(api, "/predict", b"{").status == 400
    assert _post(api, "/predict", json.dumps({"items": ["a"] * 501}).encode()).status == 413
    assert _post(api, "/predict", b"{}", {"Content-Type": "text/plain"}).status == 415


def test_feedback_and_arms_answer_as_documented(api: ServerProcess) -> None:
    """200, 400, 413, 415 and 507 of /feedback, and 200 and 404 of /arms, against the document."""
    body = b'{"events": [{"id": "item_0000002", "reward": 1, "event_id": "d"}]}'
    assert _post(api, "/feedback", body).status == 200
    assert _post(api, "/feedback", b'{"events": [{"id": "x"}]}').status == 400
    assert _post(api, "/feedback", b'{"events": []}').status == 400
    assert _post(api, "/feedback", b"{}", {"Content-Type": "text/plain"}).status == 415
    new = [{"id": f"new-{i}", "reward": 0} for i in range(4)]
    assert _post(api, "/feedback", json.dumps({"events": new}).encode()).status == 507
    for arm_id, status in (("item_0000002", 200), ("no such arm", 404)):
        response = api.request("GET", f"/arms/{quote(arm_id)}")
        check(f"/arms/{arm_id}", "GET", response)
        assert response.status == status


def test_health_metrics_and_unknown_routes_answer_as_documented(api: ServerProcess) -> None:
    """/health and /metrics match the document; an unknown path or method is the
    documented error body with 404 or 405."""
    check("/health", "GET", api.request("GET", "/health"))
    check("/metrics", "GET", api.request("GET", "/metrics"))
    error = jsonschema_rs.validator_for(_resolve(SPEC["components"]["schemas"]["Error"]))
    missing = api.request("GET", "/nope")
    assert missing.status == 404
    error.validate(missing.json())
    wrong = api.request("DELETE", "/predict")
    assert wrong.status == 405
    error.validate(wrong.json())
