"""A blob store wrapper that injects faults, for testing how the store behaves when storage misbehaves.

FaultyBlobStore(inner, plan) keeps the BlobStore contract of inner except where the
plan fires a fault on a call. A plan is a list of Fault rules and a seeded random
number generator, so a failing run can be replayed exactly. It composes over any
BlobStore (a folder, S3, another wrapper).

Kinds of fault:
    error       the call raises InjectedFault and does nothing
    slow        the call sleeps `delay` seconds, then runs normally
    lost_reply  the call runs (a put lands, a delete deletes) and then raises
                InjectedFault: the reply was lost, as with a dropped connection
    truncate    get returns only the first half of the bytes, with no error
"""

from __future__ import annotations

import errno
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from chunkstore.backends.blobstore import BlobInfo, BlobStore

FAULT_KINDS = ("error", "slow", "lost_reply", "truncate")


class InjectedFault(OSError):
    """The error a fault raises: an I/O error, as a failing disk or network gives."""

    def __init__(self, message: str):
        super().__init__(errno.EIO, message)


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

    @property
    def injected(self) -> int:
        """How many faults have fired so far."""
        return sum(self._fired.values())

    def injected_by_kind(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for index, fired in self._fired.items():
            counts[f"{self.faults[index].method}:{self.faults[index].kind}"] += fired
        return dict(counts)

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


def run_with_fault(plan: FaultPlan, method: str, key: str, call: Callable[[], Any],
                   truncate: Callable[[Any], Any] | None = None) -> Any:
    """Run call() under the plan's decision for (method, key)."""
    fault = plan.decide(method, key)
    if fault is None:
        return call()
    where = f"{method}({key!r})" if key else f"{method}()"
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
    return data[:len(data) // 2]


class FaultyBlobStore(BlobStore):
    """inner, with the faults of plan injected into put, get, stat, delete, list and sync."""

    def __init__(self, inner: BlobStore, plan: FaultPlan):
        self.inner = inner
        self.plan = plan
        self.url = inner.url
        self.concurrency = inner.concurrency

    def __getattr__(self, name: str):
        # Backend extras (remove_stale_temporaries, clients) pass through unfaulted.
        return getattr(self.inner, name)

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

    def create(self) -> None:
        self.inner.create()

    def exists(self) -> bool:
        return self.inner.exists()
