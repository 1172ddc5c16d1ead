"""A store: a config, a blob store for chunk objects and a catalog, opened from one URL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .blobstore import BlobNotFoundError, BlobStore
from .blobstore.local import LocalBlobStore
from .catalog import Catalog
from .catalog.sessions import DEFAULT_LEASE_SECONDS
from .chunking import ChunkerSpec, make_chunker
from .compression import CompressionSpec, Compressor
from .config import CONFIG_KEY, StoreConfig
from .errors import InvalidArgumentError, StoreExistsError, StoreNotFoundError, UnsupportedFormatError
from .hashing import Hasher
from .objectformat import ObjectCodec

LOCAL_CATALOG_FILE = "catalog.sqlite"


@dataclass(frozen=True)
class Location:
    """Where a store lives, parsed from its URL."""

    scheme: str  # "file" (a local folder) or "s3"
    path: str  # the folder, or BUCKET/PREFIX

    @classmethod
    def parse(cls, url: str) -> "Location":
        if not url:
            raise InvalidArgumentError("store URL is empty")
        if url.startswith("s3://"):
            return cls("s3", url[len("s3://"):].strip("/"))
        if url.startswith("file://"):
            url = url[len("file://"):]
        elif "://" in url:
            raise InvalidArgumentError(f"unsupported store URL {url!r} (use a folder path or s3://BUCKET/PREFIX)")
        return cls("file", str(Path(url).expanduser().absolute()))


def _local_blobstore(location: Location) -> BlobStore:
    return LocalBlobStore(location.path)


def _blobstore_for(location: Location) -> BlobStore:
    if location.scheme == "file":
        return _local_blobstore(location)
    raise UnsupportedFormatError(f"{location.scheme}:// stores are not supported by this chunkstore")


class Store:
    """An open store. Use Store.init to create one and Store.open to open one."""

    def __init__(self, url: str, config: StoreConfig, blobs: BlobStore, catalog: Catalog):
        self.url = url
        self.config = config
        self.blobs = blobs
        self.catalog = catalog
        self.hasher = Hasher()
        self.codec = ObjectCodec(Compressor(config.compression), max_chunk_size=config.chunker.max_size)
        self.chunker = make_chunker(config.chunker)

    # ---- lifecycle -------------------------------------------------------------------

    @classmethod
    def init(cls, url: str, chunker: ChunkerSpec, compression: CompressionSpec) -> "Store":
        location = Location.parse(url)
        blobs = _blobstore_for(location)
        if blobs.exists():
            try:
                blobs.stat(CONFIG_KEY)
                raise StoreExistsError(f"a store already exists at {url}")
            except BlobNotFoundError:
                pass
        blobs.create()
        config = StoreConfig(chunker=chunker, compression=compression,
                             catalog={"type": "sqlite", "path": LOCAL_CATALOG_FILE})
        catalog = cls._open_catalog(location, config, create=True)
        # The config is written last: its presence is what makes the folder a store,
        # so an init that dies half-way can simply be run again.
        blobs.put(CONFIG_KEY, config.to_bytes())
        blobs.sync()
        return cls(url, config, blobs, catalog)

    @classmethod
    def open(cls, url: str, *, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> "Store":
        location = Location.parse(url)
        blobs = _blobstore_for(location)
        if not blobs.exists():
            raise StoreNotFoundError(f"no store at {url} (create one with `chunkstore init`)")
        try:
            raw = blobs.get(CONFIG_KEY)
        except BlobNotFoundError:
            raise StoreNotFoundError(f"no store at {url} (create one with `chunkstore init`)") from None
        config = StoreConfig.from_bytes(raw)
        catalog = cls._open_catalog(location, config, create=False, lease_seconds=lease_seconds)
        return cls(url, config, blobs, catalog)

    @staticmethod
    def _open_catalog(location: Location, config: StoreConfig, *, create: bool,
                      lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Catalog:
        kind = config.catalog.get("type")
        if kind == "sqlite" and location.scheme == "file":
            from .catalog.sqlite import SQLiteCatalog

            relative = config.catalog.get("path", LOCAL_CATALOG_FILE)
            if not isinstance(relative, str) or "/" in relative or relative.startswith("."):
                raise UnsupportedFormatError(f"store config names an invalid catalog path {relative!r}")
            return SQLiteCatalog(Path(location.path) / relative, create=create, lease_seconds=lease_seconds)
        raise UnsupportedFormatError(f"store config names an unknown catalog type {kind!r}")

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ---- operations, each in its own module ------------------------------------------

    def put(self, paths, **options):
        from .writer import put_paths

        return put_paths(self, paths, **options)

    def put_stream(self, stream, name: str, **options):
        from .writer import put_stream

        return put_stream(self, stream, name, **options)

    def get(self, name: str, output, *, version: int | None = None, on_progress=None):
        from .reader import get_to_stream

        return get_to_stream(self, name, output, version=version, on_progress=on_progress)

    def get_to_path(self, name: str, path: str | os.PathLike[str], *, version: int | None = None, on_progress=None):
        from .reader import get_to_path

        return get_to_path(self, name, Path(path), version=version, on_progress=on_progress)

    def restore(self, prefix: str, destination: str | os.PathLike[str], **options):
        from .reader import restore

        return restore(self, prefix, Path(destination), **options)

    def list(self, prefix: str = "", *, all_versions: bool = False):
        from .names import normalize_prefix

        return self.catalog.list_versions(normalize_prefix(prefix), all_versions=all_versions)

    def remove(self, names, *, version: int | None = None, recursive: bool = False):
        from .maintenance import remove

        return remove(self, names, version=version, recursive=recursive)

    def gc(self, *, dry_run: bool = False, on_progress=None):
        from .maintenance import gc

        return gc(self, dry_run=dry_run, on_progress=on_progress)

    def verify(self, *, read_data: bool = False, subset_percent: float = 100.0, on_progress=None):
        from .maintenance import verify

        return verify(self, read_data=read_data, subset_percent=subset_percent, on_progress=on_progress)

    def stats(self):
        from .maintenance import stats

        return stats(self)
