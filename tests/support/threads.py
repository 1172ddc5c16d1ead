"""Running test code in threads without losing what a thread raises.

A bare threading.Thread prints its exception and lets the test pass; these helpers raise it
in the test instead, so a thread that fails fails the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

# Long enough for any thread of a test to finish on a loaded machine; a hung thread fails the test.
THREAD_TIMEOUT_SECONDS = 120


def run_in_threads(*calls: Callable[[], Any]) -> list[Any]:
    """Run every call in a thread of its own, all at once; return their results in order, or
    raise the exception of the first call (in order) that raised one."""
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result(THREAD_TIMEOUT_SECONDS) for future in futures]


@contextmanager
def in_background(call: Callable[[], Any]) -> Iterator[Future]:
    """Run call in a thread while the block runs; on leaving the block, wait for it and raise
    what it raised. The block tells the call when to stop (an Event, for instance)."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(call)
        try:
            yield future
        finally:
            future.result(THREAD_TIMEOUT_SECONDS)
