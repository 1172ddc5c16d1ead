"""What a store holds, read and changed behind chunkstore's back: the objects, config and
catalog of a store in a folder (LocalObjects), of an s3:// store on the moto server of
tests/support/moto_fixtures.py (S3Objects: objects under a prefix of a bucket, catalog in a table)
or of a memory:// store of this process (MemoryObjects).

Objects are named by their key relative to the store's folder or prefix. Tests damage a
store through these, and list every byte a reader of the storage would see.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path, PurePosixPath

from chunkstore.backends.memory import MemoryBackend, discard_memory_store
from chunkstore.backends.registry import LOCAL_CATALOG_FILE

# Where a store keeps its config and its chunk objects, relative to the store's folder or prefix.
CONFIG_KEY = PurePosixPath("config")
CHUNKS = PurePosixPath("chunks")

# Bytes that are no recipe page.
GARBLED_PAGE = b"garbage"


class LocalObjects:
    """The objects of a store in a folder: files below it, named by their path relative to it."""

    # The catalog's files (the SQLite database and its write-ahead log): patterns of keys of everything().
    catalog_keys = (re.escape(LOCAL_CATALOG_FILE), re.escape(f"{LOCAL_CATALOG_FILE}-wal"))

    def __init__(self, root: Path):
        self.root = root
        self.url = str(root)

    def init_options(self) -> tuple[str, ...]:
        """What `init` needs besides the store URL to create this store."""
        return ()

    def init_arguments(self) -> dict:
        """What Store.init needs besides the URL to create this store."""
        return {}

    def keys(self, below: PurePosixPath = CHUNKS) -> set[PurePosixPath]:
        return {
            PurePosixPath(path.relative_to(self.root).as_posix())
            for path in (self.root / below).rglob("*")
            if path.is_file()
        }

    def read(self, key: PurePosixPath) -> bytes:
        return (self.root / key).read_bytes()

    def write(self, key: PurePosixPath, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def delete(self, key: PurePosixPath) -> None:
        (self.root / key).unlink()

    def exists(self, key: PurePosixPath) -> bool:
        return (self.root / key).is_file()

    def untouched(self) -> bool:
        """Nothing was ever created where the store goes."""
        return not self.root.exists()

    def everything(self) -> dict[str, bytes]:
        """Every file under the store's folder (objects, config, the SQLite catalog, its WAL
        and shared-memory file), by its path relative to the folder."""
        return {
            path.relative_to(self.root).as_posix(): path.read_bytes()
            for path in sorted(self.root.rglob("*"))
            if path.is_file()
        }

    def _catalog(self, statement: str, parameters: tuple) -> None:
        with closing(sqlite3.connect(self.root / LOCAL_CATALOG_FILE)) as db, db:
            assert db.execute(statement, parameters).rowcount == 1, statement

    def set_chunk_count(self, chunk_id: bytes, count: int) -> None:
        """Overwrite the reference count the catalog records for a chunk."""
        self._catalog("UPDATE chunks SET refcount = ? WHERE id = ?", (count, chunk_id))

    def garble_recipe(self, digest: bytes) -> None:
        """Replace the first page of a content's recipe by bytes that are no page."""
        self._catalog("UPDATE recipe_pages SET data = ? WHERE digest = ? AND page = 0", (GARBLED_PAGE, digest))

    def garble_page(self, page_id: bytes) -> None:
        """Replace the body of a format 2 recipe page item by bytes that are no page."""
        self._catalog("UPDATE pages SET body = ? WHERE id = ?", (GARBLED_PAGE, page_id))


def _attribute_bytes(value: dict) -> bytes:
    """A DynamoDB attribute value as the bytes a reader of the table gets: strings as UTF-8,
    binaries as they are, numbers as their digits, sets, lists and maps element by element."""
    ((kind, inner),) = value.items()
    if kind == "S" or kind == "N":
        return inner.encode()
    if kind == "B":
        return bytes(inner)
    if kind in ("SS", "NS"):
        return b"\0".join(element.encode() for element in inner)
    if kind == "BS":
        return b"\0".join(bytes(element) for element in inner)
    if kind == "L":
        return b"\0".join(_attribute_bytes(element) for element in inner)
    if kind == "M":
        return b"\0".join(name.encode() + b"\0" + _attribute_bytes(element) for name, element in inner.items())
    return repr(inner).encode()  # BOOL, NULL


