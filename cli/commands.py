"""The commands. Each parses its options, calls one library operation and prints the result."""

from __future__ import annotations

import json
import re
import stat
import sys
from datetime import datetime, timezone

import click

from chunkstore.operations import history
from chunkstore.errors import ChunkstoreError, IntegrityError, InvalidArgumentError

from .secrets import read_secret_file
from .progress import ProgressLine, human_bytes

EXIT_OK = 0
EXIT_ERROR = 1
# What the snapshots of put runs from the command line say ran them.
PUT_PROGRAM = "chunkstore put"


def _echo_json(document) -> None:
    """Print document as JSON, streamed: objects with a to_json method (a put's file results)
    are converted one at a time, so a put of 100,000 files never holds its whole report as
    dicts and one string (that took ~110 MiB of its 297 MiB peak)."""
    stream = sys.stdout
    encoder = json.JSONEncoder(indent=2, sort_keys=True, default=lambda value: value.to_json())
    for piece in encoder.iterencode(document):
        stream.write(piece)
    stream.write("\n")
    stream.flush()


def _with_requests(document: dict, store) -> dict:
    """Add the S3 and DynamoDB requests this command made, for a store on AWS."""
    requests = store.request_counts()
    if requests is not None:
        document["requests"] = requests
    return document


def _warn(message: str) -> None:
    click.echo(f"chunkstore: {message}", err=True)


_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """`65536`, `64K`, `64KiB`, `1M`: binary multiples."""
    match = _SIZE.match(text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a size (examples: 65536, 64K, 1MiB)")
    number, unit = int(match.group(1)), match.group(2).lower()
    return number * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]


def _size_option(_context, _parameter, value: str) -> int:
    # Parsing in the option's callback lets click name the option in its error message.
    return parse_size(value)


def _local_time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _time_option(_context, _parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return history.parse_time(value, end_of_day=False)
    except InvalidArgumentError as error:
        raise click.BadParameter(str(error)) from None


def as_of_option(what: str):
    """--as-of TIME|SNAPSHOT; the command resolves it once the store is open (snapshot IDs live there)."""
    return click.option("--as-of", "as_of", metavar="TIME|SNAPSHOT",
                        help=f"{what} as of a past time: a date (2026-11-20: the end of that day), "
                             "a date-time (2026-11-20T03:00, local unless it ends in Z or +HH:MM), or a "
                             "snapshot ID or unique prefix of one (`chunkstore snapshots`).")


# ---- init ----------------------------------------------------------------------------


@click.command()
@click.option("--chunker", default="fastcdc2020", show_default=True,
              type=click.Choice(["fastcdc2020", "fastcdc-ronomon", "fixed"]),
              help="How files are cut into chunks. fastcdc2020 (pyfastcdc) is content-defined and fastest; "
                   "fixed cuts every --avg-size bytes and is only useful for comparison.")
@click.option("--avg-size", default="64K", show_default=True, metavar="BYTES", callback=_size_option,
              help="Target average chunk size (min is a quarter, max four times). Smaller chunks "
                   "find more duplicates; larger ones mean fewer objects (and requests on S3).")
@click.option("--compression", default="zstd:3", show_default=True, metavar="zstd:LEVEL|none",
              help="Compression of each chunk; a chunk that does not shrink is stored raw.")
@click.option("--table", metavar="TABLE",
              help="s3:// stores only: the DynamoDB table that holds the store's catalog (required for them).")
@click.option("--create", is_flag=True,
              help="s3:// stores only: make the bucket (private, encrypted) and the table (on-demand) if absent.")
@click.option("--encrypt", is_flag=True,
              help="Encrypt chunks and key their IDs and boundaries. The passphrase comes from "
                   "$CHUNKSTORE_PASSPHRASE, --key-file, or a prompt; without it nothing can be read.")
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False), metavar="PATH",
              help="With --encrypt: use the contents of PATH as the secret instead of a passphrase "
                   "(give it later with --passphrase-file PATH).")
