"""The native /predict fast path agrees with the general parser on every body it takes,
and the id index (native and twin) maps ids as a dict does."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from mab.errors import BadRequest, HTTPError, InvalidJSON, TooManyItems
from mab.native import gate, twin
from mab.native.api import Rows, Spans
from mab.native.scoring import literal_key
from mab.request import PredictRequest, parse_general, parse_request

# The fast parser itself (the twin has none: it sends every body the general way).
parse_predict = gate.parse_predict
BACKENDS = pytest.mark.parametrize("backend", [gate, twin], ids=["native", "twin"])


def general(body: bytes, max_items: int = 50) -> PredictRequest | type[HTTPError]:
    try:
        return parse_general(body, max_items)
    except HTTPError as exc:
        return type(exc)


def assert_same(fast: PredictRequest, slow: PredictRequest, body: bytes) -> None:
    # The fast path's ids are spans into the body; the general path's into orjson's copy.
    assert fast.items.buffer is body and slow.items.buffer is not body
    assert list(fast.items) == list(slow.items)
    literals = [fast.items.buffer[b:e] for b, e in fast.items.spans.reshape(-1, 2).tolist()]
    assert literals == [slow.items.buffer[b:e] for b, e in slow.items.spans.reshape(-1, 2).tolist()]
    assert json.loads(fast.user_id_json) == json.loads(slow.user_id_json)
    assert (fast.top_k, fast.seed) == (slow.top_k, slow.seed)


FAST_BODIES = [
    b'{"items": ["a", "b"]}',
    b'{"items":["a"],"user_id":"u","top_k":1,"seed":0}',
    b' \n\t{ "items" : [ "x" , "y" ] , "user_id" : null , "top_k" : null , "seed" : null } \r\n',
    b'{"seed": 18446744073709551615, "items": ["a"]}',
    b'{"items": ["a"], "extra": {"nested": [1, -2.5, true, false, null, "s\\"\\\\\\n"]}, "e": []}',
    b'{"items": ["", " ", "~!@#$%^&*()"], "top_k": 99999}',
]


@pytest.mark.parametrize("body", FAST_BODIES)
def test_common_bodies_take_the_fast_path(body: bytes) -> None:
    """Plain bodies are parsed natively, to exactly what the general parser reads."""
    assert parse_predict(body, 50) is not None
    fast, slow = parse_request(body, 50), general(body)
    assert isinstance(slow, PredictRequest)
    assert_same(fast, slow, body)


# Bodies the fast path leaves alone, and what the general parser must make of them:
# the ids (and seed), or the error.
SLOW_BODIES: list[tuple[bytes, list[str] | type[HTTPError], int | None]] = [
    (b'{"items": ["caf\xc3\xa9"]}', ["caf\u00e9"], None),  # non-ASCII id
    (b'{"items": ["a\\u0062"]}', ["ab"], None),  # escaped id
    (b'{"items": ["a\\"b"]}', ['a"b'], None),
    (b'{"it\\u0065ms": ["a"]}', ["a"], None),  # escaped key
    (b'{"items": ["a"], "items": ["b"]}', ["b"], None),  # duplicate key: the last one wins
    (b'{"items": ["a"], "n": 1e400}', InvalidJSON, None),  # orjson: infinity
    (b'{"items": ["a"], "n": 12345678901234567890123}', ["a"], None),
    (b'{"items": ["a"], "top_k": 2.0}', ["a"], None),  # 2.0 is an integer, as JSON Schema says
    (b'{"items": ["a"], "top_k": 2.5}', BadRequest, None),
    (b'{"items": ["a"], "seed": 271.0}', ["a"], 271),
    (b'{"items": ["a"], "seed": 1e300}', BadRequest, None),
    (b'{"items": ["a"], "seed": -0}', ["a"], 0),  # orjson reads 0
    (b'{"items": ["a"], "x": "\\ud800"}', InvalidJSON, None),  # a lone surrogate
]


@pytest.mark.parametrize(("body", "expected", "seed"), SLOW_BODIES)
def test_unusual_bodies_fall_back(
    body: bytes, expected: list[str] | type[HTTPError], seed: int | None
) -> None:
    """Escapes, non-ASCII, duplicate keys, big numbers: the general parser decides, and
    its ids come back as orjson's literals in a buffer of their own."""
    assert parse_predict(body, 50) is None
    if isinstance(expected, type):
        with pytest.raises(expected):
            parse_request(body, 50)
        return
    request = parse_request(body, 50)
    assert list(request.items) == expected and request.seed == seed
    assert (
        request.items.buffer
        == json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode()
    )


