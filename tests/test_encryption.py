"""Encrypted stores through the library: keys and passphrases, tamper detection, and what
the stored bytes give away about the content (nothing, to anyone without the key).

Every test runs on a local store and on an s3:// store (the backends of `new_backend`,
tests/conftest.py). What differs between them (where a new store lives, how to read and
overwrite an object behind chunkstore's back, how to list every byte an attacker with read
access sees: files, or S3 objects and DynamoDB items) is confined to tests/support/storeobjects.py.
"""

from __future__ import annotations

import base64
import io
import json
import random
import re
import string
from collections import defaultdict
from contextlib import ExitStack, contextmanager

import blake3
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.core import compression, crypto, recipes
from chunkstore.core.chunking import make_chunker
from chunkstore.core.config import CHUNK_KEY_PREFIX, CONFIG_KEY, chunk_key
from chunkstore.core.objectformat import HEADER_SIZE, ObjectHeader, parse_header
from chunkstore.errors import (
    ChunkMismatchError,
    CorruptObjectError,
    InvalidArgumentError,
    NameNotFoundError,
    PassphraseRequiredError,
    StoreNotFoundError,
    UnsupportedFormatError,
    WrongKeyError,
)
from support.storeobjects import LocalObjects, S3Objects

PASSPHRASE = b"correct horse battery staple"
# Small chunks: a few hundred KiB make dozens of chunks, a few MiB hundreds.
AVG_SIZE = 4096

# ---- backends ------------------------------------------------------------------------------


class Backend:
    """Stores on one backend of `new_backend` (tests/conftest.py): each in a folder of its own,
    or in a bucket and a table of its own on the moto server. Their objects are read and
    overwritten, and every byte they hold is listed, through tests/support/storeobjects.py."""

    def __init__(self, new_objects):
        self._new_objects = new_objects
        self._objects: dict[str, LocalObjects | S3Objects] = {}

    def new_location(self, label: str) -> tuple[str, dict]:
        """A URL where no store exists yet, and the extra Store.init arguments it needs."""
        objects = self._new_objects(label)
        self._objects[objects.url] = objects
        return objects.url, objects.init_arguments()

    def read_object(self, url: str, key: str) -> bytes:
        return self._objects[url].read(key)

    def write_object(self, url: str, key: str, data: bytes) -> None:
        self._objects[url].write(key, data)

    def everything_stored(self, url: str) -> dict[str, bytes]:
        """Every byte the store holds, by where it is held: objects, config and catalog (the
        SQLite files, or every item of the DynamoDB table)."""
        return self._objects[url].everything()

    def catalog_parts_missing(self, url: str, stored: dict[str, bytes]) -> list[str]:
        """The parts of the store's catalog (patterns of keys of everything_stored) not in stored."""
        patterns = self._objects[url].catalog_keys
        return [pattern for pattern in patterns if not any(re.fullmatch(pattern, key) for key in stored)]


@pytest.fixture(scope="module")
def backend(new_backend, tmp_path_factory):
    return Backend(lambda label: new_backend(tmp_path_factory.mktemp(label)))


# Argon2id at its default cost takes about 0.4 s per unlock, and these tests unlock stores
# dozens of times. The cost parameters change no code path; the defaults have their own test.
REAL_KDF = crypto.DEFAULT_KDF
FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}


@pytest.fixture(scope="module", autouse=True)
def fast_kdf():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(crypto, "DEFAULT_KDF", FAST_KDF)
        yield


def init_store(backend, label: str, passphrase: bytes | None = PASSPHRASE, chunker: str = "fastcdc2020") -> Store:
    """A storage format 1 store (one object a chunk, which these tests read and edit); format 2's
    encryption is tested with its packs (tests/test_packformat.py, tests/operations)."""
    url, options = backend.new_location(label)
    return Store.init(
        url,
        ChunkerSpec.from_average(chunker, AVG_SIZE),
        CompressionSpec.parse("zstd:3"),
        passphrase=passphrase,
        storage_format=1,
        **options,
    )


