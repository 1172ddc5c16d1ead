"""A gc round run between a put's page writes and its commit: the race in which a round collects
the pages of a content not yet committed, made to happen every time."""

from __future__ import annotations

from collections.abc import Callable

from chunkstore import Store


def gc_round_before_commits(store: Store, rounds: int = 1, before_round: Callable[[], None] | None = None) -> list[int]:
    """Make each of the store's next `rounds` catalog commits run a whole gc round first (after
    before_round, if given); return the list that gets each round's pages_deleted."""
    commit = store.catalog.commit
    collected: list[int] = []

    def commit_after_a_gc_round(*arguments, **options):
        if len(collected) + 1 >= rounds:
            store.catalog.commit = commit
        if before_round is not None:
            before_round()
        collected.append(store.gc().pages_deleted)
        return commit(*arguments, **options)

    store.catalog.commit = commit_after_a_gc_round
    return collected
