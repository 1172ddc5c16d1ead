"""Benchmark datasets, generated deterministically from a seed: nothing is downloaded.

The base corpus is real text that every machine has: the Python standard library's
own sources (every *.py under the folder of the `os` module, site-packages excluded).
An edit model evolves it version after version: in some files lines are inserted,
deleted or replaced by lines taken from elsewhere in the corpus, a few files are
removed and a few new ones are added. A layout writes each version to disk:

- versioned archives: one uncompressed tar file per version (v001.tar, v002.tar, ...),
  members in name order, owner 0/0, mode 0644, and each member's mtime the day of the
  version that last changed it (as a tar of a working folder would record);
- source trees: one folder per version (v001/, v002/, ...), file mtimes set the same way.

Three more kinds stress one path of a store each:

- database file: a SQLite database (rows of text drawn from the corpus) copied after
  each of several rounds of scattered updates, inserts and deletes (r001.sqlite, ...):
  the in-place page rewrites of a database that is backed up nightly;
- incompressible: random bytes in which a fraction of regions repeat earlier regions,
  so dedup still finds something while compression finds nothing;
- exact duplicates: a set of corpus files written again and again under other names
  (copy01/, copy02/, ...): the whole-file duplicate path.

The same seed on the same Python build gives the same bytes; `dataset_digest` hashes
a generated folder so that this can be checked.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import posixpath
import random
import shutil
import sqlite3
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import blake3

VERSIONED_ARCHIVES = "versioned-archives"
SOURCE_TREES = "source-trees"
DATABASE_FILE = "database-file"
INCOMPRESSIBLE = "incompressible"
EXACT_DUPLICATES = "exact-duplicates"
KINDS = (VERSIONED_ARCHIVES, SOURCE_TREES, DATABASE_FILE, INCOMPRESSIBLE, EXACT_DUPLICATES)

DEFAULT_SEED = 20260101
# Version n is dated BASE_EPOCH + (n - 1) days: fixed, so the tar headers are reproducible.
BASE_EPOCH = 1_700_000_000
DAY_SECONDS = 86_400
# Every archive member lives under this folder, as in a release tarball.
ARCHIVE_ROOT = "stdlib"

# (total bytes of all versions, bytes of the base corpus; None = all of it, about 31 MB on 3.11).
# The full size is the ~1 GB the performance targets are stated for; quick keeps a run
# to a few minutes and smoke to seconds, with the same edit model.
PRESETS: dict[str, tuple[int, int | None]] = {
    "full": (1_000_000_000, None),
    "quick": (150_000_000, 12_000_000),
    "smoke": (5_000_000, 1_000_000),
}


@dataclass(frozen=True)
class EditModel:
    """How a version differs from the one before it; fractions are of the previous version's files."""

    modify_fraction: float = 0.03
    edits_per_file: tuple[int, int] = (1, 6)
    lines_per_edit: tuple[int, int] = (1, 20)
    add_fraction: float = 0.01
    remove_fraction: float = 0.004
    # An added file is a few blocks of lines from other files (a new module written from
    # familiar pieces), not a copy of one file, so it is mostly new to a chunk store.
    blocks_per_added_file: tuple[int, int] = (2, 8)
    lines_per_block: tuple[int, int] = (10, 150)
    # Database rounds: fractions of the rows updated, inserted and deleted between two saves.
    database_rounds: int = 6
    database_update_fraction: float = 0.02
    database_insert_fraction: float = 0.01
    database_delete_fraction: float = 0.005
    # Incompressible data: files of random bytes cut into regions, of which this fraction
    # repeats an earlier region (anywhere in the dataset), at a random offset.
    incompressible_files: int = 4
    incompressible_region_bytes: tuple[int, int] = (64 * 1024, 2 * 1024 * 1024)
    incompressible_duplicate_fraction: float = 0.25
    # Exact duplicates: every distinct file is written this many times under other names.
    duplicate_copies: int = 8


@dataclass(frozen=True)
class DatasetSpec:
    """Everything that decides a dataset's bytes (with the Python build that supplies the corpus)."""

    kind: str = VERSIONED_ARCHIVES
    seed: int = DEFAULT_SEED
    total_bytes: int = PRESETS["full"][0]
    corpus_bytes: int | None = PRESETS["full"][1]
    edits: EditModel = field(default_factory=EditModel)

    @classmethod
    def preset(
        cls, name: str, kind: str = VERSIONED_ARCHIVES, seed: int = DEFAULT_SEED, total_bytes: int | None = None
    ) -> DatasetSpec:
        preset_total, corpus_bytes = PRESETS[name]
        return cls(kind, seed, total_bytes or preset_total, corpus_bytes)

    def identity(self) -> dict:
        """The spec plus where the corpus comes from: a cached dataset is reused only if all match."""
        return {"spec": asdict(self), "python": platform.python_version(), "corpus_root": str(corpus_root())}

    def slug(self) -> str:
        key = blake3.blake3(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.kind}-{key}"


