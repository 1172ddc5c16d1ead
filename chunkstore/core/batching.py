"""Cutting a stream of items into lists of at most a given size, as requests take them
(Python 3.11 has no itertools.batched), and working on items ahead of the one handed out, in order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future
from typing import TypeVar

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


def batched(items: Iterable[_Item], size: int) -> Iterator[list[_Item]]:
    """Yield the items in order, in lists of `size` items; the last list may be shorter."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    batch: list[_Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def fetch_in_order(
    items: Iterable[_Item], fetch: Callable[[_Item], Future[_Result]], read_ahead: int
) -> Generator[tuple[_Item, _Result], None, None]:
    """(item, its result) in order, with up to read_ahead fetches in flight ahead of the one
    handed out; the fetches still in flight are cancelled when the caller stops early."""
    window: deque[tuple[_Item, Future[_Result]]] = deque()
    try:
        for item in items:
            window.append((item, fetch(item)))
            if len(window) >= read_ahead:
                first, future = window.popleft()
                yield first, future.result()
        while window:
            first, future = window.popleft()
            yield first, future.result()
    finally:
        for _, future in window:
            future.cancel()