class Stores:
    """Makes and opens stores on one backend, and remembers them to close them all."""

    def __init__(self, backend):
        self.backend = backend
        self.opened: list[Store] = []

    def init(self, label: str = "store", **options) -> Store:
        return self._keep(init_store(self.backend, label, **options))

    def open(self, url: str, passphrase: bytes | None = PASSPHRASE) -> Store:
        return self._keep(Store.open(url, passphrase=passphrase))

    def _keep(self, store: Store) -> Store:
        self.opened.append(store)
        return store


@pytest.fixture
def stores(backend):
    """Stores for one test, all closed after it."""
    made = Stores(backend)
    yield made
    for store in made.opened:
        store.close()


# ---- content -------------------------------------------------------------------------------


def text_bytes(rng: random.Random, size: int) -> bytes:
    """Compressible text: lines of words from a vocabulary of random letters."""
    vocabulary = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 11))) for _ in range(400)]
    lines = []
    total = 0
    while total < size:
        line = " ".join(rng.choices(vocabulary, k=rng.randint(4, 14))).capitalize() + ".\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


def mixed_content(seed: int, sections: int, section_size: int) -> bytes:
    """Deterministic content that mixes text, random binary and repeats of earlier sections
    (slightly edited), like a folder of documents packed into one archive."""
    rng = random.Random(seed)
    parts: list[bytes] = []
    for index in range(sections):
        kind = index % 3
        if kind == 0:
            parts.append(text_bytes(rng, section_size))
        elif kind == 1:
            parts.append(rng.randbytes(section_size))
        else:
            earlier = bytearray(rng.choice(parts))
            earlier[rng.randrange(len(earlier))] ^= 0x5A
            parts.append(bytes(earlier))
    return b"".join(parts)


KNOWN = mixed_content(seed=4, sections=24, section_size=128 * 1024)  # 3 MiB


def put_bytes(store: Store, name: str, data: bytes):
    return store.put_stream(io.BytesIO(data), name).results[0]


def read_back(store: Store, name: str) -> bytes:
    output = io.BytesIO()
    store.get(name, output)
    return output.getvalue()


def recipe(store: Store, name: str) -> list[recipes.RecipeEntry]:
    record = store.catalog.get_version(name)
    return [entry for page in store.catalog.recipe_pages(record.digest) for entry in recipes.decode_page(page)]


def object_keys(store: Store) -> set[str]:
    return {info.key for info in store.blobs.list(CHUNK_KEY_PREFIX)}


def cut_offsets(lengths) -> set[int]:
    """The offsets where chunks end, the end of the file excluded."""
    offsets, position = set(), 0
    for length in lengths:
        position += length
        offsets.add(position)
    offsets.discard(position)
    return offsets


# ---- keys and passphrases ------------------------------------------------------------------


@pytest.fixture
def encrypted_url(stores) -> str:
    """The URL of a closed encrypted store holding the file `docs/a`."""
    store = stores.init()
    put_bytes(store, "docs/a", KNOWN[:200_000])
    store.close()
    return store.url


def test_the_right_passphrase_opens_the_store_and_reads_its_files(stores, encrypted_url):
    store = stores.open(encrypted_url)
    assert store.encrypted
    assert read_back(store, "docs/a") == KNOWN[:200_000]


def test_a_wrong_passphrase_raises_wrong_key_error_exit_code_5(encrypted_url):
    with pytest.raises(WrongKeyError) as raised:
        Store.open(encrypted_url, passphrase=b"correct horse battery stapler")
    assert raised.value.exit_code == 5
    assert not isinstance(raised.value, PassphraseRequiredError)
    assert "wrong passphrase" in str(raised.value)


def test_no_passphrase_raises_passphrase_required_error_a_wrong_key_error(encrypted_url):
    with pytest.raises(PassphraseRequiredError) as raised:
        Store.open(encrypted_url)
    assert isinstance(raised.value, WrongKeyError) and raised.value.exit_code == 5
    assert "encrypted" in str(raised.value) and "CHUNKSTORE_PASSPHRASE" in str(raised.value)


def test_any_bytes_can_be_the_secret_as_from_a_key_file(stores):
    key_file_bytes = random.Random(8).randbytes(64) + b"\x00\n\xff"
    store = stores.init(passphrase=key_file_bytes)
    put_bytes(store, "x", b"secret data" * 100)
    store.close()
    assert read_back(stores.open(store.url, key_file_bytes), "x") == b"secret data" * 100
    with pytest.raises(WrongKeyError):
        Store.open(store.url, passphrase=key_file_bytes[:-1])


