"""batched: every item once, in order, in lists of the size asked, from any iterable."""

import pytest

from chunkstore.core.batching import batched


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
