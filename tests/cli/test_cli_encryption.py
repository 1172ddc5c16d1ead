"""Encrypted stores through the real `chunkstore` command: init --encrypt, passphrases from the
environment, a file or nowhere, `key passwd`, `key export`, and tampered objects.

Every command on an encrypted store pays one Argon2id unlock (~0.4 s), so each test runs
only the commands it needs.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import stat
import subprocess

import pytest

from chunkstore.core import crypto
from chunkstore.errors import WrongKeyError
from support.clirunner import (
    CONFIG_KEY,
    TEST_AVG_SIZE,
    Chunkstore,
    UndoableObjects,
    assert_one_error,
    random_bytes,
    text_bytes,
    write,
)

PASSPHRASE = "correct horse battery staple"
PASSPHRASE_VARIABLE = "CHUNKSTORE_PASSPHRASE"
NEW_PASSPHRASE_VARIABLE = "CHUNKSTORE_NEW_PASSPHRASE"
DATA = {"data/text": text_bytes(200_000, seed=60), "data/noise": random_bytes(150_000, seed=61)}


def runner_with(base: Chunkstore, **variables: str | None) -> Chunkstore:
    """A runner for base's store and folder, with these environment variables set (None: unset)."""
    runner = Chunkstore(base.backend, base.workdir)
    runner.env.update(base.env)
    for name, value in variables.items():
        if value is None:
            runner.env.pop(name, None)
        else:
            runner.env[name] = value
    return runner


@pytest.fixture
def no_secret(uninitialized) -> Chunkstore:
    """A runner for a store that does not exist yet, with no passphrase in its environment."""
    return runner_with(uninitialized, **{PASSPHRASE_VARIABLE: None, NEW_PASSPHRASE_VARIABLE: None})


@pytest.fixture
def encrypted(no_secret) -> Chunkstore:
    """A runner with PASSPHRASE in $CHUNKSTORE_PASSPHRASE, for a new encrypted storage format 1
    store of small chunks (one object a chunk, which the tests of damage edit)."""
    runner = runner_with(no_secret, **{PASSPHRASE_VARIABLE: PASSPHRASE})
    runner("init", "--format", "1", "--encrypt", "--avg-size", TEST_AVG_SIZE)
    return runner


def write_data(runner: Chunkstore) -> None:
    for name, content in DATA.items():
        write(runner.workdir / name, content)


def assert_restored(destination, files: dict[str, bytes]) -> None:
    restored = {
        str(path.relative_to(destination)): path.read_bytes() for path in destination.rglob("*") if path.is_file()
    }
    assert restored == files


# ---- every command, with the passphrase from the environment or from a file ---------------


@pytest.mark.slow_on_s3
@pytest.mark.parametrize("secret_from", ["environment", "file"])
def test_every_command_works_on_an_encrypted_store(no_secret, secret_from, tmp_path):
    if secret_from == "environment":
        runner, global_options, init_options = runner_with(no_secret, **{PASSPHRASE_VARIABLE: PASSPHRASE}), (), ()
    else:
        # A key file: arbitrary bytes, newlines and NULs included, given as the passphrase file later.
        key_file = write(tmp_path / "store.key", random_bytes(64, seed=62) + b"\x00\r\n")
        runner, global_options, init_options = no_secret, ("--passphrase-file", key_file), ("--key-file", key_file)

    def chunkstore(*args, **options):
        return runner(*global_options, *args, **options)

    assert chunkstore("init", "--encrypt", "--avg-size", TEST_AVG_SIZE, *init_options).out.endswith(", encrypted)\n")
    write_data(runner)
    assert chunkstore("put", "data").out.startswith("2 files: 2 stored, 0 duplicate")
    piped = chunkstore("put", "-", "--as", "piped/text", input=DATA["data/text"])
    assert piped.out == "piped/text: duplicate of data/text\n"
    listing = json.loads(chunkstore("ls", "--json").stdout)
    assert [entry["name"] for entry in listing] == ["data/noise", "data/text", "piped/text"]
    assert chunkstore("get", "data/noise").stdout == DATA["data/noise"]
    chunkstore("restore", "data", "-o", tmp_path / "out")
    assert_restored(tmp_path / "out", DATA)

    chunkstore("rm", "data/noise")
    assert json.loads(chunkstore("gc", "--json").stdout)["chunks_deleted"] > 0
    assert chunkstore("verify", "--read-data").out.startswith("ok: 2 versions, 1 contents")
    figures = json.loads(chunkstore("stats", "--json").stdout)
    assert (figures["files"], figures["versions"], figures["logical_bytes"]) == (2, 2, 2 * len(DATA["data/text"]))


