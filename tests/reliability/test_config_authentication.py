"""Edits of a store's config: an encrypted store's config is authenticated, so any edit of what
shapes its data is refused; a passphrase given for a store whose config says "not encrypted" is
refused, so nobody can turn encryption off by editing the config. Configs written before
configs were authenticated still open, and gain the code with the next passphrase change."""

from __future__ import annotations

import base64
import io
import json
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.core import crypto
from chunkstore.errors import CorruptObjectError, IntegrityError, WrongKeyError
from support.clihelpers import run_cli

PASSPHRASE = b"correct horse battery staple"
FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}


@pytest.fixture
def encrypted(tmp_path, monkeypatch):
    """An encrypted store in a folder holding data/file; returns its folder."""
    monkeypatch.setattr(crypto, "DEFAULT_KDF", FAST_KDF)
    monkeypatch.setenv("CHUNKSTORE_PASSPHRASE", PASSPHRASE.decode())
    root = tmp_path / "store"
    with Store.init(
        str(root),
        ChunkerSpec.from_average(avg_size=4096),
        CompressionSpec.parse("zstd:3"),
        passphrase=PASSPHRASE,
        storage_format=1,
    ) as store:
        store.put_stream(io.BytesIO(os.urandom(20_000)), "data/file")
    return root


def edit_config(root, edit) -> None:
    document = json.loads((root / "config").read_bytes())
    edit(document)
    (root / "config").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def drop_code(document):
    del document["encryption"]["config_mac"]


EDITS = {
    "chunker average size": lambda document: document["chunker"].update(avg_size=8192),
    "chunker name": lambda document: document["chunker"].update(name="fixed"),
    "compression level": lambda document: document["compression"].update(level=19),
    "compression off": lambda document: document["compression"].update(name="none", level=0),
    "catalog file": lambda document: document["catalog"].update(path="other.sqlite"),
    "keyed chunker off": lambda document: document["encryption"].update(keyed_chunker=False),
    "store ID": lambda document: document.update(store_id="0" * 32),
    "creation time": lambda document: document.update(created_at="2000-01-01T00:00:00+00:00"),
    "code removed": drop_code,
    "code removed, version lowered": lambda document: (drop_code(document), document.update(version=1)),
    "code of another config": lambda document: document["encryption"].update(config_mac="0" * 64),
    "key derivation made cheaper": lambda document: document["encryption"]["kdf"].update(iterations=2),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edit_of_an_encrypted_config_is_refused(encrypted, tmp_path, edit):
    edit_config(encrypted, EDITS[edit])
    with pytest.raises((CorruptObjectError, WrongKeyError)):
        Store.open(str(encrypted), passphrase=PASSPHRASE)
    for command in (["ls"], ["put", "-", "--as", "new"], ["get", "data/file"]):
        completed = run_cli(encrypted, *command, cwd=tmp_path, input=b"new", expect=(4, 5))
        message = completed.stderr.decode()
        assert "altered" in message or "passphrase" in message or "store ID" in message, message


def test_a_passphrase_for_a_config_edited_to_say_not_encrypted_stores_nothing(encrypted, tmp_path):
    edit_config(encrypted, lambda document: document.update(encryption=None, version=1))
    objects_before = sorted(path for path in (encrypted / "chunks").rglob("*"))
    completed = run_cli(
        encrypted,
        "put",
        "-",
        "--as",
        "secret",
        cwd=tmp_path,
        input=b"plain secret " * 100,
        expect=WrongKeyError.exit_code,
    )
    assert "not encrypted" in completed.stderr.decode()
    assert sorted(path for path in (encrypted / "chunks").rglob("*")) == objects_before
    with pytest.raises(WrongKeyError, match="not encrypted"):
        Store.open(str(encrypted), passphrase=PASSPHRASE)


def test_an_unedited_encrypted_config_opens(encrypted, tmp_path):
    assert json.loads((encrypted / "config").read_bytes())["version"] == 2
    run_cli(encrypted, "verify", "--read-data", cwd=tmp_path)


def legacy_config(root) -> None:
    """Rewrite an encrypted store's config as configs were written before they carried a code:
    version 1, no code, the master key wrapped with a random nonce."""
    document = json.loads((root / "config").read_bytes())
    section = document["encryption"]
    kdf = section["kdf"]
    key_encryption_key = Argon2id(
        salt=base64.b64decode(kdf["salt"]),
        length=32,
        iterations=kdf["iterations"],
        lanes=kdf["lanes"],
        memory_cost=kdf["memory_kib"],
    ).derive(PASSPHRASE)
    wrapped = base64.b64decode(section["wrapped_key"])
    context = b"chunkstore master key\x00" + document["store_id"].encode()
    master = AESGCM(key_encryption_key).decrypt(wrapped[:12], wrapped[12:], context)
    nonce = os.urandom(12)
    section["wrapped_key"] = base64.b64encode(
        nonce + AESGCM(key_encryption_key).encrypt(nonce, master, context)
    ).decode()
    del section["config_mac"]
    document["version"] = 1
    (root / "config").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def test_a_config_from_before_codes_opens_and_gains_one_with_the_next_passphrase_change(
    encrypted, tmp_path, monkeypatch
):
    legacy_config(encrypted)
    run_cli(encrypted, "verify", "--read-data", cwd=tmp_path)
    # Not yet authenticated: an edit is not noticed (the reason to change the passphrase).
    monkeypatch.setenv("CHUNKSTORE_NEW_PASSPHRASE", PASSPHRASE.decode())
    run_cli(encrypted, "key", "passwd", cwd=tmp_path)
    document = json.loads((encrypted / "config").read_bytes())
    assert document["version"] == 2 and "config_mac" in document["encryption"]
    run_cli(encrypted, "verify", "--read-data", cwd=tmp_path)
    edit_config(encrypted, EDITS["compression level"])
    completed = run_cli(encrypted, "ls", cwd=tmp_path, expect=IntegrityError.exit_code)
    assert "altered" in completed.stderr.decode()