def test_an_empty_passphrase_is_refused(backend):
    with pytest.raises(InvalidArgumentError):
        init_store(backend, "empty", passphrase=b"")


def test_a_new_store_records_the_default_argon2id_parameters_and_a_fresh_salt(stores, monkeypatch):
    monkeypatch.setattr(crypto, "DEFAULT_KDF", REAL_KDF)
    first, second = stores.init("first"), stores.init("second")
    kdf = first.config.encryption["kdf"]
    assert {key: value for key, value in kdf.items() if key != "salt"} == REAL_KDF
    assert REAL_KDF["name"] == "argon2id" and REAL_KDF["memory_kib"] >= 64 * 1024
    assert len(base64.b64decode(kdf["salt"])) == 16
    assert kdf["salt"] != second.config.encryption["kdf"]["salt"]
    assert first.config.encryption["wrapped_key"] != second.config.encryption["wrapped_key"]


FILES = {"docs/a": KNOWN[:300_000], "docs/b": KNOWN[1_000_000:1_400_000], "empty": b""}


def test_changing_the_passphrase_keeps_every_file_readable_and_retires_the_old_one(stores):
    store = stores.init()
    for name, data in FILES.items():
        put_bytes(store, name, data)
    objects_before = {key: store.blobs.get(key) for key in object_keys(store)}
    store.change_passphrase(PASSPHRASE, b"a new passphrase")
    store.close()

    with pytest.raises(WrongKeyError):
        Store.open(store.url, passphrase=PASSPHRASE)
    reopened = stores.open(store.url, b"a new passphrase")
    assert {name: read_back(reopened, name) for name in FILES} == FILES
    assert reopened.verify(read_data=True).ok
    # Only the wrapped key changed: no object was re-encrypted.
    assert {key: reopened.blobs.get(key) for key in object_keys(reopened)} == objects_before


def test_changing_the_passphrase_needs_the_current_one(stores):
    store = stores.init()
    config_before = store.config
    with pytest.raises(WrongKeyError):
        store.change_passphrase(b"not the passphrase", b"a new passphrase")
    with pytest.raises(InvalidArgumentError):
        store.change_passphrase(PASSPHRASE, b"")
    assert store.config == config_before
    store.close()
    stores.open(store.url, PASSPHRASE)


def test_key_operations_on_an_unencrypted_store_are_refused(stores):
    plain = stores.init(passphrase=None)
    assert not plain.encrypted
    with pytest.raises(InvalidArgumentError):
        plain.change_passphrase(PASSPHRASE, b"new")
    with pytest.raises(InvalidArgumentError):
        plain.export_key()


def unwrap_master_key(backup: dict, passphrase: bytes) -> bytes:
    """The master key from a key backup, computed with `cryptography` alone from the format
    crypto.py writes: Argon2id with the recorded parameters, then AES-256-GCM (12-byte nonce
    first) with the store ID in the associated data."""
    section = backup["encryption"]
    kdf = section["kdf"]
    key_encryption_key = Argon2id(
        salt=base64.b64decode(kdf["salt"]),
        length=32,
        iterations=kdf["iterations"],
        lanes=kdf["lanes"],
        memory_cost=kdf["memory_kib"],
    ).derive(passphrase)
    wrapped = base64.b64decode(section["wrapped_key"])
    return AESGCM(key_encryption_key).decrypt(
        wrapped[:12], wrapped[12:], b"chunkstore master key\x00" + backup["store_id"].encode()
    )


def encodings(secret: bytes) -> list[bytes]:
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]