# ---- passphrases: wrong, missing, changed ---------------------------------------------------


def test_a_wrong_passphrase_exits_5_with_one_line(encrypted, tmp_path):
    run = runner_with(encrypted, **{PASSPHRASE_VARIABLE: "correct horse battery stapler"})("ls", expect=5)
    assert_one_error(run, "wrong passphrase")

    from_files = runner_with(encrypted, **{PASSPHRASE_VARIABLE: None})
    # A passphrase file may end with the newline an editor adds.
    right = write(tmp_path / "right", PASSPHRASE.encode() + b"\n")
    from_files("--passphrase-file", right, "ls")
    wrong = write(tmp_path / "wrong", PASSPHRASE.encode() + b"\n\n")
    assert_one_error(from_files("--passphrase-file", wrong, "get", "data/text", expect=5), "wrong passphrase")


def test_no_passphrase_and_no_terminal_exits_5_saying_how_to_give_it(encrypted):
    without = runner_with(encrypted, **{PASSPHRASE_VARIABLE: None})
    write_data(without)
    for command in (("ls",), ("get", "data/text"), ("put", "data"), ("verify",), ("key", "export", "-o", "k")):
        # stdin is a pipe, not a terminal: nobody to ask.
        run = without(*command, input=b"", expect=5)
        assert_one_error(run, PASSPHRASE_VARIABLE, "--passphrase-file")
    assert not (without.workdir / "k").exists()


def test_init_encrypt_without_a_passphrase_or_terminal_exits_5_and_creates_nothing(no_secret):
    run = no_secret("init", "--encrypt", input=b"", expect=5)
    assert_one_error(run, PASSPHRASE_VARIABLE, "--passphrase-file")
    assert not no_secret.backend.exists(CONFIG_KEY)


def test_init_encrypt_refuses_the_unkeyed_ronomon_chunker(no_secret):
    runner = runner_with(no_secret, **{PASSPHRASE_VARIABLE: PASSPHRASE})
    run = runner("init", "--encrypt", "--chunker", "fastcdc-ronomon", expect=2)
    assert_one_error(run, "fastcdc-ronomon")
    assert not runner.backend.exists(CONFIG_KEY)


@pytest.mark.slow_on_s3
def test_key_passwd_changes_the_passphrase_and_every_file_stays_readable(encrypted, tmp_path):
    write_data(encrypted)
    encrypted("put", "data")
    run = encrypted("key", "passwd", input=b"", expect=5)  # no new passphrase, no terminal
    assert_one_error(run, NEW_PASSPHRASE_VARIABLE, "--new-passphrase-file")

    second = "a second passphrase"
    assert runner_with(encrypted, **{NEW_PASSPHRASE_VARIABLE: second})("key", "passwd").out == "passphrase changed\n"
    third_file = write(tmp_path / "third", b"a third passphrase\n")
    runner_with(encrypted, **{PASSPHRASE_VARIABLE: second})("key", "passwd", "--new-passphrase-file", third_file)

    for retired in (PASSPHRASE, second):
        assert_one_error(runner_with(encrypted, **{PASSPHRASE_VARIABLE: retired})("ls", expect=5), "wrong passphrase")
    current = runner_with(encrypted, **{PASSPHRASE_VARIABLE: None})
    current("--passphrase-file", third_file, "restore", "data", "-o", tmp_path / "out")
    assert_restored(tmp_path / "out", DATA)


