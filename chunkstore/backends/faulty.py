"""Wrappers that inject faults into a blob store and a catalog, for testing how the store behaves
when storage misbehaves.

FaultyBlobStore(inner, plan) and FaultyCatalog(inner, plan) keep the contract of inner except
where the plan fires a fault on a call. A plan is a list of Fault rules and a seeded random
number generator, so a failing run can be replayed exactly. Each composes over any
implementation (a folder, S3, SQLite, DynamoDB, memory, another wrapper). With an empty plan
they are transparent: tests/backends/test_faulty.py runs both conformance suites through them.

Kinds of fault:
    error       the call raises InjectedFault and does nothing
    slow        the call sleeps `delay` seconds, then runs normally
    lost_reply  the call runs (a put lands, a delete deletes, a catalog transaction commits)
                and then raises InjectedFault: the reply was lost, as with a dropped connection
    truncate    get returns only the first half of the bytes, with no error
    crash       the process dies at this call: it does not run, it raises InjectedCrash, and
                so does every later call through the same plan (no clean-up reaches storage)
"""

from __future__ import annotations

import errno
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from chunkstore.backends.blobstore import BlobInfo, BlobStore, BlobStoreWrapper
from chunkstore.backends.catalog import Catalog, WrappedCatalog
from chunkstore.backends.packindex import PACK_INDEX_CALLS, PackIndex

FAULT_KINDS = ("error", "slow", "lost_reply", "truncate", "crash")


class InjectedFault(OSError):
    """The error a fault raises: an I/O error, as a failing disk or network gives."""

    def __init__(self, message: str):
        super().__init__(errno.EIO, message)


class InjectedCrash(InjectedFault):
    """What a call raises at and after a "crash" fault: the process is gone, nothing more reaches storage."""


@dataclass(frozen=True)
class Fault:
    """One rule: on calls of `method` (whose key starts with `key_prefix`), skip the first
    `after` matching calls, then fire with `probability`, at most `times` times (None: no limit)."""

    method: str
    kind: str = "error"
    times: int | None = 1
    after: int = 0
    probability: float = 1.0
    delay: float = 0.01
    key_prefix: str = ""

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (known: {', '.join(FAULT_KINDS)})")
        if not 0 <= self.probability <= 1:
            raise ValueError(f"probability must be within [0, 1], got {self.probability}")


class FaultPlan:
    """Decides, call by call, which fault fires. Thread-safe; counts what it injected."""

    def __init__(self, faults: Sequence[Fault], seed: int | str = 0):
        self.faults = list(faults)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._matched: Counter[int] = Counter()
        self._fired: Counter[int] = Counter()
        self.enabled = True
        self.crashed = False

    @property
    def injected(self) -> int:
        """How many faults have fired so far."""
        return sum(self._fired.values())

    def decide(self, method: str, key: str = "") -> Fault | None:
        """The fault to inject on this call, or None. The first rule that fires wins."""
        if not self.enabled:
            return None
        with self._lock:
            for index, fault in enumerate(self.faults):
                if fault.method != method or not key.startswith(fault.key_prefix):
                    continue
                self._matched[index] += 1
                if self._matched[index] <= fault.after:
                    continue
                if fault.times is not None and self._fired[index] >= fault.times:
                    continue
                if fault.probability < 1 and self._rng.random() >= fault.probability:
                    continue
                self._fired[index] += 1
                return fault
        return None


def run_with_fault(
    plan: FaultPlan, method: str, key: str, call: Callable[[], Any], truncate: Callable[[Any], Any] | None = None
) -> Any:
    """Run call() under the plan's decision for (method, key)."""
    where = f"{method}({key!r})" if key else f"{method}()"
    if plan.crashed:
        raise InjectedCrash(f"injected crash: {where} was not run, the process crashed before it")
    fault = plan.decide(method, key)
    if fault is None:
        return call()
    if fault.kind == "crash":
        plan.crashed = True
        raise InjectedCrash(f"injected crash: the process crashed at {where}")
    if fault.kind == "error":
        raise InjectedFault(f"injected fault: {where} failed")
    if fault.kind == "slow":
        time.sleep(fault.delay)
        return call()
    result = call()
    if fault.kind == "lost_reply":
        raise InjectedFault(f"injected fault: {where} took effect but its reply was lost")
    # truncate: only reads have something to cut; on other calls it is a no-op.
    return truncate(result) if truncate is not None else result


def _first_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


class FaultyBlobStore(BlobStoreWrapper):
    """inner, with the faults of plan injected into put, get, stat, delete, list and sync;
    create, exists and remove_stale_temporaries pass through unfaulted."""

    def __init__(self, inner: BlobStore, plan: FaultPlan):
        super().__init__(inner)
        self.plan = plan

    def put(self, key: str, data: bytes) -> None:
        run_with_fault(self.plan, "put", key, lambda: self.inner.put(key, data))

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return run_with_fault(self.plan, "get", key, lambda: self.inner.get(key, offset, length), _first_half)

    def stat(self, key: str) -> BlobInfo:
        return run_with_fault(self.plan, "stat", key, lambda: self.inner.stat(key))

    def delete(self, key: str) -> None:
        run_with_fault(self.plan, "delete", key, lambda: self.inner.delete(key))

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        return run_with_fault(self.plan, "list", prefix, lambda: self.inner.list(prefix))

    def sync(self) -> None:
        run_with_fault(self.plan, "sync", "", self.inner.sync)


class FaultyCatalog(WrappedCatalog):
    """inner, with the faults of plan injected into every method of the Catalog contract and of
    its pack index (rules are keyed by method name: no name is in both); its capabilities
    (WrappedCatalog's) and close pass through unfaulted."""

    def __init__(self, inner: Catalog, plan: FaultPlan):
        super().__init__(inner)
        self.plan = plan
        # A PackIndex by the methods set on FaultyPackIndex below, which a type checker does not see.
        self.pack_index = cast(PackIndex, FaultyPackIndex(inner.pack_index, plan))


class FaultyPackIndex:
    """A catalog's pack index, with the faults of plan injected into every call of the PackIndex
    contract; FaultyCatalog makes one over the pack index of the catalog it wraps."""

    def __init__(self, inner: PackIndex, plan: FaultPlan):
        self.inner = inner
        self.plan = plan


def _faulted(method: str, contract: type):
    def call(self: FaultyCatalog | FaultyPackIndex, *args, **kwargs):
        return run_with_fault(self.plan, method, "", lambda: getattr(self.inner, method)(*args, **kwargs))

    call.__name__ = method
    call.__doc__ = getattr(contract, method).__doc__
    return call


# Every method of both contracts, so a method added to either is faultable without a change here.
for _method in sorted(Catalog.__abstractmethods__):
    setattr(FaultyCatalog, _method, _faulted(_method, Catalog))
FaultyCatalog.__abstractmethods__ = frozenset()
for _method in PACK_INDEX_CALLS:
    setattr(FaultyPackIndex, _method, _faulted(_method, PackIndex))
del _method
