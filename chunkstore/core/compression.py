"""Compression algorithms, registered by name and by the ID stored in each object header.

IDs are part of the on-disk format: an ID, once used, is never given to another
algorithm, even after the algorithm is retired.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import zstandard

from chunkstore.errors import CorruptObjectError, InvalidArgumentError, UnsupportedFormatError

NONE_ID = 0
ZSTD_ID = 1
# zstd with a store dictionary (storage format 2): the payload is the dictionary's 8-byte ID,
# then a zstd frame compressed with that dictionary (which does not name it itself).
ZSTD_DICT_ID = 2
KNOWN_IDS = (NONE_ID, ZSTD_ID, ZSTD_DICT_ID)
DICTIONARY_ID_SIZE = 8

# Level 3, measured with `python -m benchmarks.micro` on the 1 GB versioned-archive data
# at 64 KiB chunks: store ratio 15.3x at level 1, 16.1x at 3, 17.5x at 6; level 6 ran
# ~3x slower than 3 (44 vs 130 MB/s a core), level 1 ~1.4x faster (185 MB/s).
# Only new chunks are compressed, so level 3 costs little put speed for 5% more saving.
DEFAULT_ZSTD_LEVEL = 3
_ZSTD_LEVELS = range(1, 23)

# A format 2 store's dictionary: 112 KiB trained once on the first 16 MiB of new chunks.
# docs/design/pack-compression.md (`python -m benchmarks.pack_compression`):
# Django 4.2.1-4.2.10 6.39x -> 7.64x, a SQLite database 2.80x -> 3.36x at the same speed; 16 KiB
# gave 7.23x / 3.10x and 64 KiB 7.53x / 3.30x, the gain flattening by 112 KiB.
DEFAULT_DICTIONARY_SIZE = 112 * 1024
DEFAULT_TRAINING_BYTES = 16 * 1024 * 1024
# What a config may ask for. A reader holds each dictionary it uses in memory, so an edited
# config must not make it large; zstd trains nothing useful below 1 KiB. A writer holds the
# training bytes of plaintext until it trains, so they are bounded too, and must be several
# dictionaries' worth (zstd's trainer refuses fewer sample bytes than it has to fill).
DICTIONARY_SIZES = range(1024, 1024 * 1024 + 1)
MAX_TRAINING_BYTES = 256 * 1024 * 1024
MIN_TRAINING_FACTOR = 2


@dataclass(frozen=True)
class CompressionSpec:
    """What the store config records: an algorithm name and, for zstd, a level."""

    name: str
    level: int = 0
    # A format 2 store's dictionary (0: none, plain zstd as before): its size and the bytes of
    # new chunks a writer trains it on.
    dictionary_size: int = 0
    training_bytes: int = 0

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

    def with_dictionary(self, size: int, training_bytes: int = DEFAULT_TRAINING_BYTES) -> CompressionSpec:
        """This zstd spec with a store dictionary of size bytes (0: none); InvalidArgumentError
        for sizes out of range."""
        if size == 0:
            return replace(self, dictionary_size=0, training_bytes=0)
        spec = replace(self, dictionary_size=size, training_bytes=training_bytes)
        problem = spec._dictionary_problem()
        if problem:
            raise InvalidArgumentError(problem)
        return spec

    def _dictionary_problem(self) -> str | None:
        if self.name != "zstd":
            return f"a dictionary needs zstd compression, not {self.name}"
        if self.dictionary_size not in DICTIONARY_SIZES:
            return f"a zstd dictionary is 1 KiB..1 MiB, got {self.dictionary_size} bytes"
        low = MIN_TRAINING_FACTOR * self.dictionary_size
        if not low <= self.training_bytes <= MAX_TRAINING_BYTES:
            return (
                f"a dictionary of {self.dictionary_size} bytes trains on {low}..{MAX_TRAINING_BYTES} bytes "
                f"of chunks, got {self.training_bytes}"
            )
        return None

    def to_config(self) -> dict:
        config: dict = {"name": self.name, "level": self.level}
        # Only when set: configs written before dictionaries stay byte for byte what they were.
        if self.dictionary_size:
            config.update(dictionary_size=self.dictionary_size, training_bytes=self.training_bytes)
        return config

    @classmethod
    def from_config(cls, data: dict) -> CompressionSpec:
        name = data.get("name")
        if name not in ("none", "zstd"):
            raise UnsupportedFormatError(f"store uses unknown compression {name!r}")
        level = int(data.get("level", 0))
        if name == "zstd" and level not in _ZSTD_LEVELS:
            raise UnsupportedFormatError(f"store uses zstd level {level}, outside 1..22")
        if "dictionary_size" not in data and "training_bytes" not in data:
            return cls(name, level)
        size, training_bytes = data.get("dictionary_size"), data.get("training_bytes")
        if type(size) is not int or type(training_bytes) is not int:
            raise UnsupportedFormatError(
                f"store config gives dictionary size {size!r} and training bytes {training_bytes!r}: not integers"
            )
        spec = cls(name, level, size, training_bytes)
        problem = spec._dictionary_problem()
        if problem:
            raise UnsupportedFormatError(f"store config is not usable: {problem}")
        return spec

    def __str__(self) -> str:
        if self.name != "zstd":
            return "none"
        return f"zstd:{self.level}" + (f", dictionary {self.dictionary_size} bytes" if self.dictionary_size else "")


def _smaller(data: bytes, compression_id: int, packed: bytes) -> tuple[int, bytes]:
    """The compressed payload, or the data raw where compressing did not shrink it."""
    if len(packed) >= len(data):
        return NONE_ID, data
    return compression_id, packed


# Returns the bytes of the dictionary an 8-byte ID names, checked against the ID; raises
# CorruptObjectError when it cannot (the store's dictionaries, operations of a store give it).
DictionarySource = Callable[[bytes], bytes]


class Compressor:
    """Compresses chunks for one store; safe to share between threads.

    zstandard's ZstdCompressor is not thread-safe, so each thread gets its own;
    compression releases the GIL, which is how put uses both cores. Once given a dictionary
    (use_dictionary), zstd compresses with it.
    """

    def __init__(self, spec: CompressionSpec):
        self.spec = spec
        self._local = threading.local()
        self._dictionary: tuple[bytes, bytes] | None = None  # (ID, bytes), replaced whole

    @property
    def dictionary_id(self) -> bytes | None:
        dictionary = self._dictionary
        return None if dictionary is None else dictionary[0]

    def use_dictionary(self, dictionary_id: bytes, data: bytes) -> None:
        """Compress with this dictionary from now on (chunks in progress may still go without)."""
        if len(dictionary_id) != DICTIONARY_ID_SIZE:
            raise InvalidArgumentError(f"a dictionary ID is {DICTIONARY_ID_SIZE} bytes, got {len(dictionary_id)}")
        self._dictionary = (dictionary_id, data)

    def compress(self, data: bytes) -> tuple[int, bytes]:
        """Return (compression ID, payload). Data that does not shrink is kept raw."""
        if self.spec.name == "none":
            return NONE_ID, data
        compression_id, prefix, compressor = self._selected()
        return _smaller(data, compression_id, prefix + compressor.compress(data))

    def compress_many(self, chunks: list[bytes]) -> list[tuple[int, bytes]]:
        """compress() of each chunk, in order. zstd makes the frames of two or more in one call,
        which gives up the interpreter lock once for them all: a put of 10 Django releases
        (406.9 MiB of new chunks) in batches of ~256 KiB took 3.37-3.73 s this way against
        3.62-3.70 s compressing each batch chunk by chunk (docs/performance.md).
        The frames are the bytes compress() makes; the call costs ~20 us more than compress()
        (timeit), so a single chunk goes to compress()."""
        if self.spec.name == "none" or len(chunks) < 2:
            return [self.compress(data) for data in chunks]
        compression_id, prefix, compressor = self._selected()
        sources: list[bytes | bytearray | memoryview] = list(chunks)  # typed as zstandard's stub asks
        try:
            frames = compressor.multi_compress_to_buffer(sources, threads=0)
        except NotImplementedError:  # zstandard's cffi backend has no multi_compress_to_buffer
            return [self.compress(data) for data in chunks]
        return [_smaller(data, compression_id, prefix + frames[index].tobytes()) for index, data in enumerate(chunks)]

    def _selected(self) -> tuple[int, bytes, zstandard.ZstdCompressor]:
        """This thread's compressor for the store's dictionary, or without one, with the
        compression ID and payload prefix of what it makes."""
        dictionary = self._dictionary
        if dictionary is None:
            compressor = getattr(self._local, "zstd", None)
            if compressor is None:
                compressor = self._local.zstd = self._zstd()
            return ZSTD_ID, b"", compressor
        dictionary_id, dictionary_data = dictionary
        held_id, compressor = getattr(self._local, "zstd_dictionary", (None, None))
        if compressor is None or held_id != dictionary_id:
            compressor = self._zstd(dictionary_data)
            self._local.zstd_dictionary = (dictionary_id, compressor)
        return ZSTD_DICT_ID, dictionary_id, compressor

    def _zstd(self, dictionary: bytes | None = None) -> zstandard.ZstdCompressor:
        # No content size / checksum in the frame: the object header already carries the
        # length and the chunk ID checks the content; no dictionary ID: the payload names it.
        if dictionary is None:
            return zstandard.ZstdCompressor(level=self.spec.level, write_content_size=False, write_checksum=False)
        prepared = zstandard.ZstdCompressionDict(dictionary)
        # Without it every compress() call loads the dictionary again: 76 MB/s against 181
        # without a dictionary on 3 Django releases (pack-compression.md's benchmark); with it,
        # about the same speed.
        prepared.precompute_compress(level=self.spec.level)
        return zstandard.ZstdCompressor(
            level=self.spec.level,
            dict_data=prepared,
            write_content_size=False,
            write_checksum=False,
            write_dict_id=False,
        )


# fastCover with k=1024, d=8 rather than zstd's search over k and d, which stalls the put that
# trains: 112 KiB on the first 16 MiB of new chunks of Django 4.2.1 took 5.54 s with the search
# (it chose k=1511, d=8) and 1.58 s with these (load average 7), and the release's new chunks
# were stored in 12.474 MB against 12.394 MB (0.65% more). Measured as docs/performance.md says.
_TRAINING_PARAMETERS = {"k": 1024, "d": 8}


def train_dictionary(size: int, samples: list[bytes], level: int) -> bytes | None:
    """A zstd dictionary of at most size bytes trained on samples (new chunks' plaintext), or None
    where zstd finds too little in them to train on (too few samples, or nothing that repeats)."""
    try:
        # A copy typed as zstandard's stub asks (list is invariant).
        buffers: list[bytes | bytearray | memoryview] = list(samples)
        return zstandard.train_dictionary(size, buffers, level=level, **_TRAINING_PARAMETERS).as_bytes()
    except zstandard.ZstdError:
        return None


_decompressors = threading.local()


def decompress(
    compression_id: int,
    payload: bytes | memoryview,
    plaintext_length: int,
    dictionaries: DictionarySource | None = None,
) -> bytes:
    """Undo Compressor.compress; the output must be exactly plaintext_length bytes. A payload
    compressed with a dictionary gets it from dictionaries.

    plaintext_length comes from the object header, which the caller has bounded by the
    store's maximum chunk size, so no payload makes this allocate more than that."""
    if compression_id == NONE_ID:
        data = bytes(payload)
    elif compression_id == ZSTD_ID:
        data = _zstd_decompress(_plain_decompressor(), payload, plaintext_length)
    elif compression_id == ZSTD_DICT_ID:
        if len(payload) < DICTIONARY_ID_SIZE:
            raise CorruptObjectError(f"zstd dictionary payload is {len(payload)} bytes, shorter than its dictionary ID")
        if dictionaries is None:
            raise CorruptObjectError("the payload was compressed with a dictionary, and this store has none")
        dictionary_id = bytes(payload[:DICTIONARY_ID_SIZE])
        decompressor = _dictionary_decompressor(dictionary_id, dictionaries(dictionary_id))
        data = _zstd_decompress(decompressor, payload[DICTIONARY_ID_SIZE:], plaintext_length)
    else:
        raise CorruptObjectError(f"unknown compression ID {compression_id}")
    if len(data) != plaintext_length:
        raise CorruptObjectError(f"payload is {len(data)} bytes after decompression, header says {plaintext_length}")
    return data


class Compressed(NamedTuple):
    """One payload for decompress_many, with its compression ID and its header's plaintext length."""

    compression_id: int
    payload: bytes | memoryview
    plaintext_length: int


def decompress_many(payloads: Sequence[Compressed], dictionaries: DictionarySource | None = None) -> list[bytes]:
    """decompress() of each payload, in order, with the same checks; a payload that fails raises
    decompress()'s error for it (not always the first failing one's).

    The zstd frames of one decompressor (no dictionary, or one dictionary) are decoded with one
    call (multi_decompress_to_buffer) per batch_slices batch, which gives up the interpreter lock
    once for all of them, not once a frame: a restore of the 10 Django sdists took 1.27-1.54 s
    against 1.52-1.78 s decoding record by record (python -m benchmarks.restore_cpu, alternating;
    docs/performance.md). Each frame is decoded
    into the plaintext length its header gives, and refused unless it fills exactly that, so no
    frame makes it allocate more. A group that fails is decoded again frame by frame, so the
    error is decompress()'s own."""
    plaintexts: list[bytes | None] = [None] * len(payloads)
    groups: dict[bytes | None, list[int]] = {}
    for position, (compression_id, payload, plaintext_length) in enumerate(payloads):
        if compression_id == ZSTD_ID and plaintext_length:
            groups.setdefault(None, []).append(position)
        elif (
            compression_id == ZSTD_DICT_ID
            and plaintext_length
            and dictionaries is not None
            and len(payload) > DICTIONARY_ID_SIZE
        ):
            groups.setdefault(bytes(payload[:DICTIONARY_ID_SIZE]), []).append(position)
        else:
            plaintexts[position] = decompress(compression_id, payload, plaintext_length, dictionaries)
    for dictionary_id, positions in groups.items():
        if dictionary_id is None:
            decompressor, skip = _plain_decompressor(), 0
        else:
            assert dictionaries is not None  # grouped only with a source
            decompressor = _dictionary_decompressor(dictionary_id, dictionaries(dictionary_id))
            skip = DICTIONARY_ID_SIZE
        lengths = [payloads[position].plaintext_length for position in positions]
        for part in batch_slices(lengths):
            batch = positions[part]
            frames: list[bytes | bytearray | memoryview] = [payloads[position].payload[skip:] for position in batch]
            sizes = array("Q", lengths[part])
            try:
                decoded = decompressor.multi_decompress_to_buffer(frames, decompressed_sizes=sizes.tobytes())
            except (zstandard.ZstdError, ValueError, NotImplementedError):  # the last: the cffi backend
                for position in batch:
                    plaintexts[position] = decompress(*payloads[position], dictionaries)
                continue
            for index, position in enumerate(batch):
                plaintexts[position] = decoded[index].tobytes()
    return plaintexts  # type: ignore[return-value]  # every position is filled above


# The frames decoded by one call share one buffer, out of which each plaintext is then copied. One
# call for all the records of a read (a whole pack read decodes to tens of MB) made that buffer
# fresh memory every time, faulted in by the kernel: restores of the 10 Django sdists took
# 0.61-1.89 s of system time and 158-162 MiB, against 0.41-0.56 s and 146-148 MiB with batches of
# 256 KiB (~30 chunks of 8 KiB a call). Batches of 1 MiB still took 0.84-1.69 s of system time,
# batches of 32 or 64 KiB cost more calls (1.95-2.04 s of user time at 32 KiB, against 1.46-1.54)
# and saved no memory.
DECODE_BATCH_BYTES = 256 << 10


def batch_slices(lengths: Sequence[int], limit: int = DECODE_BATCH_BYTES) -> Iterator[slice]:
    """Slices that cut lengths, in order, into runs of at most limit in all (a larger one alone)."""
    start = 0
    total = 0
    for index, length in enumerate(lengths):
        if index > start and total + length > limit:
            yield slice(start, index)
            start, total = index, 0
        total += length
    if start < len(lengths):
        yield slice(start, len(lengths))


# Per thread (a ZstdDecompressor is not thread-safe), the decompressors of the dictionaries the
# thread has used: a store has one dictionary, or a few after racing first puts.
_DICTIONARY_DECOMPRESSORS = 4


def _plain_decompressor() -> zstandard.ZstdDecompressor:
    decompressor = getattr(_decompressors, "zstd", None)
    if decompressor is None:
        decompressor = _decompressors.zstd = zstandard.ZstdDecompressor()
    return decompressor


def _dictionary_decompressor(dictionary_id: bytes, data: bytes) -> zstandard.ZstdDecompressor:
    """The thread's decompressor for the dictionary data, which the store's source gave for
    dictionary_id (so each store loads and checks its own); one made for the same bytes object
    serves again."""
    cache: dict[bytes, tuple[bytes, zstandard.ZstdDecompressor]] | None = getattr(_decompressors, "by_id", None)
    if cache is None:
        cache = _decompressors.by_id = {}
    held = cache.get(dictionary_id)
    if held is not None and held[0] is data:
        return held[1]
    if len(cache) >= _DICTIONARY_DECOMPRESSORS:
        cache.clear()
    decompressor = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(data))
    cache[dictionary_id] = (data, decompressor)
    return decompressor


def _zstd_decompress(
    decompressor: zstandard.ZstdDecompressor, payload: bytes | memoryview, plaintext_length: int
) -> bytes:
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
    try:
        return decompressor.decompress(payload, max_output_size=max(plaintext_length, 1))
    except zstandard.ZstdError as error:
        raise CorruptObjectError(f"zstd payload does not decompress: {error}") from None