def test_key_export_writes_a_private_file_holding_only_the_wrapped_key(encrypted):
    backup = encrypted.workdir / "key.backup"
    assert encrypted("key", "export", "-o", backup).out == f"key written to {backup}\n"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    config = json.loads(encrypted.backend.read(CONFIG_KEY))
    document = json.loads(backup.read_bytes())
    # Nothing but the config's encryption section, where the key is only stored wrapped.
    assert document == {
        "format": crypto.KEY_EXPORT_FORMAT,
        "version": 1,
        "store_id": config["store_id"],
        "encryption": config["encryption"],
    }
    # With the passphrase, and only with it, the backup gives back the store's keys.
    crypto.unlock(document["encryption"], PASSPHRASE.encode(), document["store_id"])
    with pytest.raises(WrongKeyError):
        crypto.unlock(document["encryption"], b"not the passphrase", document["store_id"])

    # Over an existing, world-readable file, the backup is private too.
    backup.write_text("an older file")
    backup.chmod(0o644)
    encrypted("key", "export", "-o", backup)
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert json.loads(backup.read_bytes()) == document


def test_key_commands_on_an_unencrypted_store_exit_2(chunkstore):
    run = runner_with(chunkstore, **{NEW_PASSPHRASE_VARIABLE: "new"})("key", "passwd", expect=2)
    assert_one_error(run, "not encrypted")
    assert_one_error(chunkstore("key", "export", "-o", "key.backup", expect=2), "not encrypted")
    assert not (chunkstore.workdir / "key.backup").exists()


def run_on_a_terminal(runner: Chunkstore, *args, answers: list[str]) -> tuple[int, list[str], str, bytes]:
    """Run chunkstore with a pseudo-terminal as stdin and stderr, typing the next answer at each
    prompt (one prompt too many kills it); return its exit code, the prompts it showed, all the
    terminal showed, and its stdout."""
    controller, terminal = os.openpty()
    # In a session of its own the command has no controlling terminal, so getpass reads the
    # pseudo-terminal on stdin rather than opening /dev/tty (the developer's, under pytest).
    process = subprocess.Popen(
        runner.command_line(*args),
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=terminal,
        cwd=runner.workdir,
        env=runner.env,
        start_new_session=True,
    )
    os.close(terminal)
    shown, pending = b"", list(answers)
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], 30)
            assert ready, f"chunkstore {' '.join(map(str, args))} went quiet; the terminal showed {shown!r}"
            try:
                data = os.read(controller, 4096)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not data:
                break
            shown += data
            if shown.endswith(b": "):
                if not pending:  # a prompt the test has no answer for: stop here, the checks will say why
                    process.kill()
                    break
                os.write(controller, pending.pop(0).encode() + b"\n")
    finally:
        os.close(controller)
    stdout = process.stdout.read()
    process.stdout.close()
    code = process.wait(timeout=60)
    text = shown.decode(errors="replace").replace("\r\n", "\n")
    prompts = [line.strip()[:-1] for line in text.splitlines() if line.strip().endswith(":")]
    return code, prompts, text, stdout


def test_the_passphrase_can_be_typed_at_the_terminal_and_is_asked_once(no_secret):
    code, prompts, shown, _ = run_on_a_terminal(no_secret, "init", "--encrypt", answers=[PASSPHRASE, PASSPHRASE])
    assert (code, prompts) == (0, ["New passphrase", "Repeat for confirmation"]), shown
    code, prompts, shown, stdout = run_on_a_terminal(no_secret, "ls", "--json", answers=[PASSPHRASE])
    assert (code, prompts, json.loads(stdout)) == (0, ["Passphrase"], []), shown

    code, prompts, shown, _ = run_on_a_terminal(no_secret, "key", "passwd", answers=[PASSPHRASE, "new", "new"])
    assert (code, prompts) == (0, ["Passphrase", "New passphrase", "Repeat for confirmation"]), shown
    code, prompts, shown, _ = run_on_a_terminal(no_secret, "ls", answers=[PASSPHRASE])
    assert (code, prompts) == (5, ["Passphrase"]) and "chunkstore: wrong passphrase" in shown, shown
    runner_with(no_secret, **{PASSPHRASE_VARIABLE: "new"})("ls")


