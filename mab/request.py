"""Parsing and validating /predict bodies.

Most bodies take the native fast path (`mab.native.codec.parse_predict`): ids stay
spans into the body, no Python object is made per id, and the embedded store looks
the spans up in native code. Whatever that path does not accept (errors, escaped
or non-ASCII ids, odd JSON) goes through orjson here, which also words the errors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import orjson

from mab.errors import BadRequest, InvalidJSON, TooManyItems
from mab.native.codec import Spans, parse_predict

MAX_SEED = 2**64 - 1


class ItemIds(Sequence[str]):
    """A request's ids: spans into the body (fast path) or a list of strings.

    A store that only needs strings (Vertex) reads it as a sequence; the strings
    are then decoded once, on first use.
    """

    __slots__ = ("_strings", "body", "spans")

    def __init__(self, strings: list[str] | None, body: bytes = b"", spans: Spans | None = None):
        self._strings = strings
        self.body = body
        self.spans = spans  # None when the ids came as strings

    @classmethod
    def from_spans(cls, body: bytes, spans: Spans) -> ItemIds:
        return cls(None, body, spans)

    def strings(self) -> list[str]:
        if self._strings is None:
            assert self.spans is not None
            body, bounds = self.body, self.spans.tolist()
            # Fast-path ids are printable ASCII without escapes: the literal minus quotes.
            self._strings = [
                body[bounds[i] + 1 : bounds[i + 1] - 1].decode("ascii")
                for i in range(0, len(bounds), 2)
            ]
        return self._strings

    def __len__(self) -> int:
        return len(self.spans) // 2 if self.spans is not None else len(self.strings())

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        return self.strings()[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self.strings())


@dataclass(frozen=True, slots=True)
class PredictRequest:
    items: ItemIds
    user_id_json: bytes  # user_id as JSON, ready for the response: b'"u1"' or b"null"
    top_k: int | None
    seed: int | None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_request(body: bytes, max_items: int) -> PredictRequest:
    """Validate a /predict body; every problem is a 400 (or 413 for too many items)."""
    fast = parse_predict(body, max_items)
    if fast is not None:
        return PredictRequest(
            items=ItemIds.from_spans(body, fast.spans),
            user_id_json=fast.user_id or b"null",
            top_k=fast.top_k,
            seed=fast.seed,
        )
    return parse_general(body, max_items)


def parse_general(body: bytes, max_items: int) -> PredictRequest:
    """The general parser: any valid body, and a clear error for any invalid one."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    items = data.get("items")
    if not isinstance(items, list):
        raise BadRequest('"items" is required and must be a list of item ids')
    if not items:
        raise BadRequest('"items" must not be empty')
    if len(items) > max_items:
        raise TooManyItems(f'"items" has {len(items)} ids; the limit is {max_items}')
    try:
        "".join(items)  # the fastest all-strings check: 2.5 us for 400 ids, a loop costs 11
    except TypeError:
        position, item = next((p, i) for p, i in enumerate(items) if not isinstance(i, str))
        raise BadRequest(
            f'"items"[{position}] must be a string, got {type(item).__name__}'
        ) from None
    user_id = data.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise BadRequest('"user_id" must be a string')
    top_k = data.get("top_k")
    if top_k is not None and not (_is_int(top_k) and top_k >= 1):
        raise BadRequest('"top_k" must be an integer >= 1')
    seed = data.get("seed")
    if seed is not None and not (_is_int(seed) and 0 <= seed <= MAX_SEED):
        raise BadRequest(f'"seed" must be an integer in [0, {MAX_SEED}]')
    return PredictRequest(ItemIds(items), orjson.dumps(user_id), top_k, seed)