ERROR_BODIES = [
    b"",
    b"{",
    b"[]",
    b'{"items": []}',
    b'{"items": "a"}',
    b'{"items": ["a", 1]}',
    b'{"items": ["a"]',
    b'{"items": ["a"]} {}',
    b'{"items": ["a"],}',
    b'{"items": ["a",]}',
    b'{"items": ["a"], "top_k": 0}',
    b'{"items": ["a"], "top_k": -1}',
    b'{"items": ["a"], "top_k": 01}',
    b'{"items": ["a"], "seed": 18446744073709551616}',
    b'{"items": ["a"], "user_id": 3}',
    b'{"items": ["a\x01"]}',
    b'{"items": ["a"], "x": tru}',
    b'{"items": ["a"], "x": [1 2]}',
    b'{"items": ["a"], "x": 01}',
    b'{"items": ["a"], "x": -}',
    b'{"items": ["a"], "x": 1.}',
    b'{"items": ["a"], "x": NaN}',
    b'{"user_id": "u"}',
    json.dumps({"items": ["a"] * 51}).encode(),  # over max_items
]


@pytest.mark.parametrize("body", ERROR_BODIES)
def test_invalid_bodies_never_take_the_fast_path(body: bytes) -> None:
    """Every body the general parser rejects is left to it, so errors keep their words."""
    assert parse_predict(body, 50) is None
    assert not isinstance(general(body), PredictRequest)


def _random_value(rnd: random.Random, depth: int = 0) -> object:
    kind = rnd.choice("snbfol" if depth < 3 else "snbf")
    if kind == "s":
        return "".join(rnd.choice('ab "\\\n\x01é/') for _ in range(rnd.randint(0, 4)))
    if kind == "n":
        return rnd.choice([0, -1, 7, 2**63, 2**64, 2**70, 1.5, -0.25, 1e300, 3.0])
    if kind == "b":
        return rnd.choice([True, False, None])
    if kind == "o":
        return {_random_key(rnd): _random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))}
    return [_random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]


def _random_key(rnd: random.Random) -> str:
    return rnd.choice(["items", "user_id", "top_k", "seed", "other", "x\\y", "ítems"])


def _random_body(rnd: random.Random) -> bytes:
    members: list[tuple[str, object]] = []
    if rnd.random() < 0.7:
        plain = [f"item_{rnd.randint(0, 99)}" for _ in range(rnd.randint(1, 5))]
        members.append(("items", plain))
    for _ in range(rnd.randint(0, 4)):
        key = _random_key(rnd)
        if key == "items" and rnd.random() < 0.8:
            value: object = [
                rnd.choice(["a", "b", "item_1", "", "é", 'q"', 5]) for _ in range(rnd.randint(0, 6))
            ]
        elif key in ("top_k", "seed") and rnd.random() < 0.7:
            value = rnd.choice([None, 0, 1, 5, -1, 2**64 - 1, 2**64, 2.0, "3"])
        else:
            value = _random_value(rnd)
        members.append((key, value))
    text = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in members) + "}"
    if rnd.random() < 0.1:  # corrupt it
        cut = rnd.randint(0, len(text))
        text = text[:cut] + rnd.choice(["", ",", "}", "]", '"', " x"]) + text[cut + 1 :]
    if rnd.random() < 0.3:
        text = text.replace(",", " ,\n ")
    return text.encode()


def test_random_bodies_agree() -> None:
    """20,000 random bodies: the fast path either passes or reads what orjson reads."""
    rnd = random.Random(2026)
    fast_count = 0
    for _ in range(20_000):
        body = _random_body(rnd)
        slow = general(body, max_items=5)
        if parse_predict(body, 5) is None:
            continue
        fast_count += 1
        assert isinstance(slow, PredictRequest), body
        assert_same(parse_request(body, 5), slow, body)
    assert fast_count > 2000  # the generator does reach the fast path


# The string scan goes 16 bytes a step while 16 bytes remain, then byte by byte, so
# the cases below put each byte that matters at every offset 0..40 of a string (across
# the 16- and 32-byte steps), and each string both far from the end of the body and
# near it. Under the sanitizer pass (PYTHONMALLOC=malloc) a read past a body's end
# is an error.