def test_the_key_is_only_ever_stored_or_exported_wrapped(backend, stores):
    store = stores.init()
    one_chunk = KNOWN[:600]  # below the minimum chunk size: one chunk
    put_bytes(store, "small", one_chunk)
    exported = store.export_key()
    backup = json.loads(exported)
    assert backup["store_id"] == store.config.store_id
    assert backup["encryption"] == store.config.encryption

    master = unwrap_master_key(backup, PASSPHRASE)
    keys = crypto.Keys.from_master(master)
    # The unwrapped key is the store's: it names the stored chunk.
    [entry] = recipe(store, "small")
    assert entry.chunk_id == blake3.blake3(one_chunk, key=keys.chunk_id).digest()
    stored = haystack_of(backend.everything_stored(store.url))
    secrets = (master, keys.chunk_id, keys.file_digest, keys.chunker_seed.to_bytes(8, "big"))
    for encoded in [str(keys.chunker_seed).encode(), *(encoded for secret in secrets for encoded in encodings(secret))]:
        assert encoded not in exported and encoded not in stored
    with pytest.raises(InvalidTag):
        unwrap_master_key(backup, b"not the passphrase")


# ---- store configs that must be refused ----------------------------------------------------


def edit_config(backend, url: str, change) -> None:
    document = json.loads(backend.read_object(url, CONFIG_KEY))
    change(document)
    backend.write_object(url, CONFIG_KEY, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())


@pytest.mark.parametrize("field", ["scheme", "cipher"])
def test_an_unknown_encryption_scheme_or_cipher_is_refused(backend, encrypted_url, field):
    edit_config(backend, encrypted_url, lambda document: document["encryption"].update({field: "rot13-v2"}))
    with pytest.raises(UnsupportedFormatError) as raised:
        Store.open(encrypted_url, passphrase=PASSPHRASE)
    assert "rot13-v2" in str(raised.value)


def test_an_unknown_key_derivation_is_refused(backend, encrypted_url):
    edit_config(backend, encrypted_url, lambda document: document["encryption"]["kdf"].update(name="md5"))
    with pytest.raises(UnsupportedFormatError, match="md5"):
        Store.open(encrypted_url, passphrase=PASSPHRASE)


def test_a_damaged_wrapped_key_is_an_integrity_error(backend, encrypted_url):
    edit_config(backend, encrypted_url, lambda document: document["encryption"].update(wrapped_key="not base64!"))
    with pytest.raises(CorruptObjectError):
        Store.open(encrypted_url, passphrase=PASSPHRASE)


def test_a_key_section_copied_from_another_store_does_not_unlock_it(backend, stores, encrypted_url):
    other = stores.init("other")
    other_section = other.config.encryption
    edit_config(backend, encrypted_url, lambda document: document.update(encryption=other_section))
    with pytest.raises(WrongKeyError):
        Store.open(encrypted_url, passphrase=PASSPHRASE)


def test_encryption_with_an_unkeyed_chunker_is_refused_and_leaves_no_store(backend):
    url, options = backend.new_location("ronomon")
    with pytest.raises(InvalidArgumentError, match="fastcdc-ronomon"):
        Store.init(
            url,
            ChunkerSpec.from_average("fastcdc-ronomon", AVG_SIZE),
            CompressionSpec.parse("zstd:3"),
            passphrase=PASSPHRASE,
            **options,
        )
    with pytest.raises(StoreNotFoundError):
        Store.open(url, passphrase=PASSPHRASE)
    # The refused init left nothing in the way of a good one.
    with Store.init(
        url,
        ChunkerSpec.from_average("fastcdc2020", AVG_SIZE),
        CompressionSpec.parse("zstd:3"),
        passphrase=PASSPHRASE,
        **options,
    ) as store:
        assert store.encrypted


def test_the_fixed_chunker_can_be_encrypted(stores):
    store = stores.init(chunker="fixed")
    put_bytes(store, "f", KNOWN[:50_000])
    assert read_back(store, "f") == KNOWN[:50_000]
    assert store.verify(read_data=True).ok


# ---- tampering -----------------------------------------------------------------------------

TAMPER_FILES = {
    "docs/victim": random.Random(11).randbytes(120_000),
    "docs/bystander": text_bytes(random.Random(12), 120_000),
    # Two files of one chunk each, of the same size: their objects are the same size too,
    # so swapping them is invisible to a size check.
    "small/one": random.Random(13).randbytes(900),
    "small/two": random.Random(14).randbytes(900),
}