@dataclass(frozen=True)
class SourceFile:
    data: bytes
    mtime: int


@dataclass(frozen=True)
class Dataset:
    """A generated dataset: `root` holds the versions (files or folders), `digest` their bytes."""

    spec: DatasetSpec
    root: Path
    versions: int
    files: int
    logical_bytes: int
    digest: str

    def to_json(self) -> dict:
        return {
            "kind": self.spec.kind,
            "seed": self.spec.seed,
            "target_bytes": self.spec.total_bytes,
            "corpus_bytes": self.spec.corpus_bytes,
            "edit_model": asdict(self.spec.edits),
            "versions": self.versions,
            "files": self.files,
            "logical_bytes": self.logical_bytes,
            "digest": self.digest,
            "root": str(self.root),
            "python": platform.python_version(),
        }


def corpus_root() -> Path:
    return Path(os.__file__).parent


def load_corpus(budget_bytes: int | None, rng: random.Random) -> dict[str, bytes]:
    """The standard library's *.py files by relative name; with a budget, a seeded sample of about that size."""
    root = corpus_root()
    names: list[str] = []
    for folder, subfolders, filenames in os.walk(root):
        subfolders[:] = [sub for sub in subfolders if sub not in ("site-packages", "__pycache__")]
        relative = Path(folder).relative_to(root).as_posix()
        names.extend(posixpath.normpath(posixpath.join(relative, name)) for name in filenames if name.endswith(".py"))
    names.sort()
    if budget_bytes is not None:
        shuffled = names[:]
        rng.shuffle(shuffled)
        chosen, total = [], 0
        for name in shuffled:
            if total >= budget_bytes:
                break
            chosen.append(name)
            total += (root / name).stat().st_size
        names = sorted(chosen)
    return {name: (root / name).read_bytes() for name in names}


def evolve_versions(spec: DatasetSpec) -> Iterator[tuple[int, dict[str, SourceFile]]]:
    """Yield (version number, files) forever: version 1 is the corpus, each next one an edit of the last."""
    rng = random.Random(spec.seed)
    corpus = load_corpus(spec.corpus_bytes, rng)
    donors = [data.splitlines(keepends=True) for data in corpus.values()]
    donors = [lines for lines in donors if lines]
    files = {name: SourceFile(data, BASE_EPOCH) for name, data in corpus.items()}
    version = 1
    while True:
        yield version, files
        version += 1
        files = _next_version(files, version, rng, donors, spec.edits)


def _next_version(
    previous: dict[str, SourceFile], version: int, rng: random.Random, donors: list[list[bytes]], model: EditModel
) -> dict[str, SourceFile]:
    mtime = BASE_EPOCH + (version - 1) * DAY_SECONDS
    files = dict(previous)
    names = sorted(files)
    for name in rng.sample(names, round(len(names) * model.remove_fraction)):
        del files[name]
    kept = sorted(files)
    for name in rng.sample(kept, max(1, round(len(kept) * model.modify_fraction))):
        files[name] = SourceFile(_edit(files[name].data, rng, donors, model), mtime)
    for number in range(round(len(names) * model.add_fraction)):
        folder = posixpath.dirname(rng.choice(names))
        name = posixpath.join(folder, f"added_v{version:03d}_{number}.py")
        files[name] = SourceFile(_new_file(rng, donors, model), mtime)
    return files


def _edit(data: bytes, rng: random.Random, donors: list[list[bytes]], model: EditModel) -> bytes:
    lines = data.splitlines(keepends=True)
    for _ in range(rng.randint(*model.edits_per_file)):
        at = rng.randint(0, len(lines))
        count = rng.randint(*model.lines_per_edit)
        operation = rng.choices(("insert", "delete", "replace"), weights=(4, 3, 3))[0]
        if operation in ("delete", "replace"):
            del lines[at : at + count]
        if operation in ("insert", "replace"):
            lines[at:at] = _donor_lines(rng, donors, rng.randint(*model.lines_per_edit))
    return b"".join(lines)


def _new_file(rng: random.Random, donors: list[list[bytes]], model: EditModel) -> bytes:
    blocks = (
        _donor_lines(rng, donors, rng.randint(*model.lines_per_block))
        for _ in range(rng.randint(*model.blocks_per_added_file))
    )
    return b"".join(b"".join(block) for block in blocks)


def _donor_lines(rng: random.Random, donors: list[list[bytes]], count: int) -> list[bytes]:
    lines = rng.choice(donors)
    start = rng.randrange(len(lines))
    return lines[start : start + count]


