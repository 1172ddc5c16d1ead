"""A catalog wrapper that injects faults into chosen methods, for testing the put/gc protocol
when the catalog misbehaves.

FaultyCatalog(inner, plan) forwards every Catalog method to inner; the plan (a
blobstore.faulty.FaultPlan, rules keyed by method name) can make a call raise before
it runs ("error"), run late ("slow"), or run and commit and then raise
("lost_reply": the transaction landed but the caller is told it failed). It composes
over any Catalog.
"""

from __future__ import annotations

from chunkstore.backends.faulty import FaultPlan, run_with_fault
from chunkstore.backends.catalog import Catalog


class FaultyCatalog(Catalog):
    def __init__(self, inner: Catalog, plan: FaultPlan):
        self.inner = inner
        self.plan = plan

    def __getattr__(self, name: str):
        # Backend attributes (lease_seconds, path) pass through unfaulted.
        return getattr(self.inner, name)

    def close(self) -> None:
        self.inner.close()


def _faulted(method: str):
    def call(self: FaultyCatalog, *args, **kwargs):
        return run_with_fault(self.plan, method, "", lambda: getattr(self.inner, method)(*args, **kwargs))

    call.__name__ = method
    call.__doc__ = getattr(Catalog, method).__doc__
    return call


# Every method of the contract, so a method added to Catalog is faultable without a change here.
for _method in sorted(Catalog.__abstractmethods__):
    setattr(FaultyCatalog, _method, _faulted(_method))
FaultyCatalog.__abstractmethods__ = frozenset()
del _method
