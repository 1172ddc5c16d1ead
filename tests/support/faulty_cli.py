"""The `chunkstore` command with faults installed on every store it opens.

    python faulty_cli.py ARGS...      with CHUNKSTORE_TEST_FAULTS='{"blobs": [...], "catalog": [...]}'

Each fault is a dict of chunkstore.backends.faulty.Fault fields. The command runs exactly as the
installed one does (chunkstore_cli.main.main), so its messages and exit codes are the real ones."""

from __future__ import annotations

import json
import os

from chunkstore import Store
from chunkstore.backends.faulty import Fault, FaultPlan, FaultyBlobStore, FaultyCatalog
from chunkstore_cli.main import main

_open = Store.open.__func__


def _open_with_faults(cls, url, **options):
    store = _open(cls, url, **options)
    plan = json.loads(os.environ["CHUNKSTORE_TEST_FAULTS"])
    store.blobs = FaultyBlobStore(store.blobs, FaultPlan([Fault(**fault) for fault in plan.get("blobs", [])], 0))
    store.catalog = FaultyCatalog(store.catalog, FaultPlan([Fault(**fault) for fault in plan.get("catalog", [])], 0))
    return store


if __name__ == "__main__":
    Store.open = classmethod(_open_with_faults)
    main()
