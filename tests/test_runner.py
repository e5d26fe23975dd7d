"""Where a request's CPU work runs: the loop's lane, or sampler actors when a
configuration can reach them, with the actors' queue bounded."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from mab.config import Config
from mab.errors import Overloaded
from mab.runner import ActorRunner, InlineRunner, build_runner


def test_default_config_starts_no_sampler_thread() -> None:
    """With --inline-max >= --max-items (the defaults) no request can reach an actor,
    so the runner is the inline one and starts no thread."""
    assert isinstance(build_runner(Config()), InlineRunner)
    assert isinstance(build_runner(Config(inline_max=100, max_items=100)), InlineRunner)
    assert isinstance(build_runner(Config(inline_max=99, max_items=100)), ActorRunner)


def _thread_of(scorer: Any) -> str:
    return threading.current_thread().name


def test_large_requests_go_to_the_actors_small_ones_stay_inline() -> None:
    """Up to --inline-max items on the loop thread; more on a sampler thread."""
    runner = ActorRunner(Config(inline_max=10, max_items=100, samplers=2))

    async def main() -> tuple[str, str]:
        runner.start()
        return await runner.run(10, _thread_of), await runner.run(11, _thread_of)

    small, large = asyncio.run(main())
    runner.close()  # joins the threads: off the loop
    assert small == threading.current_thread().name
    assert large.startswith("sampler-")
    assert runner.threads == 0  # close() joined them


def test_a_full_actor_queue_sheds_at_once() -> None:
    """With one actor busy and --max-queue 2, the third request waiting for an actor
    is refused with Overloaded at once; the others finish once the actor is free."""
    runner = ActorRunner(Config(inline_max=0, max_items=100, samplers=1, max_queue=2))
    release = threading.Event()

    def blocked(scorer: Any, tag: str) -> str:
        release.wait(30)
        return tag

    async def main() -> list[str]:
        runner.start()
        first = asyncio.ensure_future(runner.run(5, blocked, "first"))
        second = asyncio.ensure_future(runner.run(5, blocked, "second"))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await runner.run(5, blocked, "third")
        release.set()
        return list(await asyncio.gather(first, second))

    assert asyncio.run(main()) == ["first", "second"]
    runner.close()


def test_an_actor_error_reaches_its_request() -> None:
    """An exception raised on a sampler thread is raised by the awaiting request."""
    runner = ActorRunner(Config(inline_max=0, max_items=100, samplers=1))

    def fail(scorer: Any) -> None:
        raise ValueError("bad job")

    async def main() -> None:
        runner.start()
        with pytest.raises(ValueError, match="bad job"):
            await runner.run(5, fail)

    asyncio.run(main())
    runner.close()
