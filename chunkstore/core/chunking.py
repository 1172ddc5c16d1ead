"""Chunkers: split a byte stream into chunks, registered by the name the store config records.

The boundaries a chunker produces are part of the store format: if they changed,
every existing store would stop deduplicating against new data. tests/test_chunking.py
pins them with golden digests over a grid of sizes and inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from chunkstore.errors import InvalidArgumentError, UnsupportedFormatError

# The default average chunk size, a storage format 2 store's: packs make a chunk cost no
# request or file of its own, and the curve of docs/design/format-v2.md (30 Django releases)
# stores 1.11x less at 8 KiB than at 16.
DEFAULT_AVG_SIZE = 8 * 1024
# A storage format 1 store's default, where each chunk is an object and a catalog row of its
# own: measured with `python -m benchmarks.micro` on the 1 GB versioned-archive data (zstd 3),
# store ratio 32.5x at 16K, 22.9x at 32K, 16.1x at 64K, 10.5x at 128K, against restic's 5.6x.
# Halving the size roughly doubles the objects (and S3 PUTs) per stored byte; 64K keeps ~2.6x
# restic's saving at a cost per TB ingested of a quarter of 16K's.
FORMAT_1_AVG_SIZE = 64 * 1024
DEFAULT_CHUNKER = "fastcdc2020"
# pyfastcdc takes the gear seed as a signed 64-bit C integer and refuses a negative one.
MAX_SEED = 2**63 - 1


def default_avg_size(storage_format: int) -> int:
    """The average chunk size `init` picks for a store of storage_format when none is given."""
    return FORMAT_1_AVG_SIZE if storage_format == 1 else DEFAULT_AVG_SIZE


@dataclass(frozen=True)
class ChunkerSpec:
    """Everything that decides chunk boundaries; recorded in the store config at init."""

    name: str
    min_size: int
    avg_size: int
    max_size: int
    seed: int = 0

    @classmethod
    def from_average(cls, name: str = DEFAULT_CHUNKER, avg_size: int = DEFAULT_AVG_SIZE, seed: int = 0) -> ChunkerSpec:
        """The conventional min = avg/4, max = avg*4 around a chosen average (restic, duplicacy use the same spread)."""
        if name not in CHUNKERS:
            raise InvalidArgumentError(f"unknown chunker {name!r} (known: {', '.join(sorted(CHUNKERS))})")
        if name == "fixed":
            spec = cls(name, avg_size, avg_size, avg_size, seed)
        else:
            spec = cls(name, avg_size // 4, avg_size, avg_size * 4, seed)
        spec.validate()
        return spec

    def validate(self) -> None:
        limits = _LIMITS[self.name]
        for field, (low, high) in limits.items():
            value = getattr(self, field)
            if not low <= value <= high:
                raise InvalidArgumentError(f"{self.name}: {field} must be within {low}..{high}, got {value}")
        if not self.min_size <= self.avg_size <= self.max_size:
            raise InvalidArgumentError(
                f"{self.name}: need min <= avg <= max, got {self.min_size}/{self.avg_size}/{self.max_size}"
            )
        if not 0 <= self.seed <= MAX_SEED:
            raise InvalidArgumentError(f"{self.name}: seed must be within 0..{MAX_SEED}, got {self.seed}")
        if self.seed and self.name != "fastcdc2020":
            raise InvalidArgumentError(f"{self.name} does not support a seed")

    def to_config(self) -> dict:
        return {
            "name": self.name,
            "min_size": self.min_size,
            "avg_size": self.avg_size,
            "max_size": self.max_size,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, data: dict) -> ChunkerSpec:
        name = data.get("name")
        if name not in CHUNKERS:
            raise UnsupportedFormatError(f"store uses unknown chunker {name!r}")
        spec = cls(name, int(data["min_size"]), int(data["avg_size"]), int(data["max_size"]), int(data.get("seed", 0)))
        spec.validate()
        return spec


class Readable(Protocol):
    """What a chunker reads from: a binary file, or any object with a file's read()."""

    def read(self, size: int = -1, /) -> bytes: ...


Chunker = Callable[[Readable], Iterator[bytes]]


