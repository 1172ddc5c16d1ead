"""What a put reads from the file system: the files under its paths, and for put --sync the
stored names whose files are gone."""

from __future__ import annotations

import os
import stat as stat_module
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from chunkstore.backends.catalog import Catalog, FileStat, VersionRecord
from chunkstore.core.names import normalize_name, normalize_prefix
from chunkstore.errors import InvalidArgumentError
from chunkstore.operations.results import FileResult


@dataclass(slots=True)
class Source:
    """A file or symlink to put, as the walk found it."""

    path: str  # not a Path: a put of 100,000 files holds one per file
    name: str
    stat: os.stat_result


def file_stat(st: os.stat_result) -> FileStat:
    # The whole st_mode, type bits included: that is how a stored symlink is told from a file.
    return FileStat(st.st_size, st.st_mtime_ns, st.st_mode, st.st_ino, st.st_ctime_ns)


def is_unchanged(previous: VersionRecord | None, st: os.stat_result) -> bool:
    if previous is None:
        return False
    recorded = previous.stat
    return (
        recorded.size == st.st_size
        and recorded.mtime_ns == st.st_mtime_ns
        and recorded.inode == st.st_ino
        and recorded.ctime_ns == st.st_ctime_ns
    )


PathArgument = str | os.PathLike[str] | tuple[str | os.PathLike[str], str | None]


def path_and_name(item: PathArgument) -> tuple[Path, str]:
    """The path of a put argument and the name it is stored under (raises InvalidArgumentError
    for a name that cannot be stored). A path with no component to name it by (`.`, `/`, `./`)
    is the root, "": a folder there has its files stored under their paths within it."""
    raw, as_name = item if isinstance(item, tuple) else (item, None)
    text = os.fspath(raw)
    if as_name is None and text and not normalize_prefix(text):
        return Path(raw), ""
    return Path(raw), normalize_name(as_name if as_name is not None else text)


def collect_sources(paths: Iterable[PathArgument]) -> tuple[list[Source], list[FileResult]]:
    """Expand files and folders into the files to put; report what cannot be put.

    Each item is a path (stored under its own normalised name) or a (path, name)
    pair. Symlinks are stored as links (their target is the content; they are never
    followed). Sockets, FIFOs and devices are skipped with an error result: a backup
    that silently left them out would be a surprise at restore time."""
    sources: list[Source] = []
    problems: list[FileResult] = []
    for item in paths:
        try:
            path, name = path_and_name(item)
        except InvalidArgumentError as error:
            raw = os.fspath(item[0] if isinstance(item, tuple) else item)
            problems.append(FileResult(raw, "error", path=raw, error=str(error)))
            continue
        try:
            st = path.lstat()
        except OSError as error:
            problems.append(FileResult(name, "error", path=str(path), error=error.strerror or str(error)))
            continue
        if stat_module.S_ISDIR(st.st_mode):
            _walk_folder(path, name, sources, problems)
        elif not name:
            problems.append(FileResult(str(path), "error", path=str(path), error=f"no name to store it under: {path}"))
        elif _is_storable(st):
            sources.append(Source(os.fspath(path), name, st))
        else:
            problems.append(
                FileResult(name, "error", path=str(path), error=f"not a regular file ({_kind(st)}); skipped")
            )
    return sources, problems


def _is_storable(st: os.stat_result) -> bool:
    return stat_module.S_ISREG(st.st_mode) or stat_module.S_ISLNK(st.st_mode)


def _walk_folder(folder: Path, folder_name: str, sources: list[Source], problems: list[FileResult]) -> None:
    def on_error(error: OSError) -> None:
        where = error.filename or str(folder)
        problems.append(FileResult(where, "error", path=where, error=f"cannot read folder: {error.strerror}"))

    for directory, subdirs, files in os.walk(folder, onerror=on_error):
        subdirs.sort()
        relative_dir = os.path.relpath(directory, folder)
        for file_name in sorted(files + [d for d in subdirs if os.path.islink(os.path.join(directory, d))]):
            full = os.path.join(directory, file_name)
            relative = file_name if relative_dir == "." else f"{relative_dir}/{file_name}"
            try:
                name = normalize_name(f"{folder_name}/{relative}")
                st = os.lstat(full)
            except InvalidArgumentError as error:
                problems.append(FileResult(full, "error", path=full, error=str(error)))
                continue
            except OSError as error:
                problems.append(FileResult(full, "error", path=full, error=error.strerror or str(error)))
                continue
            if _is_storable(st):
                sources.append(Source(full, name, st))
            elif not stat_module.S_ISDIR(st.st_mode):
                problems.append(
                    FileResult(name, "error", path=full, error=f"not a regular file ({_kind(st)}); skipped")
                )


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    for test, label in (
        (stat_module.S_ISLNK, "symlink"),
        (stat_module.S_ISFIFO, "FIFO"),
        (stat_module.S_ISSOCK, "socket"),
        (stat_module.S_ISCHR, "character device"),
        (stat_module.S_ISBLK, "block device"),
        (stat_module.S_ISDIR, "folder"),
    ):
        if test(mode):
            return label
    return "special file"


def vanished_names(catalog: Catalog, paths: list[PathArgument], put_names: set[str]) -> list[tuple[str, int]]:
    """(name, latest version) of the stored names under the folders of paths whose files are gone
    (put_names: the names this put saw, which exist)."""
    gone: list[tuple[str, int]] = []
    for item in paths:
        folder, name = stored_path_and_name(item)
        if name is None or folder is None or not _is_folder(folder):
            continue
        for record in catalog.list_versions(name):
            within = record.name[len(name) + 1 :] if name else record.name
            if record.name not in put_names and _is_gone(folder / within):
                gone.append((record.name, record.version))
    return list(dict.fromkeys(gone))  # folders given twice, or one inside another


def stored_path_and_name(item: PathArgument) -> tuple[Path | None, str | None]:
    """path_and_name, or (None, None) for an argument put has already reported as unstorable."""
    try:
        return path_and_name(item)
    except InvalidArgumentError:
        return None, None


def _is_folder(path: Path) -> bool:
    try:
        return stat_module.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def _is_gone(path: Path) -> bool:
    """No file there any more: nothing at all, or a folder (a stored file became one).
    Anything else, an unreadable path included, still holds the file."""
    try:
        return stat_module.S_ISDIR(path.lstat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