@pytest.fixture(scope="module")
def tamper_store(backend):
    """An encrypted store of TAMPER_FILES that tests damage and then put back as it was."""
    store = init_store(backend, "tamper")
    for name, data in TAMPER_FILES.items():
        put_bytes(store, name, data)
    yield store
    store.close()


@pytest.fixture
def tamper(tamper_store):
    """The tamper store, checked intact before and after the test."""
    assert tamper_store.verify(read_data=True).ok
    yield tamper_store
    assert tamper_store.verify(read_data=True).ok


def only_chunk_keys(store: Store, name: str) -> list[str]:
    """The keys of the objects that hold chunks of name and of no other stored file."""
    others = {entry.chunk_id for other in TAMPER_FILES if other != name for entry in recipe(store, other)}
    return sorted({chunk_key(entry.chunk_id) for entry in recipe(store, name) if entry.chunk_id not in others})


@contextmanager
def object_replaced(backend, url: str, key: str, data: bytes):
    """The object at key holds data for the duration, then its original bytes again."""
    original = backend.read_object(url, key)
    backend.write_object(url, key, data)
    try:
        yield
    finally:
        backend.write_object(url, key, original)


def flipped(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01  # one bit: most header fields stay valid, so the AEAD rather than the parser must catch it
    return bytes(changed)


NONCE_END = HEADER_SIZE + crypto.NONCE_SIZE
# Where in an encrypted object (layout in objectformat.py and crypto.py) a flipped byte
# lands, as a function of the object's size.
BYTE_POSITIONS = {
    "header: magic": lambda size: 0,
    "header: format version": lambda size: 4,
    "header: compression ID": lambda size: 5,
    "header: cipher ID": lambda size: 6,
    "header: flags": lambda size: 7,
    "header: plaintext length": lambda size: HEADER_SIZE - 1,
    "nonce: first byte": lambda size: HEADER_SIZE,
    "nonce: last byte": lambda size: NONCE_END - 1,
    "ciphertext: first byte": lambda size: NONCE_END,
    "ciphertext: middle": lambda size: (NONCE_END + size - crypto.TAG_SIZE) // 2,
    "ciphertext: last byte": lambda size: size - crypto.TAG_SIZE - 1,
    "tag: first byte": lambda size: size - crypto.TAG_SIZE,
    "tag: last byte": lambda size: size - 1,
}


def assert_get_fails_naming(store: Store, name: str) -> None:
    """get of name (whose content is TAMPER_FILES[name]) raises CorruptObjectError, exit code 4,
    naming the file: the object fails to parse or to decrypt, before its plaintext is even hashed."""
    output = io.BytesIO()
    with pytest.raises(CorruptObjectError) as raised:
        store.get(name, output)
    assert raised.value.exit_code == 4
    assert name in str(raised.value)
    # What was written before the failure is a correct start of the file, never wrong bytes.
    assert TAMPER_FILES[name].startswith(output.getvalue()) and len(output.getvalue()) < len(TAMPER_FILES[name])


@pytest.mark.parametrize("position", list(BYTE_POSITIONS))
def test_one_flipped_byte_anywhere_in_an_object_fails_get_and_verify_naming_the_file(backend, tamper, position):
    victim = only_chunk_keys(tamper, "docs/victim")[0]
    original = backend.read_object(tamper.url, victim)
    index = BYTE_POSITIONS[position](len(original))
    assert len(original) > HEADER_SIZE + crypto.NONCE_SIZE + crypto.TAG_SIZE
    with object_replaced(backend, tamper.url, victim, flipped(original, index)):
        assert_get_fails_naming(tamper, "docs/victim")
        report = tamper.verify(read_data=True)
        assert report.damaged_names == ["docs/victim@1"]
        [problem] = report.problems
        assert problem.kind == "corrupt-object" and victim.rsplit("/", 1)[1] in problem.message
        assert read_back(tamper, "docs/bystander") == TAMPER_FILES["docs/bystander"]


def test_the_header_and_the_chunk_id_are_authenticated(tamper):
    """A header changed to other valid values, or an object presented under another chunk's ID,
    fails authentication: nothing of it is decompressed or trusted."""
    [entry] = recipe(tamper, "small/one")
    [other] = recipe(tamper, "small/two")
    blob = tamper.codec.encode(entry.chunk_id, TAMPER_FILES["small/one"])
    header = parse_header(blob, tamper.config.chunker.max_size)
    for compression_id in (compression.NONE_ID, compression.ZSTD_ID):
        forged = ObjectHeader(compression_id, header.cipher_id, header.plaintext_length - 1).pack()
        with pytest.raises(CorruptObjectError, match="authentication failed"):
            tamper.codec.decode(entry.chunk_id, forged + blob[HEADER_SIZE:])
    with pytest.raises(CorruptObjectError, match="authentication failed"):
        tamper.codec.decode(other.chunk_id, blob)
    assert tamper.codec.decode(entry.chunk_id, blob) == TAMPER_FILES["small/one"]


def test_swapped_objects_of_the_same_size_fail_get_and_verify(backend, tamper):
    [one] = only_chunk_keys(tamper, "small/one")
    [two] = only_chunk_keys(tamper, "small/two")
    one_bytes, two_bytes = backend.read_object(tamper.url, one), backend.read_object(tamper.url, two)
    assert len(one_bytes) == len(two_bytes)
    with object_replaced(backend, tamper.url, one, two_bytes), object_replaced(backend, tamper.url, two, one_bytes):
        assert_get_fails_naming(tamper, "small/one")
        assert_get_fails_naming(tamper, "small/two")
        report = tamper.verify(read_data=True)
        assert report.damaged_names == ["small/one@1", "small/two@1"]
        assert {problem.kind for problem in report.problems} == {"corrupt-object"}


def test_objects_swapped_between_files_fail_get_and_verify(backend, tamper):
    victim = only_chunk_keys(tamper, "docs/victim")[0]
    bystander = only_chunk_keys(tamper, "docs/bystander")[0]
    victim_bytes, bystander_bytes = backend.read_object(tamper.url, victim), backend.read_object(tamper.url, bystander)
    with ExitStack() as stack:
        stack.enter_context(object_replaced(backend, tamper.url, victim, bystander_bytes))
        stack.enter_context(object_replaced(backend, tamper.url, bystander, victim_bytes))
        assert_get_fails_naming(tamper, "docs/victim")
        assert_get_fails_naming(tamper, "docs/bystander")
        assert tamper.verify(read_data=True).damaged_names == ["docs/bystander@1", "docs/victim@1"]


def test_an_object_from_an_unencrypted_store_is_refused_by_an_encrypted_one(backend, stores, tamper):
    """An attacker who can write the bucket, but has no key, writes the unencrypted object the
    chunk's plaintext would have (valid header, right length, right compression)."""
    plain = stores.init("plain", passphrase=None)
    [key] = only_chunk_keys(tamper, "small/one")
    [entry] = recipe(tamper, "small/one")
    forged = plain.codec.encode(entry.chunk_id, TAMPER_FILES["small/one"])
    with object_replaced(backend, tamper.url, key, forged):
        assert_get_fails_naming(tamper, "small/one")
        assert tamper.verify(read_data=True).damaged_names == ["small/one@1"]


def test_an_object_from_an_encrypted_store_is_refused_by_an_unencrypted_one(backend, stores, tamper):
    plain = stores.init("plain", passphrase=None)
    data = TAMPER_FILES["small/one"]
    put_bytes(plain, "small/one", data)
    [entry] = recipe(plain, "small/one")
    encrypted_object = tamper.codec.encode(entry.chunk_id, data)
    with object_replaced(backend, plain.url, chunk_key(entry.chunk_id), encrypted_object):
        assert_get_fails_naming(plain, "small/one")
        assert plain.verify(read_data=True).damaged_names == ["small/one@1"]


def test_a_chunk_that_does_not_survive_encoding_is_never_stored(stores, monkeypatch):
    """Verify-after-write: an object whose decryption does not give back the chunk (here an
    encoder that alters one byte of the plaintext) fails the put before it counts as stored."""
    store = stores.init()
    honest_encode = store.codec.encode
    monkeypatch.setattr(
        store.codec,
        "encode",
        lambda chunk_id, plaintext: honest_encode(chunk_id, flipped(plaintext, len(plaintext) // 2)),
    )
    with pytest.raises(ChunkMismatchError):
        put_bytes(store, "never", KNOWN[:100_000])
    with pytest.raises(NameNotFoundError):
        store.catalog.get_version("never")
    assert object_keys(store) == set()


# ---- what the store reveals ----------------------------------------------------------------


def test_the_same_input_in_two_encrypted_stores_gets_disjoint_ids_and_different_boundaries(stores):
    """Same passphrase, same settings: each store has its own random key, so nobody can tell
    from IDs or chunk sizes that two stores (or a store and a known file) share content."""
    first, second = stores.init("first"), stores.init("second")
    for store in (first, second):
        put_bytes(store, "same", KNOWN)
        put_bytes(store, "one chunk", KNOWN[:600])  # below the minimum size: the same chunk in both
    assert recipe(first, "one chunk") != recipe(second, "one chunk")
    first_recipe, second_recipe = recipe(first, "same"), recipe(second, "same")
    assert {entry.chunk_id for entry in first_recipe}.isdisjoint(entry.chunk_id for entry in second_recipe)
    assert object_keys(first).isdisjoint(object_keys(second))
    assert first.catalog.get_version("same").digest != second.catalog.get_version("same").digest

    first_lengths = [entry.length for entry in first_recipe]
    second_lengths = [entry.length for entry in second_recipe]
    assert first_lengths != second_lengths
    # Not a shifted copy either: the cut points are keyed, so most differ (shared ones are chance).
    first_cuts, second_cuts = cut_offsets(first_lengths), cut_offsets(second_lengths)
    assert len(first_cuts & second_cuts) < min(len(first_cuts), len(second_cuts)) / 10
    unkeyed_cuts = cut_offsets(len(chunk) for chunk in make_chunker(first.config.chunker)(io.BytesIO(KNOWN)))
    assert len(first_cuts & unkeyed_cuts) < len(unkeyed_cuts) / 10


WINDOW = 16


def first_shared_window(needle: bytes, haystack: bytes, window: int = WINDOW) -> int | None:
    """The offset in needle of a window-byte substring that also occurs in haystack, or None.

    A common substring of `window` bytes covers a whole block of haystack's window // 2-byte
    blocks at multiples of window // 2, so indexing those blocks and looking up every
    block-sized substring of needle finds every candidate; each is checked at full length."""
    block = window // 2
    starts: dict[bytes, list[int]] = defaultdict(list)
    for offset in range(0, len(haystack) - block + 1, block):
        starts[haystack[offset : offset + block]].append(offset)
    for position in range(len(needle) - block + 1):
        for start in starts.get(needle[position : position + block], ()):
            # The common substring starts up to block - 1 bytes before the block.
            for back in range(block):
                if (
                    min(position, start) >= back
                    and needle[position - back : position - back + window]
                    == haystack[start - back : start - back + window]
                ):
                    return position - back
    return None


def haystack_of(stored: dict[str, bytes]) -> bytes:
    """All stored bytes and the keys they are stored under (an object's key is visible too)."""
    return b"\0".join(key.encode() + b"\0" + data for key, data in stored.items())


def unkeyed_fingerprints(store: Store, name: str, content: bytes) -> bytes:
    """What anyone holding content can compute without the key, raw and in hex: its BLAKE3
    digest, the BLAKE3 IDs of the chunks an unkeyed chunker with the store's settings cuts,
    and those of the chunks cut where the store cut them (chunk lengths are not secret)."""
    unkeyed_chunks = list(make_chunker(store.config.chunker)(io.BytesIO(content)))
    store_chunks, position = [], 0
    for entry in recipe(store, name):
        store_chunks.append(content[position : position + entry.length])
        position += entry.length
    digests = [blake3.blake3(chunk).digest() for chunk in [content, *unkeyed_chunks, *store_chunks]]
    return b"\n".join(encoded for digest in digests for encoded in (digest, digest.hex().encode()))


def stored_with_content(backend, passphrase: bytes | None) -> tuple[Store, dict[str, bytes]]:
    """A store holding KNOWN (and an edited copy of it), and everything it stores, read while it is open."""
    store = init_store(backend, "exposed", passphrase=passphrase)
    put_bytes(store, "backup/known.bin", KNOWN)
    put_bytes(store, "backup/known-edited.bin", KNOWN[:1_000_000] + b"an edit" + KNOWN[1_000_000:])
    return store, backend.everything_stored(store.url)


@pytest.fixture(scope="module")
def encrypted_exposure(backend):
    store, stored = stored_with_content(backend, PASSPHRASE)
    yield store, stored
    store.close()


def test_the_scan_covers_objects_config_and_catalog(backend, encrypted_exposure):
    store, stored = encrypted_exposure
    assert CONFIG_KEY in stored
    assert object_keys(store) <= stored.keys()
    assert backend.catalog_parts_missing(store.url, stored) == []


def test_no_16_byte_substring_of_the_content_is_stored_anywhere(encrypted_exposure):
    _, stored = encrypted_exposure
    offset = first_shared_window(KNOWN, haystack_of(stored))
    assert offset is None, f"bytes {offset}..{offset + WINDOW} of the content are stored in the clear"


def test_neither_the_unkeyed_file_digest_nor_unkeyed_chunk_ids_are_stored(encrypted_exposure):
    store, stored = encrypted_exposure
    assert first_shared_window(unkeyed_fingerprints(store, "backup/known.bin", KNOWN), haystack_of(stored)) is None


def test_the_same_scans_find_the_content_and_its_fingerprints_in_an_unencrypted_store(backend):
    """The scans above can fail: on an unencrypted store of the same data they find both."""
    store, stored = stored_with_content(backend, None)
    try:
        haystack = haystack_of(stored)
        assert first_shared_window(KNOWN, haystack) is not None
        assert first_shared_window(unkeyed_fingerprints(store, "backup/known.bin", KNOWN), haystack) is not None
    finally:
        store.close()


# ---- everyday operations on an encrypted store ---------------------------------------------


# Dedup, gc and verify on s3:// are covered by tests/s3; here their s3 runs are the long tier.
@pytest.mark.slow_on_s3
def test_dedup_works_inside_an_encrypted_store(stores):
    store = stores.init()
    data = KNOWN[:1_000_000]
    first = put_bytes(store, "first", data)
    again = put_bytes(store, "again", data)
    assert first.outcome == "stored"
    assert again.outcome == "duplicate" and again.duplicate_of == "first" and again.new_bytes == 0

    edited = data[:500_000] + b"a few inserted bytes" + data[500_000:]
    modified = put_bytes(store, "modified", edited)
    assert modified.outcome == "stored"
    assert 0 < modified.new_bytes < len(edited) / 10
    original_ids = {entry.chunk_id for entry in recipe(store, "first")}
    modified_ids = [entry.chunk_id for entry in recipe(store, "modified")]
    assert sum(chunk_id in original_ids for chunk_id in modified_ids) >= 0.8 * len(modified_ids)
    assert {name: read_back(store, name) for name in ("first", "again", "modified")} == {
        "first": data,
        "again": data,
        "modified": edited,
    }


@pytest.mark.slow_on_s3
def test_gc_and_verify_work_on_an_encrypted_store(stores):
    store = stores.init()
    kept, dropped = KNOWN[:400_000], KNOWN[1_200_000:1_700_000]
    put_bytes(store, "kept", kept)
    put_bytes(store, "dropped", dropped)
    kept_ids = {entry.chunk_id for entry in recipe(store, "kept")}
    dropped_only = {entry.chunk_id for entry in recipe(store, "dropped")} - kept_ids
    assert dropped_only and store.verify(read_data=True).ok

    store.remove(["dropped"])
    assert store.gc(dry_run=True).chunks_deleted == len(dropped_only)
    report = store.gc()
    assert report.chunks_deleted == len(dropped_only) and report.bytes_freed > 0
    assert object_keys(store) == {chunk_key(chunk_id) for chunk_id in kept_ids}
    verified = store.verify(read_data=True)
    distinct_lengths = {entry.chunk_id: entry.length for entry in recipe(store, "kept")}
    assert verified.ok and verified.chunks_read == len(kept_ids)
    assert verified.bytes_read == sum(distinct_lengths.values())
    assert read_back(store, "kept") == kept