# Not plain: the fast path must hand any string holding one of these back.
NOT_PLAIN = {
    "quote": b'"',  # ends the string early: the body is invalid
    "escape": b"\\n",
    "nul": b"\x00",
    "control": b"\x1f",
    "utf8": "é".encode(),
    "high": b"\x80",  # invalid UTF-8
    "ff": b"\xff",
}
PLAIN_EDGES = b" !#/[]{}:,~\x7f"  # the bytes next to the special ones, and JSON's own

_FILLER = b", ".join([b'"item_0001234"'] * 4)


def _placements(literal: bytes) -> list[bytes]:
    """Bodies with a string literal as the first id (a long run after it), the last
    id (the byte-wise tail), and the user_id that ends the body."""
    return [
        b'{"items": [' + literal + b", " + _FILLER + b"]}",
        b'{"items": [' + _FILLER + b", " + literal + b"]}",
        b'{"items": [' + _FILLER + b'], "user_id": ' + literal + b"}",
    ]


def assert_agrees(body: bytes) -> bool:
    """The fast path either hands the body back or reads what the general parser
    reads; True when it took it."""
    fast = parse_predict(body, 50)
    slow = general(body)
    if fast is None:
        return False
    assert isinstance(slow, PredictRequest), body
    assert_same(parse_request(body, 50), slow, body)
    return True


@pytest.mark.parametrize("name", NOT_PLAIN)
def test_special_byte_at_every_offset_falls_back(name: str) -> None:
    """A quote, escape, control or non-ASCII byte at offsets 0..40 of a string, with
    plain bytes before and after it, always sends the body to the general parser."""
    for offset in range(41):
        literal = b'"' + b"a" * offset + NOT_PLAIN[name] + b"b" * 20 + b'"'
        for body in _placements(literal):
            assert parse_predict(body, 50) is None, body
            assert assert_agrees(body) is False


def test_plain_strings_of_every_length_agree() -> None:
    """Strings of 0..40 plain bytes, which close at every offset of a 16- or 32-byte
    step (exactly at its end too), and with 0..17 bytes left after the closing
    quote, are read as the general parser reads them."""
    edges = PLAIN_EDGES.decode()
    for length in range(41):
        text = "".join(edges[i % len(edges)] for i in range(length)).encode()
        for body in _placements(b'"' + text + b'"'):
            assert assert_agrees(body), body
        for pad in range(18):
            assert assert_agrees(b'{"items": ["' + text + b'"]' + b" " * pad + b"}")
            assert assert_agrees(b'{"items": ["x"], "user_id": "' + text + b'"' + b" " * pad + b"}")


def test_separators_agree() -> None:
    """The separators between ids, common (", " and ",") and not, read alike."""
    valid = [b",", b", ", b" ,", b" , ", b",\n  ", b",  ", b"\t,\t"]
    for sep in [*valid, b",,", b", ]", b" "]:
        for ids in [[b'"a"', b'"b"'], [b'"item_0001234"'] * 3, [b'""', b'""']]:
            # Each valid separator is taken by the fast path; the others are left alone.
            assert assert_agrees(b'{"items": [' + sep.join(ids) + b"]}") == (sep in valid)
    assert parse_predict(b'{"items": ["a",   "b"]}', 50) is not None
    assert parse_predict(b'{"items": ["a",,"b"]}', 50) is None


def test_truncated_bodies_fall_back() -> None:
    """Every prefix of a body with ids of many lengths (cut inside a string, right
    after one, or between them) goes to the general parser, which rejects it."""
    ids = ["x" * n for n in (0, 1, 12, 15, 16, 17, 31, 32, 33, 40)]
    body = json.dumps({"items": ids, "user_id": "u" * 20}).encode()
    assert assert_agrees(body)
    for cut in range(len(body)):
        assert parse_predict(body[:cut], 50) is None, body[:cut]
        assert not isinstance(general(body[:cut]), PredictRequest)


def test_every_byte_replaced_agrees() -> None:
    """Each byte of a body replaced by each special byte: the fast path hands it back
    or reads what the general parser reads."""
    ids = ["item_0001234", "x" * 15, "y" * 16, "z" * 33]
    body = json.dumps({"items": ids, "user_id": "user_1"}).encode()
    taken = 0
    for i in range(len(body)):
        for byte in [*NOT_PLAIN.values(), b" ", b",", b"]"]:
            taken += assert_agrees(body[:i] + byte + body[i + 1 :])
    # Inside the ids, a space or comma is still a valid body: the fast path takes those.
    assert taken >= 2 * sum(len(arm) for arm in ids)