def make_chunker(spec: ChunkerSpec) -> Chunker:
    """Return a function that yields the chunks of a binary stream, in order."""
    cut = CHUNKERS[spec.name](spec)

    def chunks(stream: Readable) -> Iterator[bytes]:
        # No chunker cuts before min_size except at the end of the input, so a stream that
        # ends sooner is one chunk: small files skip the chunker's set-up (pyfastcdc fills a
        # buffer of twice the maximum chunk size for every stream it cuts).
        head = _read_exactly(stream, spec.min_size)
        if len(head) < spec.min_size:
            if head:
                yield head
            return
        yield from cut(_Prefixed(head, stream))

    return chunks


class _Prefixed:
    """A binary stream that reads head first, then the rest of stream."""

    def __init__(self, head: bytes, stream: Readable):
        self._head = memoryview(head)
        self._stream = stream

    def readinto(self, buffer) -> int:
        if self._head:
            count = min(len(buffer), len(self._head))
            buffer[:count] = self._head[:count]
            self._head = self._head[count:]
            return count
        readinto = getattr(self._stream, "readinto", None)
        if readinto is not None:
            return readinto(buffer) or 0
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if self._head:
            count = len(self._head) if size < 0 else min(size, len(self._head))
            data = bytes(self._head[:count])
            self._head = self._head[count:]
            return data
        return self._stream.read(size)


def _fastcdc2020(spec: ChunkerSpec) -> Chunker:
    import pyfastcdc

    # normalized_chunking=1 is the FastCDC paper's and the Rust fastcdc crate's default.
    cdc = pyfastcdc.FastCDC(
        spec.avg_size, min_size=spec.min_size, max_size=spec.max_size, normalized_chunking=1, seed=spec.seed
    )

    def chunks(stream: Readable) -> Iterator[bytes]:
        for chunk in cdc.cut_stream(stream):
            # The memoryview is only valid until the next chunk is cut.
            yield bytes(chunk.data)

    return chunks


# Read this much at a time for chunkers that work on a buffer rather than a stream.
_BLOCK = 4 * 1024 * 1024


def _fastcdc_ronomon(spec: ChunkerSpec) -> Chunker:
    try:
        from fastcdc.fastcdc_cy import fastcdc_cy
    except ImportError as error:
        raise UnsupportedFormatError(
            "the fastcdc-ronomon chunker needs the fastcdc package: pip install 'chunkstore[compare]'"
        ) from error

    # The ronomon cut point of a chunk starting at offset o depends on at most
    # data[o : o + window], so a chunk found with that much data after it (or at
    # end of input) is final, and chunking a stream block by block gives exactly
    # the boundaries of chunking the whole input at once.
    window = max(64 * 1024, spec.max_size)

    def chunks(stream: Readable) -> Iterator[bytes]:
        pending = b""
        eof = False
        while True:
            while not eof and len(pending) < _BLOCK + window:
                block = stream.read(_BLOCK)
                if not block:
                    eof = True
                else:
                    pending += block
            if not pending:
                return
            consumed = 0
            for chunk in fastcdc_cy(pending, spec.min_size, spec.avg_size, spec.max_size):
                if not eof and chunk.offset + window > len(pending):
                    break
                consumed = chunk.offset + chunk.length
                yield pending[chunk.offset : consumed]
            pending = pending[consumed:]

    return chunks


def _fixed(spec: ChunkerSpec) -> Chunker:
    def chunks(stream: Readable) -> Iterator[bytes]:
        while True:
            chunk = _read_exactly(stream, spec.avg_size)
            if not chunk:
                return
            yield chunk

    return chunks


def _read_exactly(stream: Readable, size: int) -> bytes:
    """Read size bytes unless the stream ends first (pipes return short reads)."""
    parts = []
    remaining = size
    while remaining:
        part = stream.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


CHUNKERS: dict[str, Callable[[ChunkerSpec], Chunker]] = {
    "fastcdc2020": _fastcdc2020,
    "fastcdc-ronomon": _fastcdc_ronomon,
    "fixed": _fixed,
}

# The ranges each library accepts (pyfastcdc's docstring; fastcdc's MINIMUM_*/AVERAGE_*/MAXIMUM_*).
_LIMITS = {
    "fastcdc2020": {"min_size": (64, 1 << 20), "avg_size": (256, 1 << 22), "max_size": (1024, 1 << 24)},
    "fastcdc-ronomon": {"min_size": (64, 1 << 26), "avg_size": (256, 1 << 28), "max_size": (1024, 1 << 24)},
    "fixed": {"min_size": (64, 1 << 24), "avg_size": (64, 1 << 24), "max_size": (64, 1 << 24)},
}
