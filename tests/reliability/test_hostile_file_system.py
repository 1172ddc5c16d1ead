"""restore and get against a hostile file system: a folder of the restore target swapped for a
symlink while the restore runs, set-user-ID files, and names as long as the file system allows."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path

from chunkstore import ChunkerSpec, CompressionSpec, Store

FOLDERS = 40
FILES_PER_FOLDER = 50


def contents_below(root: Path) -> dict[str, bytes]:
    """Every regular file below root, by its path relative to root; symlinks are not followed."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def keep_swapping_folders_for_symlinks(tree: Path, outside: Path, stop: threading.Event) -> None:
    """Move every real folder of tree aside and put a symlink to outside in its place, until stop."""
    while not stop.is_set():
        for entry in os.scandir(tree):
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                os.rename(entry.path, tree / f".moved-{entry.name}")
                os.symlink(outside, entry.path)
            except (FileNotFoundError, FileExistsError):
                pass  # the restore made or moved it meanwhile; look again


def test_a_folder_swapped_for_a_symlink_during_restore_never_sends_a_file_outside(store, tmp_path):
    source = tmp_path / "source" / "tree"
    stored = {}
    for folder in range(FOLDERS):
        (source / f"d{folder:02}").mkdir(parents=True)
        for index in range(FILES_PER_FOLDER):
            name = f"d{folder:02}/f{index:03}"
            stored[name] = f"{name} content".encode()
            (source / name).write_bytes(stored[name])
    assert store.put([(source, "tree")]).count("error") == 0
    target, outside = tmp_path / "target", tmp_path / "outside"
    (target / "tree").mkdir(parents=True)
    outside.mkdir()

    stop = threading.Event()
    swapper = threading.Thread(target=keep_swapping_folders_for_symlinks, args=(target / "tree", outside, stop))
    swapper.start()
    try:
        summary = store.restore("tree", target)
    finally:
        stop.set()
        swapper.join()

    assert contents_below(outside) == {}
    restored = contents_below(target / "tree")
    for result in summary.results:
        relative = result.name.removeprefix("tree/")
        folder, _, base = relative.partition("/")
        if result.error:
            # A symlink met where a folder was, or no folder at all (moved aside, link not yet made).
            assert result.exit_code != 0, result.error
        else:
            # Written into the folder it opened, which may since have been moved aside.
            placed = restored.get(relative, restored.get(f".moved-{folder}/{base}"))
            assert placed == stored[relative], result.name

    # Every folder is a symlink now: restoring again reports each file and writes nothing outside.
    again = store.restore("tree", target)
    assert len(again.errors) == len(stored)
    assert all("symlink" in result.error and result.exit_code != 0 for result in again.errors)
    assert contents_below(outside) == {}


def test_set_user_and_group_id_bits_are_not_restored_but_the_sticky_bit_is(store, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    modes = {"setuid": 0o4755, "setgid": 0o2750, "both": 0o6711, "sticky": 0o1644}
    for name, mode in modes.items():
        (source / name).write_bytes(name.encode())
        os.chmod(source / name, mode)
    assert store.put([(source, "modes")]).count("error") == 0
    assert not store.restore("modes", tmp_path / "target").errors
    for name, mode in modes.items():
        restored = stat.S_IMODE((tmp_path / "target" / "modes" / name).stat().st_mode)
        assert restored == mode & ~(stat.S_ISUID | stat.S_ISGID), name
    store.get_to_path("modes/both", tmp_path / "got")
    assert stat.S_IMODE((tmp_path / "got").stat().st_mode) == 0o711


def test_names_of_255_bytes_restore_and_get(store, tmp_path):
    names = ["x" * 255, "\u00e9" * 127 + "x", "\U0001f600" * 63 + "abc"]
    assert all(len(name.encode()) == 255 for name in names)
    for name in names:
        store.put_stream(io.BytesIO(name.encode()), f"long/{name}")
    summary = store.restore("long", tmp_path / "target")
    assert not summary.errors, summary.errors
    for name in names:
        assert (tmp_path / "target" / "long" / name).read_bytes() == name.encode()
        store.get_to_path(f"long/{name}", tmp_path / name)
        assert (tmp_path / name).read_bytes() == name.encode()
    assert not [path for path in tmp_path.rglob("*.chunkstore-tmp")]


def test_restore_keeps_a_bounded_number_of_folders_open(tmp_path):
    from chunkstore.operations.read import _RestoreFolders

    with Store.init(str(tmp_path / "store"), ChunkerSpec.from_average(), CompressionSpec.parse("none")) as store:
        for index in range(200):
            store.put_stream(io.BytesIO(b"x"), f"wide/{index:03}/deep/f")
        open_during_restore = []
        summary = store.restore(
            "wide",
            tmp_path / "target",
            on_result=lambda _: open_during_restore.append(len(os.listdir("/proc/self/fd"))),
        )
    assert not summary.errors
    # 400 folders; without a bound each would keep a descriptor.
    assert max(open_during_restore) - min(open_during_restore) <= _RestoreFolders.MAX_OPEN
    assert len(list((tmp_path / "target" / "wide").iterdir())) == 200


def remove_chain_of_folders(top: Path, part: str) -> None:
    """Remove top/part/part/... one level at a time: shutil.rmtree recurses once per level and a
    chain 1500 folders deep exceeds Python's recursion limit."""
    while (top / part).exists():
        if (top / part / part).is_dir():
            os.rename(top / part / part, top / f"{part}.next")
            shutil.rmtree(top / part)
            os.rename(top / f"{part}.next", top / part)
        else:
            shutil.rmtree(top / part)


def test_a_name_a_thousand_folders_deep_restores(store):
    name = "/".join(["d"] * 1500) + "/f"
    store.put_stream(io.BytesIO(b"deep"), name)
    # Not under tmp_path: pytest removes old temporary folders, its own and those of any other
    # run on the machine, with a recursive shutil.rmtree, which a chain this deep breaks.
    target = Path(tempfile.mkdtemp(prefix="chunkstore-deep-"))
    try:
        assert not store.restore("d", target).errors
        descriptor = os.open(target, os.O_RDONLY)
        try:
            for part in name.split("/")[:-1]:
                descriptor, parent = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=descriptor), descriptor
                os.close(parent)
            with os.fdopen(os.open("f", os.O_RDONLY, dir_fd=descriptor), "rb") as restored:
                assert restored.read() == b"deep"
        finally:
            os.close(descriptor)
    finally:
        remove_chain_of_folders(target, "d")
        target.rmdir()
