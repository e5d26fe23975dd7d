"""Parsing and validating /predict bodies, into one request shape.

Ids always come as spans into a buffer: the [begin, end) of each id's JSON literal.
Most bodies take the native fast path (`backend.parse_predict`): the buffer is the
body itself and no Python object is made per id. Whatever that path does not accept
(errors, escaped or non-ASCII ids, odd JSON) goes through orjson here, which also
words the errors; its ids are written back into a buffer by orjson, so the rest of
the pipeline sees the same shape either way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, overload

import orjson

from mab.errors import BadRequest, InvalidJSON, TooManyItems
from mab.native import backend
from mab.native.api import MAX_SEED, Spans


class ItemIds(Sequence[str]):
    """A request's ids: `buffer[spans[2i], spans[2i + 1])` is id i's JSON literal.

    A store that needs strings (Vertex) reads it as a sequence; fast-path ids are
    then decoded once, on first use.
    """

    __slots__ = ("_strings", "buffer", "spans")

    def __init__(self, buffer: bytes, spans: Spans, strings: list[str] | None = None) -> None:
        self.buffer = buffer
        self.spans = spans
        self._strings = strings

    @classmethod
    def from_strings(cls, ids: list[str]) -> ItemIds:
        """The ids as orjson writes them, one literal each."""
        buffer = orjson.dumps(ids)
        return cls(buffer, backend.find_spans(buffer, len(ids)), ids)

    def strings(self) -> list[str]:
        if self._strings is None:
            buffer, bounds = self.buffer, self.spans.tolist()
            # Fast-path ids are printable ASCII without escapes: the literal minus quotes.
            self._strings = [
                buffer[bounds[i] + 1 : bounds[i + 1] - 1].decode("ascii")
                for i in range(0, len(bounds), 2)
            ]
        return self._strings

    def __len__(self) -> int:
        return len(self.spans) // 2

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        return self.strings()[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self.strings())


class PredictRequest(NamedTuple):
    """A tuple: made once per request, and a frozen dataclass's __init__ costs
    several times a tuple's."""

    items: ItemIds
    user_id_json: bytes  # user_id as JSON, ready for the response: b'"u1"' or b"null"
    top_k: int | None
    seed: int | None

    @property
    def k(self) -> int:
        """How many ranked items the answer holds."""
        n = len(self.items)
        return n if self.top_k is None else min(self.top_k, n)


def as_int(value: Any) -> int | None:
    """An integer as JSON Schema counts them (271.0 is one, as long as a double holds it
    exactly), or None. Booleans are not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return None


def parse_request(body: bytes, max_items: int) -> PredictRequest:
    """Validate a /predict body; every problem is a 400 (or 413 for too many items)."""
    fast = backend.parse_predict(body, max_items)
    if fast is not None:
        return PredictRequest(
            items=ItemIds(body, fast.spans),
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
        "".join(items)  # the fastest all-strings check: the loop stays in C
    except TypeError:
        position, item = next((p, i) for p, i in enumerate(items) if not isinstance(i, str))
        raise BadRequest(
            f'"items"[{position}] must be a string, got {type(item).__name__}'
        ) from None
    user_id = data.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise BadRequest('"user_id" must be a string')
    top_k = data.get("top_k")
    if top_k is not None and ((top_k := as_int(top_k)) is None or top_k < 1):
        raise BadRequest('"top_k" must be an integer >= 1')
    seed = data.get("seed")
    if seed is not None and ((seed := as_int(seed)) is None or not 0 <= seed <= MAX_SEED):
        raise BadRequest(f'"seed" must be an integer in [0, {MAX_SEED}]')
    return PredictRequest(ItemIds.from_strings(items), orjson.dumps(user_id), top_k, seed)