@click.pass_obj
def init(context, chunker: str, avg_size: int, compression: str, table: str | None, create: bool,
         encrypt: bool, key_file: str | None) -> int:
    """Create an empty store. Its chunking and compression are fixed from then on.

    An s3://BUCKET/PREFIX store keeps its chunks in S3 and its catalog in the
    DynamoDB table given with --table; credentials, region and endpoints come
    from the usual AWS settings (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL...).
    """
    from chunkstore import ChunkerSpec, CompressionSpec, Store

    on_s3 = context.store_url.startswith("s3://")
    if on_s3 and not table:
        raise click.UsageError("an s3:// store needs --table TABLE (the DynamoDB table of its catalog)")
    if not on_s3 and (table or create):
        raise click.UsageError("--table and --create apply only to s3:// stores")
    if key_file and not encrypt:
        raise click.UsageError("--key-file goes with --encrypt")
    spec = ChunkerSpec.from_average(chunker, avg_size)
    passphrase = None
    if encrypt:
        passphrase = (read_secret_file(key_file) if key_file else context.given_passphrase()
                      or context.prompt_passphrase("New passphrase", confirm=True))
    store = Store.init(context.store_url, spec, CompressionSpec.parse(compression), table=table, create=create,
                       passphrase=passphrase, concurrency=context.concurrency)
    store.close()
    if not context.quiet:
        catalog = f", catalog in DynamoDB table {table}" if on_s3 else ""
        click.echo(f"created store at {context.store_url} "
                   f"(chunker {spec.name} {spec.min_size}/{spec.avg_size}/{spec.max_size}, "
                   f"compression {compression}{catalog}{', encrypted' if encrypt else ''})")
    return EXIT_OK


# ---- put -----------------------------------------------------------------------------


@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--as", "as_name", metavar="NAME",
              help="Store under NAME instead of the path (one PATH only; required for '-', stdin).")
@click.option("--force-read", is_flag=True,
              help="Read every file, even those whose size, mtime and inode are unchanged since the last put.")
@click.option("--sync", is_flag=True,
              help="Also record as deleted every stored name under a folder PATH that is no longer there, "
                   "so that restores (latest or --as-of) match the folder. Earlier versions stay readable.")
@click.option("--time", "at_ns", metavar="TIME", callback=_time_option,
              help="Record this put as made at TIME (local unless it ends in Z or +HH:MM) instead of now: "
                   "for importing backups taken elsewhere, oldest first.")
@click.option("--json", "as_json", is_flag=True,
              help="Print every file's outcome, the totals and the snapshot as JSON.")
@click.option("--verbose", "-v", is_flag=True, help="Print one line per file (and per deletion, with --sync).")
@click.pass_obj
def put(context, paths: tuple[str, ...], as_name: str | None, force_read: bool, sync: bool, at_ns: int | None,
        as_json: bool, verbose: bool) -> int:
    """Store files and folders (recursively); '-' reads stdin (with --as NAME).

    Names are the paths as given, made relative: `put /data/x` stores `data/x`.
    A file prints its outcome: `stored`, `duplicate of NAME` or `unchanged`
    (size, mtime and inode match its latest version, so it was not read).
    A folder prints a summary. Files that cannot be read, symlinks and special
    files are reported and skipped, and the exit code is then 1.

    Every put is recorded as a snapshot (see `chunkstore snapshots`): its time,
    host, paths and counts. All its versions carry the time it started, so
    `--as-of SNAPSHOT` later shows exactly what it stored. With --sync, files
    deleted from a folder since the last put get a deletion marker: they
    disappear from `ls`, `restore` and `get`, and `--as-of` shows them when they
    existed. A PATH that is missing altogether marks nothing deleted.
    """
    if as_name is not None and len(paths) != 1:
        raise click.UsageError("--as takes exactly one PATH")
    if "-" in paths:
        if as_name is None:
            raise click.UsageError("putting stdin ('-') needs --as NAME")
        if sync:
            raise click.UsageError("--sync applies to folders, not to stdin ('-')")
        return _put_stdin(context, as_name, as_json, at_ns)
    store = context.open_store()
    progress = ProgressLine(context.show_progress and not as_json)
    single_file = len(paths) == 1 and not _is_folder(paths[0])

    def on_result(result) -> None:
        if result.outcome == "error":
            progress.finish()
            _warn(f"{result.path or result.name}: {result.error}")
        elif verbose and not as_json:
            progress.finish()
            click.echo(f"{result.name}: {result.message}")

    def on_progress(state) -> None:
        progress.update(state.bytes_done, state.bytes_total, f"{state.files_done}/{state.files_total} files")

    sources = [(paths[0], as_name)] if as_name else list(paths)
    try:
        summary = store.put(sources, program=PUT_PROGRAM, sync=sync, at_ns=at_ns, force_read=force_read,
                            on_result=on_result, on_progress=on_progress)
    finally:
        progress.finish()
        store.close()
    if as_json:
        _echo_json(_with_requests(summary.to_json(results_as_objects=True), store))
    elif single_file and summary.results and not verbose:
        result = summary.results[0]
        if result.outcome != "error":
            click.echo(f"{result.name}: {result.message}")
    elif not context.quiet:
        totals = summary.to_json()
        ratio = "n/a" if totals["dedup_ratio"] is None else f"{totals['dedup_ratio']:.2f}x"
        click.echo(f"{totals['files']} files: {totals['stored']} stored, {totals['duplicate']} duplicate, "
                   f"{totals['unchanged']} unchanged, {totals['errors']} errors")
        click.echo(f"{human_bytes(totals['logical_bytes'])} in, {human_bytes(totals['new_bytes'])} new "
                   f"({human_bytes(totals['stored_new_bytes'])} stored), dedup {ratio}, "
                   f"{totals['mb_per_second']:.1f} MB/s")
    if sync and not as_json and not context.quiet:
        for marker in summary.deleted if verbose else ():
            click.echo(f"{marker.name}: deleted")
        click.echo(f"{len(summary.deleted)} deleted since the last put; snapshot {summary.snapshot.snapshot_id[:8]}")
    return EXIT_ERROR if summary.count("error") else EXIT_OK