class S3Objects:
    """The objects of an s3:// store, read and written with boto3 on the moto server: keys
    below PREFIX in BUCKET, named relative to PREFIX. The store's catalog goes in TABLE."""

    # Items of every kind the catalog keeps, as patterns of keys of everything(): the
    # table's meta item, a version, a content, its first recipe page and a chunk.
    catalog_keys = (
        "dynamodb/meta/meta",
        r"dynamodb/n#[0-9a-f]{2}/.+",
        r"dynamodb/d#[0-9a-f]{64}/d",
        r"dynamodb/d#[0-9a-f]{64}/r00000000",
        r"dynamodb/c#[0-9a-f]{64}/c",
    )

    def __init__(self, clients, bucket: str, prefix: str, table: str):
        self.clients = clients
        self.bucket = bucket
        self.prefix = prefix
        self.table = table
        self.url = f"s3://{bucket}/{prefix}"

    @classmethod
    def new(cls, clients) -> S3Objects:
        """A store in a new, empty bucket, with a table name nothing uses yet."""
        suffix = uuid.uuid4().hex[:12]
        bucket = f"chunkstore-cli-{suffix}"
        clients.s3.create_bucket(Bucket=bucket)
        return cls(clients, bucket, "store", f"chunkstore-cli-{suffix}")

    def init_options(self) -> tuple[str, ...]:
        return ("--table", self.table, "--create")

    def init_arguments(self) -> dict:
        return {"table": self.table, "create": True}

    def _key(self, key: PurePosixPath) -> str:
        return f"{self.prefix}/{key}"

    def keys(self, below: PurePosixPath = CHUNKS) -> set[PurePosixPath]:
        pages = self.clients.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self._key(below)}/"
        )
        return {
            PurePosixPath(entry["Key"]).relative_to(self.prefix) for page in pages for entry in page.get("Contents", ())
        }

    def read(self, key: PurePosixPath) -> bytes:
        return self.clients.s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def write(self, key: PurePosixPath, data: bytes) -> None:
        self.clients.s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def delete(self, key: PurePosixPath) -> None:
        self.clients.s3.delete_object(Bucket=self.bucket, Key=self._key(key))

    def exists(self, key: PurePosixPath) -> bool:
        listing = self.clients.s3.list_objects_v2(Bucket=self.bucket, Prefix=self._key(key))
        return any(entry["Key"] == self._key(key) for entry in listing.get("Contents", ()))

    def untouched(self) -> bool:
        """Nothing under the prefix, and no table."""
        if self.clients.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/").get("KeyCount"):
            return False
        try:
            self.clients.dynamodb.describe_table(TableName=self.table)
        except self.clients.dynamodb.exceptions.ResourceNotFoundException:
            return True
        return False

    def everything(self) -> dict[str, bytes]:
        """Every object in the bucket, by its key relative to the prefix (the bucket holds this
        store alone), and every item of the table, as `dynamodb/PK/SK`: all its attributes,
        names and values, as a reader of the table gets them."""
        stored = {}
        for page in self.clients.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for entry in page.get("Contents", ()):
                key = entry["Key"]
                name = key[len(self.prefix) + 1 :] if key.startswith(f"{self.prefix}/") else key
                stored[name] = self.clients.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        for page in self.clients.dynamodb.get_paginator("scan").paginate(TableName=self.table, ConsistentRead=True):
            for item in page["Items"]:
                name = f"dynamodb/{item['pk']['S']}/{item['sk']['S']}"
                stored[name] = b"\0".join(
                    attribute.encode() + b"\0" + _attribute_bytes(value) for attribute, value in sorted(item.items())
                )
        return stored

    def _update_item(self, pk: str, sk: str, expression: str, values: dict, **names) -> None:
        self.clients.dynamodb.update_item(
            TableName=self.table,
            Key={"pk": {"S": pk}, "sk": {"S": sk}},
            UpdateExpression=expression,
            ExpressionAttributeValues=values,
            ExpressionAttributeNames={"#pk": "pk", **names},
            ConditionExpression="attribute_exists(#pk)",
        )

    def set_chunk_count(self, chunk_id: bytes, count: int) -> None:
        """Overwrite the reference count (`rc`) on the chunk's item."""
        self._update_item(f"c#{chunk_id.hex()}", "c", "SET rc = :count", {":count": {"N": str(count)}})

    def garble_recipe(self, digest: bytes) -> None:
        """Replace the first page of a content's recipe by bytes that are no page."""
        self._update_item(
            f"d#{digest.hex()}",
            "r00000000",
            "SET #data = :garbage",
            {":garbage": {"B": GARBLED_PAGE}},
            **{"#data": "data"},
        )

    def garble_page(self, page_id: bytes) -> None:
        """Replace the body (`data`) of a format 2 recipe page item by bytes that are no page."""
        self._update_item(
            f"g#{page_id.hex()}", "g", "SET #data = :garbage", {":garbage": {"B": GARBLED_PAGE}}, **{"#data": "data"}
        )


