"""Encrypted storage format 2 stores seal their catalog's metadata (docs/design/encrypted-metadata.md):
every command through the real command line (in this process), on a folder, on s3:// through
moto's server and in memory.

- After puts, a changed file, deletions recorded by --sync, rm, forget and gc, no item of the
  DynamoDB table and no byte of the SQLite files (or of anything else the store holds) has a
  name, a path component, the host name, an inode number or an mtime in it, as UTF-8, hex or
  base64.
- ls, restore, get --as-of, diff, snapshots, forget and rm answer on a sealed store exactly as
  on a plain one.
- The config says so (version 4), and an edited one is refused.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import pytest

from chunkstore import ChunkerSpec, CompressionSpec, Store
from chunkstore.backends.sessions import HOST
from chunkstore.core import crypto
from chunkstore.errors import InvalidArgumentError
from chunkstore.operations import put as put_operation
from support.inprocess import run_cli

PASSPHRASE = "correct horse battery staple"
FAST_KDF = {"name": "argon2id", "memory_kib": 64, "iterations": 1, "lanes": 1}
PUT_HOST = "build-host-qwzx.corp.example"
FILES = {
    "Zanzibar-Accounts/Payroll-Quarterly/employee-salaries.csv": b"name,salary\n" * 3000,
    "Zanzibar-Accounts/readme-confidential.txt": b"do not share\n" * 50,
    "Quixotic-Notes.md": b"# notes\n" * 400,
}
MTIME_NS = 1_234_567_890_987_654_321
pytestmark = pytest.mark.also_in_memory


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """The folder commands run in, with the passphrase in the environment, a cheap KDF (the
    default's cost changes no code path) and a host name no other string contains."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("CHUNKSTORE_PASSPHRASE", PASSPHRASE)
    monkeypatch.setattr(crypto, "DEFAULT_KDF", FAST_KDF)
    monkeypatch.setattr(put_operation, "HOST", PUT_HOST)
    return folder


def new_store(new_backend, tmp_path, label: str, *init_options: str):
    objects = new_backend(tmp_path / label)
    run_cli(objects.url, "init", "--avg-size", "4K", *objects.init_options(), *init_options)
    return objects


def command(store, *args: str, input: bytes | None = None) -> bytes:
    outcome = run_cli(store.url, *args, input=input)
    assert outcome.code == 0, outcome
    return outcome.stdout


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.utime(path, ns=(MTIME_NS, MTIME_NS))


def encodings(secret: bytes) -> set[bytes]:
    """secret as UTF-8, hex (both cases) and base64 (standard and URL-safe, at each of the
    three alignments a secret inside a longer encoded value can have)."""
    found = {secret, secret.hex().encode(), secret.hex().upper().encode()}
    for shift in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(bytes(shift) + secret)
            start, end = -(-shift * 8 // 6), (shift + len(secret)) * 8 // 6
            found.add(text[start:end])
    return found


def test_the_catalog_shows_no_name_path_host_inode_or_mtime(new_backend, tmp_path, workdir):
    store = new_store(new_backend, tmp_path, "sealed", "--encrypt")
    write_files(workdir, FILES)
    inodes = {(workdir / name).stat().st_ino for name in FILES}
    command(store, "put", "Zanzibar-Accounts", "Quixotic-Notes.md", "--time", "2026-11-01T03:00Z")
    (workdir / "Zanzibar-Accounts/readme-confidential.txt").write_bytes(b"changed\n")
    (workdir / "Zanzibar-Accounts/Payroll-Quarterly/employee-salaries.csv").unlink()
    command(store, "put", "Zanzibar-Accounts", "--sync", "--time", "2026-11-02T03:00Z")
    command(store, "rm", "Quixotic-Notes.md")
    command(store, "forget", "Zanzibar-Accounts", "--keep-last", "1")
    command(store, "gc")
    assert json.loads(command(store, "ls", "--versions", "--json")) != []

    secrets = {PUT_HOST, "build-host-qwzx", str(MTIME_NS), str(MTIME_NS)[:12]}
    secrets |= {part for name in FILES for part in Path(name).parts} | set(FILES)
    secrets |= {str(inode) for inode in inodes if inode >= 10_000}
    if len(HOST) >= 6:
        secrets.add(HOST)
    stored = store.everything()
    assert stored, "nothing stored"
    leaks = [
        (where, secret)
        for where, data in stored.items()
        for secret in secrets
        for form in encodings(secret.encode())
        if len(form) >= 6 and form in data
    ]
    assert leaks == []
    # Inode numbers as the 8 bytes of a binary field, either way round.
    packed = {inode.to_bytes(8, order) for inode in inodes for order in ("big", "little")}
    assert [(where, form) for where, data in stored.items() for form in packed if form in data] == []


def run_history(store, folder: Path, passphrase: str | None, monkeypatch) -> dict[str, object]:
    """Two nights of puts of src (a file changed, one deleted, one added), another folder
    and a removal; what a restore as of the first night gives, and every answer (exit code, output,
    error) of the reading and history commands, with snapshot IDs replaced by their order.
    Commands run in folder."""
    folder.mkdir()
    monkeypatch.chdir(folder)
    if passphrase is None:
        monkeypatch.delenv("CHUNKSTORE_PASSPHRASE")
    else:
        monkeypatch.setenv("CHUNKSTORE_PASSPHRASE", passphrase)
    write_files(folder, {"src/a.txt": b"a, first", "src/sub/b.txt": b"b", "src/c.txt": b"c" * 5000})
    command(store, "put", "src", "--sync", "--time", "2026-11-01T03:00Z")
    write_files(folder, {"src/a.txt": b"a, second", "src/d.txt": b"d"})
    (folder / "src/c.txt").unlink()
    command(store, "put", "src", "--sync", "--time", "2026-11-02T03:00Z")
    write_files(folder, {"other/x": b"x"})
    command(store, "put", "other", "--time", "2026-11-03T03:00Z")

    snapshots = json.loads(command(store, "snapshots", "--json"))
    out = folder / "restored"
    command(store, "restore", "src", "-o", str(out), "--as-of", "2026-11-01T12:00Z")
    answers: dict[str, object] = {
        "restored": {
            path.relative_to(out).as_posix(): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()
        },
        "snapshot paths": [snapshot["paths"] for snapshot in snapshots],
    }

    def comparable(text: str) -> str:
        """Snapshot IDs by their order; without the two figures encryption changes: digests
        (keyed in an encrypted store) and the bytes a snapshot's new chunks take."""
        for number, snapshot in enumerate(snapshots):
            text = text.replace(snapshot["id"], f"<snapshot {number}>").replace(snapshot["id"][:8], f"<{number}>")
        return re.sub(r'("digest": "[0-9a-f]+"|"added_stored_bytes": [0-9]+)', "", text)

    for args in (
        ("ls",),
        ("ls", "src"),
        ("ls", "src/sub"),
        ("ls", "sr"),
        ("ls", "--versions", "--json"),
        ("ls", "src", "--as-of", "2026-11-01T12:00Z"),
        ("get", "src/c.txt", "--as-of", "2026-11-01T12:00Z"),
        ("get", "src/a.txt", "--version", "1"),
        ("get", "src/c.txt"),
        ("diff", "src", "--from", "2026-11-01T12:00Z", "--to", "2026-11-02T12:00Z"),
        ("diff", "--from", snapshots[0]["id"], "--json"),
        ("snapshots", "src", "--json"),
        ("forget", "src", "--keep-last", "1", "--dry-run"),
        ("forget", "src", "--keep-last", "1"),
        ("ls", "--versions"),
        ("rm", "other/x"),
        ("ls",),
        ("verify",),
    ):
        outcome = run_cli(store.url, *args)
        answer = (outcome.code, comparable(outcome.stdout.decode()), comparable(outcome.stderr))
        answers[comparable(" ".join(args))] = answer
    return answers


def test_commands_answer_the_same_on_plain_and_sealed_stores(new_backend, tmp_path, workdir, monkeypatch):
    sealed = new_store(new_backend, tmp_path, "sealed", "--encrypt")
    monkeypatch.delenv("CHUNKSTORE_PASSPHRASE")
    plain = new_store(new_backend, tmp_path, "plain")
    answers = run_history(sealed, workdir / "sealed", PASSPHRASE, monkeypatch)
    assert answers == run_history(plain, workdir / "plain", None, monkeypatch)
    # Equal because both answered, not because both failed alike.
    assert answers["restored"] == {"src/a.txt": b"a, first", "src/sub/b.txt": b"b", "src/c.txt": b"c" * 5000}
    assert answers["ls src"][0] == 0 and "src/sub/b.txt" in answers["ls src"][1]
    assert answers["get src/c.txt --as-of 2026-11-01T12:00Z"] == (0, "c" * 5000, "")


def config_of(store) -> dict:
    return json.loads(store.read(Path("config")))


def test_the_config_says_so_and_edits_of_it_are_refused(new_backend, tmp_path, workdir):
    store = new_store(new_backend, tmp_path, "sealed", "--encrypt")
    config = config_of(store)
    assert (config["version"], config["metadata"]) == (4, "sealed-1")
    cases = [
        ({**config, "metadata": "sealed-2"}, 1, "sealed-2"),
        ({**config, "encryption": None}, 1, "only written for encrypted stores"),
        # Read as a plain format 2 store, its sealed names would be listed as names: the
        # authentication code covers the version.
        ({key: value for key, value in config.items() if key != "metadata"} | {"version": 3}, 4, ""),
        ({key: value for key, value in config.items() if key != "metadata"}, 4, "damaged"),
    ]
    for edited, code, fragment in cases:
        store.write(Path("config"), json.dumps(edited).encode())
        outcome = run_cli(store.url, "ls")
        assert outcome.code == code, (edited, outcome)
        assert fragment in outcome.stderr


def test_format_1_encrypted_stores_keep_their_catalog_as_it_was(new_backend, tmp_path, workdir):
    store = new_store(new_backend, tmp_path, "format-1", "--encrypt", "--format", "1")
    assert "metadata" not in config_of(store) and config_of(store)["version"] == 2
    write_files(workdir, {"plainly-named.txt": b"x"})
    command(store, "put", "plainly-named.txt")
    assert any(b"plainly-named.txt" in data for data in store.everything().values())


def test_a_wrong_passphrase_still_exits_5(new_backend, tmp_path, workdir, monkeypatch):
    store = new_store(new_backend, tmp_path, "sealed", "--encrypt")
    monkeypatch.setenv("CHUNKSTORE_PASSPHRASE", "not it")
    assert run_cli(store.url, "ls").code == 5


def test_names_too_long_once_sealed_are_refused_one_by_one(new_backend, tmp_path, workdir):
    store = new_store(new_backend, tmp_path, "sealed", "--encrypt")
    deep = "/".join(["abc"] * 120)  # 479 bytes, 120 sealed components of 43 characters
    outcome = run_cli(store.url, "put", "-", "--as", deep, input=b"x")
    assert outcome.code == 2 and "too long for a store that encrypts its names" in outcome.stderr
    assert re.fullmatch(r"\s*", command(store, "ls").decode())


@pytest.mark.parametrize("source_kind", ["format 1", "format 2 not sealed"])
def test_migrate_seals_the_catalog_of_an_encrypted_store_made_without_sealing(
    new_backend, tmp_path, workdir, source_kind
):
    if source_kind == "format 1":
        source = new_store(new_backend, tmp_path, "source", "--encrypt", "--format", "1")
    else:  # as every encrypted format 2 store was made before sealing existed
        source = new_backend(tmp_path / "source")
        Store.init(
            source.url,
            ChunkerSpec.from_average(avg_size=4096),
            CompressionSpec.parse("zstd:3"),
            passphrase=PASSPHRASE.encode(),
            seal_metadata=False,
            **source.init_arguments(),
        ).close()
        assert config_of(source)["version"] == 3
    write_files(workdir, FILES)
    command(source, "put", "Zanzibar-Accounts", "Quixotic-Notes.md")
    assert any(b"Quixotic-Notes.md" in data for data in source.everything().values())

    dest = new_store(new_backend, tmp_path, "dest", "--encrypt")
    command(dest, "migrate", source.url, dest.url)
    assert command(dest, "ls", "--versions") == command(source, "ls", "--versions")
    assert command(dest, "get", "Quixotic-Notes.md") == FILES["Quixotic-Notes.md"]
    stored = dest.everything()
    for part in {part for name in FILES for part in Path(name).parts}:
        assert not any(form in data for data in stored.values() for form in encodings(part.encode())), part


def test_the_library_refuses_sealing_where_it_cannot_be(new_backend, tmp_path):
    chunker, compression = ChunkerSpec.from_average(avg_size=4096), CompressionSpec.parse("zstd:3")
    for options, fragment in (
        ({"seal_metadata": True}, "needs encryption"),
        ({"seal_metadata": True, "passphrase": b"pw", "storage_format": 1}, "needs storage format 2"),
    ):
        objects = new_backend(tmp_path / str(len(fragment)))
        with pytest.raises(InvalidArgumentError, match=fragment):
            Store.init(objects.url, chunker, compression, **options, **objects.init_arguments())