def _is_folder(path: str) -> bool:
    import os

    return os.path.isdir(path) and not os.path.islink(path)


def _put_stdin(context, name: str, as_json: bool, at_ns: int | None) -> int:
    store = context.open_store()
    try:
        summary = store.put_stream(sys.stdin.buffer, name, program=PUT_PROGRAM, at_ns=at_ns)
    finally:
        store.close()
    result = summary.results[0]
    if as_json:
        _echo_json(_with_requests({**result.to_json(), "snapshot": history.snapshot_json(summary.snapshot)}, store))
    else:
        click.echo(f"{result.name}: {result.message}")
    return EXIT_OK


# ---- get and restore -----------------------------------------------------------------


@click.command()
@click.argument("name")
@click.option("--version", "version", type=click.IntRange(min=1), help="A version number (default: the latest).")
@as_of_option("The file")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Write to FILE (atomically, after verification) instead of stdout.")
@click.pass_obj
def get(context, name: str, version: int | None, as_of: str | None, output: str | None) -> int:
    """Write a stored file to stdout or to FILE, verifying every byte.

    Each chunk is checked against its hash before it is written and the whole
    file against its recorded digest; a mismatch exits 4 naming the file.
    A file deleted by `put --sync` is not found (exit 3) unless --version or
    --as-of names a time it existed.
    """
    if version is not None and as_of is not None:
        raise click.UsageError("--version and --as-of both choose the version: give one of them")
    store = context.open_store(read_only=True)
    try:
        if as_of is not None:
            version = history.version_at(store, name, history.resolve_as_of(store, as_of).at_ns).version
        if output:
            progress = ProgressLine(context.show_progress)
            try:
                store.get_to_path(name, output, version=version,
                                  on_progress=progress.advance)
            finally:
                progress.finish()
        else:
            store.get(name, sys.stdout.buffer, version=version)
    finally:
        store.close()
    return EXIT_OK


