"""The policies of bench/simulate.py: each shows TOP_K of a round's candidates.

`rank` returns positions into the round's candidate row; `update` gets the arms shown and
their clicks. mab is driven over HTTP; the baselines run in process.
"""

from __future__ import annotations

import http.client
import math
import time
import urllib.parse
from typing import Any, Protocol

import numpy as np
import orjson
from numpy.typing import NDArray

ARMS = 1000
CANDIDATES = 200
TOP_K = 10

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


class Policy(Protocol):
    def rank(self, candidates: Ints, r: int) -> Ints: ...

    def update(self, arms: Ints, clicks: NDArray[np.bool_], r: int) -> None: ...


class Counts:
    """Impressions and clicks per arm, for the policies that rank by the empirical mean."""

    def __init__(self) -> None:
        self.shown = np.zeros(ARMS)
        self.clicks = np.zeros(ARMS)

    def update(self, arms: Ints, clicks: NDArray[np.bool_], r: int) -> None:
        self.shown[arms] += 1
        self.clicks[arms] += clicks

    def means(self, arms: Ints) -> Floats:
        shown = self.shown[arms]
        return np.divide(self.clicks[arms], shown, out=np.zeros(len(arms)), where=shown > 0)


def top(scores: Floats, rng: np.random.Generator, k: int = TOP_K) -> Ints:
    """Positions of the k highest scores, ties broken at random."""
    order: Ints = np.lexsort((rng.random(len(scores)), -scores))
    return order[:k]


class EpsilonGreedy(Counts):
    """Each of the k slots shows a random candidate with probability eps, else the next best
    by empirical mean (arms never shown count as 0, ties at random)."""

    def __init__(self, rng: np.random.Generator, eps: float = 0.1) -> None:
        super().__init__()
        self.rng, self.eps = rng, eps

    def rank(self, candidates: Ints, r: int) -> Ints:
        order = top(self.means(candidates), self.rng, len(candidates))
        explore = int((self.rng.random(TOP_K) < self.eps).sum())
        greedy, rest = order[: TOP_K - explore], order[TOP_K - explore :]
        return np.concatenate([greedy, self.rng.choice(rest, explore, replace=False)])


class UCB1(Counts):
    """mean + sqrt(2 ln t / n) with t the impressions so far; arms never shown first."""

    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.rng = rng
        self.total = 0

    def rank(self, candidates: Ints, r: int) -> Ints:
        shown = self.shown[candidates]
        bonus = np.sqrt(2 * math.log(max(self.total, 1)) / np.maximum(shown, 1))
        return top(np.where(shown > 0, self.means(candidates) + bonus, np.inf), self.rng)

    def update(self, arms: Ints, clicks: NDArray[np.bool_], r: int) -> None:
        super().update(arms, clicks, r)
        self.total += len(arms)


class MABWiserThompson:
    """mabwiser.mab.MAB with LearningPolicy.ThompsonSampling(), arms 0..ARMS-1.

    MABWiser's predict() returns one arm; predict_expectations() returns one fresh
    Beta(1 + clicks, 1 + misses) draw for every arm (thompson.py), which is what mab draws
    per item. The top k of those draws restricted to the candidates is the top-k Thompson
    ranking: the draws are independent per arm, so drawing for the other 800 arms too does
    not change the candidates' draws. partial_fit() then adds the round's 10 outcomes.
    """

    def __init__(self, seed: int, prior: tuple[int, int] = (1, 1)) -> None:
        from mabwiser.mab import MAB, LearningPolicy

        self.mab = MAB(list(range(ARMS)), LearningPolicy.ThompsonSampling(), seed=seed)
        # MABWiser's counters start at 1 and 1, its prior is Beta(1, 1): another prior is
        # fitted in as pseudo-outcomes, alpha - 1 clicks and beta - 1 misses per arm. (And
        # predict_expectations() refuses to run before a fit; an empty one is fine.)
        clicks, misses = prior[0] - 1, prior[1] - 1
        decisions = np.repeat(np.arange(ARMS, dtype=np.int64), clicks + misses)
        rewards = np.tile(np.r_[np.ones(clicks), np.zeros(misses)], ARMS).astype(np.int64)
        self.mab.fit(decisions, rewards)

    def rank(self, candidates: Ints, r: int) -> Ints:
        draws = self.mab.predict_expectations()
        scores = np.fromiter((draws[a] for a in candidates.tolist()), float, len(candidates))
        order: Ints = np.argsort(-scores)
        return order[:TOP_K]

    def update(self, arms: Ints, clicks: NDArray[np.bool_], r: int) -> None:
        self.mab.partial_fit(arms, clicks.astype(np.int64))


class MabServer:
    """The real server over one keep-alive HTTP connection: /predict, then /feedback."""

    def __init__(self, url: str, rng: np.random.Generator, prefix: str = "") -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        self.ids = [f"{prefix}arm_{a:04d}" for a in range(ARMS)]
        self.arm_of = {name: a for a, name in enumerate(self.ids)}
        self.rng = rng  # the request seeds, and the arms check_arms() looks at
        self.tag = f"{prefix}{time.time_ns()}"  # event ids unique to this run
        self.shown = np.zeros(ARMS, dtype=np.int64)
        self.clicks = np.zeros(ARMS, dtype=np.int64)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        payload = None if body is None else orjson.dumps(body)
        headers = {"Content-Type": "application/json"} if payload else {}
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=payload, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                break
            except (ConnectionError, http.client.HTTPException):
                # Safe to send again: a feedback event carries an event_id.
                self.conn.close()
                if attempt:
                    raise
        if response.status != 200:
            raise SystemExit(f"{method} {path}: {response.status} {data[:300]!r}")
        return orjson.loads(data)

    def rank(self, candidates: Ints, r: int) -> Ints:
        seed = int(self.rng.integers(2**63))
        items = [self.ids[a] for a in candidates.tolist()]
        body = {"user_id": "sim", "items": items, "top_k": TOP_K, "seed": seed}
        shown = self.call("POST", "/predict", body)["items"]
        position = {a: j for j, a in enumerate(candidates.tolist())}
        return np.array([position[self.arm_of[item["id"]]] for item in shown], dtype=np.int64)

    def update(self, arms: Ints, clicks: NDArray[np.bool_], r: int) -> None:
        events = [
            {"id": self.ids[a], "reward": int(c), "event_id": f"{self.tag}-{r}-{j}"}
            for j, (a, c) in enumerate(zip(arms.tolist(), clicks.tolist(), strict=True))
        ]
        answer = self.call("POST", "/feedback", {"events": events})
        if answer.get("applied") != len(events):
            raise SystemExit(f"/feedback applied {answer.get('applied')} of {len(events)}")
        self.shown[arms] += 1
        self.clicks[arms] += clicks

    def check_arms(self, sample: int = 20) -> int:
        """Count arms whose /arms/{id} totals differ from what we posted.

        Each GET on a new connection, so the kernel spreads them over the workers.
        """
        wrong = 0
        for a in self.rng.choice(np.flatnonzero(self.shown), sample, replace=False).tolist():
            conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                conn.request("GET", f"/arms/{self.ids[a]}")
                arm = orjson.loads(conn.getresponse().read())
            finally:
                conn.close()
            got = (arm.get("successes"), arm.get("failures"))
            want = (self.clicks[a], self.shown[a] - self.clicks[a])
            wrong += not all(
                math.isclose(g or 0, w, abs_tol=1e-6) for g, w in zip(got, want, strict=True)
            )
        return wrong

    def close(self) -> None:
        self.conn.close()