def _field_bytes(value) -> bytes:
    """A catalog field as the bytes a reader of the process's memory finds: strings as UTF-8,
    binaries as they are, numbers as their digits, tuples element by element."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    if isinstance(value, tuple):
        return b"\0".join(map(_field_bytes, value))
    return str(int(value)).encode()


class MemoryObjects:
    """The objects and catalog of a memory:// store, reached through the process-wide registry
    of chunkstore.backends.memory. Objects are named by their key."""

    # Entries of every kind the catalog keeps, as patterns of keys of everything(): a version,
    # a content, its first recipe page and a chunk.
    catalog_keys = (
        r"catalog/versions/.+/[0-9]+",
        r"catalog/contents/[0-9a-f]{64}",
        r"catalog/contents/[0-9a-f]{64}/0",
        r"catalog/chunks/[0-9a-f]{64}",
    )

    def __init__(self, name: str):
        self.name = name
        self.url = f"memory://{name}"
        self._location = MemoryBackend(name, None).location

    @classmethod
    def new(cls) -> MemoryObjects:
        """A store under a name nothing uses yet."""
        return cls(f"test-{uuid.uuid4().hex[:12]}")

    def discard(self) -> None:
        """Free the store (tests make many; nothing else frees them before the process ends)."""
        discard_memory_store(self.name)

    def init_options(self) -> tuple[str, ...]:
        return ()

    def init_arguments(self) -> dict:
        return {}

    @property
    def _objects(self) -> dict[str, bytes]:
        return self._location.blobs.objects

    def keys(self, below: PurePosixPath = CHUNKS) -> set[PurePosixPath]:
        with self._location.blobs.lock:
            return {PurePosixPath(key) for key in self._objects if key.startswith(f"{below}/")}

    def read(self, key: PurePosixPath) -> bytes:
        return self._objects[str(key)]

    def write(self, key: PurePosixPath, data: bytes) -> None:
        with self._location.blobs.lock:
            self._objects[str(key)] = bytes(data)

    def delete(self, key: PurePosixPath) -> None:
        with self._location.blobs.lock:
            del self._objects[str(key)]

    def exists(self, key: PurePosixPath) -> bool:
        return str(key) in self._objects

    def untouched(self) -> bool:
        """No object and no catalog."""
        return not self._objects and self._location.catalog is None

    def everything(self) -> dict[str, bytes]:
        """Every object by its key, and every entry of the catalog as `catalog/KIND/ID`: its
        fields, as a reader of the process's memory finds them."""
        with self._location.blobs.lock:
            stored = dict(sorted(self._objects.items()))
        state = self._location.catalog
        if state is None:
            return stored
        with state.changed:
            for versions in state.versions.values():
                for record in versions.values():
                    stored[f"catalog/versions/{record.name}/{record.version}"] = _field_bytes(
                        (
                            record.name,
                            record.digest,
                            *dataclasses.astuple(record.stat),
                            record.stored_at_ns,
                            record.deleted,
                        )
                    )
            for digest, content in state.contents.items():
                stored[f"catalog/contents/{digest.hex()}"] = _field_bytes(
                    (digest, content.size, content.chunk_count, content.refcount)
                )
                for number, page in enumerate(content.pages):
                    stored[f"catalog/contents/{digest.hex()}/{number}"] = page
            for chunk_id, row in state.chunks.items():
                stored[f"catalog/chunks/{chunk_id.hex()}"] = _field_bytes(
                    (chunk_id, row.size, row.stored_size, row.refcount, row.state)
                )
            for snapshot in state.snapshots.values():
                stored[f"catalog/snapshots/{snapshot.snapshot_id}"] = _field_bytes(
                    (snapshot.snapshot_id, snapshot.at_ns, snapshot.host, snapshot.paths, snapshot.program)
                )
        return stored

    def set_chunk_count(self, chunk_id: bytes, count: int) -> None:
        """Overwrite the reference count the catalog records for a chunk."""
        with self._location.catalog.changed:
            self._location.catalog.chunks[chunk_id].refcount = count

    def garble_recipe(self, digest: bytes) -> None:
        """Replace the first page of a content's recipe by bytes that are no page."""
        with self._location.catalog.changed:
            self._location.catalog.contents[digest].pages[0] = GARBLED_PAGE
