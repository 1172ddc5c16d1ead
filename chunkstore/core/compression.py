"""Compression algorithms, registered by name and by the ID stored in each object header.

IDs are part of the on-disk format: an ID, once used, is never given to another
algorithm, even after the algorithm is retired.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import zstandard

from chunkstore.errors import CorruptObjectError, InvalidArgumentError, UnsupportedFormatError

NONE_ID = 0
ZSTD_ID = 1

# Level 3, measured with `python -m benchmarks.micro` on the 1 GB versioned-archive data
# at 64 KiB chunks: store ratio 15.3x at level 1, 16.1x at 3, 17.5x at 6; level 6 ran
# ~3x slower than 3 (44 vs 130 MB/s a core), level 1 ~1.4x faster (185 MB/s).
# Only new chunks are compressed, so level 3 costs little put speed for 5% more saving.
DEFAULT_ZSTD_LEVEL = 3
_ZSTD_LEVELS = range(1, 23)


@dataclass(frozen=True)
class CompressionSpec:
    """What the store config records: an algorithm name and, for zstd, a level."""

    name: str
    level: int = 0

    @classmethod
    def parse(cls, text: str) -> CompressionSpec:
        """Parse the command-line form: `none`, `zstd` or `zstd:LEVEL`."""
        name, _, level_text = text.partition(":")
        if name == "none" and not level_text:
            return cls("none")
        if name == "zstd":
            try:
                level = int(level_text) if level_text else DEFAULT_ZSTD_LEVEL
            except ValueError:
                raise InvalidArgumentError(f"zstd level must be a number: {text!r}") from None
            if level not in _ZSTD_LEVELS:
                raise InvalidArgumentError(f"zstd level must be 1..22, got {level}")
            return cls("zstd", level)
        raise InvalidArgumentError(f"unknown compression {text!r} (use zstd, zstd:LEVEL or none)")

    def to_config(self) -> dict:
        return {"name": self.name, "level": self.level}

    @classmethod
    def from_config(cls, data: dict) -> CompressionSpec:
        name = data.get("name")
        if name not in ("none", "zstd"):
            raise UnsupportedFormatError(f"store uses unknown compression {name!r}")
        level = int(data.get("level", 0))
        if name == "zstd" and level not in _ZSTD_LEVELS:
            raise UnsupportedFormatError(f"store uses zstd level {level}, outside 1..22")
        return cls(name, level)

    def __str__(self) -> str:
        return f"zstd:{self.level}" if self.name == "zstd" else "none"


class Compressor:
    """Compresses chunks for one store; safe to share between threads.

    zstandard's ZstdCompressor is not thread-safe, so each thread gets its own;
    compression releases the GIL, which is how put uses both cores.
    """

    def __init__(self, spec: CompressionSpec):
        self.spec = spec
        self._local = threading.local()

    def compress(self, data: bytes) -> tuple[int, bytes]:
        """Return (compression ID, payload). Data that does not shrink is kept raw."""
        if self.spec.name == "none":
            return NONE_ID, data
        compressor = getattr(self._local, "zstd", None)
        if compressor is None:
            # No content size / checksum in the frame: the object header already
            # carries the length and the chunk ID checks the content.
            compressor = zstandard.ZstdCompressor(level=self.spec.level, write_content_size=False, write_checksum=False)
            self._local.zstd = compressor
        packed = compressor.compress(data)
        if len(packed) >= len(data):
            return NONE_ID, data
        return ZSTD_ID, packed


_decompressors = threading.local()


def decompress(compression_id: int, payload: bytes | memoryview, plaintext_length: int) -> bytes:
    """Undo Compressor.compress; the output must be exactly plaintext_length bytes.

    plaintext_length comes from the object header, which the caller has bounded by the
    store's maximum chunk size, so no payload makes this allocate more than that."""
    if compression_id == NONE_ID:
        data = bytes(payload)
    elif compression_id == ZSTD_ID:
        data = _zstd_decompress(payload, plaintext_length)
    else:
        raise CorruptObjectError(f"unknown compression ID {compression_id}")
    if len(data) != plaintext_length:
        raise CorruptObjectError(f"payload is {len(data)} bytes after decompression, header says {plaintext_length}")
    return data


def _zstd_decompress(payload: bytes | memoryview, plaintext_length: int) -> bytes:
    # python-zstandard honours max_output_size only for frames that do not state their
    # content size: a 40-byte frame declaring 1 GiB made decompress() allocate 1.08 GB.
    # So a frame that states a size other than the header's is refused before decoding,
    # and one that states none is capped by max_output_size.
    try:
        declared = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as error:
        raise CorruptObjectError(f"zstd payload has no valid frame header: {error}") from None
    if declared not in (-1, plaintext_length):
        raise CorruptObjectError(f"zstd frame declares {declared} bytes, the object header says {plaintext_length}")
    decompressor = getattr(_decompressors, "zstd", None)
    if decompressor is None:
        decompressor = zstandard.ZstdDecompressor()
        _decompressors.zstd = decompressor
    try:
        return decompressor.decompress(payload, max_output_size=max(plaintext_length, 1))
    except zstandard.ZstdError as error:
        raise CorruptObjectError(f"zstd payload does not decompress: {error}") from None