class IdIndex:
    """A backend's index of `ids`, looked up as the pipeline does: unknown ids get
    row len(ids)."""

    def __init__(self, backend: object, ids: list[str]) -> None:
        self.index = backend.Index([literal_key(arm) for arm in ids])  # type: ignore[attr-defined]
        self.absent = len(ids)

    def lookup(self, body: bytes, spans: Spans) -> tuple[Rows, int]:
        rows, unknown = self.index.lookup(body, spans, self.absent)
        return rows, unknown


@BACKENDS
def test_index_finds_every_catalog_id(backend: object) -> None:
    """The index maps each id to its row and anything else to the unknown row."""
    # 40,000 ids: a 4 MB table, the size that asks for 2 MB pages.
    ids = [f"item_{i:07d}" for i in range(40_000)] + ["", "x", "a much longer id than the rest"]
    index = IdIndex(backend, ids)
    wanted = [*ids, "item_9999999", "item_000000", "X"]
    body = json.dumps({"items": wanted}).encode()
    fast = parse_predict(body, len(wanted))
    assert fast is not None
    rows, unknown = index.lookup(body, fast.spans)
    assert rows.tolist() == [*range(len(ids)), len(ids), len(ids), len(ids)]
    assert unknown == 3


def _lookup(index: IdIndex, wanted: list[str]) -> tuple[list[int], int]:
    request = parse_request(json.dumps({"items": wanted}).encode(), len(wanted))
    rows, unknown = index.lookup(request.items.buffer, request.items.spans)
    return rows.tolist(), unknown


@BACKENDS
def test_index_finds_escaped_and_unicode_ids(backend: object) -> None:
    """Ids with quotes, backslashes, control bytes or non-ASCII are found through the
    general parser's literals, keyed as orjson writes them."""
    ids = ['q"uote', "back\\slash", "tab\t", "caf\u00e9", "\U0001f3af", "plain"]
    index = IdIndex(backend, ids)
    body = json.dumps({"items": [*ids, "caf\u00e9!"]}).encode()  # \u escapes: the general parser
    request = parse_request(body, 10)
    assert request.items.buffer is not body
    rows, unknown = index.lookup(request.items.buffer, request.items.spans)
    assert rows.tolist() == [0, 1, 2, 3, 4, 5, 6] and unknown == 1


@BACKENDS
def test_index_refuses_spans_outside_the_buffer(backend: object) -> None:
    """A span past the buffer's end, or too short to hold the quotes, is an error
    before anything is read through it."""
    index = IdIndex(backend, ["a"])
    for spans in ([0, 4], [3, 4], [2, 2]):
        with pytest.raises(ValueError, match="out of range"):
            index.lookup(b'"a"', np.array(spans, dtype=np.uint64))