@click.command()
@click.argument("prefix")
@click.option("-o", "--output", "destination", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder to restore into: NAME is written to DIR/NAME.")
@as_of_option("Restore the files")
@click.pass_obj
def restore(context, prefix: str, destination: str, as_of: str | None) -> int:
    """Restore the latest version of every file under PREFIX into DIR, with mode and mtime
    (set-user-ID and set-group-ID bits are dropped, since owners are not restored).

    With --as-of, every file is restored as it was then, and files that did not
    exist then (not yet stored, or deleted by a `put --sync`) are left out. DIR
    is not emptied first: restore into a new folder to get exactly that state.

    Every file is verified before it is renamed into place. A file that fails
    verification is reported (and not written) and the exit code is 4; the
    other files are still restored.
    """
    store = context.open_store(read_only=True)
    progress = ProgressLine(context.show_progress)

    def on_result(result) -> None:
        if result.error:
            progress.finish()
            _warn(result.error)

    try:
        as_of_ns = None if as_of is None else history.resolve_as_of(store, as_of).at_ns
        summary = store.restore(prefix, destination, as_of_ns=as_of_ns, on_result=on_result,
                                on_progress=progress.advance)
    finally:
        progress.finish()
        store.close()
    if not context.quiet:
        restored = len(summary.results) - len(summary.errors)
        click.echo(f"restored {restored} files ({human_bytes(summary.bytes)}) to {destination}"
                   + (f"; {len(summary.errors)} failed" if summary.errors else ""))
    return max((result.exit_code for result in summary.errors), default=EXIT_OK)


# ---- ls and rm -----------------------------------------------------------------------


@click.command(name="ls")
@click.argument("prefix", required=False, default="")
@click.option("--versions", "all_versions", is_flag=True,
              help="List every version, not only the latest, deletion markers (`deleted`) included.")
@as_of_option("List the files")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_obj
def list_command(context, prefix: str, all_versions: bool, as_of: str | None, as_json: bool) -> int:
    """List stored files: the latest version of each, or all with --versions.

    Files deleted by `put --sync` are not listed (their versions and deletion
    markers are, with --versions). With --as-of, the files as they were then.
    """
    store = context.open_store(read_only=True)
    try:
        as_of_ns = None if as_of is None else history.resolve_as_of(store, as_of).at_ns
        records = history.versions(store, prefix, all_versions=all_versions, as_of_ns=as_of_ns)
    finally:
        store.close()
    if as_json:
        _echo_json([{"name": r.name, "version": r.version, "size": r.size, "mtime_ns": r.stat.mtime_ns,
                     "mode": stat.S_IMODE(r.stat.mode), "type": _kind(r), "deleted": r.deleted,
                     "stored_at_ns": r.stored_at_ns, "digest": r.digest.hex()}
                    for r in records])
        return EXIT_OK
    if prefix and not records:
        raise _not_found(prefix)
    for record in records:
        size = "deleted" if record.deleted else f"{record.size:,}"
        click.echo(f"{record.version:>4}  {size:>14}  {_local_time(record.stored_at_ns)}  {record.name}")
    return EXIT_OK


def _kind(record) -> str:
    if record.deleted:
        return "deletion marker"
    return "symlink" if stat.S_ISLNK(record.stat.mode) else "file"


def _not_found(prefix: str) -> ChunkstoreError:
    from chunkstore.errors import NameNotFoundError

    return NameNotFoundError(f"no stored file under {prefix!r}")


@click.command()
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("--version", "version", type=click.IntRange(min=1), help="Remove only this version.")
@click.option("--recursive", "-r", is_flag=True, help="Remove every file under each NAME.")
@click.pass_obj
def rm(context, names: tuple[str, ...], version: int | None, recursive: bool) -> int:
    """Remove files (every version, or one with --version). `gc` then frees their chunks."""
    store = context.open_store()
    try:
        removed = store.remove(names, version=version, recursive=recursive)
    finally:
        store.close()
    if not context.quiet:
        for record in removed:
            click.echo(f"removed {record.name} (version {record.version})")
    return EXIT_OK


# ---- gc, verify, stats ---------------------------------------------------------------


@click.command()
@click.option("--dry-run", "-n", is_flag=True, help="Only report what would be freed.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def gc(context, dry_run: bool, as_json: bool) -> int:
    """Delete chunks that no stored version references. Safe while puts run."""
    store = context.open_store()
    try:
        report = store.gc(dry_run=dry_run)
    finally:
        store.close()
    if as_json:
        _echo_json(_with_requests(report.to_json(), store))
    elif not context.quiet:
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{verb} {report.chunks_deleted} chunks and {report.orphans_deleted} orphaned objects, "
                   f"freeing {human_bytes(report.bytes_freed)}")
    return EXIT_OK


@click.command()
@click.option("--read-data", is_flag=True, help="Also read, decompress and re-hash every chunk.")
@click.option("--subset", type=click.FloatRange(0, 100, min_open=True), default=None, metavar="PERCENT",
              help="With --read-data: read a random PERCENT of the chunks (bounds the egress on S3).")
@click.option("--repair", is_flag=True,
              help="Rewrite chunk reference counts from the recipes, then list the files that cannot be "
                   "recovered. Deletes nothing; run it when no put is running.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def verify(context, read_data: bool, subset: float | None, repair: bool, as_json: bool) -> int:
    """Check the store: every recipe's chunks exist, every reference count matches
    the recipes, and with --read-data that every chunk's bytes match its hash.

    Each problem is reported with the files it affects; any problem exits 4.
    With --repair, wrong reference counts are fixed first and what remains is reported.
    """
    if subset is not None and not read_data:
        raise click.UsageError("--subset needs --read-data")
    store = context.open_store(read_only=not repair)
    progress = ProgressLine(context.show_progress and not as_json)
    try:
        report = store.verify(read_data=read_data, subset_percent=subset or 100.0, repair=repair,
                              on_progress=lambda done, total: progress.update(done, total, "chunks"))
    finally:
        progress.finish()
        store.close()
    # Problems go to stderr with --json too, so a failing run always says why on stderr.
    for problem in report.problems:
        affected = f" (affects: {', '.join(problem.names)})" if problem.names else ""
        _warn(f"{problem.kind}: {problem.message}{affected}")
    if as_json:
        _echo_json(_with_requests(report.to_json(), store))
    elif not context.quiet or not report.ok:
        read = f", read {report.chunks_read} chunks ({human_bytes(report.bytes_read)})" if read_data else ""
        checked = f"{report.versions} versions, {report.contents} contents, {report.chunks} chunks checked{read}"
        if repair:
            click.echo(f"repaired {report.counts_repaired} reference counts")
            if report.damaged_names:
                _warn(f"cannot be recovered: {', '.join(report.damaged_names)}")
        if report.ok:
            click.echo(f"ok: {checked}")
        else:
            _warn(f"{len(report.problems)} problems: {checked}")
    return EXIT_OK if report.ok else IntegrityError.exit_code


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def stats(context, as_json: bool) -> int:
    """Show sizes and ratios: logical (all versions), unique (distinct chunks) and stored bytes.

    For an s3:// store, also the requests this command made and what the store
    costs at AWS list prices (storage, and requests per GB put and restored).
    """
    from chunkstore.backends.aws import cost_estimate

    store = context.open_store(read_only=True)
    try:
        figures = store.stats()
        requests = store.request_counts()
    finally:
        store.close()
    if requests is not None:
        figures["requests"] = requests
        figures["cost_estimate"] = cost_estimate(figures)
    if as_json:
        _echo_json(figures)
        return EXIT_OK

    def ratio(key: str) -> str:
        return "n/a" if figures[key] is None else f"{figures[key]:.2f}x"

    click.echo(f"store:        {figures['store']}")
    click.echo(f"files:        {figures['files']} ({figures['versions']} versions, {figures['chunks']} chunks)")
    click.echo(f"logical:      {human_bytes(figures['logical_bytes'])}")
    click.echo(f"unique:       {human_bytes(figures['unique_bytes'])}  (dedup {ratio('dedup_ratio')})")
    click.echo(f"stored:       {human_bytes(figures['stored_bytes'])}  (compression {ratio('compression_ratio')}, "
               f"overall {ratio('store_ratio')})")
    if requests is not None:
        cost = figures["cost_estimate"]
        click.echo(f"cost:         ${cost['storage_usd_per_month']:.4f}/month stored; per GB: "
                   f"${cost['ingest_usd_per_gb_new_data']:.4f} to put new data, ${cost['restore_usd_per_gb']:.4f} to "
                   f"restore ({cost['chunk_objects_per_gb']:,} chunk objects/GB; {cost['prices']['source']})")
        click.echo(f"requests:     {sum(requests['s3'].values())} S3, {sum(requests['dynamodb'].values())} DynamoDB "
                   "(by this command)")
    return EXIT_OK


def register(group: click.Group) -> None:
    from .key import key
    from .serve import serve, serve_token

    from .history import diff, forget, snapshots

    for command in (init, put, get, restore, list_command, rm, gc, verify, stats, key, serve, serve_token,
                    diff, forget, snapshots):
        group.add_command(command)

