"""A damaged chunk object: get, restore and verify exit 4 naming the file, and never hand back wrong bytes."""

from __future__ import annotations

import shutil

import pytest

from support.clirunner import (
    TEST_AVG_SIZE,
    Chunkstore,
    UndoableObjects,
    random_bytes,
    text_bytes,
    write,
)

GOOD = text_bytes(150_000, seed=50)


def flip_a_byte(objects, key):
    data = bytearray(objects.read(key))
    data[len(data) // 2] ^= 0xFF
    objects.write(key, bytes(data))


def truncate(objects, key):
    objects.write(key, objects.read(key)[:-10])


DAMAGE = {"flipped byte": flip_a_byte, "truncated": truncate, "deleted": lambda objects, key: objects.delete(key)}


@pytest.fixture(scope="module", params=["incompressible", "compressible"])
def pristine(request, tmp_path_factory, new_backend):
    """A store of `data/good` and `data/bad`, whose chunks are stored raw or compressed; returns
    (its objects, the folder of its workdir, the key of a chunk object of data/bad and of no
    other file, data/bad's content)."""
    root = tmp_path_factory.mktemp(request.param)
    (root / "work").mkdir()
    chunkstore = Chunkstore(new_backend(root), root / "work")
    chunkstore("init", "--format", "1", "--avg-size", TEST_AVG_SIZE)
    bad_content = (random_bytes if request.param == "incompressible" else text_bytes)(200_000, seed=51)
    write(chunkstore.workdir / "data" / "good", GOOD)
    chunkstore("put", "data")
    objects_of_good = chunkstore.objects()
    write(chunkstore.workdir / "data" / "bad", bad_content)
    chunkstore("put", "data")
    objects_of_bad = sorted(chunkstore.objects() - objects_of_good)
    return chunkstore.backend, root / "work", objects_of_bad[len(objects_of_bad) // 2], bad_content


@pytest.fixture
def damaged(pristine, tmp_path):
    """The pristine store for one test, with a workdir of its own, put back as it was afterwards:
    (runner, the key of the chunk object to damage through runner.backend, data/bad's content)."""
    objects, workdir, victim, bad_content = pristine
    shutil.copytree(workdir, tmp_path / "work")
    undoable = UndoableObjects(objects)
    yield Chunkstore(undoable, tmp_path / "work"), victim, bad_content
    undoable.undo()


@pytest.fixture(params=sorted(DAMAGE))
def damage(request):
    return DAMAGE[request.param]


def assert_names_file_and_chunk(err: str, chunk_id: str) -> None:
    assert "data/bad" in err and chunk_id in err, err


def test_get_to_stdout_exits_4_and_writes_only_correct_bytes(damaged, damage):
    chunkstore, victim, content = damaged
    damage(chunkstore.backend, victim)
    run = chunkstore("get", "data/bad", expect=4)
    assert_names_file_and_chunk(run.err, victim.name)
    assert len(run.err_lines) == 1
    # The output may stop short, but what was written is the start of the file.
    assert len(run.stdout) < len(content) and content.startswith(run.stdout)


def test_get_to_a_file_exits_4_and_leaves_no_file(damaged, damage):
    chunkstore, victim, _ = damaged
    damage(chunkstore.backend, victim)
    run = chunkstore("get", "data/bad", "-o", "restored", expect=4)
    assert_names_file_and_chunk(run.err, victim.name)
    assert sorted(path.name for path in chunkstore.workdir.iterdir()) == ["data"]


def test_get_to_a_file_keeps_the_old_file_when_the_new_one_is_damaged(damaged):
    chunkstore, victim, _ = damaged
    flip_a_byte(chunkstore.backend, victim)
    target = write(chunkstore.workdir / "restored", b"previous content")
    chunkstore("get", "data/bad", "-o", target, expect=4)
    assert target.read_bytes() == b"previous content"


def test_restore_exits_4_restores_the_rest_and_leaves_no_partial_file(damaged, damage, tmp_path):
    chunkstore, victim, _ = damaged
    damage(chunkstore.backend, victim)
    destination = tmp_path / "out"
    run = chunkstore("restore", "data", "-o", destination, expect=4)
    assert_names_file_and_chunk(run.err, victim.name)
    assert run.out.endswith("; 1 failed\n")
    assert (destination / "data" / "good").read_bytes() == GOOD
    assert sorted(str(path.relative_to(destination)) for path in destination.rglob("*")) == ["data", "data/good"]


def test_verify_read_data_exits_4_naming_the_file(damaged, damage):
    chunkstore, victim, _ = damaged
    damage(chunkstore.backend, victim)
    run = chunkstore("verify", "--read-data", expect=4)
    assert_names_file_and_chunk(run.err, victim.name)
    assert "data/good" not in run.err
    report = chunkstore.json("verify", "--read-data", "--json", expect=4)
    assert report["ok"] is False and report["damaged_names"] == ["data/bad@1"]
    [problem] = report["problems"]
    assert victim.name in problem["message"] and problem["names"] == ["data/bad@1"]


@pytest.mark.parametrize("damage_name", ["truncated", "deleted"])
def test_verify_without_reading_data_notices_a_missing_or_resized_object(damaged, damage_name):
    chunkstore, victim, _ = damaged
    DAMAGE[damage_name](chunkstore.backend, victim)
    run = chunkstore("verify", expect=4)
    assert_names_file_and_chunk(run.err, victim.name)