def test_index_compares_short_and_long_ids_exactly() -> None:
    """Ids up to 16 bytes (kept in the slot) and longer ones (in a blob) are told apart
    by every byte and by length, around each size where the comparison changes."""
    ids = [""]
    for n in range(1, 41):  # 1-3, 4-7, 8-16: key words read differently; 17 up: long
        base = "a" * n
        ids += [base] + [base[:i] + "b" + base[i + 1 :] for i in sorted({0, n // 2, n - 1})]
    index = IdIndex(gate, ids)
    known = {arm: row for row, arm in enumerate(ids)}
    # Unknown ids one byte or one length away from known ones, of every size.
    strangers = [arm + "a" for arm in ids] + [arm.replace("a", "c", 1) for arm in ids]
    wanted = [*ids, *strangers]
    rows, unknown = _lookup(index, wanted)
    assert rows == [known.get(arm, len(ids)) for arm in wanted]
    assert unknown == sum(arm not in known for arm in wanted)


def test_index_tells_ids_with_the_same_key_words_apart_by_length() -> None:
    """'a' * 9 to 'a' * 16 read the same two words (as do 4-7 and 1-3 letters): in a
    half-full table of such twins most probes pass one; 30 seeds."""
    ids = ["a" * n for n in range(1, 17, 2)]
    wanted = ["a" * n for n in range(20)]
    expected = [ids.index(arm) if arm in ids else len(ids) for arm in wanted]
    for _ in range(30):
        assert _lookup(IdIndex(gate, ids), wanted) == (expected, len(wanted) - len(ids))


@BACKENDS
def test_index_agrees_with_a_dict(backend: object) -> None:
    """A catalog of random ids of 1-30 bytes over 3 letters (many near-twins), looked
    up with known and unknown ids, maps exactly as a dict does."""
    rnd = random.Random(7)
    ids = list(
        dict.fromkeys("".join(rnd.choices("xy~", k=rnd.randint(1, 30))) for _ in range(3000))
    )
    known = {arm: row for row, arm in enumerate(ids)}
    index = IdIndex(backend, ids)
    wanted = [*rnd.sample(ids, 1000)]
    wanted += ["".join(rnd.choices("xy~", k=rnd.randint(1, 30))) for _ in range(1000)]
    rows, unknown = _lookup(index, wanted)
    assert rows == [known.get(arm, len(ids)) for arm in wanted]
    assert unknown == sum(arm not in known for arm in wanted)


@pytest.mark.parametrize(
    "ids",
    [
        ["a", "b", "a"],
        ["", "x", ""],
        ["0123456789abcdef", "0123456789abcdeF", "0123456789abcdef"],  # 16 bytes: inline
        ["0123456789abcdefg", "x", "0123456789abcdefg"],  # 17: in the blob
    ],
)
@BACKENDS
def test_index_rejects_repeated_ids(backend: object, ids: list[str]) -> None:
    """A catalog cannot hold one id twice, short or long."""
    with pytest.raises(ValueError, match="repeats"):
        IdIndex(backend, ids)


def test_items_read_as_strings() -> None:
    """Fast-path ids read as a sequence of str for stores that need strings."""
    body = b'{"items": ["a", "bc", "d"]}'
    request = parse_request(body, 10)
    assert request.items.buffer is body
    assert len(request.items) == 3
    assert request.items[1] == "bc" and request.items[1:] == ["bc", "d"]
    assert list(request.items) == ["a", "bc", "d"]
    assert np.array_equal(request.items.spans, [11, 14, 16, 20, 22, 25])


# Long lists, the shape of real requests: each odd thing at every id of a 24-id
# list. (A scanner that took the quotes of 64 bytes at a time was tried against
# these: no faster than the per-id loop, bench/RESULTS.md section 0.)
_ID_LENGTHS = [0, 1, 5, 12, 13, 14, 15, 16, 17, 30, 47, 61, 62, 63, 64, 70]


def _long_list(odd: bytes, at: int, sep: bytes = b", ", count: int = 24) -> bytes:
    ids = [b'"item_%07d"' % i for i in range(count)]
    ids[at] = odd
    return b'{"items": [' + sep.join(ids) + b'], "user_id": "u1"}'


def test_long_lists_of_plain_ids_take_the_fast_path() -> None:
    """Plain ids of any length, separated by "," or ", ", at every place of a long
    list: read as the general parser reads them, by the fast path."""
    for sep in (b",", b", "):
        for length in _ID_LENGTHS:
            for at in range(24):
                body = _long_list(b'"' + b"x" * length + b'"', at, sep)
                assert assert_agrees(body), body


@pytest.mark.parametrize("name", NOT_PLAIN)
def test_special_byte_in_a_long_list_falls_back(name: str) -> None:
    """A special byte inside any id of a long list, at the start, middle or end of
    it, sends the body to the general parser."""
    for at in range(24):
        for where in (0, 5, 10):
            odd = b'"' + b"item_00001"[:where] + NOT_PLAIN[name] + b"item_00001"[where:] + b'"'
            body = _long_list(odd, at)
            assert parse_predict(body, 50) is None, body
            assert assert_agrees(body) is False


def test_odd_separators_in_a_long_list_agree() -> None:
    """Any separator after any id of a long list reads as the general parser reads
    it (the window hands such an id to the per-id loop)."""
    valid = [b" ,", b" , ", b",\n  ", b",  ", b"\t,\t"]
    for sep in [*valid, b",,", b" ", b"", b"]", b",]"]:
        for at in range(23):
            ids = [b'"item_%07d"' % i for i in range(24)]
            body = b'{"items": [' + b", ".join(ids[: at + 1]) + sep + b", ".join(ids[at + 1 :])
            assert assert_agrees(body + b"]}") == (sep in valid)
            assert assert_agrees(body + b'], "seed": 3}') == (sep in valid)


def test_long_lists_at_the_item_limit() -> None:
    """At, and one over, --max-items, whichever path takes the ids."""
    ids = [f"item_{i:07d}" for i in range(50)]
    for limit in (1, 3, 4, 5, 39, 40):
        body = json.dumps({"items": ids[:limit]}).encode()
        assert parse_predict(body, limit) is not None, limit
        over = json.dumps({"items": ids[: limit + 1]}).encode()
        assert parse_predict(over, limit) is None, limit
        with pytest.raises(TooManyItems):
            parse_request(over, limit)
