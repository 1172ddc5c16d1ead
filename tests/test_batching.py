"""batched: every item once, in order, in lists of the size asked, from any iterable; fetch_in_order:
results in order, a bounded number fetched ahead, the rest cancelled when the caller stops."""

from concurrent.futures import Future

import pytest

from chunkstore.core.batching import batched, fetch_in_order


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 7])
def test_items_come_out_once_in_order_in_full_batches_but_the_last(count):
    batches = list(batched(iter(range(count)), 3))
    assert [item for batch in batches for item in batch] == list(range(count))
    assert all(len(batch) == 3 for batch in batches[:-1])
    assert all(1 <= len(batch) <= 3 for batch in batches)


def test_a_generator_is_consumed_lazily():
    taken = []

    def items():
        for item in range(10):
            taken.append(item)
            yield item

    first = next(batched(items(), 4))
    assert first == [0, 1, 2, 3]
    assert taken == [0, 1, 2, 3]


def test_a_batch_size_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        next(batched([1], 0))


def test_fetch_in_order_hands_out_results_in_order_with_a_bounded_number_ahead():
    fetched: list[Future] = []

    def fetch(item: int) -> Future:
        future: Future = Future()
        fetched.append(future)
        future.set_result(item * 10)
        return future

    results = fetch_in_order(range(10), fetch, 3)
    assert next(results) == (0, 0)
    assert len(fetched) == 3  # the first and two ahead of it
    assert list(results) == [(item, item * 10) for item in range(1, 10)]


def test_fetch_in_order_cancels_what_is_still_in_flight_when_the_caller_stops():
    pending: list[Future] = []

    def fetch(item: int) -> Future:
        future: Future = Future()
        if item == 0:
            future.set_result("first")
        pending.append(future)
        return future

    results = fetch_in_order(range(10), fetch, 4)
    assert next(results) == (0, "first")
    results.close()
    assert len(pending) == 4 and all(future.cancelled() for future in pending[1:])