# ---- tampered objects ----------------------------------------------------------------------

GOOD = text_bytes(150_000, seed=63)
BAD = random_bytes(120_000, seed=64)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, new_backend):
    """An encrypted store of `data/good` and `data/bad`; returns (its objects, the folder of its
    workdir, the keys of the objects of data/good, and of data/bad)."""
    root = tmp_path_factory.mktemp("encrypted")
    (root / "work").mkdir()
    runner = runner_with(Chunkstore(new_backend(root), root / "work"), **{PASSPHRASE_VARIABLE: PASSPHRASE})
    runner("init", "--format", "1", "--encrypt", "--avg-size", TEST_AVG_SIZE)
    write(runner.workdir / "data" / "good", GOOD)
    runner("put", "data")
    objects_of_good = runner.objects()
    write(runner.workdir / "data" / "bad", BAD)
    runner("put", "data")
    objects_of_bad = runner.objects() - objects_of_good
    return runner.backend, root / "work", sorted(objects_of_good), sorted(objects_of_bad)


@pytest.fixture
def damaged(pristine, tmp_path):
    """The pristine store for one test, with a workdir of its own, put back as it was afterwards:
    (its runner, keys of the objects of data/good, of data/bad; damage them through runner.backend)."""
    objects, workdir, good_keys, bad_keys = pristine
    shutil.copytree(workdir, tmp_path / "work")
    undoable = UndoableObjects(objects)
    runner = runner_with(Chunkstore(undoable, tmp_path / "work"), **{PASSPHRASE_VARIABLE: PASSPHRASE})
    yield runner, good_keys, bad_keys
    undoable.undo()


def flip_byte(objects, key, index: int) -> None:
    data = bytearray(objects.read(key))
    data[index] ^= 0x01
    objects.write(key, bytes(data))


NONCE_START = 16  # after the object header (objectformat.py)
# One position in each part of an encrypted object: header, nonce, ciphertext, tag.
POSITIONS = {
    "header": lambda size: 6,  # the cipher ID
    "nonce": lambda size: NONCE_START + 5,
    "ciphertext": lambda size: (NONCE_START + crypto.NONCE_SIZE + size - crypto.TAG_SIZE) // 2,
    "tag": lambda size: size - 1,
}


@pytest.mark.parametrize("part", list(POSITIONS))
def test_a_flipped_byte_makes_get_exit_4_naming_the_file_and_chunk(damaged, part):
    runner, _, bad_objects = damaged
    victim = bad_objects[0]
    flip_byte(runner.backend, victim, POSITIONS[part](len(runner.backend.read(victim))))
    run = runner("get", "data/bad", "-o", "restored", expect=4)
    assert_one_error(run, "data/bad", victim.name)
    assert not (runner.workdir / "restored").exists()


def test_verify_read_data_reports_a_flipped_byte_with_the_file_name(damaged):
    runner, _, bad_objects = damaged
    victim = bad_objects[len(bad_objects) // 2]
    flip_byte(runner.backend, victim, len(runner.backend.read(victim)) // 2)
    run = runner("verify", "--read-data", expect=4)
    assert "data/bad@1" in run.err and victim.name in run.err
    assert "data/good" not in run.err


def test_swapped_objects_are_detected_by_get_restore_and_verify(damaged, tmp_path):
    runner, good_objects, bad_objects = damaged
    good, bad = good_objects[0], bad_objects[0]
    good_bytes, bad_bytes = runner.backend.read(good), runner.backend.read(bad)
    runner.backend.write(good, bad_bytes)
    runner.backend.write(bad, good_bytes)
    assert_one_error(runner("get", "data/good", expect=4), "data/good", good.name)
    run = runner("restore", "data", "-o", tmp_path / "out", expect=4)
    assert "data/good" in run.err and "data/bad" in run.err and run.out.endswith("; 2 failed\n")
    assert not [path for path in (tmp_path / "out").rglob("*") if path.is_file()]
    report = json.loads(runner("verify", "--read-data", "--json", expect=4).stdout)
    assert report["damaged_names"] == ["data/bad@1", "data/good@1"]