def write_tar(path: Path, files: dict[str, SourceFile]) -> None:
    """One uncompressed tar of the files, with nothing in it that varies from run to run."""
    with open(path, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name in sorted(files):
            member = files[name]
            info = tarfile.TarInfo(f"{ARCHIVE_ROOT}/{name}")
            info.size = len(member.data)
            info.mtime = member.mtime
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            archive.addfile(info, io.BytesIO(member.data))


def write_tree(folder: Path, files: dict[str, SourceFile]) -> None:
    for name in sorted(files):
        member = files[name]
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(member.data)
        os.utime(path, ns=(member.mtime * 10**9, member.mtime * 10**9))


def generate(spec: DatasetSpec, root: Path) -> Dataset:
    """Write the dataset into root (created; must not exist), about spec.total_bytes in all."""
    writers = {
        DATABASE_FILE: _write_database_rounds,
        INCOMPRESSIBLE: _write_incompressible,
        EXACT_DUPLICATES: _write_exact_duplicates,
    }
    if spec.kind in writers:
        root.mkdir(parents=True)
        writers[spec.kind](spec, root)
        return describe(spec, root)
    return _write_versions(spec, root)


def _write_versions(spec: DatasetSpec, root: Path) -> Dataset:
    """Versioned archives or source trees: versions of the evolving corpus until they total spec.total_bytes."""
    root.mkdir(parents=True)
    written = 0
    for version, files in evolve_versions(spec):
        if version > 2 and written >= spec.total_bytes:
            break
        if spec.kind == VERSIONED_ARCHIVES:
            path = root / f"v{version:03d}.tar"
            write_tar(path, files)
            written += path.stat().st_size
        elif spec.kind == SOURCE_TREES:
            path = root / f"v{version:03d}"
            write_tree(path, files)
            written += sum(len(member.data) for member in files.values())
        else:
            raise ValueError(f"unknown dataset kind {spec.kind!r} (known: {', '.join(KINDS)})")
        _set_day(path, version)
    return describe(spec, root)


def _write_database_rounds(spec: DatasetSpec, root: Path) -> None:
    """Save a SQLite file after each round of edits; every saved file is about total / rounds bytes.

    Rows hold a few corpus lines each (text compresses, as real records do); rows are
    addressed at random, so every round touches pages all over the file."""
    model = spec.edits
    rng = random.Random(spec.seed)
    lines = [line for data in load_corpus(spec.corpus_bytes, rng).values() for line in data.splitlines() if line]
    file_bytes = spec.total_bytes // model.database_rounds
    # A row is about 4 lines of ~40 bytes, plus SQLite's own overhead per row and page.
    row_count = max(100, file_bytes // 200)

    def payload() -> str:
        start = rng.randrange(len(lines))
        return b"\n".join(lines[start : start + rng.randint(1, 8)]).decode("utf-8", "replace")

    working = root.parent / f".{root.name}-working.sqlite"
    working.unlink(missing_ok=True)
    database = sqlite3.connect(working, isolation_level=None)
    try:
        database.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, account INTEGER, amount INTEGER, note TEXT)")
        database.execute("BEGIN")
        database.executemany(
            "INSERT INTO records (account, amount, note) VALUES (?, ?, ?)",
            ((rng.randrange(10**6), rng.randrange(10**9), payload()) for _ in range(row_count)),
        )
        database.execute("COMMIT")
        next_id = row_count + 1
        for round_number in range(1, model.database_rounds + 1):
            if round_number > 1:
                database.execute("BEGIN")
                for _ in range(round(row_count * model.database_update_fraction)):
                    database.execute(
                        "UPDATE records SET amount = ?, note = ? WHERE id = ?",
                        (rng.randrange(10**9), payload(), rng.randrange(1, next_id)),
                    )
                for _ in range(round(row_count * model.database_delete_fraction)):
                    database.execute("DELETE FROM records WHERE id = ?", (rng.randrange(1, next_id),))
                database.executemany(
                    "INSERT INTO records (account, amount, note) VALUES (?, ?, ?)",
                    (
                        (rng.randrange(10**6), rng.randrange(10**9), payload())
                        for _ in range(round(row_count * model.database_insert_fraction))
                    ),
                )
                next_id = database.execute("SELECT max(id) FROM records").fetchone()[0] + 1
                database.execute("COMMIT")
            saved = root / f"r{round_number:03d}.sqlite"
            shutil.copyfile(working, saved)
            _set_day(saved, round_number)
    finally:
        database.close()
        working.unlink(missing_ok=True)


def _write_incompressible(spec: DatasetSpec, root: Path) -> None:
    model = spec.edits
    rng = random.Random(spec.seed)
    written: list[bytes] = []  # regions so far, to copy from
    file_bytes = spec.total_bytes // model.incompressible_files
    for number in range(1, model.incompressible_files + 1):
        path = root / f"random{number:02d}.bin"
        size = 0
        with open(path, "wb") as file:
            while size < file_bytes:
                length = min(rng.randint(*model.incompressible_region_bytes), file_bytes - size)
                if written and rng.random() < model.incompressible_duplicate_fraction:
                    source = rng.choice(written)
                    start = rng.randrange(max(1, len(source) - length + 1))
                    region = source[start : start + length]
                else:
                    region = rng.randbytes(length)
                    written.append(region)
                file.write(region)
                size += len(region)
        _set_day(path, number)


def _write_exact_duplicates(spec: DatasetSpec, root: Path) -> None:
    """Corpus files of about total / copies bytes, each written under copies names."""
    copies = spec.edits.duplicate_copies
    corpus = load_corpus(spec.total_bytes // copies, random.Random(spec.seed))
    for copy in range(1, copies + 1):
        write_tree(root / f"copy{copy:02d}", {name: SourceFile(data, BASE_EPOCH) for name, data in corpus.items()})
        _set_day(root / f"copy{copy:02d}", copy)


def _set_day(path: Path, day: int) -> None:
    mtime_ns = (BASE_EPOCH + (day - 1) * DAY_SECONDS) * 10**9
    os.utime(path, ns=(mtime_ns, mtime_ns))


def describe(spec: DatasetSpec, root: Path) -> Dataset:
    files = list(files_in(root))
    return Dataset(
        spec,
        root,
        versions=sum(1 for _ in root.iterdir()),
        files=len(files),
        logical_bytes=sum(path.stat().st_size for _, path in files),
        digest=dataset_digest(root),
    )


def files_in(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative name, path) of every regular file under root, in name order."""
    found = []
    for folder, _, filenames in os.walk(root):
        for filename in filenames:
            path = Path(folder) / filename
            found.append((path.relative_to(root).as_posix(), path))
    return iter(sorted(found))


def dataset_digest(root: Path) -> str:
    """BLAKE3 over every file's relative name, size and bytes, in name order: equal digests, equal trees."""
    digest = blake3.blake3()
    for name, path in files_in(root):
        encoded = name.encode("utf-8", "surrogateescape")
        digest.update(len(encoded).to_bytes(8, "little") + encoded + path.stat().st_size.to_bytes(8, "little"))
        with open(path, "rb") as file:
            while block := file.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def materialize(spec: DatasetSpec, cache: Path) -> Dataset:
    """The dataset under cache/SLUG/KIND, generated once and reused while its digest still matches."""
    folder = cache / spec.slug()
    manifest_path = folder / "manifest.json"
    root = folder / spec.kind
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("identity") == json.loads(json.dumps(spec.identity())) and root.is_dir():
            dataset = describe(spec, root)
            if dataset.digest == manifest["digest"]:
                return dataset
    if folder.exists():
        shutil.rmtree(folder)
    dataset = generate(spec, root)
    manifest_path.write_text(json.dumps({"identity": spec.identity(), "digest": dataset.digest}, indent=2) + "\n")
    return dataset


def parse_size(text: str) -> int:
    """`1000000000`, `1G`, `150M`, `512K`: decimal multiples, as MB/s figures use."""
    multiples = {"k": 10**3, "m": 10**6, "g": 10**9}
    text = text.strip().lower().removesuffix("b")
    if text and text[-1] in multiples:
        return int(float(text[:-1]) * multiples[text[-1]])
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The dataset options every benchmark command shares."""
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_const",
        dest="preset",
        const="quick",
        help=f"about {PRESETS['quick'][0] // 10**6} MB instead of {PRESETS['full'][0] // 10**6} MB",
    )
    size.add_argument(
        "--smoke",
        action="store_const",
        dest="preset",
        const="smoke",
        help=f"about {PRESETS['smoke'][0] // 10**6} MB: checks that everything runs, in seconds",
    )
    parser.set_defaults(preset="full")
    parser.add_argument(
        "--size",
        type=parse_size,
        metavar="BYTES",
        help="total bytes of all versions, e.g. 500M or 2G (default: set by the preset)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the edit model")


def spec_from_arguments(args: argparse.Namespace, kind: str = VERSIONED_ARCHIVES) -> DatasetSpec:
    return DatasetSpec.preset(args.preset, kind, args.seed, args.size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.datasets",
        description="Generate a benchmark dataset into a folder and print its digest.",
    )
    parser.add_argument("destination", type=Path, help="folder to create")
    parser.add_argument("--kind", choices=KINDS, default=VERSIONED_ARCHIVES)
    add_arguments(parser)
    args = parser.parse_args(argv)
    dataset = generate(spec_from_arguments(args, args.kind), args.destination)
    print(json.dumps(dataset.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
