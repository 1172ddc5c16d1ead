"""Cutting a stream of items into lists of at most a given size, as requests take them
(Python 3.11 has no itertools.batched)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

_Item = TypeVar("_Item")


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
