"""The memory catalog's pack index: the conformance suite."""

from __future__ import annotations

import pytest

from chunkstore.backends.memory import CatalogState, MemoryCatalog
from chunkstore.backends.sessions import DEFAULT_LEASE_SECONDS
from support.packindex_conformance import PackIndexConformance


class TestMemoryPackIndex(PackIndexConformance):
    @pytest.fixture
    def make_catalog(self):
        state = CatalogState()

        def make(lease_seconds: float = DEFAULT_LEASE_SECONDS) -> MemoryCatalog:
            return MemoryCatalog(state, lease_seconds=lease_seconds)

        return make
